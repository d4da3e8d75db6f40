import math

import pytest
import torch

from pipeline.diffusion.forward import q_sample
from pipeline.diffusion.losses import (ImportanceTimestepSampler, UniformTimestepSampler, diffusion_loss,
                                       discretized_gaussian_log_likelihood, vlb_terms)
from pipeline.diffusion.schedules import make_schedule


def _leaf_net(out):
    """A 'network' whose output is a leaf tensor, so gradients w.r.t. each output channel are visible."""
    return lambda x_t, t, labels: out


def test_hybrid_loss_mean_learns_only_from_l_simple():
    schedule = make_schedule("cosine", 1000)
    torch.manual_seed(1)
    x0 = torch.rand(4, 3, 4, 4) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 3, 500, 999])
    out = torch.randn(4, 6, 4, 4).mul(0.5).requires_grad_(True)
    losses = diffusion_loss(_leaf_net(out), schedule, x0, t, noise, learned_sigma=True)
    assert set(losses) == {"loss", "mse", "vlb"}

    (grad_vlb,) = torch.autograd.grad(losses["vlb"].sum(), out, retain_graph=True)
    assert torch.count_nonzero(grad_vlb[:, :3]) == 0  # stop-gradient: L_vlb never moves the mean
    assert torch.count_nonzero(grad_vlb[:, 3:]) > 0   # ... but it trains the variance
    (grad_total,) = torch.autograd.grad(losses["loss"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(losses["mse"].sum(), out)
    torch.testing.assert_close(grad_total[:, :3], grad_mse[:, :3])
    # hybrid = L_simple + 0.001 * T * L_t
    torch.testing.assert_close(losses["loss"], losses["mse"] + 0.001 * 1000 * losses["vlb"])


def test_l_simple_for_fixed_variance_is_eps_mse():
    schedule = make_schedule("linear", 1000)
    x0, noise = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    t = torch.tensor([1, 2, 3])
    perfect = diffusion_loss(_leaf_net(noise), schedule, x0, t, noise)
    assert float(perfect["loss"].abs().max()) == 0.0
    off = diffusion_loss(_leaf_net(noise + 0.5), schedule, x0, t, noise)
    torch.testing.assert_close(off["loss"], torch.full((3,), 0.25))


def test_vlb_is_zero_for_the_true_posterior_and_positive_otherwise():
    schedule = make_schedule("cosine", 1000)
    x0 = torch.rand(3, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 400, 900])
    x_t = q_sample(schedule, x0, t, noise)
    true_log_var = schedule.posterior_variance[t].log().reshape(-1, 1, 1, 1).expand_as(x0)
    exact = vlb_terms(schedule, x0, x_t, t, noise, true_log_var)
    assert float(exact.abs().max()) < 1e-9
    wrong = vlb_terms(schedule, x0, x_t, t, noise + 0.1, true_log_var + 0.3)
    assert bool((wrong > 1e-6).all())


def test_decoder_nll_at_t0_uses_discretized_gaussian():
    # a sharp Gaussian centred on a pixel value puts ~all mass in that pixel's bin: ~0 bits
    x = torch.tensor([-1.0, 0.0039215686, 1.0], dtype=torch.float64)
    log_p = discretized_gaussian_log_likelihood(x, x, torch.full_like(x, math.log(1e-4)))
    assert float(log_p.abs().max()) < 1e-6
    # a broad Gaussian: the bin mass is ~ bin width times the density
    log_p = discretized_gaussian_log_likelihood(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert float(log_p) == pytest.approx(math.log(2 / 255 / math.sqrt(2 * math.pi)), abs=1e-4)
    schedule = make_schedule("cosine", 1000)
    x0 = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    t = torch.tensor([0])
    term = vlb_terms(schedule, x0, x0, t, torch.zeros_like(x0), torch.full_like(x0, math.log(1e-3)))
    zero = torch.tensor(0.0, dtype=torch.float64)
    expected = -discretized_gaussian_log_likelihood(zero, zero, zero + 0.5 * math.log(1e-3))
    assert float(term) == pytest.approx(float(expected) / math.log(2), rel=1e-9)


def test_importance_sampler_uniform_until_full_then_sqrt_second_moment():
    T = 5
    sampler = ImportanceTimestepSampler(T, history=10, uniform_prob=0.0)
    losses_per_t = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    for _ in range(10):
        sampler.update(torch.arange(T - 1), losses_per_t[: T - 1])
    sampler.update(torch.tensor([T - 1] * 9), torch.full((9,), 5.0))
    torch.testing.assert_close(sampler.probabilities(), torch.full((T,), 0.2, dtype=torch.float64))
    t, weights = sampler.sample(64, torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights, torch.ones(64))

    sampler.update(torch.tensor([T - 1]), torch.tensor([5.0]))  # the last history fills up
    assert sampler.warmed_up()
    expected = losses_per_t.double() / losses_per_t.sum()
    torch.testing.assert_close(sampler.probabilities(), expected)
    t, weights = sampler.sample(20000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights, (1 / (T * expected[t])).float())
    freq = torch.bincount(t, minlength=T).double() / t.numel()
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)

    # sqrt(E[L^2]) over the last 10 values only: an old value rolls out of the window
    sampler.update(torch.tensor([0] * 10), torch.tensor([2.0] * 5 + [-2.0] * 5))
    rms = torch.tensor([2.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(sampler.probabilities(), rms / rms.sum())

    mixed = ImportanceTimestepSampler(T, uniform_prob=0.001)
    mixed.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(mixed.probabilities(), rms / rms.sum() * 0.999 + 0.001 / T)


def test_importance_sampler_state_round_trips_as_plain_tensors():
    sampler = ImportanceTimestepSampler(4, history=3)
    sampler.update(torch.tensor([0, 1, 1]), torch.tensor([0.5, 1.5, 2.5]))
    state = sampler.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    restored = ImportanceTimestepSampler(4, history=3)
    restored.load_state_dict({k: v.clone() for k, v in state.items()})
    assert restored.counts.tolist() == [1, 2, 0, 0]
    torch.testing.assert_close(restored.loss_history, sampler.loss_history)
    with pytest.raises(ValueError):
        ImportanceTimestepSampler(5, history=3).load_state_dict(state)
    t, w = UniformTimestepSampler(7).sample(5, torch.Generator().manual_seed(0))
    assert t.shape == (5,) and bool((t < 7).all()) and bool((w == 1).all())
