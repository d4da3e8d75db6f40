"""Metrics of generated images: feature extractors, streaming feature statistics,
Frechet distance (FID with clean-fid's Inception), KID, Inception-Score-style score,
improved precision/recall, class accuracy, their 95% intervals and the comparisons made with
them (intervals), and clean-fid cross-checks.

Pure library: torch, numpy, scipy, PIL and clean-fid only; nothing here knows about
the pipeline, Ray or MLflow.
"""
from .accumulate import FeatureSubsample, GroupedMoments, RunningMoments, kept_key_threshold
from .class_accuracy import ClassAccuracyAccumulator, class_accuracy
from .extractors import CleanResizeExtractor, FeatureExtractor, TorchModuleExtractor
from .frechet import ImaginaryComponentError, frechet_distance
from .gathering import FeatureAccumulator
from .inception import (INCEPTION_FILENAME, InceptionWeightsMissing, inception_extractor,
                        load_cleanfid_inception, resolve_inception_weights)
from .inception_score import InceptionScoreAccumulator, inception_score
from .intervals import Interval, intervals_overlap, not_clearly_worse, shared_ranks
from .kid import kid
from .offline import (MetricsResult, StreamFeatures, accumulate_features, compute_feature_stats,
                      evaluate_samples, metric_names, metrics_from_features)
from .precision_recall import PrecisionRecall, precision_recall, precision_recall_details
from .sources import (ImageBatch, as_batches, batches_from_arrays, batches_from_npz,
                      batches_from_png_folder, write_png_folder)
from .stats import FeatureStats, StatsIntegrityError

__all__ = [
    "FeatureExtractor", "TorchModuleExtractor", "CleanResizeExtractor", "inception_extractor",
    "load_cleanfid_inception", "resolve_inception_weights", "InceptionWeightsMissing",
    "INCEPTION_FILENAME", "RunningMoments", "GroupedMoments", "FeatureSubsample", "FeatureStats",
    "StatsIntegrityError", "frechet_distance", "ImaginaryComponentError", "kid",
    "inception_score", "InceptionScoreAccumulator", "precision_recall", "precision_recall_details",
    "PrecisionRecall", "Interval", "intervals_overlap", "not_clearly_worse", "shared_ranks", "class_accuracy",
    "ClassAccuracyAccumulator", "accumulate_features", "compute_feature_stats", "evaluate_samples",
    "metrics_from_features", "metric_names", "MetricsResult", "StreamFeatures", "ImageBatch",
    "as_batches", "batches_from_arrays", "batches_from_png_folder", "batches_from_npz",
    "write_png_folder", "FeatureAccumulator", "kept_key_threshold",
]
