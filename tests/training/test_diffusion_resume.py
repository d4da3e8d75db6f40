"""Exact resume of DiffusionTask on digits with 2 workers: after a worker is killed (Ray's
FailureConfig restarts it from the last checkpoint) and after the driver fails and the same
call is made again. Importance sampling on a 20-step schedule, so the sampler is warm after
the first steps and resuming without its history would draw other timesteps."""
import pytest
import torch
from ray.train import WorkerGroupError

from pipeline.training.diffusion import DiffusionTask
from pipeline.training.spec import TrainSpec, WorkerCrash
from pipeline.training.trainer import fit
from tests.training.test_machinery import assert_equal_tree

UNET = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_head_channels=16, num_classes=10, resblock_updown=True, dropout=0.1)
DIFFUSION = {"timesteps": 20, "schedule": "cosine", "lambda_min": -20.0, "lambda_max": 20.0, "loss": "simple"}
TASK = DiffusionTask(UNET, DIFFUSION, p_uncond=0.2, importance_sampling=True)
# 20 steps of 64 images; checkpoints every 320 images; EMA snapshot at 0.5 kimg
SPEC = TrainSpec(kimg=1.28, batch_size=64, lr=1e-3, num_workers=2, seed=3, warmup_kimg=0.2, grad_clip=1.0,
                 ema_decays=(0.9,), checkpoint_kimg=0.32, keep_checkpoints=2, log_kimg=0.32, snapshot_kimg=(0.5,))


@pytest.fixture(scope="module")
def uninterrupted(digits_shards, tmp_path_factory):
    return fit(TASK, SPEC, digits_shards, str(tmp_path_factory.mktemp("plain"))).state


def assert_same_training(a, b):
    assert a.nimg == b.nimg == 1280
    assert a.losses == b.losses  # every step's loss, bit for bit
    for name in ("model", "optimizer", "ema", "task", "snapshots"):
        assert_equal_tree(getattr(a, name), getattr(b, name))
    assert [r["loss_t_q0"] for r in a.records] == [r["loss_t_q0"] for r in b.records]


def test_uninterrupted_run_keeps_sampler_history_quartiles_and_snapshot(uninterrupted):
    history = uninterrupted.task["timestep_sampler"]
    assert bool((history["counts"] == 10).all())  # warmed up: t is importance-sampled
    assert list(uninterrupted.snapshots) == ["512"]
    assert set(uninterrupted.snapshots["512"]) == set(uninterrupted.model)
    record = uninterrupted.records[-1]
    assert {f"loss_t_q{q}" for q in range(4)} <= set(record)
    assert all(torch.isfinite(torch.tensor(v)) for v in record.values())


def test_killed_worker_resumes_exactly(digits_shards, uninterrupted, tmp_path):
    marker = tmp_path / "crashed"
    spec = TrainSpec(**{**SPEC.__dict__, "crash": WorkerCrash(rank=1, after_nimg=800, marker=str(marker))})
    resumed = fit(TASK, spec, digits_shards, str(tmp_path / "storage")).state
    assert marker.exists()
    assert resumed.resumes == [640]
    assert_same_training(resumed, uninterrupted)


@pytest.mark.slow
def test_rerun_after_failed_driver_resumes_exactly(digits_shards, uninterrupted, tmp_path):
    marker, storage = tmp_path / "crashed", str(tmp_path / "storage")
    crashing = TrainSpec(**{**SPEC.__dict__, "max_failures": 0,
                            "crash": WorkerCrash(rank=0, after_nimg=800, marker=str(marker))})
    with pytest.raises(WorkerGroupError):
        fit(TASK, crashing, digits_shards, storage)
    assert marker.exists()
    resumed = fit(TASK, SPEC, digits_shards, storage).state
    assert resumed.resumes == [640]
    assert_same_training(resumed, uninterrupted)
