"""A class-conditional Gaussian mixture whose noised densities are known in closed form.

Class c: x_0 ~ N(mu_c, s_c^2 I); the unconditional density is sum_c pi_c N(mu_c, s_c^2 I).
Under q(x_t | x_0) = N(sqrt(a) x_0, (1 - a) I), a = alpha_bar_t, class c becomes
N(sqrt(a) mu_c, (a s_c^2 + 1 - a) I), so the exact epsilon is eps = -sqrt(1 - a) grad log p_t(x).
"""

from __future__ import annotations

import math

import torch

from pipeline.diffusion.schedules import Schedule


class GaussianMixture:
    def __init__(self, means, stds, weights, train_schedule: Schedule):
        self.means = torch.as_tensor(means, dtype=torch.float64)          # [K, d]
        self.stds = torch.as_tensor(stds, dtype=torch.float64)            # [K]
        self.weights = torch.as_tensor(weights, dtype=torch.float64)      # [K]
        self.weights = self.weights / self.weights.sum()
        self.schedule = train_schedule
        self.num_classes = self.means.shape[0]
        self.null_label = self.num_classes

    def _component_log_densities(self, x, t):
        a = self.schedule.alphas_cumprod.to(x.device)[t].to(x.dtype)[:, None]       # [B, 1]
        var = a * self.stds[None] ** 2 + (1 - a)                                     # [B, K]
        centers = a.sqrt()[:, :, None] * self.means[None]                            # [B, K, d]
        flat = x.reshape(x.shape[0], 1, -1)
        sq = ((flat - centers) ** 2).sum(-1)                                         # [B, K]
        d = flat.shape[-1]
        log_density = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)
        return log_density, var, centers

    def class_log_posterior(self, x, t):
        """log p_t(c | x_t) for every class, [B, K] (the exact noisy classifier)."""
        log_density, _, _ = self._component_log_densities(x, t)
        joint = log_density + self.weights.log()[None]
        return joint - torch.logsumexp(joint, dim=1, keepdim=True)

    def classifier(self, x, t):
        """Logits whose softmax is p_t(c | x_t)."""
        return self.class_log_posterior(x, t)

    def score(self, x, t, labels):
        log_density, var, centers = self._component_log_densities(x, t)
        flat = x.reshape(x.shape[0], 1, -1)
        component_scores = -(flat - centers) / var[:, :, None]                       # [B, K, d]
        responsibilities = torch.softmax(log_density + self.weights.log()[None], dim=1)
        if labels is not None:
            one_hot = torch.nn.functional.one_hot(labels.clamp(max=self.num_classes - 1), self.num_classes).to(x.dtype)
            is_null = (labels == self.null_label)[:, None]
            responsibilities = torch.where(is_null, responsibilities, one_hot)
        return (responsibilities[:, :, None] * component_scores).sum(1).reshape(x.shape)

    def __call__(self, x, t, labels=None):
        """The exact epsilon: labels in [0, K) condition on a class, K (null) or None is the mixture."""
        a = self.schedule.alphas_cumprod.to(x.device)[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return -(1 - a).sqrt() * self.score(x, t, labels)

    def sample_data(self, n, generator=None):
        classes = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[classes] + self.stds[classes, None] * noise, classes
