"""The shared Ray Train machinery on digits with 2 workers: exact resume after a worker is
killed and after the driver is stopped, the non-finite-loss stop, the resource check."""
import pytest
import torch
from ray.train import WorkerGroupError

from pipeline.resources import NotEnoughResourcesError
from pipeline.training.evalnet import EvalnetTask
from pipeline.training.spec import TrainSpec, WorkerCrash
from pipeline.training.state import TrainState
from pipeline.training.trainer import NonFiniteLossError, fit
from pipeline.weights import EvalnetArch
from tests.training.tasks import NanOnRankAfterSteps

ARCH = EvalnetArch(in_channels=3, num_classes=10, width=16, blocks_per_stage=(1, 1))
# 40 steps of 64 images; checkpoints every 640 images
SPEC = TrainSpec(kimg=2.56, batch_size=64, lr=2e-3, num_workers=2, seed=5, warmup_kimg=0.5, grad_clip=1.0,
                 ema_decays=(0.9,), checkpoint_kimg=0.64, keep_checkpoints=2, log_kimg=0.32)


@pytest.fixture(scope="module")
def uninterrupted(digits_shards, tmp_path_factory):
    return fit(EvalnetTask(ARCH), SPEC, digits_shards, str(tmp_path_factory.mktemp("plain"))).state


def assert_same_training(a: TrainState, b: TrainState):
    assert a.nimg == b.nimg == 2560
    assert a.losses == b.losses  # every step's loss, bit for bit
    for name in ("model", "optimizer"):
        assert_equal_tree(getattr(a, name), getattr(b, name))
    assert_equal_tree(a.ema, b.ema)


def assert_equal_tree(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_equal_tree(x, y)
    else:
        assert a == b


def test_killed_worker_resumes_exactly(digits_shards, uninterrupted, tmp_path):
    marker = tmp_path / "crashed"
    spec = TrainSpec(**{**SPEC.__dict__, "crash": WorkerCrash(rank=1, after_nimg=1600, marker=str(marker))})
    resumed = fit(EvalnetTask(ARCH), spec, digits_shards, str(tmp_path / "storage")).state
    assert marker.exists()
    assert resumed.resumes == [1280]  # the newest checkpoint before the crash at 1600
    assert_same_training(resumed, uninterrupted)
    # where the workers ran, for the first start and for the resume (the local instance's one node)
    import ray

    head = {"node_id": ray.get_runtime_context().get_node_id(), "node_type": "head"}
    assert uninterrupted.workers == [{"rank": r, **head, "since_nimg": 0} for r in (0, 1)]
    assert resumed.workers == [{"rank": r, **head, "since_nimg": n} for n in (0, 1280) for r in (0, 1)]


@pytest.mark.slow
def test_rerun_after_failed_driver_resumes_exactly(digits_shards, uninterrupted, tmp_path):
    marker, storage = tmp_path / "crashed", str(tmp_path / "storage")
    crashing = TrainSpec(**{**SPEC.__dict__, "max_failures": 0,
                            "crash": WorkerCrash(rank=0, after_nimg=1600, marker=str(marker))})
    with pytest.raises(WorkerGroupError):
        fit(EvalnetTask(ARCH), crashing, digits_shards, storage)
    assert marker.exists()
    resumed = fit(EvalnetTask(ARCH), SPEC, digits_shards, storage).state
    assert resumed.resumes == [1280]
    assert_same_training(resumed, uninterrupted)


def test_non_finite_loss_stops_with_a_clear_error(digits_shards, tmp_path):
    spec = TrainSpec(**{**SPEC.__dict__, "checkpoint_kimg": 0.128})
    task = NanOnRankAfterSteps(ARCH, bad_rank=1, bad_step=7)
    with pytest.raises(NonFiniteLossError) as caught:
        fit(task, spec, digits_shards, str(tmp_path))
    message = str(caught.value)
    assert "non-finite loss (nan) at step 7, after 384 images seen" in message
    assert f"the last good checkpoint is kept: checkpoint_000000000384 (384 images) in {tmp_path}/train" in message
    assert TrainState.load(str(tmp_path / "train" / "checkpoint_000000000384")).nimg == 384


def test_more_workers_than_cpus_is_refused_before_starting(ray_local, tmp_path):
    spec = TrainSpec(**{**SPEC.__dict__, "num_workers": 4})
    with pytest.raises(NotEnoughResourcesError, match="4 training workers need 4 CPUs .* the Ray cluster has 2"):
        fit(EvalnetTask(ARCH), spec, "unused", str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_batch_must_split_evenly_across_workers():
    with pytest.raises(ValueError, match="not divisible by num_workers"):
        TrainSpec(kimg=1, batch_size=63, lr=1e-3, num_workers=2).validate()
