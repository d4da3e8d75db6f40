"""The pipeline's configuration schema: one frozen dataclass per section, and the rules between them.

`load_config` reads a YAML file (default: configs/default.yaml) and dotted `--set` overrides
through pipeline.typed_yaml, which checks every key, type and bound and names the key, the value
and its origin in a `ConfigError`, before Ray or MLflow are touched. configs/default.yaml lists
every key with a comment; the bounds live beside each field (`setting(default, ge=...)`).

Rules that look at more than one field are the functions in RULES, each `rule(config, fail)`,
run in order once every field has passed. Where a rule's subject is library code (the UNet, the
losses, the trainer's batch split), the rule calls that code's own check inside
`fail.naming(argument=key, ...)`, so the check is written once, beside its subject, and the error
still names the config key. Those modules import torch: the rules import them when they run, so
`import pipeline.config` stays light (Ray workers, tracking, `--help`) and `load_config` pays
torch's import once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import yaml

from pipeline import typed_yaml
from pipeline.arguments import ArgumentError
from pipeline.training.spec import check_batch_split
from pipeline.typed_yaml import (  # noqa: F401  (importers know them from here)
    ConfigError,
    Fail,
    flatten,
    hash_value,
    setting,
    with_defaults,
)

# Function-local imports: they bring in torch and SciPy, which importing this module does not need.

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class GeneratedDataConfig:
    """An ImageNet-shaped tree made for tests and demos; its class is visible in the image."""

    num_classes: int = setting(10, ge=2, le=1000)
    train_per_class: int = setting(50, ge=1)
    val_per_class: int = setting(10, ge=0)
    image_size: int = setting(64, ge=8, le=1024)
    layout: Literal["kaggle", "tars", "imagefolder"] = "kaggle"
    seed: int = setting(0, ge=0)


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "imagefolder", "imagenet_kaggle", "imagenet_tars", "parquet", "generated"] = "digits"
    path: Optional[str] = None              # dataset root (every source but digits / generated)
    resolution: int = setting(8, ge=8, le=256)  # square output resolution in pixels
    val_fraction: float = setting(0.1, ge=0.0, lt=1.0)  # held out where the source has no val split
    samples_per_shard: int = setting(256, ge=1)
    num_tasks: Optional[int] = setting(None, ge=1)  # shard tasks in flight; None: one per shard to write
    min_success_rate: float = setting(0.99, ge=0.0, le=1.0)
    max_images_per_class: Optional[int] = setting(None, ge=1)
    seed: int = setting(0, ge=0)
    generated: GeneratedDataConfig = setting(GeneratedDataConfig())
    png_compress_level: int = setting(1, ge=0, le=9)  # zlib level of the shards' PNGs (1: fast, 9: smallest)
    jpeg_draft: bool = True                 # libjpeg does ADM's first halvings in the DCT domain; false: bit-exact


@dataclass(frozen=True)
class ModelConfig:
    """ADM UNet (Dhariwal & Nichol 2021)."""

    base_channels: int = setting(64, ge=8)
    channel_mult: list[int] = setting([1, 2], ge=1)
    num_res_blocks: int = setting(2, ge=1)
    attention_resolutions: list[int] = setting([4])  # in pixels of the feature map
    num_head_channels: int = setting(64, ge=-1)  # channels per head (ADM: 64); -1 uses num_heads
    num_heads: int = setting(4, ge=1)
    dropout: float = setting(0.1, ge=0.0, lt=1.0)
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    learn_sigma: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = setting(1000, ge=2)
    schedule: Literal["linear", "cosine", "lambda"] = "cosine"
    lambda_min: float = -20.0               # the continuous-time lambda schedule of the CFG paper
    lambda_max: float = 20.0
    loss: Literal["simple", "hybrid"] = "simple"
    importance_sampling: bool = False


@dataclass(frozen=True)
class TrainingFields:
    """What every trained network's section sets (train, classifier, evalnet): the stages hand it
    to pipeline.training.spec.TrainSpec. Sizes are in thousands of images (kimg)."""

    kimg: float = setting(100.0, gt=0)      # duration
    batch_size: int = setting(128, ge=1)    # global batch in images, across workers
    lr: float = setting(2e-4, gt=0, le=1.0)
    warmup_kimg: float = setting(0.0, ge=0)  # linear learning-rate warm-up from 0
    weight_decay: float = setting(0.0, ge=0)
    grad_clip: float = setting(1.0, gt=0)   # max global gradient norm
    checkpoint_kimg: float = setting(10.0, gt=0)  # a checkpoint (to resume from) this often, and at the end
    keep_checkpoints: int = setting(2, ge=1)
    num_workers: int = setting(2, ge=1)
    use_gpu: bool = False                   # each worker asks Ray for one GPU and trains on CUDA
    cpus_per_worker: float = setting(1.0, gt=0)  # CPUs each training worker asks Ray for
    loader_workers: int = setting(0, ge=0)  # data-loading processes per worker (0: in the worker)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of forward + loss; weights stay fp32
    seed: int = setting(0, ge=0)


@dataclass(frozen=True)
class GuideConfig:
    """The weaker model autoguidance guides with (Karras et al. 2024)."""

    kind: Literal["smaller", "early"] = "smaller"
    base_channels: int = setting(32, ge=8)  # for kind=smaller
    kimg: float = setting(50.0, gt=0)       # training duration of the guide


@dataclass(frozen=True)
class TrainConfig(with_defaults(TrainingFields, kimg=200.0, warmup_kimg=10.0, checkpoint_kimg=20.0)):
    """Training of the class-conditional diffusion model, one run per p_uncond value."""

    p_uncond: list[float] = setting([0.1, 0.2])  # classifier-free dropout probabilities, one model each
    ema_decays: list[float] = setting([0.999])
    sample_grid_kimg: float = setting(50.0, gt=0)
    guide: GuideConfig = setting(GuideConfig())


@dataclass(frozen=True)
class ClassifierConfig(with_defaults(TrainingFields, kimg=100.0, lr=3e-4, warmup_kimg=1.0, weight_decay=0.05,
                                     checkpoint_kimg=25.0, seed=1)):
    """Noisy classifier: the UNet's encoder half with attention pooling, conditioned on t (ADM)."""

    base_channels: int = setting(32, ge=8)
    channel_mult: list[int] = setting([1, 2], ge=1)
    num_res_blocks: int = setting(1, ge=1)
    attention_resolutions: list[int] = setting([4])
    num_head_channels: int = setting(32, ge=-1)


@dataclass(frozen=True)
class EvalnetConfig(with_defaults(TrainingFields, kimg=30.0, lr=2e-3, warmup_kimg=2.0, weight_decay=1e-4,
                                  grad_clip=5.0, seed=2)):
    """Clean evaluation classifier: the offline feature space for metrics."""

    width: int = setting(32, ge=8)          # channels of the first stage
    depth: int = setting(1, ge=1)           # residual blocks per stage
    feature_dim: int = setting(64, ge=8)    # width * 2**(stages - 1): sets the number of stages


@dataclass(frozen=True)
class SampleConfig:
    """One sampler configuration (the `sample` and `evaluate` stages): the fields of
    pipeline.generation.SamplerConfig, and how many images, in what chunks, on how many actors
    (the sampler pool, pipeline.generation.pool)."""

    RENAMED: ClassVar[dict[str, str]] = {
        "w": "sample.strength (the guidance kind's strength: w for cfg, autoguidance and pag; ADM's scale s "
             "for classifier guidance)"}

    p_uncond: float = setting(0.1, ge=0.0, le=1.0)  # which trained model: its p_uncond
    guidance: str = "cfg"  # a guidance kind of pipeline.diffusion.guidance.GUIDANCE
    strength: float = setting(1.0, ge=0.0)  # the kind's strength: w (s = 1 + w), or ADM's scale s for classifier
    guidance_interval: Optional[list[float]] = setting(None)  # [lo, hi] fraction of the trajectory
    pag_layers: str = "paper"  # PAG's perturbed self-attention layers: paper | all | names, commas
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = setting(50, ge=1)
    eta: float = setting(0.0, ge=0.0)
    num_images: int = setting(1000, ge=1)
    class_dist: Literal["uniform", "balanced"] = "balanced"
    batch_size: int = setting(250, ge=1)
    chunk_size: int = setting(500, ge=1)  # images per atomically written chunk
    num_actors: int = setting(2, ge=1)  # sampler actors (at most; joined to a cluster, the ones not placed yet wait)
    use_gpu: bool = False                   # each sampler actor asks Ray for one GPU and samples on CUDA
    cpus_per_actor: float = setting(1.0, gt=0)  # CPUs each sampler actor asks Ray for (its torch threads)
    seed: int = setting(0, ge=0)
    # bf16: the denoising networks under bf16 autocast (AMX / tensor cores); images then depend on the
    # hardware's bf16 kernels
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # auto: bf16 where the device has it natively
    net_batch: Optional[int] = setting(None, ge=1)  # rows of every network call; null: 64 on CPU, 256 on CUDA


@dataclass(frozen=True)
class EvalConfig:
    extractors: list[Literal["inception", "evalnet"]] = setting(["evalnet", "inception"])
    inception_weights: Optional[str] = None  # path to clean-fid's inception-2015-12-05.pt
    require_inception: bool = False         # fail when the Inception weights are missing
    num_reference: Optional[int] = setting(None, ge=2)  # real images for reference stats; None: all
    pr_neighbours: int = setting(3, ge=1)   # k of improved precision/recall
    batch_size: int = setting(500, ge=1)
    # feature extraction (reference_stats, evaluate) on a pool of Ray actors, statistics merged
    num_workers: int = setting(2, ge=1)     # feature extractor actors (at most)
    use_gpu: bool = False                   # extractors (here and in the sweep's pool) on CUDA; a worker asks for a GPU
    cpus_per_worker: float = setting(1.0, gt=0)


@dataclass(frozen=True)
class SweepConfig:
    RENAMED: ClassVar[dict[str, str]] = {
        "w": "sweep.guidance.cfg (strengths per guidance kind: sweep.guidance: {cfg: [...], classifier: [...]})",
        "classifier_scale": "sweep.guidance.classifier (ADM's classifier scales s)",
        "autoguidance_w": "sweep.guidance.autoguidance",
        "pag_w": "sweep.guidance.pag",
        "gpus_per_trial": "sweep.use_gpu (the sweep's sampler actors take one GPU each and serve every trial; a "
                          "trial itself only hands its chunks to them and computes its metrics: sweep.cpus_per_trial)"}

    # guidance kind -> its strengths (as sample.strength); strength 0 is the unguided model, run once
    guidance: dict[str, list[float]] = setting(
        {"none": [0.0], "cfg": [0.0, 0.5, 1.0, 2.0, 3.0, 4.0], "classifier": [1.0, 4.0], "autoguidance": [1.0],
         "pag": [1.0]})
    guidance_interval: list[Optional[list[float]]] = setting([None])  # as sample.guidance_interval; each one swept
    pag_layers: list[str] = setting(["paper"])  # as sample.pag_layers; each choice swept for pag
    samplers: list[Literal["ddpm", "ddim"]] = setting(["ddim"])
    steps: list[int] = setting([25, 50])
    eta: float = setting(0.0, ge=0.0)  # DDIM's eta for the ddim trials
    class_dist: Literal["uniform", "balanced"] = "balanced"
    precision: Literal["fp32", "bf16", "auto"] = "fp32"  # as sample.precision, for every trial
    net_batch: Optional[int] = setting(None, ge=1)  # as sample.net_batch; null: by the trials' device
    batch_size: int = setting(250, ge=1)  # images through the sampler at once, per trial
    p_uncond: Optional[list[float]] = setting(None)  # subset of train.p_uncond; None: all
    screen_images: int = setting(500, ge=2)
    full_images: int = setting(2000, ge=2)
    # full N: per guidance kind the configurations not clearly worse than its best, at most top_k (None: all)
    top_k: Optional[int] = setting(2, ge=1)
    # one pool of sampler actors serves every trial's (configuration, index range) chunks and their features
    num_actors: int = setting(2, ge=1)      # sampler actors (at most; joined to a cluster, the ones not placed yet wait)
    use_gpu: bool = False                   # each sampler actor asks Ray for one GPU and samples on CUDA
    cpus_per_actor: float = setting(1.0, gt=0)
    chunk_size: int = setting(500, ge=1)    # images per chunk: the unit of work and of resume
    cpus_per_trial: float = setting(1.0, gt=0)  # a trial: hands chunks to the pool, merges statistics, computes metrics
    max_concurrent: Optional[int] = setting(None, ge=1)  # trials at once (null: as many as fit)
    seed: int = setting(0, ge=0)
    reported: Optional[str] = setting(None)  # YAML file of published results shown beside (marked reported)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "./mlruns"
    experiment: str = "guided-diffusion"


@dataclass(frozen=True)
class StoreConfig:
    root: str = "./runs"                    # local path or pyarrow.fs URI (file://, s3://...)
    # how cached outputs are verified before use: stat (sizes, and the sha256 of every file changed
    # since its hash was last confirmed), size (sizes only) or sha256 (every file hashed)
    verify: Literal["size", "stat", "sha256"] = "stat"


@dataclass(frozen=True)
class CapacityConfig:
    """What `--dry-run`'s capacity plan (pipeline.capacity) assumes about the cluster; nothing else
    reads it. Rates are effective: the FLOPs the plan counts (pipeline.nets.flops) per second achieved.
    gpus / cpus null: a local instance's (cluster.num_gpus / num_cpus, else this machine's); joined to a
    cluster, as many as each stage asks for."""

    gpus: Optional[int] = setting(None, ge=0)
    cpus: Optional[int] = setting(None, ge=1)
    gpu_tflops_bf16: float = setting(495.0, gt=0)  # one GPU under bf16/fp16 autocast: 50% of an H100 SXM's dense 989
    gpu_tflops_fp32: float = setting(130.0, gt=0)  # one GPU in fp32 (cuDNN convolutions in TF32): a guess
    cpu_tflops: float = setting(0.03, gt=0)        # one CPU core, fp32
    bench: Optional[str] = None  # a `python -m pipeline.bench gpu --out FILE` record: replaces gpu_tflops_*


@dataclass(frozen=True)
class ClusterConfig:
    address: Optional[str] = None           # None: a local Ray instance (or RAY_ADDRESS under `ray job submit`)
    num_cpus: Optional[int] = setting(None, ge=1)
    num_gpus: Optional[int] = setting(None, ge=0)
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    namespace: str = "pipeline"
    require_cuda: bool = True    # a unit given a GPU fails where torch sees no CUDA; false: warn, use CPU
    wait_timeout_s: float = setting(3600.0, gt=0)  # joined to a cluster: how long a stage waits for its units
    capacity: CapacityConfig = setting(CapacityConfig())


@dataclass(frozen=True)
class Config:
    data: DataConfig = setting(DataConfig())
    model: ModelConfig = setting(ModelConfig())
    diffusion: DiffusionConfig = setting(DiffusionConfig())
    train: TrainConfig = setting(TrainConfig())
    classifier: ClassifierConfig = setting(ClassifierConfig())
    evalnet: EvalnetConfig = setting(EvalnetConfig())
    sample: SampleConfig = setting(SampleConfig())
    eval: EvalConfig = setting(EvalConfig())
    sweep: SweepConfig = setting(SweepConfig())
    tracking: TrackingConfig = setting(TrackingConfig())
    store: StoreConfig = setting(StoreConfig())
    cluster: ClusterConfig = setting(ClusterConfig())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section(self, name: str) -> dict[str, Any]:
        return dataclasses.asdict(getattr(self, name))

    def hash(self) -> str:
        return hash_value(self.to_dict())

    def section_hash(self, *names: str) -> str:
        return hash_value({n: self.section(n) for n in names})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


def load_config(path: Optional[str | Path] = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (default: configs/default.yaml), apply `key=value` overrides, validate."""
    return typed_yaml.load(Config, DEFAULT_CONFIG if path is None else path, overrides, RULES)


# ----------------------------------------------------------------------------------------------
# Rules between fields, in the order they run


def data_rules(c: Config, fail: Fail) -> None:
    from pipeline.data.sources.listing import check_location

    with fail.naming(path="data.path"):
        check_location(c.data.source, c.data.path)


UNET_ARGUMENTS = ("base_channels", "channel_mult", "num_res_blocks", "attention_resolutions", "num_heads",
                  "num_head_channels")


def network_rules(c: Config, fail: Fail) -> None:
    """The UNet (`model`) and the noisy classifier (`classifier`, the UNet's encoder) must be
    buildable at data.resolution; num_head_channels -1 stands for None (use num_heads)."""
    from pipeline.nets.unet import validate_unet_config

    if c.model.num_head_channels == 0:
        fail("model.num_head_channels", 0, "must be positive, or -1 to use model.num_heads")
    for name in ("model", "classifier"):
        net = getattr(c, name)
        arguments = dict(base_channels=net.base_channels, channel_mult=net.channel_mult,
                         num_res_blocks=net.num_res_blocks, attention_resolutions=net.attention_resolutions,
                         num_head_channels=net.num_head_channels if net.num_head_channels > 0 else None)
        if name == "model":
            arguments["num_heads"] = net.num_heads  # the classifier keeps NoisyClassifier's default
        with fail.naming(image_size="data.resolution", **{a: f"{name}.{a}" for a in UNET_ARGUMENTS}):
            validate_unet_config(c.data.resolution, **arguments)
        if name == "model" and c.train.guide.kind == "smaller":  # autoguidance's guide: this UNet, narrower
            try:
                validate_unet_config(c.data.resolution, **{**arguments, "base_channels": c.train.guide.base_channels})
            except ArgumentError as error:
                fail("train.guide.base_channels", c.train.guide.base_channels,
                     f"the guide (the model's UNet at this width) cannot be built: {error}")


def diffusion_rules(c: Config, fail: Fail) -> None:
    from pipeline.diffusion.losses import check_loss_kind
    from pipeline.diffusion.schedules import check_lambda_range

    with fail.naming(lambda_min="diffusion.lambda_min", lambda_max="diffusion.lambda_max"):
        check_lambda_range(c.diffusion.lambda_min, c.diffusion.lambda_max)
    with fail.naming(loss="diffusion.loss", learn_sigma="model.learn_sigma"):
        check_loss_kind(c.diffusion.loss, c.model.learn_sigma)


def training_rules(c: Config, fail: Fail) -> None:
    from pipeline.training.diffusion import check_p_uncond
    from pipeline.training.evalnet import num_stages

    tr = c.train
    if not tr.p_uncond:
        fail("train.p_uncond", tr.p_uncond, "needs at least one value")
    for i, p in enumerate(tr.p_uncond):
        with fail.naming(p_uncond=f"train.p_uncond[{i}]"):
            check_p_uncond(p)
    if len(set(tr.p_uncond)) != len(tr.p_uncond):
        fail("train.p_uncond", tr.p_uncond, "values must be distinct")
    if not tr.ema_decays:
        fail("train.ema_decays", tr.ema_decays, "needs at least one decay")
    for i, decay in enumerate(tr.ema_decays):
        if not 0.0 < decay < 1.0:
            fail(f"train.ema_decays[{i}]", decay, "must be in (0, 1)")
    if tr.guide.kind == "early" and tr.guide.kimg >= tr.kimg:
        fail("train.guide.kimg", tr.guide.kimg,
             f"an early-snapshot guide must be taken before the end of training (train.kimg = {tr.kimg:g})")
    for name in ("train", "classifier", "evalnet"):
        section = getattr(c, name)
        with fail.naming(batch_size=f"{name}.batch_size", num_workers=f"{name}.num_workers"):
            check_batch_split(section.batch_size, section.num_workers)
    with fail.naming(width="evalnet.width", feature_dim="evalnet.feature_dim"):
        num_stages(c.evalnet.width, c.evalnet.feature_dim)


def sample_and_sweep_rules(c: Config, fail: Fail) -> None:
    """The `sample` and `sweep` rules live with the sampler configuration they describe."""
    from pipeline.generation.sampler_config import config_problems

    for key, value, problem in config_problems(c):
        fail(key, value, problem)


def eval_rules(c: Config, fail: Fail) -> None:
    if not c.eval.extractors:
        fail("eval.extractors", c.eval.extractors, "needs at least one feature extractor")
    if c.eval.require_inception and "inception" not in c.eval.extractors:
        fail("eval.require_inception", True, "'inception' is not among eval.extractors")


def store_and_tracking_rules(c: Config, fail: Fail) -> None:
    """The form of the store and tracking settings; whether they answer is asked before anything
    starts (pipeline.run.preflight), not here."""
    from pipeline.tracking import uri_form_problem  # here: pipeline.tracking imports this module

    if not c.store.root:
        fail("store.root", c.store.root, "must be a path or URI")
    if not c.tracking.uri:
        fail("tracking.uri", c.tracking.uri, "must be an MLflow tracking URI")
    problem = uri_form_problem(c.tracking.uri)
    if problem:
        fail("tracking.uri", c.tracking.uri, problem)
    if not c.tracking.experiment.strip():
        fail("tracking.experiment", c.tracking.experiment, "an experiment name is required")
    if not c.tracking.artifact_location.strip():
        fail("tracking.artifact_location", c.tracking.artifact_location, "a path or URI is required")


RULES = (data_rules, network_rules, diffusion_rules, training_rules, sample_and_sweep_rules, eval_rules,
         store_and_tracking_rules)
