"""A sweep trial's row (what trials.parquet and the trial's MLflow run are made of) carries every
metric's interval as <metric>_ci_low / <metric>_ci_high, through the real sampling and scoring."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pandas as pd

from tests.generation.conftest import P_UNCOND

METRICS = ("fd_evalnet", "kid_evalnet_mean", "precision_evalnet", "recall_evalnet", "is_evalnet", "class_accuracy")


def test_a_sweep_trial_row_carries_every_metric_interval(tiny_models, tiny_references, tmp_path):
    from pipeline.generation.sampler_config import SamplerConfig
    from stages.sweep_trial import SCREEN, TrialInputs, run_trial

    eval_cfg = SimpleNamespace(extractors=["evalnet"], inception_weights=None, require_inception=False,
                               pr_neighbours=3, batch_size=16)
    inputs = TrialInputs(out_uri=str(tmp_path), diffusion={P_UNCOND: tiny_models["diffusion"]}, classifier=None,
                         evalnet=tiny_models["evalnet"], reference_stats=tiny_references, eval_cfg=eval_cfg,
                         batch_size=20, dataset="tiny-8px")
    config = SamplerConfig(guidance="none", strength=0.0, sampler="ddim", steps=3, eta=0.0, p_uncond=P_UNCOND,
                           class_dist="balanced", seed=0)
    row = run_trial(config, SCREEN, 40, inputs)
    for name in METRICS:
        assert row[f"{name}_ci_low"] <= row[name] or name == "fd_evalnet"  # FD's is bias-corrected
        assert row[f"{name}_ci_low"] <= row[f"{name}_ci_high"]
    buf = io.BytesIO()
    pd.DataFrame([row]).to_parquet(buf, index=False)  # as the sweep writes trials.parquet
    table = pd.read_parquet(io.BytesIO(buf.getvalue()))
    assert {f"{name}_ci_{side}" for name in METRICS for side in ("low", "high")} <= set(table.columns)
