import pytest
import torch

from pipeline.diffusion.forward import (fixed_log_variance, learned_log_variance, predict_eps_from_x0,
                                        predict_x0_from_eps, q_posterior, q_sample)
from pipeline.diffusion.schedules import make_schedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_moments_match_alpha_bar(kind):
    schedule = make_schedule(kind, 1000)
    n = 40000
    x0 = torch.tensor([0.8, -0.3, 0.1], dtype=torch.float64)
    for t_value in [0, 100, 500, 999]:
        t = torch.full((n,), t_value)
        noise = torch.randn(n, 3, dtype=torch.float64)
        x_t = q_sample(schedule, x0.expand(n, 3), t, noise)
        alpha_bar = schedule.alphas_cumprod[t_value]
        sem = (1 / n) ** 0.5
        torch.testing.assert_close(x_t.mean(0), alpha_bar.sqrt() * x0, atol=5 * sem, rtol=0)
        torch.testing.assert_close(x_t.var(0), (1 - alpha_bar).expand(3), atol=6 * (2 / n) ** 0.5 * (1 - alpha_bar), rtol=0)


def test_posterior_matches_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) by Bayes: prior N(sqrt(ab_{t-1}) x0, 1 - ab_{t-1}) times the likelihood
    N(x_t; sqrt(alpha_t) x_{t-1}, beta_t), completed as a square in precision form."""
    schedule = make_schedule("cosine", 1000)
    t = torch.tensor([1, 5, 200, 700, 999])
    x0 = torch.randn(5, 4, dtype=torch.float64)
    x_t = torch.randn(5, 4, dtype=torch.float64)
    mean, variance, log_variance = q_posterior(schedule, x0, x_t, t)
    ab_prev = schedule.alphas_cumprod_prev[t][:, None]
    alpha, beta = schedule.alphas[t][:, None], schedule.betas[t][:, None]
    precision = 1 / (1 - ab_prev) + alpha / beta
    expected_var = 1 / precision
    expected_mean = expected_var * (ab_prev.sqrt() * x0 / (1 - ab_prev) + alpha.sqrt() * x_t / beta)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(variance, expected_var.expand_as(variance[:, :1]), rtol=1e-9, atol=0)
    torch.testing.assert_close(log_variance, expected_var.log(), rtol=1e-9, atol=0)
    # at t = 0 the posterior is a point mass at x0 and the log variance is clipped to beta~_1
    mean0, var0, log_var0 = q_posterior(schedule, x0, x_t, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert float(var0.max()) == 0.0
    assert torch.allclose(log_var0, schedule.posterior_variance[1].log())


def test_x0_and_eps_predictions_invert_q_sample():
    schedule = make_schedule("linear", 1000)
    t = torch.tensor([0, 10, 400, 999])
    x0, noise = torch.randn(4, 3, 2, 2, dtype=torch.float64), torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x_t = q_sample(schedule, x0, t, noise)
    torch.testing.assert_close(predict_x0_from_eps(schedule, x_t, t, noise), x0)
    torch.testing.assert_close(predict_eps_from_x0(schedule, x_t, t, x0), noise)


def test_learned_variance_interpolates_between_beta_and_beta_tilde():
    schedule = make_schedule("cosine", 100)
    t = torch.tensor([3, 50])
    like = torch.zeros(2, 1, dtype=torch.float64)
    torch.testing.assert_close(learned_log_variance(schedule, t, torch.ones_like(like)), schedule.betas[t].log()[:, None])
    torch.testing.assert_close(learned_log_variance(schedule, t, torch.zeros_like(like)),
                               schedule.posterior_variance[t].log()[:, None])
    half = learned_log_variance(schedule, t, torch.full_like(like, 0.5))
    torch.testing.assert_close(half, 0.5 * (schedule.betas[t].log() + schedule.posterior_variance[t].log())[:, None])
    torch.testing.assert_close(fixed_log_variance(schedule, t, like, "small"), schedule.posterior_variance[t].log()[:, None])
    torch.testing.assert_close(fixed_log_variance(schedule, t, like, "large"), schedule.betas[t].log()[:, None])
