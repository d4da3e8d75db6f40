"""One writer per output: the lock a run holds while it builds `<stage>/<key>`.

A second run of the same stage waits for the first and then uses what it published (the runner
checks again once it holds the lock). Two kinds, one behaviour:
- a local store: `flock` on a lock file. The kernel releases it when the holder dies, so a killed
  run's lock is taken over at once; the file says who holds it, for the waiting message.
- an object store (anything but the local filesystem): a lease object with an expiry, renewed by
  a background thread while held. Object stores offer no exclusive create through pyarrow, so a
  run writes its lease, waits `SETTLE_SECONDS`, and holds the lock only if it reads its own lease
  back (two runs racing both read before either writes only if their read-to-write gap exceeds
  that wait). A lease past its expiry, or one of a process of this host that is gone, is stale
  and taken over.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, Optional

import pyarrow.fs as pafs

LEASE_SECONDS = 60.0
SETTLE_SECONDS = 1.0
POLL_SECONDS = 1.0

OnWait = Optional[Callable[[str], None]]


def _process_start(pid: int) -> Optional[str]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder_info(ttl: float = LEASE_SECONDS) -> dict:
    pid = os.getpid()
    now = time.time()
    return {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": pid,
            "pid_start": _process_start(pid), "acquired": now, "expires": now + ttl}


def describe(info: Optional[dict]) -> str:
    if not info:
        return "another run"
    return f"run pid {info.get('pid')} on {info.get('host')}"


def _gone(info: dict) -> bool:
    """A holder on this host whose process no longer exists (or is another process now)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return False
    return _process_start(info["pid"]) != info.get("pid_start")


@contextlib.contextmanager
def file_lock(path: str, on_wait: OnWait = None, poll: float = POLL_SECONDS) -> Iterator[None]:
    """An exclusive flock on an OS path, waited for."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as handle:
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and on_wait is not None:
                    handle.seek(0)
                    try:
                        on_wait(describe(json.loads(handle.read() or "null")))
                    except ValueError:
                        on_wait(describe(None))
                    told = True
                time.sleep(poll)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder_info()))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Lease:
    """A lease object on a pyarrow filesystem (see the module docstring)."""

    def __init__(self, fs: pafs.FileSystem, path: str, ttl: float = LEASE_SECONDS,
                 settle: float = SETTLE_SECONDS, poll: float = POLL_SECONDS):
        self.fs, self.path, self.ttl, self.settle, self.poll = fs, path, ttl, settle, poll
        self.mine: Optional[dict] = None
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None
        self.lost = False

    def read(self) -> Optional[dict]:
        try:
            with self.fs.open_input_stream(self.path) as f:
                info = json.loads(f.read())
            return info if isinstance(info, dict) else None
        except (FileNotFoundError, ValueError):
            return None
        except OSError as error:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                return None
            raise error

    def _write(self, info: dict) -> None:
        """Whole or not at all (a temporary name, then a rename): a reader never takes a lease
        caught half-written for an absent one."""
        self.fs.create_dir(posixpath.dirname(self.path), recursive=True)
        tmp = f"{self.path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(info).encode())
        self.fs.move(tmp, self.path)

    def stale(self, info: Optional[dict]) -> bool:
        return info is None or float(info.get("expires", 0)) < time.time() or _gone(info)

    def acquire(self, on_wait: OnWait = None) -> None:
        told = False
        while True:
            current = self.read()
            if self.stale(current):
                mine = holder_info(self.ttl)
                self._write(mine)
                time.sleep(self.settle)
                back = self.read()
                if back is not None and back.get("owner") == mine["owner"]:
                    self.mine = mine
                    self._renewer = threading.Thread(target=self._renew, daemon=True, name="store-lease")
                    self._renewer.start()
                    return
                current = back
            if not told and on_wait is not None:
                on_wait(describe(current))
                told = True
            time.sleep(self.poll)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                current = self.read()
                if current is None or current.get("owner") != self.mine["owner"]:
                    self.lost = True
                    return
                self.mine = {**self.mine, "expires": time.time() + self.ttl}
                self._write(self.mine)
            except OSError:
                continue  # try again at the next beat; the lease is good until it expires

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        with contextlib.suppress(OSError):
            current = self.read()
            if current is not None and self.mine is not None and current.get("owner") == self.mine["owner"]:
                self.fs.delete_file(self.path)
        self.mine = None


@contextlib.contextmanager
def lease_lock(fs: pafs.FileSystem, path: str, on_wait: OnWait = None, **options) -> Iterator[Lease]:
    lease = Lease(fs, path, **options)
    lease.acquire(on_wait)
    try:
        yield lease
    finally:
        lease.release()
