"""Scoring generated images against the reference statistics, with their protocol.

The metrics are those of pipeline.metrics (one streaming pass, nothing written to disk):
- clean-fid's Inception (Parmar et al., 2022, mode "clean"): fid, kid_mean/std (Binkowski et
  al., 2018), is/is_std (Salimans et al., 2016), precision/recall_inception;
- the evaluation classifier's feature space: fd_evalnet, kid_evalnet_mean/std, is_evalnet,
  precision_evalnet / recall_evalnet (improved precision and recall, Kynkaanniemi et al., 2019,
  k = eval.pr_neighbours) and class_accuracy (the fraction of samples the classifier assigns to
  their conditioning class).
Every number comes with its protocol (extractor, N, reference statistics id, seed range, ...);
two numbers are only comparable when their protocols match. Every metric also comes with a 95%
interval, ``<metric>_ci_low`` / ``<metric>_ci_high`` (methods: pipeline.metrics.intervals), which
flow with the metrics into the evaluate summary, the sweep's trials.parquet and MLflow.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional

from pipeline.generation.features import Gathering
from pipeline.metrics import (
    FeatureStats,
    InceptionWeightsMissing,
    TorchModuleExtractor,
    accumulate_features,
    batches_from_arrays,
    compute_feature_stats,
    inception_extractor,
    metrics_from_features,
)
from pipeline.store import Directory
from pipeline.weights import load_evalnet

# Function-local imports: they bring in webdataset, which importing this module does not need.

REFERENCE_INDEX = "reference.json"
KEEP_FEATURES = 10_000   # features kept for KID and precision/recall (the rest only feed mean/cov)
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
METRICS_SEED = 0
CI_GROUPS = 10    # groups of generated images behind every interval (jackknife / blocks)
CI_LEVEL = 0.95
# How features are gathered, in one pass or in parts on workers (pipeline.generation.features)
SCORING = Gathering(keep=KEEP_FEATURES, seed=METRICS_SEED, groups=CI_GROUPS)
REFERENCE = Gathering(keep=KEEP_FEATURES, seed=METRICS_SEED)


def stats_file(extractor: str) -> str:
    return f"stats_{extractor}.npz"


def write_references(directory, references: Mapping[str, FeatureStats], **info: Any) -> dict[str, dict]:
    """Save each extractor's statistics as ``stats_<name>.npz`` into a store Directory, and the
    index ``reference.json`` (file, stats id, N per extractor, plus ``info``). Returns the index."""
    entries = {}
    with tempfile.TemporaryDirectory(prefix="reference-stats-") as tmp:
        for name, stats in references.items():
            local = os.path.join(tmp, stats_file(name))
            stats_id = stats.save(local)
            with open(local, "rb") as f:
                directory.write_bytes(stats_file(name), f.read())
            entries[name] = {"file": stats_file(name), "stats_id": stats_id, "num_samples": int(stats.num_samples),
                             "feature_dim": stats.feature_dim, "kept_features": int(stats.features.shape[0])}
    directory.write_json(REFERENCE_INDEX, {"extractors": entries, **info})
    return entries


def load_references(reference_stats_location: str) -> dict[str, FeatureStats]:
    """Every extractor's FeatureStats of a reference_stats output (a local path or store URI),
    each checked against its id."""
    directory = Directory.at(reference_stats_location)
    if not directory.exists(REFERENCE_INDEX):
        raise FileNotFoundError(f"{reference_stats_location}: no {REFERENCE_INDEX}; is this a reference_stats output?")
    index = directory.read_json(REFERENCE_INDEX)
    references = {}
    for name, entry in index["extractors"].items():
        with directory.local_file(entry["file"]) as path:
            stats = FeatureStats.load(path)
        if stats.stats_id != entry["stats_id"]:
            raise ValueError(f"{reference_stats_location}: {entry['file']} is not the statistics {REFERENCE_INDEX} names")
        references[name] = stats
    return references


def evalnet_extractor(evalnet_location: str, batch_size: int = 500, device: str = "cpu") -> TorchModuleExtractor:
    """The trained evaluation classifier (train_evalnet output) as a feature extractor: its
    penultimate features and its logits over the dataset's classes."""
    model = load_evalnet(evalnet_location, device)
    return TorchModuleExtractor(model, name="evalnet", in_channels=3, batch_size=batch_size, device=device,
                                predicts_labels=True)


def make_extractors(eval_cfg, evalnet_location: Optional[str], device: str = "cpu") -> tuple[list, list[str]]:
    """(extractors, notes) for ``eval_cfg.extractors``. Without clean-fid's Inception weights,
    "inception" is skipped with a note saying how to provide them, unless
    ``eval.require_inception`` is true: then InceptionWeightsMissing is raised."""
    extractors, notes = [], []
    for name in eval_cfg.extractors:
        if name == "evalnet":
            if evalnet_location is None:
                raise ValueError("the evalnet extractor needs the train_evalnet output")
            extractors.append(evalnet_extractor(evalnet_location, eval_cfg.batch_size, device))
        elif name == "inception":
            try:
                extractors.append(inception_extractor(eval_cfg.inception_weights, device))
            except InceptionWeightsMissing as exc:
                if eval_cfg.require_inception:
                    raise
                notes.append(f"inception skipped (eval.require_inception is false): {exc}")
        else:
            raise ValueError(f"unknown extractor {name!r}")
    if not extractors:
        raise ValueError("no feature extractor is available: " + " ".join(notes))
    return extractors, notes


def reference_batches(shard_location: str, split: str = "train", batch_size: int = 500,
                      limit: Optional[int] = None) -> Iterable:
    """(uint8 images, labels) batches of the first ``limit`` images (None: all) of a shard split,
    in the shards' order (one ordered pass, pipeline.data.loader)."""
    from pipeline.data.loader import StreamSpec, make_loader

    seen = 0
    spec = StreamSpec(split=split, batch_size=batch_size, infinite=False, dtype="uint8")
    for images, labels in make_loader(shard_location, spec):
        if limit is not None and seen + len(labels) > limit:
            images, labels = images[: limit - seen], labels[: limit - seen]
        if len(labels):
            yield images, labels
        seen += len(labels)
        if limit is not None and seen >= limit:
            return


def reference_stats(extractors: list, batches: Iterable) -> dict[str, FeatureStats]:
    """FeatureStats of the real images per extractor: mean, covariance, N and KEEP_FEATURES kept
    features (for KID and precision/recall), with the same subsample rule as the samples'."""
    return compute_feature_stats(extractors, batches, keep=REFERENCE.keep, seed=REFERENCE.seed)


def score_batches(batches: Iterable, extractors: list, references: Mapping[str, FeatureStats], eval_cfg,
                  seed_range: Any = None) -> tuple[dict[str, float], dict[str, dict]]:
    """Metrics of a stream of (uint8 images, labels) batches: (metrics, protocol per extractor)."""
    missing = [e.name for e in extractors if e.name not in references]
    if missing:
        raise KeyError(f"no reference statistics for {missing}")
    return score_gathered(accumulate_features(extractors, batches, **SCORING.options()), references, eval_cfg,
                          seed_range)


def score_gathered(gathered: Mapping[str, Any], references: Mapping[str, FeatureStats], eval_cfg,
                   seed_range: Any = None) -> tuple[dict[str, float], dict[str, dict]]:
    """Metrics of features gathered with SCORING ({extractor: StreamFeatures}, in one pass or
    merged from workers' parts): (metrics with their intervals, protocol per extractor)."""
    metrics: dict[str, float] = {}
    protocol: dict[str, dict] = {}
    for name, features in gathered.items():
        result = metrics_from_features(features, references[name], kid_subsets=KID_SUBSETS,
                                       kid_subset_size=KID_SUBSET_SIZE, kid_seed=METRICS_SEED,
                                       pr_k=eval_cfg.pr_neighbours,
                                       seed_range=list(seed_range) if seed_range is not None else None,
                                       ci_level=CI_LEVEL)
        metrics.update({k: float(v) for k, v in result.metrics.items()})
        metrics.update(interval_columns(result.intervals))
        protocol[name] = result.protocol
    return metrics, protocol


def interval_columns(intervals: Mapping[str, Any]) -> dict[str, float]:
    """{metric: (low, high)} -> {"<metric>_ci_low": low, "<metric>_ci_high": high}."""
    return {f"{name}_ci_{side}": float(value) for name, (low, high) in intervals.items()
            for side, value in (("low", low), ("high", high))}


def score(images, labels, extractors: list, references: Mapping[str, FeatureStats], eval_cfg,
          seed_range: Any = None) -> tuple[dict[str, float], dict[str, dict]]:
    """Metrics of in-memory uint8 images (NHWC or NCHW) with their conditioning labels (or None)."""
    return score_batches(batches_from_arrays(images, labels, eval_cfg.batch_size), extractors, references,
                         eval_cfg, seed_range)


def seed_range(trial_seed: int, num_images: int) -> tuple[int, int, int]:
    """(trial seed, first image index, last image index + 1): the seeds behind a sample set."""
    return int(trial_seed), 0, int(num_images)


def protocol_params(protocol: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The protocol flattened for MLflow params: ``protocol.<extractor>.<field>``."""
    return {f"protocol.{name}.{k}": json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
            for name, fields in protocol.items() for k, v in fields.items()}


def protocol_id(protocol: Mapping[str, Any]) -> str:
    """A short id of a protocol: equal ids, comparable numbers."""
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:16]

