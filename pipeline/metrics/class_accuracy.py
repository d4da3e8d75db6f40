"""Class accuracy of conditional samples: the fraction that the (clean) evaluation
classifier assigns to the class they were generated for (argmax of its logits)."""
from __future__ import annotations

import numpy as np

__all__ = ["ClassAccuracyAccumulator", "class_accuracy"]


class ClassAccuracyAccumulator:
    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = np.asarray(logits)
        labels = np.asarray(labels).reshape(-1)
        if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"logits {logits.shape} and labels {labels.shape} do not match")
        self.correct += int((logits.argmax(axis=1) == labels).sum())
        self.total += int(labels.shape[0])

    def merge(self, other: "ClassAccuracyAccumulator") -> None:
        """Combine with the counts of another part of the samples."""
        self.correct += other.correct
        self.total += other.total

    def result(self) -> float:
        if self.total == 0:
            raise ValueError("no samples")
        return self.correct / self.total


def class_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    acc = ClassAccuracyAccumulator()
    acc.update(logits, labels)
    return acc.result()
