import pytest
import torch

from pipeline.diffusion.denoiser import NetworkDenoiser
from pipeline.diffusion.samplers import ddim_invert, sample_ddim, sample_ddpm
from pipeline.diffusion.schedules import make_schedule, respaced
from pipeline.diffusion.seeding import image_generators, image_seed, randn_per_image, trial_noise
from tests.diffusion.gaussian_mixture import GaussianMixture
from tests.diffusion.tiny import tiny_unet

BASE = make_schedule("cosine", 1000)


def mixture_2d():
    return GaussianMixture([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], [0.3, 0.5, 0.4], [0.5, 0.3, 0.2], BASE)


def assign_to_components(x, mixture):
    nearest = ((x[:, None] - mixture.means[None]) ** 2).sum(-1).argmin(1)
    fractions = torch.bincount(nearest, minlength=mixture.num_classes).double() / x.shape[0]
    means = torch.stack([x[nearest == k].mean(0) for k in range(mixture.num_classes)])
    stds = torch.stack([x[nearest == k].std(0).mean() for k in range(mixture.num_classes)])
    return fractions, means, stds


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "ddim_eta1"])
def test_samplers_recover_mixture_means_and_weights(sampler):
    mixture = mixture_2d()
    n, steps = 4000, 100
    schedule = respaced(BASE, str(steps))
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    noise = torch.randn(steps, n, 2, generator=generator, dtype=torch.float64)
    unconditional = torch.full((n,), mixture.null_label)
    if sampler == "ddpm":
        x = sample_ddpm(mixture, x_T, schedule, unconditional, noise=noise, clip_x0=False)
    else:
        eta = 1.0 if sampler == "ddim_eta1" else 0.0
        x = sample_ddim(mixture, x_T, schedule, unconditional, noise=noise if eta else None, clip_x0=False, eta=eta)
    fractions, means, stds = assign_to_components(x, mixture)
    torch.testing.assert_close(fractions, mixture.weights, atol=0.03, rtol=0)
    torch.testing.assert_close(means, mixture.means, atol=0.06, rtol=0)
    torch.testing.assert_close(stds, mixture.stds, atol=0, rtol=0.1)


def test_conditional_sampling_recovers_the_class_gaussian():
    mixture = mixture_2d()
    n = 2000
    x_T = torch.randn(n, 2, dtype=torch.float64)
    x = sample_ddim(mixture, x_T, respaced(BASE, "50"), torch.full((n,), 1), clip_x0=False)
    torch.testing.assert_close(x.mean(0), mixture.means[1], atol=0.06, rtol=0)
    torch.testing.assert_close(x.std(0), mixture.stds[1].expand(2), atol=0.05, rtol=0)


def test_ddim_eta0_is_deterministic_and_inverts():
    mixture = mixture_2d()
    x0, classes = mixture.sample_data(500, torch.Generator().manual_seed(1))
    errors = {}
    for steps in (50, 250):
        schedule = respaced(BASE, str(steps))
        x_T = ddim_invert(mixture, x0, schedule, classes)
        decoded = sample_ddim(mixture, x_T, schedule, classes, clip_x0=False)
        again = sample_ddim(mixture, x_T, schedule, classes, clip_x0=False)
        assert torch.equal(decoded, again)  # no randomness at eta = 0
        errors[steps] = float((decoded - x0).abs().max())
    assert errors[250] < 0.03
    assert errors[250] < errors[50] / 3  # the error is discretization error: it shrinks with steps
    # the encoding is Gaussian-like noise
    assert abs(float(x_T.std()) - 1.0) < 0.1


def test_stochastic_samplers_require_explicit_noise():
    mixture = mixture_2d()
    x_T = torch.randn(3, 2, dtype=torch.float64)
    schedule = respaced(BASE, "5")
    with pytest.raises(ValueError, match="stochastic"):
        sample_ddpm(mixture, x_T, schedule, clip_x0=False)
    with pytest.raises(ValueError, match="one generator per image"):
        sample_ddpm(mixture, x_T, schedule, generators=image_generators(0, range(2)), clip_x0=False)
    with pytest.raises(ValueError, match="shape"):
        sample_ddim(mixture, x_T, schedule, noise=torch.zeros(4, 3, 2), eta=1.0)


def test_noise_tensor_and_generators_agree():
    """Drawing the per-step noise up front from the same generators gives the same result."""
    mixture = mixture_2d()
    schedule = respaced(BASE, "10")
    x_T = randn_per_image(image_generators(7, range(3)), (2,), dtype=torch.float64)
    from_generators = sample_ddpm(mixture, x_T, schedule, generators=image_generators(8, range(3)), clip_x0=False)
    gens = image_generators(8, range(3))
    noise = torch.stack([randn_per_image(gens, (2,), dtype=torch.float64) for _ in range(10)])
    from_tensor = sample_ddpm(mixture, x_T, schedule, noise=noise, clip_x0=False)
    torch.testing.assert_close(from_generators, from_tensor, rtol=0, atol=0)


def test_image_seeds_depend_only_on_trial_seed_and_index():
    assert image_seed(3, 5) == image_seed(3, 5)
    assert len({image_seed(s, i) for s in range(20) for i in range(20)}) == 400
    assert image_seed(1, 2) != image_seed(2, 1)


@pytest.mark.parametrize("sampler", [sample_ddpm, sample_ddim])
def test_images_do_not_depend_on_batch_size_or_composition(sampler):
    net = tiny_unet(8, learn_sigma=True)
    denoiser = NetworkDenoiser(net, learned_sigma=True)
    schedule = respaced(BASE, "4")
    trial_seed, indices, labels = 123, [0, 1, 2, 3], torch.tensor([0, 1, 2, 3])
    options = {"eta": 1.0} if sampler is sample_ddim else {}

    def generate(image_indices):
        x_T, generators = trial_noise(trial_seed, image_indices, (3, 8, 8))
        with torch.inference_mode():
            return sampler(denoiser, x_T, schedule, labels[image_indices], generators=generators, **options)

    batch = generate(indices)
    for i in indices:
        torch.testing.assert_close(generate([i])[0], batch[i], rtol=0, atol=1e-5)
    shuffled = generate([2, 0, 3])
    torch.testing.assert_close(shuffled, batch[[2, 0, 3]], rtol=0, atol=1e-5)


def test_callback_sees_every_step_with_original_timesteps():
    mixture = mixture_2d()
    schedule = respaced(BASE, "ddim10")
    seen = []
    sample_ddim(mixture, torch.randn(2, 2, dtype=torch.float64), schedule, callback=seen.append, clip_x0=False)
    assert [info["i"] for info in seen] == list(range(10))
    assert [int(info["t"][0]) for info in seen] == list(range(900, -1, -100))
    assert all(set(info) == {"i", "index", "t", "x", "pred_x0"} for info in seen)
