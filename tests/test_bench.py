"""`python -m pipeline.bench`: discovery, the JSON contract, errors."""
from __future__ import annotations

import json
import sys
import types

import pytest

import pipeline.benches
from pipeline import bench


@pytest.fixture
def fake_bench(monkeypatch):
    module = types.ModuleType("pipeline.benches.fake")
    module.run = lambda quick=False: {"ours_per_s": 30.0, "naive_per_s": 10.0, "ratio": 3.0, "quick": quick}
    monkeypatch.setitem(sys.modules, "pipeline.benches.fake", module)
    monkeypatch.setattr(bench, "available", lambda: ["fake"])
    return module


def test_json_output_has_the_headline_ratio(fake_bench, capsys):
    assert bench.main(["fake", "--json", "--quick"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["ratio"] == 3.0 and figures["bench"] == "fake" and figures["quick"] is True
    assert figures["wall_s"] >= 0


def test_text_output_lists_every_figure(fake_bench, capsys):
    assert bench.main(["fake"]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "ours_per_s" in out and "30" in out


def test_a_bench_without_a_finite_ratio_is_an_error(fake_bench):
    fake_bench.run = lambda quick=False: {"ratio": float("nan")}
    with pytest.raises(ValueError, match="no finite 'ratio'"):
        bench.run_bench("fake")


def test_unknown_bench_exits_2(capsys):
    assert bench.main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_every_registered_bench_module_has_run():
    import importlib

    for name in bench.available():
        assert callable(importlib.import_module(f"{pipeline.benches.__name__}.{name}").run)
