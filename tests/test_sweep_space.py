"""The sweep's configurations and its multi-fidelity selection (plain data, no Ray)."""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.sweep_space import config_id, configurations, select_top_k
from stages.sweep import dataset_name


def _cfg(*sets):
    return load_config(None, list(sets))


def test_default_space_covers_every_kind_and_folds_strength_zero_into_unguided():
    cfg = _cfg()
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    kinds = {c["guidance"] for c in configs}
    assert kinds == {"none", "cfg", "classifier", "autoguidance", "pag"}
    # cfg w=0 is the conditional model: one "none" trial per (p_uncond, sampler, steps), not two
    per_cell = len(cfg.train.p_uncond) * len(cfg.sweep.samplers) * len(cfg.sweep.steps)
    assert sum(c["guidance"] == "none" for c in configs) == per_cell
    assert sum(c["guidance"] == "cfg" for c in configs) == per_cell * sum(w > 0 for w in cfg.sweep.w)
    assert len({c["config_id"] for c in configs}) == len(configs)
    assert all(c["strength"] > 0 for c in configs if c["guidance"] != "none")


def test_ids_are_stable_and_depend_on_every_setting():
    cfg = _cfg()
    a = configurations(cfg.sweep, cfg.train.p_uncond)
    b = configurations(cfg.sweep, cfg.train.p_uncond)
    assert [c["config_id"] for c in a] == [c["config_id"] for c in b]
    c = dict(a[1])
    ids = {config_id(c)}
    for key, value in (("steps", 7), ("p_uncond", 0.5), ("sampler", "ddpm"), ("seed", 3), ("strength", 9.0),
                       ("eta", 0.3), ("class_dist", "uniform")):
        ids.add(config_id({**c, key: value}))
    assert len(ids) == 8


def test_the_sample_section_does_not_touch_the_sweep():
    """`sample` configures the single sample/evaluate run; changing it re-runs no sweep."""
    from pipeline.graph import build_instances, load_stages

    stages = load_stages()
    keys = [{i.name: i.key for i in build_instances(stages, _cfg(*sets))} for sets in ((), ("sample.w=3.0",
                                                                                           "sample.eta=0.5"))]
    assert keys[0]["sweep"] == keys[1]["sweep"] and keys[0]["sample"] != keys[1]["sample"]


def test_p_uncond_selects_models_and_cfg_needs_an_unconditional_model():
    cfg = _cfg("train.p_uncond=[0.0,0.1,0.2]", "sweep.p_uncond=[0.0,0.2]")
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert {c["p_uncond"] for c in configs} == {0.0, 0.2}
    assert not [c for c in configs if c["guidance"] == "cfg" and c["p_uncond"] == 0.0]
    assert [c for c in configs if c["guidance"] == "classifier" and c["p_uncond"] == 0.0]


def test_eta_applies_to_ddim_only():
    cfg = _cfg("sweep.eta=0.5", "sweep.samplers=[ddim,ddpm]")
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert {c["eta"] for c in configs if c["sampler"] == "ddim"} == {0.5}
    assert {c["eta"] for c in configs if c["sampler"] == "ddpm"} == {0.0}


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


def test_dataset_names():
    assert dataset_name(_cfg().data) == "digits-8px"
    from types import SimpleNamespace

    assert dataset_name(SimpleNamespace(source="generated", path=None, resolution=64)) == "generated-64px"
    assert dataset_name(SimpleNamespace(source="imagenet_tars", path="/data/ilsvrc", resolution=64)) == "imagenet-64px"
    assert dataset_name(SimpleNamespace(source="imagefolder", path="s3://b/flowers/", resolution=32)) == "flowers-32px"


def test_bf16_precision_marks_every_configuration_and_leaves_fp32_ids_alone():
    fp32 = configurations(_cfg().sweep, [0.1])
    bf16 = configurations(_cfg("sweep.precision=bf16").sweep, [0.1])
    assert all("precision" not in c for c in fp32)  # ids of sweeps run before the option stay valid
    assert all(c["precision"] == "bf16" and c["name"].endswith("-bf16") for c in bf16)
    assert not {c["config_id"] for c in fp32} & {c["config_id"] for c in bf16}
    with pytest.raises(ValueError, match="sweep.precision"):
        _cfg("sweep.precision=fp16")
