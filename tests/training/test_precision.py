"""Mixed-precision training: fp32 is the plain loop bit for bit, bf16 and fp16 keep float32
weights and optimizer state, fp16's loss scale is checkpointed, and an interrupted bf16 run
(worker killed, data read by loader worker processes) resumes to the weights of an
uninterrupted one."""
import copy
import math

import pytest
import torch

from pipeline.training.precision import MixedPrecision
from pipeline.training.spec import TrainSpec, WorkerCrash
from pipeline.training.state import TrainState
from pipeline.training.trainer import fit
from pipeline.weights import EvalnetArch
from tests.training.tasks import SmallConvNet
from tests.training.test_machinery import assert_equal_tree


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _step(model, optimizer, precision, x, y):
    with precision.autocast():
        loss = torch.nn.functional.cross_entropy(model(x), y).float()
    optimizer.zero_grad(set_to_none=True)
    return loss, precision.backward_and_step(loss, optimizer, model.parameters(), 1.0)


def test_fp32_is_the_plain_loop_bit_for_bit():
    torch.manual_seed(0)
    a = SmallConvNet()
    b = copy.deepcopy(a)
    opt_a, opt_b = torch.optim.AdamW(a.parameters(), lr=1e-2), torch.optim.AdamW(b.parameters(), lr=1e-2)
    precision = MixedPrecision("fp32", torch.device("cpu"))
    for step in range(3):
        x, y = _batch(seed=step)
        _step(a, opt_a, precision, x, y)
        loss = torch.nn.functional.cross_entropy(b(x), y)
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), 1.0)
        opt_b.step()
    assert_equal_tree(a.state_dict(), b.state_dict())
    assert precision.state_dict() == {}


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_low_precision_computes_in_it_and_keeps_float32_state(name, dtype):
    torch.manual_seed(0)
    model = SmallConvNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    precision = MixedPrecision(name, torch.device("cpu"))
    x, y = _batch()
    with precision.autocast():
        assert model(x).dtype == dtype
    loss, grad_norm = _step(model, optimizer, precision, x, y)
    assert loss.dtype == torch.float32 and math.isfinite(float(grad_norm))
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for s in optimizer.state.values() for v in s.values() if v.dim())


def test_fp16_loss_scale_round_trips_through_the_checkpoint():
    torch.manual_seed(0)
    model = SmallConvNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    precision = MixedPrecision("fp16", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=2)
    for step in range(5):
        _step(model, optimizer, precision, *_batch(seed=step))
    state = TrainState.from_bytes(_saved(TrainState(precision="fp16", scaler=precision.state_dict())))
    assert state.scaler["scale"] == precision.scaler.get_scale() != 2.0 ** 16  # it grew
    resumed = MixedPrecision("fp16", torch.device("cpu"))
    resumed.load_state_dict(state.scaler)
    assert resumed.scaler.get_scale() == precision.scaler.get_scale()
    assert resumed.scaler.state_dict() == precision.scaler.state_dict()


def _saved(state: TrainState) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state.__dict__, buffer)
    return buffer.getvalue()


def test_spec_refuses_an_unknown_precision():
    with pytest.raises(ValueError, match="precision 'fp8'"):
        TrainSpec(kimg=1, batch_size=64, lr=1e-3, precision="fp8").validate()


ARCH = EvalnetArch(in_channels=3, num_classes=10, width=16, blocks_per_stage=(1, 1))
# 20 steps of 64 images in bf16, 2 workers each reading with 2 loader processes; checkpoints every 320
BF16 = TrainSpec(kimg=1.28, batch_size=64, lr=2e-3, num_workers=2, seed=11, warmup_kimg=0.2, grad_clip=1.0,
                 ema_decays=(0.9,), checkpoint_kimg=0.32, log_kimg=0.32, precision="bf16", loader_workers=2)


def test_interrupted_bf16_run_with_loader_workers_resumes_to_the_same_weights(digits_shards, tmp_path):
    from pipeline.training.evalnet import EvalnetTask

    plain = fit(EvalnetTask(ARCH), BF16, digits_shards, str(tmp_path / "plain")).state
    crash = WorkerCrash(rank=1, after_nimg=800, marker=str(tmp_path / "crashed"))
    resumed = fit(EvalnetTask(ARCH), TrainSpec(**{**BF16.__dict__, "crash": crash}), digits_shards,
                  str(tmp_path / "resumed")).state
    assert (tmp_path / "crashed").exists() and resumed.resumes == [640]
    assert plain.precision == resumed.precision == "bf16"
    assert plain.nimg == resumed.nimg == 1280
    assert plain.losses == resumed.losses  # every step's loss: the data stream and the bf16 steps are the same
    for name in ("model", "optimizer", "ema"):
        assert_equal_tree(getattr(plain, name), getattr(resumed, name))
    assert all(v.dtype == torch.float32 for v in plain.model.values() if v.is_floating_point())
    first, last = plain.losses[0][1], plain.losses[-1][1]
    assert last < 0.9 * first  # and it learns (2.35 -> 1.77 in these 20 steps)
