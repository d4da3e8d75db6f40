"""The metrics bundle: one streaming pass over generated uint8 batches, every metric of
each feature space, and the protocol that says what the numbers are comparable with.

Names carry the feature space. clean-fid's Inception gives the conventional names
    fid, kid_mean, kid_std, is, is_std, precision_inception, recall_inception
(FID means clean-fid with its Inception network); any other extractor, e.g. "evalnet":
    fd_evalnet, kid_evalnet_mean, kid_evalnet_std, is_evalnet, is_evalnet_std,
    precision_evalnet, recall_evalnet, and class_accuracy when the extractor predicts the
    dataset's classes and the samples carry their conditioning labels.
With `ci_groups`, MetricsResult.intervals also holds a 95% interval per metric (fd, kid mean, is,
precision, recall, class accuracy; methods in pipeline.metrics.intervals), keyed by metric name.
The features themselves are gathered by pipeline.metrics.gathering (in one pass, or in parts on
workers, merged).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import intervals as ci
from .extractors import FeatureExtractor
from .frechet import frechet_distance
from .gathering import StreamFeatures, _as_list, accumulate_features, compute_feature_stats
from .kid import kid
from .precision_recall import precision_recall_details
from .stats import FeatureStats

__all__ = ["StreamFeatures", "accumulate_features", "compute_feature_stats", "metric_names",
           "MetricsResult", "metrics_from_features", "evaluate_samples"]

CLEANFID_INCEPTION = "inception"


def metric_names(extractor_name: str) -> dict[str, str]:
    """Metric key for each quantity in a feature space."""
    if extractor_name == CLEANFID_INCEPTION:
        return dict(fd="fid", kid_mean="kid_mean", kid_std="kid_std", is_mean="is", is_std="is_std",
                    precision="precision_inception", recall="recall_inception",
                    class_accuracy="class_accuracy_inception")
    n = extractor_name
    return dict(fd=f"fd_{n}", kid_mean=f"kid_{n}_mean", kid_std=f"kid_{n}_std", is_mean=f"is_{n}",
                is_std=f"is_{n}_std", precision=f"precision_{n}", recall=f"recall_{n}",
                class_accuracy="class_accuracy")


@dataclass
class MetricsResult:
    extractor: str
    metrics: dict[str, float]
    protocol: dict[str, Any] = field(default_factory=dict)
    intervals: dict[str, ci.Interval] = field(default_factory=dict)  # metric name -> 95% interval


def metrics_from_features(generated: StreamFeatures, reference: FeatureStats, *,
                          kid_subsets: int = 100, kid_subset_size: int = 1000, kid_seed: int = 0,
                          pr_k: int = 3, seed_range: Any = None, device: str = "cpu",
                          ci_level: float = ci.LEVEL) -> MetricsResult:
    """Every metric of the generated features against the reference statistics, with their
    intervals when the features were gathered with interval groups (`generated.groups`)."""
    gen = generated.stats
    if gen.extractor != reference.extractor:
        raise ValueError(f"features from {gen.extractor!r} cannot be compared with "
                         f"reference statistics of {reference.extractor!r}")
    if gen.feature_dim != reference.feature_dim:
        raise ValueError(f"feature dims differ: {gen.feature_dim} vs {reference.feature_dim}")
    names = metric_names(gen.extractor)
    m: dict[str, float] = {names["fd"]: frechet_distance(gen.mean, gen.cov, reference.mean, reference.cov)}
    for what, have in (("generated", gen), ("reference", reference)):
        if have.features.shape[0] <= max(pr_k, 1):
            raise ValueError(f"the {what} statistics keep {have.features.shape[0]} features; "
                             f"KID and precision/recall need more than k={pr_k}")
    m[names["kid_mean"]], m[names["kid_std"]] = kid(reference.features, gen.features, kid_subsets,
                                                    kid_subset_size, kid_seed)
    grouped = generated.groups
    fake_groups = None if grouped is None else ci.sample_groups(
        gen.feature_indices.astype(np.uint64), grouped.groups, generated.group_seed)
    pr = precision_recall_details(reference.features, gen.features, k=pr_k, fake_groups=fake_groups, device=device)
    m[names["precision"]], m[names["recall"]] = pr.precision, pr.recall
    if generated.inception_score is not None:
        m[names["is_mean"]], m[names["is_std"]] = generated.inception_score.result()
    if generated.class_accuracy is not None:
        m[names["class_accuracy"]] = generated.class_accuracy.result()
    intervals = {} if grouped is None else _intervals(generated, reference, names, m, pr, pr_k, ci_level, device)
    protocol = {
        "extractor": gen.extractor,
        "num_samples": int(gen.num_samples),
        "reference_stats_id": reference.stats_id,
        "reference_num_samples": int(reference.num_samples),
        "seed_range": seed_range,
        "kid_subsets": kid_subsets,
        "kid_subset_size": int(min(kid_subset_size, gen.features.shape[0], reference.features.shape[0])),
        "kid_seed": kid_seed,
        "pr_k": pr_k,
        "pr_num_generated": int(gen.features.shape[0]),
        "pr_num_reference": int(reference.features.shape[0]),
        "is_splits": generated.inception_score.splits if generated.inception_score is not None else None,
        "kid_draws": "cleanfid",  # kernel_distance's subsets (pipeline.metrics.kid)
    }
    if grouped is not None:
        protocol["ci"] = {"level": ci_level, "groups": grouped.groups, "method": "pipeline.metrics.intervals/1"}
    return MetricsResult(gen.extractor, m, protocol, intervals)


def _intervals(generated: StreamFeatures, reference: FeatureStats, names: dict[str, str], m: dict[str, float],
               pr, pr_k: int, level: float, device: str) -> dict[str, ci.Interval]:
    """Each metric's interval (pipeline.metrics.intervals); a metric whose interval cannot be
    formed (too few samples per group) has none."""
    gen, grouped = generated.stats, generated.groups
    found = {
        names["fd"]: ci.frechet_distance_interval(grouped, reference.mean, reference.cov, level, device),
        names["kid_mean"]: ci.kid_interval(m[names["kid_mean"]], reference.features, reference.feature_indices,
                                           gen.features, gen.feature_indices, grouped.groups, generated.group_seed,
                                           level),
        names["precision"]: ci.wilson_interval(pr.fake_inside, pr.num_fake, level),
        names["recall"]: ci.recall_interval(pr.recall, pr.recall_without, pr.group_sizes, pr_k, level),
    }
    if generated.inception_score is not None:
        found[names["is_mean"]] = ci.t_interval(generated.inception_score.per_split(), level)
    if generated.class_accuracy is not None:
        found[names["class_accuracy"]] = ci.wilson_interval(generated.class_accuracy.correct,
                                                            generated.class_accuracy.total, level)
    return {name: interval for name, interval in found.items() if interval is not None}


def evaluate_samples(extractors: FeatureExtractor | Sequence[FeatureExtractor], batches: Iterable,
                     references: FeatureStats | Mapping[str, FeatureStats], *,
                     keep: int | None = 10_000, seed: int = 0, is_splits: int = 10,
                     kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3,
                     seed_range: Any = None, device: str = "cpu", ci_groups: int | None = ci.GROUPS,
                     ci_level: float = ci.LEVEL) -> dict[str, MetricsResult]:
    """Offline metrics of a stream of generated uint8 batches (with their conditioning
    labels) in one pass, per extractor, each tagged with its protocol.

    `references`: the reference FeatureStats (one extractor) or a mapping name -> stats.
    `seed_range`: the caller's description of which seeds produced the images (recorded
    in the protocol as given). `seed` fixes the kept subsample, IS splits, KID subsets and the
    interval groups. `ci_groups`: groups of the intervals' jackknife (None: no intervals).
    """
    exs = _as_list(extractors)
    if isinstance(references, FeatureStats):
        if len(exs) != 1:
            raise ValueError("give a mapping name -> reference stats for several extractors")
        references = {exs[0].name: references}
    missing = [e.name for e in exs if e.name not in references]
    if missing:
        raise KeyError(f"no reference statistics for {missing}")
    gathered = accumulate_features(exs, batches, keep=keep, seed=seed, is_splits=is_splits, groups=ci_groups)
    return {name: metrics_from_features(sf, references[name], kid_subsets=kid_subsets,
                                        kid_subset_size=kid_subset_size, kid_seed=seed, pr_k=pr_k,
                                        seed_range=seed_range, device=device, ci_level=ci_level)
            for name, sf in gathered.items()}
