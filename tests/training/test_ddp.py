"""DDP really averages gradients: two workers at half the per-worker batch end with the weights
of one worker on the whole batch (to float tolerance), while one worker on half the batch (what
a rank would do if gradients were not averaged) ends elsewhere."""
import pytest
import torch

from pipeline.training.spec import TrainSpec
from pipeline.training.trainer import fit
from tests.training.tasks import FixedGlobalBatch

SPEC = TrainSpec(kimg=0.64, batch_size=64, lr=1e-2, num_workers=1, seed=7, grad_clip=1.0, checkpoint_kimg=0.64,
                 log_kimg=0.64)  # 10 steps


def _weights(digits_shards, tmp_path, num_workers, global_batch):
    spec = TrainSpec(**{**SPEC.__dict__, "num_workers": num_workers})
    state = fit(FixedGlobalBatch(global_batch=global_batch), spec, digits_shards, str(tmp_path)).state
    assert state.nimg == 640
    return state.model


def _max_difference(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_two_workers_at_half_the_batch_take_the_steps_of_one_worker(digits_shards, tmp_path):
    one = _weights(digits_shards, tmp_path / "one", num_workers=1, global_batch=64)
    two = _weights(digits_shards, tmp_path / "two", num_workers=2, global_batch=64)
    half = _weights(digits_shards, tmp_path / "half", num_workers=1, global_batch=32)  # rank 0's half alone
    torch.manual_seed(SPEC.seed)
    start = FixedGlobalBatch().build_model().state_dict()
    assert _max_difference(one, start) > 1e-2  # it trained
    assert _max_difference(two, one) < 1e-5
    assert _max_difference(half, one) > 1e-3
