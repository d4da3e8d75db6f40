"""The sweep's configurations and its multi-fidelity selection (plain data, no Ray)."""
from __future__ import annotations

import pytest

from dataclasses import replace

from pipeline.config import ConfigError, load_config
from pipeline.sweep_space import configurations, select_full_round, select_top_k
from stages.sweep import dataset_name


def _cfg(*sets):
    """The default config at fp32 (its `auto` precision would follow this machine's CPU)."""
    return load_config(None, ["sweep.precision=fp32", "sample.precision=fp32", *sets])


def test_default_space_covers_every_kind_and_folds_strength_zero_into_unguided():
    cfg = _cfg()
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    kinds = {c.guidance for c in configs}
    assert kinds == {"none", "cfg", "classifier", "autoguidance", "pag"}
    # cfg w=0 is the conditional model: one "none" trial per (p_uncond, sampler, steps), not two
    per_cell = len(cfg.train.p_uncond) * len(cfg.sweep.samplers) * len(cfg.sweep.steps)
    assert sum(c.guidance == "none" for c in configs) == per_cell
    assert sum(c.guidance == "cfg" for c in configs) == per_cell * sum(w > 0 for w in cfg.sweep.guidance["cfg"])
    assert len({c.id for c in configs}) == len(configs)
    assert all(c.strength > 0 for c in configs if c.guidance != "none")


def test_ids_are_stable_and_depend_on_every_setting():
    cfg = _cfg()
    a = configurations(cfg.sweep, cfg.train.p_uncond)
    b = configurations(cfg.sweep, cfg.train.p_uncond)
    assert [c.id for c in a] == [c.id for c in b]
    c = next(c for c in a if c.guided)  # the unguided model has no strength to vary
    ids = {c.id}
    for key, value in (("steps", 7), ("p_uncond", 0.5), ("sampler", "ddpm"), ("seed", 3), ("strength", 9.0),
                       ("eta", 0.3), ("class_dist", "uniform")):
        ids.add(replace(c, **{key: value}).id)
    assert len(ids) == 8


def test_the_sample_section_does_not_touch_the_sweep():
    """`sample` configures the single sample/evaluate run; changing it re-runs no sweep."""
    from pipeline.graph import build_instances, load_stages

    stages = load_stages()
    keys = [{i.name: i.key for i in build_instances(stages, _cfg(*sets))} for sets in ((), ("sample.strength=3.0",
                                                                                           "sample.eta=0.5"))]
    assert keys[0]["sweep"] == keys[1]["sweep"] and keys[0]["sample"] != keys[1]["sample"]


def test_p_uncond_selects_models_and_cfg_needs_an_unconditional_model():
    cfg = _cfg("train.p_uncond=[0.0,0.1,0.2]", "sweep.p_uncond=[0.0,0.2]")
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert {c.p_uncond for c in configs} == {0.0, 0.2}
    assert not [c for c in configs if c.guidance == "cfg" and c.p_uncond == 0.0]
    assert [c for c in configs if c.guidance == "classifier" and c.p_uncond == 0.0]


def test_eta_applies_to_ddim_only():
    cfg = _cfg("sweep.eta=0.5", "sweep.samplers=[ddim,ddpm]")
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert {c.eta for c in configs if c.sampler == "ddim"} == {0.5}
    assert {c.eta for c in configs if c.sampler == "ddpm"} == {0.0}


def test_top_k_per_guidance_kind_by_fd_evalnet():
    rows = [{"config_id": f"{kind}{i}", "guidance": kind, "fd_evalnet": fd}
            for kind, fds in (("cfg", [3.0, 1.0, 2.0]), ("pag", [5.0, 4.0]), ("none", [9.0]))
            for i, fd in enumerate(fds)]
    assert select_top_k(rows, 2) == ["cfg1", "cfg2", "pag1", "pag0", "none0"]
    assert select_top_k(rows, 1) == ["cfg1", "pag1", "none0"]


def test_top_k_falls_back_to_fid_and_fails_without_either():
    rows = [{"config_id": "a", "guidance": "cfg", "fid": 2.0}, {"config_id": "b", "guidance": "cfg", "fid": 1.0}]
    assert select_top_k(rows, 1) == ["b"]
    with pytest.raises(ValueError, match="fd_evalnet"):
        select_top_k([{"config_id": "a", "guidance": "cfg"}], 1)


def _screened(kind, metric, values_and_intervals):
    return [{"config_id": f"{kind}{i}", "guidance": kind, metric: v, f"{metric}_ci_low": lo, f"{metric}_ci_high": hi}
            for i, (v, lo, hi) in enumerate(values_and_intervals)]


def test_the_full_round_keeps_what_is_not_clearly_worse_than_the_best_of_its_kind():
    rows = (_screened("cfg", "fd_evalnet", [(1.0, 0.8, 1.2), (1.1, 0.9, 1.4), (2.0, 1.7, 2.3), (1.15, 1.0, 1.3)])
            + _screened("pag", "fd_evalnet", [(5.0, 4.0, 6.0), (3.0, 2.9, 3.1)]))
    selection = select_full_round(rows, 4)
    assert selection.metric == "fd_evalnet"
    # cfg2's interval [1.7, 2.3] lies above the best's [0.8, 1.2]: clearly worse, left out though top_k allows 4
    assert selection.config_ids == ["cfg0", "cfg1", "cfg3", "pag1"]
    cfg = selection.kinds[0]
    assert (cfg.kind, cfg.screened, cfg.not_clearly_worse, cfg.capped) == ("cfg", 4, ["cfg0", "cfg1", "cfg3"], 0)
    # top_k caps: the best first, and the log line says what the cap left out
    capped = select_full_round(rows, 2)
    assert capped.config_ids == ["cfg0", "cfg1", "pag1"] and capped.kinds[0].capped == 1
    text = capped.describe({"cfg0": "cfg w=1"})
    assert "cfg w=1, cfg1 (1 more not clearly worse, over sweep.top_k = 2)" in text and "3 of 4" in text
    assert select_top_k(rows, 2) == capped.config_ids
    with pytest.raises(ValueError, match="top_k"):
        select_full_round(rows, 0)


def test_without_a_cap_the_full_round_keeps_every_configuration_not_clearly_worse():
    rows = _screened("cfg", "fd_evalnet", [(1.0, 0.5, 1.5)] + [(1.1 + i / 10, 1.0, 2.0) for i in range(6)]
                     + [(3.0, 2.5, 3.5)])
    selection = select_full_round(rows, None)
    assert selection.config_ids == [f"cfg{i}" for i in range(7)] and selection.kinds[0].capped == 0
    assert "at most" not in selection.describe({}) and "[7 of 8 overlap the best]" in selection.describe({})
    assert select_full_round(rows, 3).config_ids == ["cfg0", "cfg1", "cfg2"]
    # sweep.top_k: null in the configuration is no cap; 0 is refused before any work
    assert _cfg("sweep.top_k=null").sweep.top_k is None
    with pytest.raises(ConfigError, match="top_k"):
        _cfg("sweep.top_k=0")


def test_the_full_round_is_chosen_by_the_leaderboards_ranking_metric():
    """FID when the screening rows have it (the Inception weights are there), not fd_evalnet."""
    import pandas as pd

    from pipeline import leaderboard as lb

    rows = [{"config_id": "a", "guidance": "cfg", "fid": 3.0, "fd_evalnet": 1.0},
            {"config_id": "b", "guidance": "cfg", "fid": 2.0, "fd_evalnet": 2.0},
            {"config_id": "c", "guidance": "none", "fid": None, "fd_evalnet": 0.5},
            {"config_id": "d", "guidance": "none", "fid": 4.0, "fd_evalnet": 0.7}]
    selection = select_full_round(rows, 1)
    table = lb.rank(pd.DataFrame(rows).assign(dataset="d", protocol="p"))
    assert selection.metric == "fid" == table["ranked_by"].iloc[0]
    assert selection.config_ids == ["b", "d"]  # a row without the metric is not a candidate
    assert table.iloc[0]["config_id"] == "b"
    # the intervals of the ranking metric decide, not another metric's
    rows = [{**r, "fid_ci_low": r["fid"] and r["fid"] - 0.1, "fid_ci_high": r["fid"] and r["fid"] + 0.1,
             "fd_evalnet_ci_low": 0.0, "fd_evalnet_ci_high": 10.0} for r in rows]
    assert select_full_round(rows, 3).config_ids == ["b", "d"]


def test_dataset_names():
    assert dataset_name(_cfg().data) == "digits-8px"
    from types import SimpleNamespace

    assert dataset_name(SimpleNamespace(source="generated", path=None, resolution=64)) == "generated-64px"
    assert dataset_name(SimpleNamespace(source="imagenet_tars", path="/data/ilsvrc", resolution=64)) == "imagenet-64px"
    assert dataset_name(SimpleNamespace(source="imagefolder", path="s3://b/flowers/", resolution=32)) == "flowers-32px"


def test_bf16_precision_marks_every_configuration_and_leaves_fp32_ids_alone():
    fp32 = configurations(_cfg().sweep, [0.1])
    bf16 = configurations(_cfg("sweep.precision=bf16").sweep, [0.1])
    assert all("precision" not in c.identity for c in fp32)  # ids of sweeps run before the option stay valid
    assert all(c.precision == "bf16" and c.name.endswith("-bf16") for c in bf16)
    assert not {c.id for c in fp32} & {c.id for c in bf16}
    with pytest.raises(ValueError, match="sweep.precision"):
        _cfg("sweep.precision=fp16")


def test_ids_made_before_the_typed_configuration_still_name_the_same_images():
    """Ids are sha256 of the settings; settings added later (interval, PAG layers, precision, net
    batch) are left out at the value earlier configurations implicitly had, so the ids of earlier
    sweeps (e.g. in MLflow) still name these configurations, and a change of images changes the id."""
    by_name = {c.name: c for c in configurations(_cfg().sweep, [0.1, 0.2])}
    assert by_name["cfg-w2-ddim10-p0.1"].id == "97a19c2cbdef"
    assert by_name["none-ddim10-p0.1"].id == "40a8b6703da4"
    pag = by_name["pag-w1-ddim10-p0.1"]
    assert replace(pag, pag_layers="all").id == "eb519271b88e"  # every layer perturbed, as before
    assert pag.id != "eb519271b88e"  # the paper's layers make other images


def test_the_space_sweeps_guidance_intervals_and_pag_layers_for_guided_configurations_only():
    sweep = _cfg("sweep.guidance={none: [0.0], cfg: [1.0], pag: [1.0]}", "sweep.guidance_interval=[null, [0.2, 0.8]]",
                 "sweep.pag_layers=[paper, all]", "sweep.steps=[10]").sweep
    configs = configurations(sweep, [0.1])
    assert sorted(c.name for c in configs) == sorted([
        "none-ddim10-p0.1", "cfg-w1-ddim10-p0.1", "cfg-w1-i0.2-0.8-ddim10-p0.1", "pag-w1-ddim10-p0.1",
        "pag-w1-layersall-ddim10-p0.1", "pag-w1-i0.2-0.8-ddim10-p0.1", "pag-w1-i0.2-0.8-layersall-ddim10-p0.1"])
    assert len({c.id for c in configs}) == len(configs)


def test_net_batch_is_resolved_by_the_trials_device_and_is_part_of_the_identity():
    cpu = configurations(_cfg().sweep, [0.1])
    gpu = configurations(_cfg("sweep.use_gpu=true").sweep, [0.1])
    assert {c.net_batch for c in cpu} == {64} and {c.net_batch for c in gpu} == {256}
    assert not {c.id for c in cpu} & {c.id for c in gpu}
    assert {c.net_batch for c in configurations(_cfg("sweep.net_batch=32").sweep, [0.1])} == {32}


def _imports(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def test_the_trial_body_is_a_helper_of_the_sweep_stage_and_no_stage_imports_another():
    """stages/sweep_trial.py runs inside the sweep's Tune trials: stage code, so it lives in
    stages/ (it is no stage: no STAGE), and the library does not import it."""
    import importlib
    from pathlib import Path

    from pipeline.graph import STAGE_MODULES

    root = Path(__file__).resolve().parent.parent
    assert not hasattr(importlib.import_module("stages.sweep_trial"), "STAGE")
    for path in (root / "pipeline").rglob("*.py"):
        assert not [n for n in _imports(path) if n.startswith("stages.sweep_trial") or n == "stages.sweep"], path
    for path in (root / "stages").glob("*.py"):
        others = set(STAGE_MODULES) - {f"stages.{path.stem}"}
        assert not _imports(path) & others, path
