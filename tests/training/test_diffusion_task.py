"""DiffusionTask and NoisyClassifierTask without Ray: dropout to the null label, the importance
sampler's history through state_dict, the loss per t quartile, the loop's snapshot and
extra-scalar hooks' inputs."""
import pickle

import pytest
import torch

from pipeline.training.diffusion import DiffusionTask, NoisyClassifierTask, quartile_sums
from pipeline.training.seeding import step_generator

UNET = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_head_channels=16, num_classes=10, resblock_updown=True)
DIFFUSION = {"timesteps": 20, "schedule": "cosine", "lambda_min": -20.0, "lambda_max": 20.0, "loss": "simple"}


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("p_uncond, expected", [(0.0, 0), (1.0, 64)])
def test_labels_drop_to_the_null_label_with_probability_p_uncond(p_uncond, expected):
    task = DiffusionTask(UNET, DIFFUSION, p_uncond=p_uncond)
    labels = torch.arange(64) % 10
    dropped = task.drop_labels(labels, torch.Generator().manual_seed(0))
    assert int((dropped == 10).sum()) == expected
    assert torch.equal(dropped[dropped != 10], labels[dropped != 10])


def test_dropout_rate_is_close_to_p_uncond():
    task = DiffusionTask(UNET, DIFFUSION, p_uncond=0.2)
    dropped = task.drop_labels(torch.zeros(20000, dtype=torch.long), torch.Generator().manual_seed(1))
    assert abs(float((dropped == 10).float().mean()) - 0.2) < 0.01


def test_loss_is_deterministic_given_the_step_generator_and_records_quartiles():
    task = DiffusionTask(UNET, DIFFUSION, p_uncond=0.1)
    torch.manual_seed(0)
    model = task.build_model()
    images, labels = _batch()
    a = task.loss(model, images, labels, step_generator(3, 0, 128))
    metrics = task.step_metrics()
    b = task.loss(model, images, labels, step_generator(3, 0, 128))
    assert torch.equal(a, b)
    assert sorted(metrics) == [f"loss_t_q{q}" for q in range(4)]
    assert sum(count for _, count in metrics.values()) == 16
    assert task.step_metrics() != {} and task.step_metrics() == {}  # taken once per step


def test_importance_sampler_history_round_trips_through_state_dict():
    task = DiffusionTask(UNET, DIFFUSION, p_uncond=0.1, importance_sampling=True)
    torch.manual_seed(0)
    model = task.build_model()
    for step in range(20):  # 320 per-sample losses: every one of 20 timesteps gets its 10
        task.loss(model, *_batch(seed=step), step_generator(0, 0, step * 16))
    assert task.sampler.warmed_up()
    state = pickle.loads(pickle.dumps(task.state_dict()))
    fresh = DiffusionTask(UNET, DIFFUSION, p_uncond=0.1, importance_sampling=True)
    assert not torch.equal(fresh.sampler.probabilities(), task.sampler.probabilities())
    fresh.load_state_dict(state)
    assert torch.equal(fresh.sampler.probabilities(), task.sampler.probabilities())
    images, labels = _batch(seed=99)
    assert torch.equal(fresh.loss(model, images, labels, step_generator(0, 0, 999)),
                       task.loss(model, images, labels, step_generator(0, 0, 999)))


def test_task_pickles_and_refuses_bad_settings():
    task = DiffusionTask(UNET, DIFFUSION, p_uncond=0.1)
    assert pickle.loads(pickle.dumps(task)) == task
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusionTask({**UNET, "num_classes": None}, DIFFUSION)
    with pytest.raises(ValueError, match="learn_sigma"):
        DiffusionTask(UNET, {**DIFFUSION, "loss": "hybrid"})


def test_hybrid_loss_trains_a_learned_variance():
    task = DiffusionTask({**UNET, "learn_sigma": True}, {**DIFFUSION, "loss": "hybrid"}, p_uncond=0.1)
    model = task.build_model()
    loss = task.loss(model, *_batch(), step_generator(0, 0, 0))
    loss.backward()
    assert torch.isfinite(loss) and model.out[-1].weight.grad.abs().sum() > 0


def test_quartiles_split_t_into_four_equal_ranges():
    sums = quartile_sums(torch.tensor([0, 4, 5, 9, 10, 19]), torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 20)
    assert sums == {"loss_t_q0": (3.0, 2.0), "loss_t_q1": (7.0, 2.0), "loss_t_q2": (5.0, 1.0),
                    "loss_t_q3": (6.0, 1.0)}


def test_noisy_classifier_task_loss():
    kwargs = dict(image_size=8, num_classes=10, in_channels=3, base_channels=16, channel_mult=(1, 2),
                  num_res_blocks=1, attention_resolutions=(4,), num_head_channels=16)
    task = NoisyClassifierTask(kwargs, DIFFUSION)
    model = task.build_model()
    loss = task.loss(model, *_batch(), step_generator(0, 0, 0))
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(10.0))) < 1.0
    assert sum(c for _, c in task.step_metrics().values()) == 16


def test_samples_depend_on_seed_and_index_only_and_grid_layout():
    import io

    from PIL import Image

    from pipeline.training.samples import conditional_samples, grid_png
    from pipeline.weights import DiffusionModel, schedule_from

    torch.manual_seed(0)
    model = DiffusionModel(DiffusionTask(UNET, DIFFUSION).build_model().eval(), schedule_from(DIFFUSION))
    whole, _ = conditional_samples(model, 20, steps=5, seed=1)
    split, _ = conditional_samples(model, 20, steps=5, seed=1, batch_size=7)
    assert whole.shape == (20, 8, 8, 3) and whole.dtype.name == "uint8"
    assert (whole == split).all()
    png = Image.open(io.BytesIO(grid_png(whole, rows=10, scale=2, pad=1)))
    assert png.size == (2 * 17 + 1, 10 * 17 + 1)


def test_training_samples_are_generations_unguided_ddim_images():
    """One sampler, one respacing: training's samples are the `sample` stage's images of the
    unguided DDIM trial (not a second DDIM implementation on other timesteps)."""
    from pipeline.generation.generate import generate
    from pipeline.generation.models import Models
    from pipeline.generation.sampler_config import SamplerConfig
    from pipeline.training.samples import conditional_samples
    from pipeline.weights import DiffusionModel, schedule_from

    torch.manual_seed(0)
    model = DiffusionModel(DiffusionTask(UNET, DIFFUSION).build_model().eval(), schedule_from(DIFFUSION))
    images, labels = conditional_samples(model, 12, steps=7, seed=3)
    config = SamplerConfig(guidance="none", strength=0.0, sampler="ddim", steps=7, eta=0.0, seed=3, net_batch=12)
    expected, expected_labels = generate(config, Models(main=model), range(12), batch_size=12)
    assert (images == expected).all() and (labels == expected_labels).all()
    assert sorted(labels[:10].tolist()) == list(range(10))  # balanced classes: each once per block of 10
