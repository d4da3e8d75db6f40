"""A stage that fails ends the run with one plain line naming the stage, the error's first line and
the log file that holds the traceback; its partial output is kept and its MLflow run is FAILED."""
from __future__ import annotations

from pathlib import Path

from tests.reliability.conftest import mlflow_runs, run_here


def test_a_failing_stage_ends_with_one_line_naming_it_and_its_log(tmp_path, monkeypatch, capsys, ray_local):
    import tests.fake_stages.source as source

    def broken(ctx, cfg, inputs):
        ctx.out.write_json("half.json", {"written": "before the error"})
        raise ValueError("input 7 is not an image\nthe details on a second line")

    monkeypatch.setattr(source, "run", broken)
    monkeypatch.setenv("PIPELINE_LOG_DIR", str(tmp_path / "logs"))
    assert run_here(tmp_path, "fake", "--stages", "source") == 1
    captured = capsys.readouterr()
    assert "source: FAILED: ValueError: input 7 is not an image after" in captured.out
    assert "partial output kept for resume" in captured.out and "Traceback" not in captured.out + captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("pipeline failed in stage source: ValueError: input 7 is not an image; log: "), last
    log = Path(last.rsplit("log: ", 1)[1])
    assert log.parent == tmp_path / "logs"
    assert "Traceback" in log.read_text() and "the details on a second line" in log.read_text()
    [run] = [r for r in mlflow_runs(tmp_path) if r.data.tags.get("pipeline.stage") == "source"]
    assert run.info.status == "FAILED" and "ValueError: input 7" in run.data.tags["pipeline.failure"]
