"""The samplers with classifier guidance against a re-statement of openai/guided-diffusion's
formulas (gaussian_diffusion.py: p_mean_variance, condition_mean, condition_score, p_sample,
ddim_sample; respace.py: SpacedDiffusion's betas), written here in numpy float64 on small tensors.

The toy model predicts eps large enough that x0_hat leaves [-1, 1] (clipping acts), and returns
a fixed "classifier gradient" g(x, t) = s grad log p(y | x_t), so the tests see only the samplers'
arithmetic: where guided-diffusion clips, which variance it scales g by, and in which order.
"""
import numpy as np
import pytest
import torch

from pipeline.diffusion.denoiser import DenoiserOutput
from pipeline.diffusion.samplers import sample_ddim, sample_ddpm
from pipeline.diffusion.schedules import make_schedule, space_timesteps

BASE = make_schedule("cosine", 1000)
STEPS = 12
KEPT = space_timesteps(1000, STEPS)


class Reference:
    """guided-diffusion's GaussianDiffusion tables of a SpacedDiffusion over the kept timesteps."""

    def __init__(self, base_alphas_cumprod: np.ndarray, use_timesteps: list[int]):
        new_betas, last = [], 1.0
        for i, alpha_cumprod in enumerate(base_alphas_cumprod):  # respace.py: SpacedDiffusion.__init__
            if i in use_timesteps:
                new_betas.append(1 - alpha_cumprod / last)
                last = alpha_cumprod
        betas = np.array(new_betas, dtype=np.float64)
        self.timestep_map = np.array(sorted(use_timesteps))
        self.betas = betas
        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    def predict_xstart_from_eps(self, x, t, eps):
        return self.sqrt_recip_alphas_cumprod[t] * x - self.sqrt_recipm1_alphas_cumprod[t] * eps

    def predict_eps_from_xstart(self, x, t, xstart):
        return (self.sqrt_recip_alphas_cumprod[t] * x - xstart) / self.sqrt_recipm1_alphas_cumprod[t]

    def q_posterior_mean(self, xstart, x, t):
        return self.posterior_mean_coef1[t] * xstart + self.posterior_mean_coef2[t] * x

    def p_mean_variance(self, model, x, t, var_type, clip):
        eps, var_values = model(x, self.timestep_map[t])
        if var_type == "learned_range":
            min_log = self.posterior_log_variance_clipped[t]
            max_log = np.log(self.betas)[t]
            frac = (var_values + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = np.exp(log_variance)
        elif var_type == "fixed_large":
            variance = np.append(self.posterior_variance[1], self.betas[1:])[t]
            log_variance = np.log(np.append(self.posterior_variance[1], self.betas[1:]))[t]
        else:  # fixed_small
            variance = self.posterior_variance[t]
            log_variance = self.posterior_log_variance_clipped[t]
        xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip:
            xstart = np.clip(xstart, -1, 1)
        return {"mean": self.q_posterior_mean(xstart, x, t), "variance": variance, "log_variance": log_variance,
                "pred_xstart": xstart}

    def p_sample(self, model, cond_fn, x, t, noise, var_type, clip):
        out = self.p_mean_variance(model, x, t, var_type, clip)
        out["mean"] = out["mean"] + out["variance"] * cond_fn(x, self.timestep_map[t])  # condition_mean
        nonzero = float(t != 0)
        return out["mean"] + nonzero * np.exp(0.5 * out["log_variance"]) * noise

    def ddim_sample(self, model, cond_fn, x, t, noise, eta, clip):
        out = self.p_mean_variance(model, x, t, "fixed_large", clip)
        alpha_bar = self.alphas_cumprod[t]
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])  # condition_score
        eps = eps - np.sqrt(1 - alpha_bar) * cond_fn(x, self.timestep_map[t])
        out["pred_xstart"] = self.predict_xstart_from_eps(x, t, eps)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])  # ddim_sample re-derives it
        alpha_bar_prev = self.alphas_cumprod_prev[t]
        sigma = eta * np.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * np.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * np.sqrt(alpha_bar_prev) + np.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
        return mean_pred + float(t != 0) * sigma * noise

    def loop(self, step_fn, x_T, noise, **kw):
        x = x_T
        for k, t in enumerate(reversed(range(len(self.betas)))):
            x = step_fn(x, t, noise[k], **kw)
        return x


def toy_eps(x, t):
    """A large, t-dependent eps (x0_hat leaves [-1, 1]) and raw variance values in [-1, 1]."""
    t = np.asarray(t, dtype=np.float64)
    return 1.7 * np.tanh(3.0 * x + t / 400.0) + 0.2 * x, np.tanh(x - t / 1000.0)


def toy_grad(x, t):
    return 0.8 * np.cos(2.0 * x) - 0.1 * x * (1.0 + np.asarray(t, dtype=np.float64) / 1000.0)


class ToyDenoiser:
    """Our denoiser protocol around the same toy model: eps, var_frac and the classifier gradient."""

    def __init__(self, learned: bool):
        self.learned = learned

    def __call__(self, x, t, labels=None):
        t_np = t.numpy()[:, None]
        eps, raw = toy_eps(x.numpy(), t_np)
        return DenoiserOutput(eps=torch.from_numpy(eps),
                              var_frac=torch.from_numpy((raw + 1) / 2) if self.learned else None,
                              classifier_grad=torch.from_numpy(toy_grad(x.numpy(), t_np)))


@pytest.fixture
def case():
    rng = np.random.default_rng(0)
    x_T = rng.normal(size=(6, 5))
    noise = rng.normal(size=(STEPS, 6, 5))
    return Reference(BASE.alphas_cumprod.numpy(), KEPT), x_T, noise


def _ours(sampler, x_T, noise, **kw):
    return sampler(x_T=torch.from_numpy(x_T), schedule=BASE.respace(KEPT), noise=torch.from_numpy(noise), **kw).numpy()


def test_clipping_acts_in_these_cases(case):
    ref, x_T, _ = case
    t = len(ref.betas) - 1
    assert np.abs(ref.predict_xstart_from_eps(x_T, t, toy_eps(x_T, ref.timestep_map[t])[0])).max() > 1.5


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_with_classifier_guidance_follows_guided_diffusion(case, eta, clip):
    ref, x_T, noise = case
    expected = ref.loop(lambda x, t, z: ref.ddim_sample(toy_eps, toy_grad, x, t, z, eta, clip), x_T, noise)
    ours = _ours(sample_ddim, x_T, noise if eta else None, denoiser=ToyDenoiser(False), clip_x0=clip, eta=eta) \
        if eta else sample_ddim(ToyDenoiser(False), torch.from_numpy(x_T), BASE.respace(KEPT), clip_x0=clip).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_ddim_guiding_eps_before_clipping_is_a_different_sampler(case):
    """The order matters once x0 is clipped: guiding eps first, then clipping (the old order) moves
    the images by far more than round-off."""
    ref, x_T, _ = case

    def guide_then_clip(x, t, z):
        eps = toy_eps(x, ref.timestep_map[t])[0] - np.sqrt(1 - ref.alphas_cumprod[t]) * toy_grad(x, ref.timestep_map[t])
        x0 = np.clip(ref.predict_xstart_from_eps(x, t, eps), -1, 1)
        eps = ref.predict_eps_from_xstart(x, t, x0)
        return x0 * np.sqrt(ref.alphas_cumprod_prev[t]) + np.sqrt(1 - ref.alphas_cumprod_prev[t]) * eps

    old = ref.loop(guide_then_clip, x_T, np.zeros((STEPS, *x_T.shape)))
    ours = sample_ddim(ToyDenoiser(False), torch.from_numpy(x_T), BASE.respace(KEPT), clip_x0=True).numpy()
    assert np.abs(ours - old).max() > 1e-2


@pytest.mark.parametrize("var_type", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_with_classifier_guidance_follows_guided_diffusion(case, var_type, clip):
    ref, x_T, noise = case
    expected = ref.loop(lambda x, t, z: ref.p_sample(toy_eps, toy_grad, x, t, z, var_type, clip), x_T, noise)
    fixed = {"fixed_small": "small", "fixed_large": "large", "learned_range": "large"}[var_type]
    ours = _ours(sample_ddpm, x_T, noise, denoiser=ToyDenoiser(var_type == "learned_range"), clip_x0=clip,
                 fixed_variance=fixed)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_ddpm_small_variance_applies_no_guidance_at_the_last_step():
    """beta~ at the last step is 0: the guided and unguided last steps give the same image."""
    schedule = BASE.respace(KEPT)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(4, 5)))
    last = schedule.respace([0])  # a one-step chain whose only step is the last one

    class NoGrad(ToyDenoiser):
        def __call__(self, x, t, labels=None):
            out = super().__call__(x, t, labels)
            return DenoiserOutput(eps=out.eps)

    guided = sample_ddpm(ToyDenoiser(False), x, last, clip_x0=True, fixed_variance="small")
    plain = sample_ddpm(NoGrad(False), x, last, clip_x0=True, fixed_variance="small")
    assert torch.equal(guided, plain)
    large = sample_ddpm(ToyDenoiser(False), x, last, clip_x0=True, fixed_variance="large")
    assert not torch.equal(large, plain)  # the "large" variance is not 0 there: the shift stays
