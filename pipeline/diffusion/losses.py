"""Training losses: L_simple, L_vlb and the hybrid loss, and the importance sampler for t.

References
- DDPM (Ho et al., 2020) eq. 14: L_simple = E ||eps - eps_theta(x_t, t)||^2;
  eq. 5: L_vlb = L_0 + sum_{t>0} L_{t-1}, L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t));
  section 3.3 eq. 13: L_0 = -log p_theta(x_0 | x_1) with a discretized Gaussian decoder.
- Improved DDPM (Nichol & Dhariwal, 2021) eq. 15-16: learned Sigma = exp(v log beta_t + (1 - v) log beta~_t),
  L_hybrid = L_simple + lambda L_vlb, lambda = 0.001, with a stop-gradient on mu_theta inside L_vlb;
  eq. 18 / section 3.3: importance sampling p_t ~ sqrt(E[L_t^2]), 10 losses kept per t, uniform
  sampling until every t has 10.

Data are images scaled to [-1, 1]. The VLB terms are in bits per dimension.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from pipeline.arguments import ArgumentError
from pipeline.diffusion.forward import (learned_log_variance, predict_x0_from_eps, q_posterior, q_sample,
                                        raw_to_variance_fraction)
from pipeline.diffusion.schedules import Schedule


def mean_over_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        bin_width: float = 2.0 / 255.0) -> torch.Tensor:
    """log p(x) of data in [-1, 1] quantized to 256 levels under N(mean, exp(log_scale)^2): the
    mass of the bin around x, with the edge bins open to -inf / +inf (DDPM eq. 13)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + bin_width / 2))
    cdf_minus = torch.special.ndtr(inv_std * (centered - bin_width / 2))
    tiny = 1e-12
    log_cdf_plus = torch.log(cdf_plus.clamp(min=tiny))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=tiny))
    log_bin = torch.log((cdf_plus - cdf_minus).clamp(min=tiny))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_bin))


def vlb_terms(schedule: Schedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
              eps_pred: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Per-sample L_{t-1} in bits/dim: the KL to the true posterior for t > 0, the decoder NLL at t = 0.
    The model mean comes from ``eps_pred`` (pass it detached for the hybrid loss's stop-gradient)."""
    pred_x0 = predict_x0_from_eps(schedule, x_t, t, eps_pred)
    model_mean, _, _ = q_posterior(schedule, pred_x0, x_t, t)
    true_mean, _, true_log_variance = q_posterior(schedule, x0, x_t, t)
    kl = mean_over_pixels(normal_kl(true_mean, true_log_variance, model_mean, log_variance)) / math.log(2.0)
    decoder_nll = -mean_over_pixels(
        discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * log_variance)) / math.log(2.0)
    return torch.where(t == 0, decoder_nll, kl)


def check_loss_kind(loss: str, learn_sigma: bool) -> None:
    """"simple" (DDPM eq. 14) or "hybrid" (Improved DDPM eq. 16), which trains the variance and so
    needs the network's learned-variance output."""
    if loss not in ("simple", "hybrid"):
        raise ArgumentError("loss", loss, "must be 'simple' or 'hybrid'")
    if loss == "hybrid" and not learn_sigma:
        raise ArgumentError("loss", loss, "the hybrid loss trains the variance: set `learn_sigma`: true")


def diffusion_loss(net: Callable[..., torch.Tensor], schedule: Schedule, x0: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor, labels: Optional[torch.Tensor] = None, *, learned_sigma: bool = False,
                   vlb_weight: float = 0.001) -> dict[str, torch.Tensor]:
    """Per-sample losses for ``net(x_t, t, labels)`` (``t`` indexes ``schedule``, the training schedule).

    Fixed variance: loss = L_simple. Learned variance (2C output channels: eps, then raw values in
    [-1, 1] with v = (raw + 1) / 2): loss = L_simple + vlb_weight * T * L_{t-1}, where T * L_{t-1}
    is the one-sample estimate of L_vlb = sum_t L_t (so with T = 1000 and lambda = 0.001 this is ADM's
    mse + vb), and L_{t-1} sees eps detached: only Sigma learns from L_vlb.
    Returns {"loss", "mse"} (+ "vlb" when learned), each of shape [B].
    """
    x_t = q_sample(schedule, x0, t, noise)
    out = net(x_t, schedule.timesteps.to(t.device)[t], labels)
    if not learned_sigma:
        mse = mean_over_pixels((noise - out) ** 2)
        return {"loss": mse, "mse": mse}
    eps_pred, raw = out.chunk(2, dim=1)
    mse = mean_over_pixels((noise - eps_pred) ** 2)
    log_variance = learned_log_variance(schedule, t, raw_to_variance_fraction(raw))
    vlb = vlb_terms(schedule, x0, x_t, t, eps_pred.detach(), log_variance)
    return {"loss": mse + vlb_weight * len(schedule) * vlb, "mse": mse, "vlb": vlb}


class UniformTimestepSampler:
    """t ~ Uniform{0..T-1}, weights 1 (same interface as :class:`ImportanceTimestepSampler`)."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = int(num_timesteps)

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None):
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator)
        return t, torch.ones(batch_size)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ImportanceTimestepSampler:
    """Improved DDPM section 3.3: p_t proportional to sqrt(E[L_t^2]) over the last ``history``
    losses seen at each t; uniform until every t has a full history. As in Improved DDPM's code,
    a fraction ``uniform_prob`` of uniform mass is mixed in (0 gives the pure formula).
    ``sample`` returns (t, weights) with weights 1 / (T p_t), so E[weight * L_t] = L_vlb / T.

    In a training step (as ADM):
        t, weights = sampler.sample(batch, generator)
        losses = diffusion_loss(net, schedule, x0, t, noise, labels, learned_sigma=True)
        (weights * losses["loss"]).mean().backward()
        sampler.update(t, losses["loss"])      # after gathering t and losses from every worker
    ``state_dict()`` / ``load_state_dict()`` hold plain tensors for checkpoints."""

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        self.num_timesteps, self.history, self.uniform_prob = int(num_timesteps), int(history), float(uniform_prob)
        self.loss_history = torch.zeros(self.num_timesteps, self.history, dtype=torch.float64)
        self.counts = torch.zeros(self.num_timesteps, dtype=torch.int64)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.history).all())

    def probabilities(self) -> torch.Tensor:
        if not self.warmed_up():
            return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)
        rms = (self.loss_history ** 2).mean(dim=1).sqrt()
        p = rms / rms.sum()
        return p * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def sample(self, batch_size: int, generator: Optional[torch.Generator] = None):
        p = self.probabilities()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = (1.0 / (self.num_timesteps * p[t])).float()
        return t, weights

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (gather them from every worker first, as ADM does)."""
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            if self.counts[step] == self.history:
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, self.counts[step]] = loss
                self.counts[step] += 1

    def state_dict(self) -> dict:
        return {"loss_history": self.loss_history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict) -> None:
        history = torch.as_tensor(state["loss_history"], dtype=torch.float64)
        counts = torch.as_tensor(state["counts"], dtype=torch.int64)
        if tuple(history.shape) != (self.num_timesteps, self.history) or tuple(counts.shape) != (self.num_timesteps,):
            raise ValueError("importance sampler state does not match this sampler's shape")
        self.loss_history, self.counts = history.clone(), counts.clone()
