"""One store, many runs: one writer per output (an flock locally, a lease object elsewhere), the
second run waits and then uses what the first published, and a dead run's lock is taken over."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import pyarrow.fs as pafs
import pytest

from pipeline.store import Store
from pipeline.store_locks import Lease, file_lock, holder_info, lease_lock
from tests.reliability.conftest import mlflow_runs


def _hold(path: str, ready) -> None:
    with file_lock(path):
        ready.set()
        time.sleep(600)


def test_a_second_holder_waits_for_the_first(tmp_path):
    path = str(tmp_path / "locks" / "k.lock")
    order, waited = [], []

    def second():
        with file_lock(path, on_wait=waited.append, poll=0.05):
            order.append("second")

    with file_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert waited == [f"run pid {os.getpid()} on {os.uname().nodename}"]


def test_the_lock_of_a_killed_run_is_taken_over_at_once(tmp_path):
    path = str(tmp_path / "k.lock")
    ready = multiprocessing.get_context("fork").Event()
    holder = multiprocessing.get_context("fork").Process(target=_hold, args=(path, ready))
    holder.start()
    assert ready.wait(30)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    started = time.time()
    with file_lock(path, on_wait=lambda who: pytest.fail(f"waited for {who}")):
        pass
    assert time.time() - started < 5


def object_store(kind: str, tmp_path):
    """An object-store stand-in: pyarrow's in-memory mock, or a SubTreeFileSystem (not the local
    filesystem as such, so the store takes the lease path)."""
    if kind == "mock":
        return pafs._MockFileSystem(), "bucket/locks/k.lock"
    return pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()), "locks/k.lock"


@pytest.mark.parametrize("kind", ["mock", "subtree"])
def test_a_lease_is_exclusive_renewed_and_released(kind, tmp_path):
    fs, path = object_store(kind, tmp_path)
    order, waited = [], []
    options = dict(ttl=1.2, settle=0.05, poll=0.05)

    def second():
        with lease_lock(fs, path, on_wait=waited.append, **options):
            order.append("second")

    with lease_lock(fs, path, **options) as lease:
        first_expiry = lease.read()["expires"]
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(2.0)  # longer than the ttl: only renewal keeps it
        assert lease.read()["owner"] == lease.mine["owner"] and lease.read()["expires"] > first_expiry
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"] and len(waited) == 1
    assert fs.get_file_info(path).type == pafs.FileType.NotFound  # released: deleted


@pytest.mark.parametrize("stale", ["expired", "dead_process"])
def test_a_stale_lease_is_taken_over(tmp_path, stale):
    fs, path = object_store("subtree", tmp_path)
    info = holder_info(ttl=60)
    if stale == "expired":
        info.update(host="another-host", expires=time.time() - 1)
    else:
        info.update(pid=2 ** 22 + 7, pid_start="1")  # this host, a process that is not there
    fs.create_dir("locks")
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(info).encode())
    with lease_lock(fs, path, on_wait=lambda who: pytest.fail(f"waited for {who}"), settle=0.05) as lease:
        assert lease.read()["owner"] != info["owner"]


def test_a_live_lease_of_another_host_is_waited_for(tmp_path):
    fs, path = object_store("subtree", tmp_path)
    fs.create_dir("locks")
    with fs.open_output_stream(path) as f:
        f.write(json.dumps({**holder_info(ttl=1.0), "host": "elsewhere"}).encode())
    waited = []
    started = time.time()
    with lease_lock(fs, path, on_wait=waited.append, settle=0.05, poll=0.1):
        pass
    assert waited and "elsewhere" in waited[0] and time.time() - started >= 0.9  # until it expired


def test_the_store_takes_the_lease_path_off_the_local_filesystem(tmp_path):
    local = Store(str(tmp_path / "runs"))
    with local.lock("stage", "k1"):
        assert (tmp_path / "runs/stage/_locks/k1.lock").is_file()
    remote = Store("root", fs=pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    with remote.lock("stage", "k1") as lease:
        assert isinstance(lease, Lease)
        assert json.loads((tmp_path / "root/stage/_locks/k1.lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / "root/stage/_locks/k1.lock").exists()


@pytest.mark.slow
def test_two_runs_of_one_stage_on_one_store(tmp_path, drivers):
    """The second waits for the first and uses its output: one published output, no orphan."""
    gate = tmp_path / "go-on"  # the first run's stage holds its lock until the second is seen waiting
    first = drivers(tmp_path, "fake", "--stages", "source", env={"FAKE_WAIT_FOR": str(gate)})
    first.wait_for_line("source: running (")
    second = drivers(tmp_path, "fake", "--stages", "source")
    second.wait_for_line("source: waiting for")
    gate.touch()
    assert first.wait() == 0, first.output[-3000:]
    assert second.wait() == 0, second.output[-3000:]
    assert f"source: waiting for run pid {first.proc.pid} on" in second.output
    assert "cached (" in second.output and "published by another run while this one waited" in second.output
    entries = sorted(p.name for p in (tmp_path / "runs/source").iterdir())
    assert [e for e in entries if not e.startswith("_")] == [e for e in entries if len(e) == 20] and \
        len([e for e in entries if len(e) == 20]) == 1, \
        f"{entries}\n--- first:\n{first.output[-2000:]}\n--- second:\n{second.output[-2000:]}"
    stage_runs = [r for r in mlflow_runs(tmp_path) if r.info.run_name == "source"]
    assert len(stage_runs) == 1 and stage_runs[0].info.status == "FINISHED"
