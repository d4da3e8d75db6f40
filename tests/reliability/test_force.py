"""`--force` never destroys progress silently: it republishes a cached stage but resumes an
interrupted partial output; `--restart` starts over; the plan says which."""
from __future__ import annotations

import json
import signal

import pytest

from tests.reliability.conftest import run_here
from tests.test_runner import statuses

pytestmark = pytest.mark.slow


def _summary(root) -> dict:
    [published] = [p for p in (root / "runs/source").iterdir() if len(p.name) == 20]
    return json.loads((published / "_MANIFEST.json").read_text())["summary"]


def test_force_resumes_an_interrupted_partial_and_restart_discards_it(tmp_path, drivers, capsys):
    assert run_here(tmp_path, "fake", "--stages", "source") == 0
    assert _summary(tmp_path) == {"written": 3, "kept": 0}

    killed = drivers(tmp_path, "fake", "--stages", "source", "--force", "source", env={"FAKE_KILL_AT": "source"})
    assert killed.wait() == -signal.SIGKILL, killed.output[-3000:]
    [partial] = list((tmp_path / "runs/source").glob("*.partial"))
    assert len(list(partial.glob("source-*.json"))) == 1

    capsys.readouterr()
    assert run_here(tmp_path, "fake", "--stages", "source", "--force", "source", "--dry-run") == 0
    out = capsys.readouterr().out
    assert statuses(out)["source"] == "RUN"
    assert "forced (--force); republished; resuming its partial output" in out
    assert run_here(tmp_path, "fake", "--stages", "source", "--force", "source") == 0
    assert _summary(tmp_path) == {"written": 2, "kept": 1}  # the interrupted attempt's file was kept

    killed = drivers(tmp_path, "fake", "--stages", "source", "--force", "source", env={"FAKE_KILL_AT": "source"})
    assert killed.wait() == -signal.SIGKILL
    capsys.readouterr()
    assert run_here(tmp_path, "fake", "--stages", "source", "--restart", "source") == 0
    out = capsys.readouterr().out
    assert "forced (--restart); republished; discarding its partial output (--restart)" in out
    assert _summary(tmp_path) == {"written": 3, "kept": 0}
    assert not list((tmp_path / "runs/source").glob("*.partial"))
