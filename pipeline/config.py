"""Typed pipeline configuration: YAML files + dotted `--set` overrides, strict validation, hashing.

A config is a tree of frozen dataclasses, one per section. Loading is strict: an unknown key,
a wrong type or an out-of-range value raises `ConfigError` naming the key, the value and where
it came from (the YAML file or `--set`), before Ray or MLflow are touched.

Range checks live beside each field as metadata (`_field(default, ge=..., le=...)`); rules that
tie two sections together live in `_check_cross_section`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

GUIDANCE_KINDS = ("none", "cfg", "classifier", "autoguidance", "pag")
SAMPLERS = ("ddpm", "ddim")


class ConfigError(ValueError):
    """A config value was rejected. The message names the key, the value and its origin."""

    def __init__(self, key: str, value: Any, origin: str, problem: str):
        self.key, self.value, self.origin, self.problem = key, value, origin, problem
        shown = _short_repr(value)
        super().__init__(f"{origin}: {key} = {shown}: {problem}")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _field(default: Any, *, ge=None, gt=None, le=None, lt=None, doc: str = ""):
    """A dataclass field with a default (lists copied) and range metadata checked on load."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class GeneratedDataConfig:
    """An ImageNet-shaped tree made for tests and demos; its class is visible in the image."""

    num_classes: int = _field(10, ge=2, le=1000)
    train_per_class: int = _field(50, ge=1)
    val_per_class: int = _field(10, ge=0)
    image_size: int = _field(64, ge=8, le=1024)
    layout: Literal["kaggle", "tars", "imagefolder"] = "kaggle"
    seed: int = _field(0, ge=0)


@dataclass(frozen=True)
class DataConfig:
    source: Literal["digits", "imagefolder", "imagenet_kaggle", "imagenet_tars", "parquet", "generated"] = "digits"
    path: Optional[str] = _field(None, doc="dataset root (required for every source but digits/generated)")
    resolution: int = _field(8, ge=8, le=256, doc="square output resolution in pixels")
    val_fraction: float = _field(0.1, ge=0.0, lt=1.0, doc="held-out fraction for sources without a val split")
    samples_per_shard: int = _field(256, ge=1)
    num_tasks: Optional[int] = _field(None, ge=1, doc="shard tasks in flight; None: one per shard to write")
    min_success_rate: float = _field(0.99, ge=0.0, le=1.0)
    max_images_per_class: Optional[int] = _field(None, ge=1)
    seed: int = _field(0, ge=0)
    generated: GeneratedDataConfig = _field(GeneratedDataConfig())
    png_compress_level: int = _field(1, ge=0, le=9, doc="zlib level of the shards' lossless PNGs (1: fast, 9: smallest)")
    jpeg_draft: bool = _field(True, doc="let libjpeg do ADM's first halvings in the DCT domain (fast, near-exact); false: bit-exact ADM")


@dataclass(frozen=True)
class ModelConfig:
    """ADM UNet (Dhariwal & Nichol 2021)."""

    base_channels: int = _field(64, ge=8)
    channel_mult: list[int] = _field([1, 2])
    num_res_blocks: int = _field(2, ge=1)
    attention_resolutions: list[int] = _field([4], doc="resolutions in pixels that get self-attention")
    num_head_channels: int = _field(64, ge=-1, doc="channels per head (ADM: 64); -1 uses num_heads")
    num_heads: int = _field(4, ge=1)
    dropout: float = _field(0.1, ge=0.0, lt=1.0)
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    learn_sigma: bool = False


@dataclass(frozen=True)
class DiffusionConfig:
    timesteps: int = _field(1000, ge=2)
    schedule: Literal["linear", "cosine", "lambda"] = "cosine"
    lambda_min: float = _field(-20.0, doc="continuous-time lambda schedule of the CFG paper")
    lambda_max: float = _field(20.0)
    loss: Literal["simple", "hybrid"] = "simple"
    importance_sampling: bool = False


@dataclass(frozen=True)
class GuideConfig:
    """The weaker model autoguidance guides with (Karras et al. 2024)."""

    kind: Literal["smaller", "early"] = "smaller"
    base_channels: int = _field(32, ge=8, doc="for kind=smaller")
    kimg: float = _field(50.0, gt=0, doc="training duration of the guide, in thousands of images")


@dataclass(frozen=True)
class TrainConfig:
    """Training of the class-conditional diffusion model, one run per p_uncond value."""

    p_uncond: list[float] = _field([0.1, 0.2], doc="classifier-free dropout probabilities, one model each")
    kimg: float = _field(200.0, gt=0, doc="duration in thousands of images")
    batch_size: int = _field(128, ge=1, doc="global batch in images, across workers")
    lr: float = _field(2e-4, gt=0, le=1.0)
    warmup_kimg: float = _field(10.0, ge=0)
    weight_decay: float = _field(0.0, ge=0)
    grad_clip: float = _field(1.0, gt=0)
    ema_decays: list[float] = _field([0.999])
    checkpoint_kimg: float = _field(20.0, gt=0)
    keep_checkpoints: int = _field(2, ge=1)
    num_workers: int = _field(2, ge=1)
    use_gpu: bool = False                          # each worker asks Ray for one GPU and trains on CUDA
    cpus_per_worker: float = _field(1.0, gt=0)     # CPUs each training worker asks Ray for
    loader_workers: int = _field(0, ge=0)          # data-loading processes per worker (0: in the worker)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of forward + loss; weights stay fp32
    seed: int = _field(0, ge=0)
    sample_grid_kimg: float = _field(50.0, gt=0)
    guide: GuideConfig = _field(GuideConfig())


@dataclass(frozen=True)
class ClassifierConfig:
    """Noisy classifier: the UNet's encoder half with attention pooling, conditioned on t (ADM)."""

    base_channels: int = _field(32, ge=8)
    channel_mult: list[int] = _field([1, 2])
    num_res_blocks: int = _field(1, ge=1)
    attention_resolutions: list[int] = _field([4])
    num_head_channels: int = _field(32, ge=-1)
    kimg: float = _field(100.0, gt=0)
    batch_size: int = _field(128, ge=1)
    lr: float = _field(3e-4, gt=0, le=1.0)
    weight_decay: float = _field(0.05, ge=0)
    num_workers: int = _field(2, ge=1)
    use_gpu: bool = False                          # each worker asks Ray for one GPU and trains on CUDA
    cpus_per_worker: float = _field(1.0, gt=0)     # CPUs each training worker asks Ray for
    loader_workers: int = _field(0, ge=0)          # data-loading processes per worker (0: in the worker)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of forward + loss; weights stay fp32
    seed: int = _field(1, ge=0)


@dataclass(frozen=True)
class EvalnetConfig:
    """Clean evaluation classifier: the offline feature space for metrics."""

    width: int = _field(32, ge=8, doc="channels of the first stage")
    depth: int = _field(1, ge=1, doc="residual blocks per stage")
    feature_dim: int = _field(64, ge=8, doc="width * 2**(stages - 1): sets the number of stages")
    kimg: float = _field(30.0, gt=0)
    batch_size: int = _field(128, ge=1, doc="global batch in images, across workers")
    lr: float = _field(2e-3, gt=0, le=1.0)
    warmup_kimg: float = _field(2.0, ge=0)
    weight_decay: float = _field(1e-4, ge=0)
    grad_clip: float = _field(5.0, gt=0)
    checkpoint_kimg: float = _field(10.0, gt=0)
    keep_checkpoints: int = _field(2, ge=1)
    num_workers: int = _field(2, ge=1)
    use_gpu: bool = False                          # each worker asks Ray for one GPU and trains on CUDA
    cpus_per_worker: float = _field(1.0, gt=0)     # CPUs each training worker asks Ray for
    loader_workers: int = _field(0, ge=0)          # data-loading processes per worker (0: in the worker)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast of forward + loss; weights stay fp32
    seed: int = _field(2, ge=0)


@dataclass(frozen=True)
class SampleConfig:
    """One sampler configuration (the `sample` and `evaluate` stages)."""

    p_uncond: float = _field(0.1, ge=0.0, le=1.0, doc="which trained model: its p_uncond")
    guidance: Literal["none", "cfg", "classifier", "autoguidance", "pag"] = "cfg"
    w: float = _field(1.0, ge=0.0, doc="guidance weight (CFG paper's w; scale s = 1 + w)")
    guidance_interval: Optional[list[float]] = _field(None, doc="[lo, hi] fraction of the trajectory")
    sampler: Literal["ddpm", "ddim"] = "ddim"
    steps: int = _field(50, ge=1)
    eta: float = _field(0.0, ge=0.0)
    num_images: int = _field(1000, ge=1)
    class_dist: Literal["uniform", "balanced"] = "balanced"
    batch_size: int = _field(250, ge=1)
    chunk_size: int = _field(500, ge=1, doc="images per atomically written chunk")
    num_actors: int = _field(2, ge=1)
    seed: int = _field(0, ge=0)
    precision: Literal["fp32", "bf16"] = _field(
        "fp32", doc="bf16: the denoising networks under bf16 autocast (AMX / tensor cores); images then depend "
                    "on the hardware's bf16 kernels")


@dataclass(frozen=True)
class EvalConfig:
    extractors: list[Literal["inception", "evalnet"]] = _field(["evalnet", "inception"])
    inception_weights: Optional[str] = _field(None, doc="path to clean-fid's inception-2015-12-05.pt")
    require_inception: bool = _field(False, doc="fail when the Inception weights are missing")
    num_reference: Optional[int] = _field(None, ge=2, doc="real images for reference stats; None: all")
    pr_neighbours: int = _field(3, ge=1, doc="k of improved precision/recall")
    batch_size: int = _field(500, ge=1)


@dataclass(frozen=True)
class SweepConfig:
    guidance: list[Literal["none", "cfg", "classifier", "autoguidance", "pag"]] = _field(
        ["none", "cfg", "classifier", "autoguidance", "pag"])
    w: list[float] = _field([0.0, 0.5, 1.0, 2.0, 4.0], doc="CFG weights")
    classifier_scale: list[float] = _field([1.0, 4.0])
    autoguidance_w: list[float] = _field([1.0])
    pag_w: list[float] = _field([1.0])
    samplers: list[Literal["ddpm", "ddim"]] = _field(["ddim"])
    steps: list[int] = _field([25, 50])
    eta: float = _field(0.0, ge=0.0, doc="DDIM's eta for the ddim trials")
    class_dist: Literal["uniform", "balanced"] = "balanced"
    precision: Literal["fp32", "bf16"] = _field("fp32", doc="as sample.precision, for every trial")
    batch_size: int = _field(250, ge=1, doc="images through the sampler at once, per trial")
    p_uncond: Optional[list[float]] = _field(None, doc="subset of train.p_uncond; None: all")
    screen_images: int = _field(500, ge=2)
    full_images: int = _field(2000, ge=2)
    top_k: int = _field(2, ge=1, doc="configurations per guidance kind re-evaluated at full N")
    cpus_per_trial: float = _field(1.0, gt=0)
    gpus_per_trial: float = _field(0.0, ge=0)
    max_concurrent: Optional[int] = _field(None, ge=1)
    seed: int = _field(0, ge=0)
    reported: Optional[str] = _field(None, doc="YAML file of published results shown beside (marked reported)")


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "./mlruns"
    experiment: str = "guided-diffusion"


@dataclass(frozen=True)
class StoreConfig:
    root: str = _field("./runs", doc="local path or pyarrow.fs URI (file://, s3://...)")
    verify: Literal["size", "sha256"] = _field("size", doc="how cached outputs are verified on read")


@dataclass(frozen=True)
class ClusterConfig:
    address: Optional[str] = _field(None, doc="None: a local Ray instance (or RAY_ADDRESS under `ray job submit`)")
    num_cpus: Optional[int] = _field(None, ge=1)
    num_gpus: Optional[int] = _field(None, ge=0)
    include_dashboard: bool = False
    dashboard_host: str = "127.0.0.1"
    namespace: str = "pipeline"
    require_cuda: bool = True    # a unit given a GPU fails where torch sees no CUDA; false: warn, use CPU
    wait_timeout_s: float = _field(3600.0, gt=0)  # joined to a cluster: how long a stage waits for its units


@dataclass(frozen=True)
class Config:
    data: DataConfig = _field(DataConfig())
    model: ModelConfig = _field(ModelConfig())
    diffusion: DiffusionConfig = _field(DiffusionConfig())
    train: TrainConfig = _field(TrainConfig())
    classifier: ClassifierConfig = _field(ClassifierConfig())
    evalnet: EvalnetConfig = _field(EvalnetConfig())
    sample: SampleConfig = _field(SampleConfig())
    eval: EvalConfig = _field(EvalConfig())
    sweep: SweepConfig = _field(SweepConfig())
    tracking: TrackingConfig = _field(TrackingConfig())
    store: StoreConfig = _field(StoreConfig())
    cluster: ClusterConfig = _field(ClusterConfig())

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


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}: dotted keys, as in `--set`."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def hash_value(value: Any) -> str:
    """sha256 of the canonical JSON of a plain value: stable across runs, key order and machines."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Loading


class _Origins:
    """Remembers where each dotted key was set, so errors can name the file or `--set`."""

    def __init__(self, default: str):
        self.default = default
        self.by_key: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        parts = key.replace("[", ".[").split(".")
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i]).replace(".[", "[")
            if prefix in self.by_key:
                return self.by_key[prefix]
        return self.default

    def deepest(self, key: str) -> str:
        """The longest recorded key under `key` (so `--set no.such.key=1` is named in full)."""
        below = [k for k in self.by_key if k == key or k.startswith(key + ".")]
        return max(below, key=len) if below else key


def load_config(path: Optional[os.PathLike | str] = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config (default: configs/default.yaml), apply `key=value` overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    origin = str(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "command line", "no such config file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", str(path), origin, f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError("<root>", raw, origin, "a config file must be a mapping of sections")
    origins = _Origins(origin)
    for key in _flatten_keys(raw):
        origins.by_key[key] = origin
    for override in overrides:
        key, value = parse_override(override)
        _set_dotted(raw, key, value)
        origins.by_key[key] = f"--set {override}"
    return build_config(raw, origins)


def parse_override(text: str) -> tuple[str, Any]:
    """`train.lr=2e-4` -> ("train.lr", 0.0002); the value is parsed as YAML (lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(text, None, f"--set {text}", "an override must look like section.key=value")
    key, _, value_text = text.partition("=")
    key = key.strip()
    if not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(key, value_text, f"--set {text}", "not a dotted key (section.key)")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(key, value_text, f"--set {text}", f"value is not valid YAML: {exc}") from None
    return key, value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(key, value, f"--set {key}", f"'{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _flatten_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        dotted = f"{prefix}{k}"
        keys.append(dotted)
        if isinstance(v, dict):
            keys.extend(_flatten_keys(v, dotted + "."))
    return keys


def build_config(raw: dict, origins: Optional[_Origins] = None) -> Config:
    origins = origins or _Origins("<dict>")
    config = _build_dataclass(Config, raw, "", origins)
    _check_cross_section(config, origins)
    return config


def _build_dataclass(cls, raw: Any, prefix: str, origins: _Origins):
    name = prefix.rstrip(".") or "<root>"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(name, raw, origins(name), f"expected a mapping (section {cls.__name__})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            dotted = origins.deepest(f"{prefix}{key}")
            value = raw[key]
            for part in dotted.split(".")[len(prefix.split(".")):]:
                value = value.get(part) if isinstance(value, dict) else value
            known = ", ".join(sorted(fields))
            where = f" in section '{prefix.rstrip('.')}'" if prefix else ""
            raise ConfigError(dotted, value, origins(dotted),
                              f"unknown key '{key}'{where} (known: {known})")
    values = {}
    for fname, f in fields.items():
        dotted = f"{prefix}{fname}"
        if fname not in raw:
            continue
        value = _coerce(hints[fname], raw[fname], dotted, origins)
        _check_range(f, value, dotted, origins)
        values[fname] = value
    return cls(**values)


def _coerce(tp, value: Any, key: str, origins: _Origins):
    """Check `value` against the annotation `tp`, converting only where lossless (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key + ".", origins)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if value is None:
            raise ConfigError(key, value, origins(key), "may not be null")
        return _coerce(inner[0], value, key, origins)
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, value, origins(key), f"must be one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, value, origins(key), f"expected a list of {_type_name(args[0])}")
        return [_coerce(args[0], item, f"{key}[{i}]", origins) for i, item in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, value, origins(key), "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, value, origins(key), "expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads `2e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, value, origins(key), "expected a number")
        if not math.isfinite(value):
            raise ConfigError(key, value, origins(key), "must be finite")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, value, origins(key), "expected a string")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} for {key}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _type_name(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + "/".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _check_range(f: dataclasses.Field, value: Any, key: str, origins: _Origins) -> None:
    meta = f.metadata
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        where = f"{key}[{i}]" if isinstance(value, list) else key
        for bound, ok, text in (
            ("ge", lambda v, b: v >= b, "at least"),
            ("gt", lambda v, b: v > b, "greater than"),
            ("le", lambda v, b: v <= b, "at most"),
            ("lt", lambda v, b: v < b, "less than"),
        ):
            limit = meta.get(bound)
            if limit is not None and not ok(item, limit):
                raise ConfigError(where, item, origins(where), f"must be {text} {limit}")


def _check_cross_section(c: Config, origins: _Origins) -> None:
    def fail(key: str, value: Any, problem: str):
        raise ConfigError(key, value, origins(key), problem)

    def in_unit_interval(key: str, values: list[float], closed_right=True):
        for i, v in enumerate(values):
            if not (0.0 <= v <= 1.0 if closed_right else 0.0 < v < 1.0):
                fail(f"{key}[{i}]", v, "must be in [0, 1]" if closed_right else "must be in (0, 1)")

    # data
    needs_path = c.data.source in ("imagefolder", "imagenet_kaggle", "imagenet_tars", "parquet")
    if needs_path and not c.data.path:
        fail("data.path", c.data.path, f"source '{c.data.source}' needs a dataset path")
    if needs_path and "://" not in c.data.path and not Path(c.data.path).exists():
        fail("data.path", c.data.path, "no such file or directory")

    # model: the UNet halves the resolution len(channel_mult) - 1 times
    res = c.data.resolution
    for section in ("model", "classifier"):
        mult = getattr(c, section).channel_mult
        if not mult:
            fail(f"{section}.channel_mult", mult, "needs at least one level")
        for i, m in enumerate(mult):
            if m < 1:
                fail(f"{section}.channel_mult[{i}]", m, "must be at least 1")
        downsamples = len(mult) - 1
        if res % (2 ** downsamples):
            fail("data.resolution", res,
                 f"the network cannot take it: {section}.channel_mult {mult} halves it {downsamples} times, "
                 f"so it must be divisible by {2 ** downsamples}")
        reached = {res // 2 ** i for i in range(len(mult))}
        for i, a in enumerate(getattr(c, section).attention_resolutions):
            if a not in reached:
                fail(f"{section}.attention_resolutions[{i}]", a,
                     f"not a resolution the network reaches from {res} px (reached: {sorted(reached)})")
    if c.model.num_head_channels > 0:
        widths = {c.model.base_channels * m for m in c.model.channel_mult}
        bad = sorted(w for w in widths if w % c.model.num_head_channels)
        if c.model.attention_resolutions and bad:
            fail("model.num_head_channels", c.model.num_head_channels,
                 f"must divide every attention width (widths {sorted(widths)})")
    elif c.model.num_head_channels == 0:
        fail("model.num_head_channels", 0, "must be positive, or -1 to use model.num_heads")

    # diffusion
    if c.diffusion.lambda_min >= c.diffusion.lambda_max:
        fail("diffusion.lambda_min", c.diffusion.lambda_min, "must be below diffusion.lambda_max")
    if c.diffusion.loss == "hybrid" and not c.model.learn_sigma:
        fail("diffusion.loss", "hybrid", "the hybrid loss trains the variance: set model.learn_sigma: true")

    # train
    if not c.train.p_uncond:
        fail("train.p_uncond", c.train.p_uncond, "needs at least one value")
    in_unit_interval("train.p_uncond", c.train.p_uncond)
    if len(set(c.train.p_uncond)) != len(c.train.p_uncond):
        fail("train.p_uncond", c.train.p_uncond, "values must be distinct")
    if not c.train.ema_decays:
        fail("train.ema_decays", c.train.ema_decays, "needs at least one decay")
    in_unit_interval("train.ema_decays", c.train.ema_decays, closed_right=False)
    if c.train.guide.kind == "early" and c.train.guide.kimg >= c.train.kimg:
        fail("train.guide.kimg", c.train.guide.kimg,
             f"an early-snapshot guide must be taken before the end of training (train.kimg = {c.train.kimg:g})")
    for section in ("train", "classifier", "evalnet"):
        s = getattr(c, section)
        if s.batch_size % s.num_workers:
            fail(f"{section}.batch_size", s.batch_size,
                 f"the global batch must split evenly over {section}.num_workers = {s.num_workers}")

    ratio, rest = divmod(c.evalnet.feature_dim, c.evalnet.width)
    if rest or ratio & (ratio - 1):
        fail("evalnet.feature_dim", c.evalnet.feature_dim,
             f"must be evalnet.width = {c.evalnet.width} times a power of 2 (each stage doubles the width)")

    # sample
    if c.sample.steps > c.diffusion.timesteps:
        fail("sample.steps", c.sample.steps, f"more than diffusion.timesteps = {c.diffusion.timesteps}")
    if c.sample.sampler == "ddpm" and c.sample.eta != 0.0:
        fail("sample.eta", c.sample.eta, "eta is a DDIM setting; use sample.sampler: ddim")
    if c.sample.p_uncond not in c.train.p_uncond:
        fail("sample.p_uncond", c.sample.p_uncond, f"no model is trained with it (train.p_uncond = {c.train.p_uncond})")
    if c.sample.guidance == "cfg" and c.sample.p_uncond == 0.0 and c.sample.w > 0:
        fail("sample.guidance", "cfg", "classifier-free guidance needs a model trained with p_uncond > 0")
    interval = c.sample.guidance_interval
    if interval is not None and (len(interval) != 2 or not 0.0 <= interval[0] < interval[1] <= 1.0):
        fail("sample.guidance_interval", interval, "must be [lo, hi] with 0 <= lo < hi <= 1")

    # sweep
    for i, steps in enumerate(c.sweep.steps):
        if steps < 1 or steps > c.diffusion.timesteps:
            fail(f"sweep.steps[{i}]", steps, f"must be in [1, diffusion.timesteps = {c.diffusion.timesteps}]")
    for key in ("w", "classifier_scale", "autoguidance_w", "pag_w"):
        for i, v in enumerate(getattr(c.sweep, key)):
            if v < 0:
                fail(f"sweep.{key}[{i}]", v, "guidance strengths must be non-negative")
    if c.sweep.p_uncond is not None:
        for i, p in enumerate(c.sweep.p_uncond):
            if p not in c.train.p_uncond:
                fail(f"sweep.p_uncond[{i}]", p, f"no model is trained with it (train.p_uncond = {c.train.p_uncond})")
    if c.sweep.screen_images > c.sweep.full_images:
        fail("sweep.screen_images", c.sweep.screen_images, "the screening round must not exceed sweep.full_images")
    if not c.sweep.guidance or not c.sweep.samplers or not c.sweep.steps:
        fail("sweep", "empty list", "sweep.guidance, sweep.samplers and sweep.steps need at least one value")

    # eval
    if not c.eval.extractors:
        fail("eval.extractors", c.eval.extractors, "needs at least one feature extractor")
    if c.eval.require_inception and "inception" not in c.eval.extractors:
        fail("eval.require_inception", True, "'inception' is not among eval.extractors")

    # store / tracking
    if not c.store.root:
        fail("store.root", c.store.root, "must be a path or URI")
    if not c.tracking.uri:
        fail("tracking.uri", c.tracking.uri, "must be an MLflow tracking URI")
    if c.tracking.uri.startswith("file:") or (("://" not in c.tracking.uri) and not c.tracking.uri.startswith("databricks")):
        fail("tracking.uri", c.tracking.uri,
             "MLflow 3 refuses the file store: use sqlite:///mlflow.db or an http(s):// tracking server")
