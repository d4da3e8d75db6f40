"""Sampling library: configurations, labels, guided denoisers, per-image determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.generation import (SamplerConfig, build_denoiser, generate, guided_steps, interval_timesteps,
                                 labels_for, load_models, nfe_per_image)
from pipeline.generation.batching import FixedBatch
from tests.generation.conftest import NUM_CLASSES, UNET, randomized

GUIDANCE = ["none", "cfg", "classifier", "autoguidance", "pag"]


def trial(**kw) -> SamplerConfig:
    base = dict(guidance="cfg", strength=1.5, sampler="ddim", steps=4, seed=3, p_uncond=0.1)
    return SamplerConfig(**{**base, **kw})


# -- configurations and costs


def test_trial_round_trips_and_reads_the_sample_config():
    from pipeline.config import load_config

    cfg = load_config(None, ["sample.guidance_interval=[0.2, 0.8]", "sample.strength=2.0", "sample.precision=fp32"])
    t = SamplerConfig.from_section(cfg.sample)
    assert t.guidance_interval == (0.2, 0.8) and t.w == 2.0 and t.sampler == cfg.sample.sampler
    assert SamplerConfig.from_dict(t.to_dict()) == t
    # the name leaves out settings at their usual value (N is not part of a configuration)
    assert t.name == "cfg-w2-i0.2-0.8-ddim50-p0.1"
    with pytest.raises(ValueError, match="eta"):
        SamplerConfig(sampler="ddpm", eta=1.0)
    with pytest.raises(ValueError, match="interval"):
        SamplerConfig(guidance_interval=(0.9, 0.1))


def test_nfe_counts_the_guiding_pass_only_where_guidance_acts():
    assert nfe_per_image(trial(guidance="none", steps=50)) == 50
    for kind in ("cfg", "classifier", "autoguidance", "pag"):
        assert nfe_per_image(trial(guidance=kind, steps=50)) == 100
    assert nfe_per_image(trial(guidance="cfg", strength=0.0, steps=50)) == 50
    # 10 evenly spaced steps of 1000: 0, 111, ..., 999; u in [0.3, 0.7] keeps t = 333, 444, 555, 666
    assert interval_timesteps((0.3, 0.7), 1000) == (300, 699)
    assert guided_steps(trial(steps=10, guidance_interval=(0.3, 0.7)), 1000) == 4
    assert nfe_per_image(trial(steps=10, guidance_interval=(0.3, 0.7)), 1000) == 14


# -- labels


@pytest.mark.parametrize("dist", ["balanced", "uniform"])
def test_labels_depend_only_on_seed_and_index(dist):
    t = trial(class_dist=dist)
    full = labels_for(t, range(100), NUM_CLASSES)
    picked = [97, 3, 42, 10, 11]
    assert torch.equal(labels_for(t, picked, NUM_CLASSES), full[picked])
    assert not torch.equal(labels_for(trial(class_dist=dist, seed=4), range(100), NUM_CLASSES), full)
    assert int(full.min()) >= 0 and int(full.max()) < NUM_CLASSES


def test_balanced_labels_are_balanced_in_every_prefix():
    labels = labels_for(trial(class_dist="balanced"), range(95), NUM_CLASSES)
    for n in (10, 37, 95):
        counts = torch.bincount(labels[:n], minlength=NUM_CLASSES)
        assert int(counts.max()) - int(counts.min()) <= 1
    assert labels[:10].tolist() != list(range(10))  # shuffled within a block


# -- fixed-shape network calls


def test_rows_do_not_depend_on_their_batch_once_the_call_shape_is_fixed():
    from pipeline.nets.unet import UNet

    net = randomized(UNet(**UNET), 0)
    x, t, y = torch.randn(11, 3, 8, 8), torch.randint(0, 100, (11,)), torch.randint(0, 10, (11,))
    fixed = FixedBatch(net, 4)
    with torch.inference_mode():
        whole = fixed(x, t, y)
        parts = torch.cat([fixed(x[:3], t[:3], y[:3]), fixed(x[3:], t[3:], y[3:])])
        reversed_rows = fixed(x.flip(0), t.flip(0), y.flip(0)).flip(0)
    assert torch.equal(whole, parts) and torch.equal(whole, reversed_rows)
    assert fixed.num_classes == 10


# -- generation


@pytest.mark.parametrize("guidance", GUIDANCE)
def test_images_identical_for_any_batch_size_and_split(tiny_models, guidance):
    t = trial(guidance=guidance, sampler="ddpm" if guidance in ("cfg", "pag") else "ddim",
              eta=0.0 if guidance in ("cfg", "pag") else 0.5,
              guidance_interval=(0.2, 0.9) if guidance == "cfg" else None, net_batch=8)
    models = load_models(t, tiny_models["diffusion"], tiny_models["classifier"])
    images, labels = generate(t, models, range(12), batch_size=12)
    assert images.shape == (12, 8, 8, 3) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert images.std() > 5  # not a constant image
    for batch_size in (1, 5):
        again, again_labels = generate(t, models, range(12), batch_size=batch_size)
        assert np.array_equal(again, images) and np.array_equal(again_labels, labels)
    order = [9, 2, 11, 0, 5]
    part, part_labels = generate(t, models, order, batch_size=2)
    assert np.array_equal(part, images[order]) and np.array_equal(part_labels, labels[order])
    assert np.array_equal(labels, labels_for(t, range(12), NUM_CLASSES).numpy())


def test_cached_networks_shared_by_configurations_give_the_images_of_fresh_ones(tiny_models):
    """A pool worker keeps the networks it loaded (LRU by store location) and samples configuration
    after configuration with them: PAG's perturbed attention, classifier gradients or a guide must
    leave nothing behind that changes the next configuration's images."""
    from pipeline.generation.workers import LRU

    configs = [trial(guidance=g, strength=2.0, net_batch=8) for g in ("pag", "classifier", "autoguidance", "cfg")]
    cache = LRU(3)
    fresh = {c.id: generate(c, load_models(c, tiny_models["diffusion"], tiny_models["classifier"]), range(6), 6)[0]
             for c in configs}
    for c in configs + configs[::-1]:
        models = load_models(c, tiny_models["diffusion"], tiny_models["classifier"], cached=cache.get)
        assert np.array_equal(generate(c, models, range(6), 3)[0], fresh[c.id]), c.name
    assert cache.loads == 3  # main, classifier, guide: each read from the store once
    assert sorted(key[0] for key in cache.items) == ["classifier", "diffusion", "guide"]
    small = LRU(2)
    for key in ("a", "b", "a", "c", "a", "b"):
        small.get(key, lambda: object())
    assert small.loads == 4 and list(small.items) == ["a", "b"]  # c pushed b out, b pushed c out


def test_chunks_of_a_grown_set_keep_the_smaller_sets_chunks(tiny_models):
    """The sweep's full round plans its chunks with the screening round's as a prefix: same names,
    same index ranges, so the screened chunks are reused as they are and the union is the set."""
    from pipeline.generation import plan_chunks

    screen, full = plan_chunks(10, 4), plan_chunks(23, 4, prefix=10)
    assert full[:len(screen)] == screen and [(p.start, p.stop) for p in full[len(screen):]] == [
        (10, 14), (14, 18), (18, 22), (22, 23)]
    assert [p.index for p in full] == list(range(len(full))) and plan_chunks(23, 4, prefix=30) == plan_chunks(23, 4)
    t = trial(net_batch=8)
    models = load_models(t, tiny_models["diffusion"])
    whole, _ = generate(t, models, range(23), 23)
    parts = np.concatenate([generate(t, models, p.indices, 3)[0] for p in full])
    assert np.array_equal(parts, whole)


@pytest.mark.parametrize("guidance", ["cfg", "autoguidance", "pag"])
def test_bf16_precision_stays_close_to_fp32_and_batch_invariant(tiny_models, guidance):
    """precision=bf16 runs the denoising networks under bf16 autocast: the images move by bf16
    rounding only (a few uint8 levels on most pixels) and still do not depend on the batch size."""
    fp32 = trial(guidance=guidance, steps=8, net_batch=8)
    bf16 = trial(guidance=guidance, steps=8, precision="bf16", net_batch=8)
    assert bf16.name.endswith("-bf16") and SamplerConfig.from_dict(bf16.to_dict()) == bf16
    models = load_models(fp32, tiny_models["diffusion"], tiny_models["classifier"])
    reference, _ = generate(fp32, models, range(12), batch_size=12)
    images, _ = generate(bf16, models, range(12), batch_size=12)
    again, _ = generate(bf16, models, range(12), batch_size=5)
    assert np.array_equal(again, images)
    difference = np.abs(images.astype(int) - reference.astype(int))
    assert difference.max() > 0  # bf16 really ran
    assert np.median(difference) <= 3 and difference.mean() < 8, (np.median(difference), difference.mean())


def test_network_denoiser_autocast_returns_float32_from_a_bf16_network():
    from pipeline.diffusion.denoiser import NetworkDenoiser

    weight = torch.randn(16, 16, dtype=torch.float64).float()
    seen = []

    def net(x, t, labels):
        out = x @ weight
        seen.append(out.dtype)
        return out

    x = torch.randn(4, 16)
    exact = NetworkDenoiser(net)(x, torch.zeros(4, dtype=torch.long)).eps
    rounded = NetworkDenoiser(net, autocast_dtype=torch.bfloat16)(x, torch.zeros(4, dtype=torch.long)).eps
    assert seen == [torch.float32, torch.bfloat16] and rounded.dtype == torch.float32
    assert 0 < float((rounded - exact).abs().max()) < 0.1 * float(exact.abs().max())
    with pytest.raises(ValueError, match="precision"):
        SamplerConfig(precision="fp16")


def test_guidance_changes_the_images_and_the_seed_matters(tiny_models):
    plain = trial(guidance="none")
    models = load_models(trial(guidance="autoguidance"), tiny_models["diffusion"], tiny_models["classifier"])
    base, _ = generate(plain, models, range(4), 4)
    for kind in ("cfg", "classifier", "autoguidance", "pag"):
        guided_models = load_models(trial(guidance=kind), tiny_models["diffusion"], tiny_models["classifier"])
        guided, _ = generate(trial(guidance=kind, strength=4.0), guided_models, range(4), 4)
        assert not np.array_equal(guided, base), kind
    other_seed, _ = generate(trial(guidance="none", seed=4), models, range(4), 4)
    assert not np.array_equal(other_seed, base)
    assert np.array_equal(generate(trial(guidance="cfg", strength=0.0), models, range(4), 4)[0], base)


def test_load_models_loads_what_the_guidance_needs(tiny_models):
    models = load_models(trial(guidance="cfg"), tiny_models["diffusion"])
    assert models.guide is None and models.classifier is None and models.main.num_classes == NUM_CLASSES
    assert load_models(trial(guidance="autoguidance"), tiny_models["diffusion"]).guide.meta["role"] == "guide"
    with pytest.raises(ValueError, match="train_classifier"):
        load_models(trial(guidance="classifier"), tiny_models["diffusion"])
    with pytest.raises(ValueError, match="p_uncond=0.2"):
        load_models(trial(p_uncond=0.2), tiny_models["diffusion"])


def test_denoiser_matches_the_guidance_kind(tiny_models):
    from pipeline.diffusion.guidance import ClassifierFreeGuidance

    t = trial(guidance="cfg", guidance_interval=(0.5, 1.0))
    d = build_denoiser(t, load_models(t, tiny_models["diffusion"]))
    assert isinstance(d, ClassifierFreeGuidance) and d.interval == (50, 99) and d.null_label == NUM_CLASSES


class ExactPointMassNet(torch.nn.Module):
    """The exact noise predictor when every image of class c is the constant image mu_c:
    eps(x_t, t, c) = (x_t - sqrt(alpha_bar_t) mu_c) / sqrt(1 - alpha_bar_t), t on the training grid.
    The null label predicts for mu_null = 0. Samples from it must be the class images."""

    def __init__(self, schedule, colours: torch.Tensor):
        super().__init__()
        self.alpha_bar = schedule.alphas_cumprod.float()
        self.colours = torch.cat([colours, torch.zeros(1, 3)])  # [K + 1, 3] in [-1, 1]
        self.learn_sigma, self.num_classes, self.null_label = False, colours.shape[0], colours.shape[0]
        self.image_size, self.in_channels = 8, 3

    def forward(self, x, t, labels, perturb_attention=None):
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        mu = self.colours[labels].view(-1, 3, 1, 1)
        return (x - a.sqrt() * mu) / (1 - a).sqrt()


@pytest.mark.parametrize("sampler,w", [("ddim", 0.0), ("ddpm", 0.0), ("ddim", 0.5), ("ddpm", 0.5)])
def test_an_exact_denoiser_samples_exactly_its_class_images(sampler, w):
    """End-to-end check of the sampling path (labels, respacing to original timesteps, sampler,
    uint8 conversion): each image is the constant colour of its own label. With CFG against a
    null prediction of 0, every x0 prediction is (1 + w) mu_c (eq. 6 of the CFG paper), clipped."""
    from pipeline.diffusion.schedules import make_schedule
    from pipeline.generation import Models
    from pipeline.weights import DiffusionModel

    schedule = make_schedule("cosine", 100)
    levels = torch.tensor(np.random.default_rng(0).integers(20, 236, size=(NUM_CLASSES, 3)))
    models = Models(main=DiffusionModel(ExactPointMassNet(schedule, levels.float() / 127.5 - 1), schedule))
    t = trial(guidance="cfg", strength=w, sampler=sampler, steps=10, class_dist="uniform")
    images, labels = generate(t, models, range(12), batch_size=5)
    mu = levels[torch.from_numpy(labels)].float() / 127.5 - 1
    expected = ((((1 + w) * mu).clamp(-1, 1) + 1) * 127.5).round().numpy()[:, None, None, :]
    assert np.abs(images.astype(int) - expected).max() <= 1


def test_every_network_call_has_the_configurations_net_batch_rows():
    """net_batch is part of the configuration: every call of the network has exactly that many
    rows (padded), whatever the batch size, so the images are fixed by it."""
    from pipeline.diffusion.schedules import make_schedule
    from pipeline.generation import Models
    from pipeline.weights import DiffusionModel

    schedule = make_schedule("cosine", 100)
    net = ExactPointMassNet(schedule, torch.zeros(NUM_CLASSES, 3))
    rows = []
    net.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    models = Models(main=DiffusionModel(net, schedule))
    for net_batch, batch_size in ((16, 5), (16, 12), (4, 3)):
        rows.clear()
        generate(trial(guidance="cfg", steps=3, net_batch=net_batch), models, range(12), batch_size=batch_size)
        assert set(rows) == {net_batch}, (net_batch, batch_size, rows)
    assert trial(net_batch=16).id != trial(net_batch=64).id and trial(net_batch=16).name.endswith("-nb16")
