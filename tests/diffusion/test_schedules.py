import math

import pytest
import torch

from pipeline.diffusion.schedules import (Schedule, cfg_logsnr, cfg_logsnr_betas, cosine_betas, linear_betas,
                                          make_schedule, respaced, space_timesteps)


def test_cosine_schedule_matches_improved_ddpm_formula():
    T, s = 1000, 0.008
    betas = cosine_betas(T)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = torch.cumprod(1 - betas, 0)
    for t in [0, 1, 10, 250, 500, 900, 990]:
        # alpha_bar at index t is f(t + 1) / f(0) as long as no beta before t was clipped
        assert alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert betas.max().item() == pytest.approx(0.999)
    assert betas[-1].item() == pytest.approx(0.999)  # the last step is clipped
    assert int((betas >= 0.999).sum()) < 5  # only the very last steps hit the clip


def test_linear_schedule_endpoints():
    betas = linear_betas(1000)
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert linear_betas(4000)[-1].item() == pytest.approx(0.02 / 4)


def test_cfg_logsnr_schedule_endpoints_and_formula():
    lam_min, lam_max = -20.0, 20.0
    assert cfg_logsnr(torch.tensor(0.0), lam_min, lam_max).item() == pytest.approx(lam_max, abs=1e-6)
    assert cfg_logsnr(torch.tensor(1.0), lam_min, lam_max).item() == pytest.approx(lam_min, abs=1e-6)
    b = math.atan(math.exp(-lam_max / 2))
    a = math.atan(math.exp(-lam_min / 2)) - b
    u = 0.37
    assert cfg_logsnr(torch.tensor(u, dtype=torch.float64)).item() == pytest.approx(-2 * math.log(math.tan(a * u + b)), rel=1e-12)
    values = cfg_logsnr(torch.linspace(0, 1, 50))
    assert bool((values[1:] < values[:-1]).all())  # monotonically decreasing SNR
    # the discrete version reproduces sigmoid(lambda) where no beta was clipped
    T = 200
    betas = cfg_logsnr_betas(T, -10.0, 10.0)
    alpha_bar = torch.cumprod(1 - betas, 0)
    expected = torch.sigmoid(cfg_logsnr(torch.arange(1, T + 1, dtype=torch.float64) / T, -10.0, 10.0))
    torch.testing.assert_close(alpha_bar[:150], expected[:150], rtol=1e-9, atol=0)


@pytest.mark.parametrize("spec,count", [("25", 25), ("50", 50), ("250", 250), ("ddim50", 50), ("10,15,20", 45), (1000, 1000)])
def test_respaced_betas_reproduce_alpha_bar(spec, count):
    base = make_schedule("cosine", 1000)
    kept = space_timesteps(1000, spec)
    assert len(kept) == count
    schedule = respaced(base, spec)
    assert len(schedule) == count
    torch.testing.assert_close(schedule.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-9, atol=0)
    assert schedule.timesteps.tolist() == kept
    assert schedule.num_train_timesteps == 1000


def test_space_timesteps_sections_include_ends():
    assert space_timesteps(1000, "25")[0] == 0 and space_timesteps(1000, "25")[-1] == 999
    assert space_timesteps(1000, "ddim50") == list(range(0, 1000, 20))
    assert space_timesteps(1000, "ddim30") == list(range(0, 1000, 34))
    assert space_timesteps(10, "ddim4") == [0, 3, 6, 9]
    with pytest.raises(ValueError, match="exactly 7"):
        space_timesteps(10, "ddim7")  # strides 1 and 2 give 10 and 5 steps
    assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]
    with pytest.raises(ValueError):
        space_timesteps(100, "200")


def test_posterior_variance_and_schedule_validation():
    schedule = make_schedule("linear", 100)
    assert schedule.posterior_variance[0].item() == 0.0
    assert schedule.posterior_log_variance_clipped[0] == schedule.posterior_log_variance_clipped[1]
    with pytest.raises(ValueError):
        Schedule(torch.tensor([0.1, 0.0]))
    with pytest.raises(ValueError):
        make_schedule("quadratic")
