"""Guidance wrappers against closed forms.

With the exact epsilon of a Gaussian mixture, classifier-free guidance with weight w is exactly
the score of p_t(x|c) p_t(c|x)^w at every noise level (tested to float precision). Sampling with
it is known NOT to reproduce the tilted data density p(x|c) p(c|x)^w exactly (the tilt does not
commute with the noising; guided samplers overshoot it, see Chidambaram et al. 2024, "What does
guidance do?"), so the sample-level test checks that guidance sharpens toward the class at least
as much as the tilted target predicts, monotonically in w.
"""

import pytest
import torch

from pipeline.diffusion.denoiser import DenoiserOutput, NetworkDenoiser, as_output
from pipeline.diffusion.guidance import (AutoGuidance, ClassifierFreeGuidance, ClassifierGuidance,
                                         PerturbedAttentionGuidance, classifier_scale_from_w)
from pipeline.diffusion.samplers import sample_ddim, sample_ddpm
from pipeline.diffusion.schedules import make_schedule, respaced
from pipeline.nets.classifier import NoisyClassifier
from tests.diffusion.gaussian_mixture import GaussianMixture
from tests.diffusion.tiny import randomize_, tiny_unet

BASE = make_schedule("cosine", 1000)


def mixture_1d():
    return GaussianMixture([[-1.0], [1.0]], [0.6, 0.6], [0.5, 0.5], BASE)


def test_cfg_with_w0_is_exactly_the_conditional_model():
    mixture = mixture_1d()
    x, t, y = torch.randn(6, 1, dtype=torch.float64), torch.randint(0, 1000, (6,)), torch.tensor([0, 1] * 3)
    assert torch.equal(ClassifierFreeGuidance(mixture, 0.0, mixture.null_label)(x, t, y).eps, mixture(x, t, y))
    schedule = respaced(BASE, "20")
    x_T, noise = torch.randn(6, 1, dtype=torch.float64), torch.randn(20, 6, 1, dtype=torch.float64)
    guided = sample_ddpm(ClassifierFreeGuidance(mixture, 0.0, mixture.null_label), x_T, schedule, y, noise=noise, clip_x0=False)
    plain = sample_ddpm(mixture, x_T, schedule, y, noise=noise, clip_x0=False)
    assert torch.equal(guided, plain)


@pytest.mark.parametrize("w", [0.5, 2.0])
def test_cfg_is_the_score_of_the_tilted_noisy_density(w):
    """(1 + w) eps(x, c) - w eps(x) = -sqrt(1 - a_t) grad log [p_t(x|c) p_t(c|x)^w] (CFG paper eq. 6)."""
    mixture = GaussianMixture([[-1.0, 0.5], [1.0, 0.0], [0.0, -1.0]], [0.6, 0.4, 0.5], [0.3, 0.3, 0.4], BASE)
    t = torch.tensor([0, 10, 200, 500, 800, 999])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    x = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    a = BASE.alphas_cumprod[t][:, None]
    var = a * mixture.stds[y][:, None] ** 2 + 1 - a
    log_class_density = (-0.5 * ((x - a.sqrt() * mixture.means[y]) ** 2) / var).sum()
    log_posterior = mixture.class_log_posterior(x, t).gather(1, y[:, None]).sum()
    (score,) = torch.autograd.grad(log_class_density + w * log_posterior, x)
    guided = ClassifierFreeGuidance(mixture, w, mixture.null_label)(x.detach(), t, y).eps
    torch.testing.assert_close(guided, -(1 - a).sqrt() * score, rtol=1e-9, atol=1e-12)


def test_cfg_runs_conditional_and_unconditional_in_one_batched_forward():
    calls = []

    def spy(x, t, labels):
        calls.append((x.shape[0], labels.clone()))
        return x * 0 + labels[:, None].double()

    guided = ClassifierFreeGuidance(spy, 2.0, null_label=9)
    out = guided(torch.zeros(3, 1, dtype=torch.float64), torch.tensor([5, 5, 5]), torch.tensor([1, 2, 3]))
    assert len(calls) == 1 and calls[0][0] == 6
    assert calls[0][1].tolist() == [1, 2, 3, 9, 9, 9]
    torch.testing.assert_close(out.eps[:, 0], 3.0 * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) - 2.0 * 9)


def _class_posterior_stats(mixture, x, c=0):
    p = mixture.class_log_posterior(x, torch.zeros(x.shape[0], dtype=torch.long))[:, c].exp()
    return float(p.mean()), float(x.mean()), float(x.std())


def _tilted_target_stats(mixture, w, c=0):
    """Numerical E[p(c|x)], mean and std of p(x|c) p(c|x)^w on a fine 1-D grid."""
    grid = torch.linspace(-7, 7, 40001, dtype=torch.float64)[:, None]
    log_density = -0.5 * ((grid[:, 0] - mixture.means[c, 0]) / mixture.stds[c]) ** 2
    log_posterior = mixture.class_log_posterior(grid, torch.zeros(grid.shape[0], dtype=torch.long))[:, c]
    p = torch.softmax(log_density + w * log_posterior, dim=0)
    mean = float((p * grid[:, 0]).sum())
    return float((p * log_posterior.exp()).sum()), mean, float((p * (grid[:, 0] - mean) ** 2).sum().sqrt())


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("kind", ["cfg", "classifier"])
def test_guidance_sharpens_toward_the_class_as_the_tilted_target_predicts(sampler, kind):
    mixture = mixture_1d()
    n, steps = 4000, 100
    schedule = respaced(BASE, str(steps))
    generator = torch.Generator().manual_seed(0)
    x_T = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    noise = torch.randn(steps, n, 1, generator=generator, dtype=torch.float64)
    labels = torch.zeros(n, dtype=torch.long)
    stats = {}
    for w in (0.0, 1.0, 3.0):
        if kind == "cfg":
            denoiser = ClassifierFreeGuidance(mixture, w, mixture.null_label)
        else:  # exact noisy classifier, guiding the conditional model: scale s = w
            denoiser = ClassifierGuidance(mixture, mixture.classifier, classifier_scale_from_w(w, True))
        if sampler == "ddpm":
            x = sample_ddpm(denoiser, x_T, schedule, labels, noise=noise, clip_x0=False)
        else:
            x = sample_ddim(denoiser, x_T, schedule, labels, clip_x0=False)
        stats[w] = _class_posterior_stats(mixture, x)

    # w = 0 samples the class Gaussian itself
    assert stats[0.0][1] == pytest.approx(-1.0, abs=0.04) and stats[0.0][2] == pytest.approx(0.6, abs=0.04)
    for w in (1.0, 3.0):
        target_posterior, target_mean, target_std = _tilted_target_stats(mixture, w)
        unguided_posterior = _tilted_target_stats(mixture, 0.0)[0]
        assert target_posterior > unguided_posterior + 0.02  # the tilt itself sharpens
        posterior, mean, std = stats[w]
        assert posterior >= target_posterior - 0.01          # ... and guidance at least as much
        assert mean < target_mean + 0.03 and std < target_std + 0.03
    assert stats[3.0][0] > stats[1.0][0] > stats[0.0][0]     # monotone in w
    assert stats[3.0][2] < stats[1.0][2] < stats[0.0][2]


def test_classifier_guidance_ddim_form_equals_cfg_with_the_exact_classifier():
    """eps - sqrt(1 - a) s grad log p(c|x) = (1 + s) eps(x, c) - s eps(x) when the classifier is exact."""
    mixture = mixture_1d()
    x, t, y = torch.randn(8, 1, dtype=torch.float64), torch.randint(0, 1000, (8,)), torch.tensor([0, 1] * 4)
    folded = ClassifierGuidance(mixture, mixture.classifier, 2.0, form="eps", train_schedule=BASE)(x, t, y).eps
    cfg = ClassifierFreeGuidance(mixture, 2.0, mixture.null_label)(x, t, y).eps
    torch.testing.assert_close(folded, cfg, rtol=1e-9, atol=1e-12)
    schedule = respaced(BASE, "25")
    x_T = torch.randn(50, 1, dtype=torch.float64)
    y = torch.zeros(50, dtype=torch.long)
    via_sampler = sample_ddim(ClassifierGuidance(mixture, mixture.classifier, 2.0), x_T, schedule, y, clip_x0=False)
    via_cfg = sample_ddim(ClassifierFreeGuidance(mixture, 2.0, mixture.null_label), x_T, schedule, y, clip_x0=False)
    torch.testing.assert_close(via_sampler, via_cfg, rtol=1e-8, atol=1e-8)


def test_classifier_guidance_ddpm_form_shifts_the_mean_by_sigma_g():
    mixture = mixture_1d()
    x_T = torch.randn(4, 1, dtype=torch.float64)
    y = torch.zeros(4, dtype=torch.long)
    grads = []

    class Recording(ClassifierGuidance):
        def __call__(self, x, t, labels, **kwargs):
            out = super().__call__(x, t, labels, **kwargs)
            grads.append(out.classifier_grad)
            return out

    one_step = BASE.respace([999])  # a single step: the output is the guided mean itself
    guided = sample_ddpm(Recording(mixture, mixture.classifier, 1.5), x_T, one_step, y, clip_x0=False)
    plain = sample_ddpm(mixture, x_T, one_step, y, clip_x0=False)
    sigma2 = one_step.betas[0]  # the "large" variance of this one-step chain
    torch.testing.assert_close(guided - plain, sigma2 * grads[0], rtol=1e-9, atol=1e-12)
    assert float(grads[0].abs().min()) > 0


def test_classifier_guidance_gets_its_gradient_under_inference_mode():
    net = tiny_unet(8)
    classifier = randomize_(NoisyClassifier(8, num_classes=4, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                            attention_resolutions=(4,), num_head_channels=8)).eval()
    denoiser = ClassifierGuidance(NetworkDenoiser(net), classifier, 3.0)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
    with torch.inference_mode():
        out = denoiser(x, t, y)
    assert out.classifier_grad is not None and float(out.classifier_grad.abs().sum()) > 0
    with torch.inference_mode():
        x0 = sample_ddim(denoiser, x, respaced(BASE, "3"), y)
    assert torch.isfinite(x0).all()


@pytest.mark.parametrize("kind", ["cfg", "classifier", "autoguidance", "pag"])
def test_interval_limited_guidance_is_plain_conditional_outside(kind):
    torch.manual_seed(0)
    net = tiny_unet(8, learn_sigma=True)
    plain = NetworkDenoiser(net, learned_sigma=True)
    guide = NetworkDenoiser(tiny_unet(8, seed=1, learn_sigma=True), learned_sigma=True)
    classifier = randomize_(NoisyClassifier(8, num_classes=4, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                            attention_resolutions=(4,), num_head_channels=8)).eval()
    interval = (200, 600)
    make = {
        "cfg": lambda iv: ClassifierFreeGuidance(plain, 2.0, net.null_label, interval=iv),
        "classifier": lambda iv: ClassifierGuidance(plain, classifier, 2.0, interval=iv, form="eps", train_schedule=BASE),
        "autoguidance": lambda iv: AutoGuidance(plain, guide, 2.0, interval=iv),
        "pag": lambda iv: PerturbedAttentionGuidance(plain, 2.0, interval=iv),
    }[kind]
    x = torch.randn(4, 3, 8, 8)
    t = torch.tensor([100, 300, 600, 900])  # outside, inside, inside (edge), outside
    y = torch.tensor([0, 1, 2, 3])
    limited, everywhere, unguided = make(interval)(x, t, y), make(None)(x, t, y), plain(x, t, y)
    outside, inside = torch.tensor([True, False, False, True]), torch.tensor([False, True, True, False])
    torch.testing.assert_close(limited.eps[outside], unguided.eps[outside], rtol=0, atol=1e-6)
    torch.testing.assert_close(limited.eps[inside], everywhere.eps[inside], rtol=0, atol=1e-5)
    assert float((everywhere.eps[outside] - unguided.eps[outside]).abs().max()) > 1e-3
    torch.testing.assert_close(limited.var_frac, unguided.var_frac, rtol=0, atol=1e-6)


def test_autoguidance_extrapolates_away_from_the_weaker_model():
    main = mixture_1d()
    weak = GaussianMixture([[-1.0], [1.0]], [0.9, 0.9], [0.5, 0.5], BASE)  # a blurrier version of the same model
    x, t, y = torch.randn(5, 1, dtype=torch.float64), torch.randint(0, 1000, (5,)), torch.tensor([0, 1, 0, 1, 0])
    w = 1.5
    out = AutoGuidance(main, weak, w)(x, t, y).eps
    torch.testing.assert_close(out, main(x, t, y) + w * (main(x, t, y) - weak(x, t, y)))
    assert torch.equal(AutoGuidance(main, weak, 0.0)(x, t, y).eps, main(x, t, y))
    # the guided model is sharper than the main one: sampling class 0 gives a smaller spread
    n = 2000
    x_T = torch.randn(n, 1, dtype=torch.float64)
    labels = torch.zeros(n, dtype=torch.long)
    schedule = respaced(BASE, "50")
    plain = sample_ddim(main, x_T, schedule, labels, clip_x0=False)
    guided = sample_ddim(AutoGuidance(main, weak, w), x_T, schedule, labels, clip_x0=False)
    assert float(guided.std()) < float(plain.std()) - 0.05
    assert abs(float(guided.mean()) - float(plain.mean())) < 0.1  # no push to another class


def test_pag_differs_only_through_attention():
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([100, 500, 900]), torch.tensor([0, 1, 4])
    no_attention = tiny_unet(8, attention_resolutions=(), middle_attention=False)
    assert torch.equal(no_attention(x, t, y, perturb_attention=True), no_attention(x, t, y))
    pag_without = PerturbedAttentionGuidance(NetworkDenoiser(no_attention), 3.0)(x, t, y).eps
    # PAG's one forward has 2B rows: the CPU kernels may round differently from a B-row call (on an
    # AVX2-only CPU by up to 2e-6 here), which the extrapolation then multiplies by 1 + w
    torch.testing.assert_close(pag_without, no_attention(x, t, y), rtol=0, atol=1e-5)

    with_attention = tiny_unet(8)
    plain, perturbed = with_attention(x, t, y), with_attention(x, t, y, perturb_attention=True)
    assert float((plain - perturbed).abs().max()) > 1e-3
    pag = PerturbedAttentionGuidance(NetworkDenoiser(with_attention), 3.0)(x, t, y).eps
    torch.testing.assert_close(pag, plain + 3.0 * (plain - perturbed), rtol=1e-5, atol=1e-5)
    # a per-row mask perturbs exactly those rows
    mixed = with_attention(x, t, y, perturb_attention=torch.tensor([True, False, True]))
    torch.testing.assert_close(mixed[[0, 2]], perturbed[[0, 2]], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], plain[1], rtol=0, atol=1e-5)


def test_wrappers_compose_and_keep_the_variance_of_the_conditional_pass():
    net = tiny_unet(8, learn_sigma=True)
    plain = NetworkDenoiser(net, learned_sigma=True)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([300, 300]), torch.tensor([1, 2])
    cfg = ClassifierFreeGuidance(plain, 1.0, net.null_label)
    # CFG's forward has 2B rows, the plain one B: equal up to the kernels' batch-dependent rounding
    torch.testing.assert_close(cfg(x, t, y).var_frac, plain(x, t, y).var_frac, rtol=0, atol=1e-5)
    both = PerturbedAttentionGuidance(cfg, 1.0)  # PAG on top of CFG: one forward of 4B images
    assert isinstance(both(x, t, y), DenoiserOutput)
    assert as_output(torch.zeros(1)).var_frac is None
    assert classifier_scale_from_w(2.0, base_is_conditional=False) == 3.0


def test_pag_perturbs_only_its_layers():
    net = tiny_unet(8)
    x, t, y = torch.randn(3, 3, 8, 8), torch.tensor([100, 500, 900]), torch.tensor([0, 1, 3])
    layers = frozenset({"middle_block.1"})
    plain = net(x, t, y)
    perturbed = net(x, t, y, perturb_attention=True, perturb_layers=layers)
    pag = PerturbedAttentionGuidance(NetworkDenoiser(net), 2.0, layers=layers)(x, t, y).eps
    torch.testing.assert_close(pag, plain + 2.0 * (plain - perturbed), rtol=1e-5, atol=1e-5)
    every = PerturbedAttentionGuidance(NetworkDenoiser(net), 2.0)(x, t, y).eps
    assert float((pag - every).abs().max()) > 1e-4


def test_every_registered_kind_builds_its_wrapper_from_what_it_needs():
    from pipeline.diffusion.guidance import (ATTENTION, CLASSIFIER, GUIDANCE, GUIDE, UNCONDITIONAL, GuidanceKind,
                                             GuidanceParts, guidance_kind, register)

    net = tiny_unet(8)
    plain = NetworkDenoiser(net)
    classifier = NoisyClassifier(8, 4, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                                 attention_resolutions=(4,), num_head_channels=8).eval()
    parts = {UNCONDITIONAL: dict(null_label=net.null_label), GUIDE: dict(guide=NetworkDenoiser(tiny_unet(8, seed=1))),
             CLASSIFIER: dict(classifier=classifier), ATTENTION: dict(attention_layers=frozenset({"middle_block.1"}))}
    wrappers = {"none": NetworkDenoiser, "cfg": ClassifierFreeGuidance, "classifier": ClassifierGuidance,
                "autoguidance": AutoGuidance, "pag": PerturbedAttentionGuidance}
    assert set(wrappers) <= set(GUIDANCE)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([300, 600]), torch.tensor([1, 2])
    for name, wrapper in wrappers.items():
        kind = guidance_kind(name)
        given = {k: v for need in kind.needs for k, v in parts[need].items()}
        built = kind.build(GuidanceParts(denoiser=plain, **given), 1.5, None)
        assert isinstance(built, wrapper), name
        assert as_output(built(x, t, y)).eps.shape == x.shape
        assert kind.table(1.5) == ((None, 1.5) if kind.symbol == "s" else (1.5, 2.5))
    with pytest.raises(ValueError, match="registered already"):
        register(GUIDANCE["cfg"])
    with pytest.raises(ValueError, match="unknown needs"):
        GuidanceKind("bad", "w", "w", "", build=lambda parts, strength, interval: parts.denoiser, needs={"gpu"})
    with pytest.raises(ValueError, match="unknown guidance kind 'nope'"):
        guidance_kind("nope")
