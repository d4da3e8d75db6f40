"""generate's fast path (pipeline.generation.inference): channels-last networks, bf16 as a bf16
copy; fp32 images stay what an NCHW evaluation makes (to 1 uint8 level) and batch-invariant."""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.diffusion.denoiser import NetworkDenoiser
from pipeline.diffusion.guidance import ClassifierFreeGuidance
from pipeline.diffusion.samplers import sample_ddim
from pipeline.diffusion.seeding import trial_noise
from pipeline.generation import SamplerConfig, generate, labels_for, load_models, sampling_schedule, to_uint8
from pipeline.generation.batching import FixedBatch
from pipeline.generation.inference import prepare
from pipeline.nets.layers import GroupNorm, group_norm_input
from pipeline.nets.unet import UNet
from tests.generation.conftest import NUM_CLASSES, UNET, randomized


def _inputs(n: int = 11):
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(n, 3, 8, 8, generator=generator), torch.randint(0, 100, (n,), generator=generator),
            torch.randint(0, NUM_CLASSES + 1, (n,), generator=generator))


def test_fp32_fast_path_keeps_the_values_and_converts_in_place():
    net = randomized(UNet(**UNET), 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, t, y = _inputs()
    with torch.inference_mode():
        reference = net(x, t, y)
        fast = prepare(net, "fp32")
        out = fast(x, t, y)
    assert fast.net is net and fast.num_classes == NUM_CLASSES  # in place; attributes fall through
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.input_blocks[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_bf16_fast_path_is_a_copy_and_returns_float32():
    net = randomized(UNet(**UNET), 0)
    x, t, y = _inputs()
    with torch.inference_mode():
        reference = net(x, t, y)
        fast = prepare(net, "bf16")
        out = fast(x, t, y)
    assert fast.net is not net and next(net.parameters()).dtype == torch.float32
    assert next(fast.net.parameters()).dtype == torch.bfloat16 and out.dtype == torch.float32
    error = (out - reference).abs()
    assert 0 < float(error.max()) and float(error.mean()) < 0.05 * float(reference.abs().mean())


def test_rows_do_not_depend_on_their_batch_on_the_fast_path():
    for precision in ("fp32", "bf16"):
        fast = FixedBatch(prepare(randomized(UNet(**UNET), 0), precision), 4)
        x, t, y = _inputs()
        with torch.inference_mode():
            whole = fast(x, t, y)
            parts = torch.cat([fast(x[:3], t[:3], y[:3]), fast(x[3:], t[3:], y[3:])])
            reversed_rows = fast(x.flip(0), t.flip(0), y.flip(0)).flip(0)
        assert torch.equal(whole, parts) and torch.equal(whole, reversed_rows), precision


def test_generate_fp32_images_are_an_nchw_evaluations_to_one_level(tiny_models):
    """The fast path changes kernels, not the math: against the same trial sampled with the
    network as loaded (NCHW, no inference-net wrapper), no pixel moves by more than 1 level."""
    config = SamplerConfig(guidance="cfg", strength=1.5, sampler="ddim", steps=6, seed=3, net_batch=8)
    models = load_models(config, tiny_models["diffusion"])
    reference_net = copy.deepcopy(models.main.net)
    images, labels = generate(config, models, range(12), batch_size=12)

    denoiser = ClassifierFreeGuidance(NetworkDenoiser(FixedBatch(reference_net, 8), learned_sigma=True), 1.5,
                                      NUM_CLASSES)
    x_T, _ = trial_noise(config.seed, range(12), (3, 8, 8))
    with torch.inference_mode():
        x0 = sample_ddim(denoiser, x_T, sampling_schedule(config, models), labels_for(config, range(12), NUM_CLASSES))
    reference = to_uint8(x0)
    difference = np.abs(images.astype(int) - reference.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01, (difference.max(), (difference > 0).mean())
    assert images.std() > 5


def test_group_norm_reads_small_channels_last_bf16_maps_from_an_nchw_copy():
    small = torch.randn(2, 64, 8, 8).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    large = torch.randn(2, 64, 32, 32).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert group_norm_input(small).is_contiguous()
    assert group_norm_input(large) is large  # 32 x 32 and larger: PyTorch's channels-last kernel is fast
    small_fp32 = small.float().contiguous(memory_format=torch.channels_last)
    assert group_norm_input(small_fp32) is small_fp32  # fp32 keeps its layout (and its kernel)
    norm = randomized(GroupNorm(32, 64), 0)
    weight, bias = norm.weight.detach().clone(), norm.bias.detach().clone()
    norm = norm.to(torch.bfloat16)
    for x in (small, large):
        expected = F.group_norm(x.float(), 32, weight, bias, norm.eps)
        with torch.inference_mode():
            torch.testing.assert_close(norm(x).float(), expected, rtol=0.05, atol=0.05)
