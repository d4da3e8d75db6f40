import numpy as np
import pytest

from pipeline.metrics import ClassAccuracyAccumulator, InceptionScoreAccumulator, class_accuracy, inception_score


def test_constant_predictions_score_one():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10))
    probs = np.tile(p, (1000, 1))
    mean, std = inception_score(probs, splits=5)
    assert mean == pytest.approx(1.0, abs=1e-9) and std < 1e-9


def test_confident_uniform_predictions_score_num_classes():
    c = 10
    labels = np.arange(2000) % c  # interleaved classes: the random split assignment still mixes them
    probs = np.eye(c)[labels]
    mean, std = inception_score(probs, splits=4)
    assert mean == pytest.approx(c, rel=0.03)
    logits = 50.0 * np.eye(c)[np.sort(labels)]  # sorted classes, confident logits
    assert inception_score(logits=logits, splits=4)[0] == pytest.approx(c, rel=0.03)


def test_single_split_exact_value():
    # two classes, half the samples certain of each: IS = exp(log 2) = 2 exactly
    probs = np.eye(2)[np.array([0, 1] * 50)]
    assert inception_score(probs, splits=1) == (pytest.approx(2.0, rel=1e-12), 0.0)


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(999, 7)) * 3
    whole = inception_score(logits=logits, splits=3, seed=4)
    acc = InceptionScoreAccumulator(splits=3, seed=4)
    for start in range(0, 999, 128):
        acc.update(logits=logits[start:start + 128])
    assert acc.result() == pytest.approx(whole, rel=1e-12)


def test_class_accuracy():
    logits = np.array([[3.0, 0.0, 1.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    labels = np.array([0, 1, 1, 2])
    assert class_accuracy(logits, labels) == 0.5
    acc = ClassAccuracyAccumulator()
    acc.update(logits[:1], labels[:1])
    acc.update(logits[1:], labels[1:])
    assert acc.result() == 0.5
    with pytest.raises(ValueError):
        class_accuracy(logits, labels[:3])
