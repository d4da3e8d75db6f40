"""Diffusion math, pure PyTorch, readable beside the papers.

schedules  beta schedules (linear, cosine, CFG log-SNR) and respacing -> Schedule
forward    q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0), x_0 / eps conversions, variances
losses     L_simple, L_vlb, hybrid loss, importance sampling of t
denoiser   the callable protocol samplers consume (DenoiserOutput, NetworkDenoiser)
samplers   sample_ddpm, sample_ddim, ddim_invert (one signature)
guidance   classifier-free, classifier, autoguidance, perturbed-attention (denoiser wrappers)
seeding    per-image generators derived from (trial seed, image index)
"""
