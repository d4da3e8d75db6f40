"""A new guidance kind is one wrapper plus one registry entry: a toy kind registered here goes
through config loading, the sweep's space, generation, a sweep trial and the leaderboard
((w, s), the table, the trade-off plot, reported rows) with nothing else added."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.diffusion.denoiser import as_output
from pipeline.diffusion.guidance import GUIDANCE, GuidanceKind, guidance_active, register


class TowardZeroGuidance:
    """A toy wrapper: eps~ = (1 + w) eps where guidance is active (extrapolates away from a
    'model' that predicts no noise)."""

    def __init__(self, denoiser, w: float, interval=None):
        self.denoiser, self.w, self.interval = denoiser, float(w), interval

    def __call__(self, x, t, labels, **kwargs):
        out = as_output(self.denoiser(x, t, labels, **kwargs))
        gain = 1 + self.w * guidance_active(t, self.interval).to(out.eps.dtype).view(-1, *[1] * (x.ndim - 1))
        return out.with_eps(gain * out.eps)


@pytest.fixture
def toy_kind():
    kind = register(GuidanceKind("toward-zero", "w", "guidance weight w (s = 1 + w)",
                                 "eps~ = (1 + w) eps (a toy)",
                                 build=lambda parts, strength, interval: TowardZeroGuidance(parts.denoiser, strength,
                                                                                            interval)))
    yield kind
    del GUIDANCE[kind.name]


def test_a_registered_kind_runs_through_the_sweep_generation_and_the_leaderboard(toy_kind, tiny_models,
                                                                                 tiny_references, tmp_path):
    from pipeline import leaderboard as lb
    from pipeline.config import EvalConfig, load_config
    from pipeline.generation import generate, load_models
    from pipeline.leaderboard.plots import leaderboard_plots
    from pipeline.sweep_space import configurations
    from stages.sweep_trial import SCREEN, TrialInputs, run_trial

    # config and sweep space: the kind is known to both once registered
    cfg = load_config(None, ["sweep.guidance={none: [0.0], toward-zero: [0.5, 2.0]}", "sweep.steps=[3]",
                             "sample.guidance=toward-zero", "train.p_uncond=[0.1]", "sample.p_uncond=0.1",
                             "sweep.precision=fp32", "sample.precision=fp32"])
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert [c.name for c in configs] == ["none-ddim3-p0.1", "toward-zero-w0.5-ddim3-p0.1", "toward-zero-w2-ddim3-p0.1"]
    toy = configs[2]
    assert (toy.w, toy.s) == (2.0, 3.0) and toy.kind is toy_kind

    # generation: its wrapper guides, batch-invariantly
    models = load_models(toy, tiny_models["diffusion"])
    images, _ = generate(toy, models, range(6), batch_size=6)
    assert np.array_equal(generate(toy, models, range(6), batch_size=4)[0], images)
    assert not np.array_equal(generate(configs[0], models, range(6), batch_size=6)[0], images)

    # a sweep trial: generated, scored, its row carries the table's (w, s)
    out = tmp_path / "sweep"
    out.mkdir()
    inputs = TrialInputs(out_uri=str(out), diffusion={0.1: tiny_models["diffusion"]}, classifier=None,
                         evalnet=tiny_models["evalnet"], reference_stats=tiny_references,
                         eval_cfg=EvalConfig(extractors=["evalnet"], batch_size=16), batch_size=8, dataset="toy-8px",
                         num_train_timesteps=100)
    torch.set_num_threads(1)
    rows = [run_trial(c, SCREEN, 8, inputs) for c in configs]
    assert [(r["guidance"], r["w"], r["s"]) for r in rows] == [("none", 0.0, 1.0), ("toward-zero", 0.5, 1.5),
                                                              ("toward-zero", 2.0, 3.0)]
    assert all(r["fd_evalnet"] is not None and r["config_id"] == c.id for r, c in zip(rows, configs))

    # the leaderboard: ranked, tabled, drawn, and reported rows of the kind get their (w, s)
    ranked = lb.rank(rows)
    assert "| toward-zero | 2 | 3 |" in lb.to_markdown(ranked)
    assert "tradeoff_fd_evalnet" in leaderboard_plots(ranked)
    reported = tmp_path / "reported.yaml"
    reported.write_text("dataset: toy-8px\nprotocol: paper\nrows:\n  - {guidance: toward-zero, w: 1.0, fid: 3.0}\n")
    row = lb.load_reported(reported).iloc[0]
    assert (row["w"], row["s"]) == (1.0, 2.0)
    assert isinstance(pd.DataFrame(rows)["strength"].iloc[0], float)
