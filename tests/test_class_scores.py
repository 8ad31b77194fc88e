"""Classification scores (seglab.class_scores) against small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from seglab.class_scores import classification_scores, per_image_correct, roc_auc_one_vs_rest

NAMES = ("a", "b", "c")


def _one_hot_probs(predicted: list[int], n_classes: int) -> np.ndarray:
    """Probabilities whose arg-max is ``predicted`` (0.6 on it, the rest shared)."""
    probs = np.full((len(predicted), n_classes), 0.4 / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = 0.6
    return probs


def test_hand_computed_three_class_case() -> None:
    # true:      0 0 1 1 2 2
    # predicted: 0 1 1 1 2 0
    y = np.array([0, 0, 1, 1, 2, 2])
    scores = classification_scores(y, _one_hot_probs([0, 1, 1, 1, 2, 0], 3), NAMES)

    assert scores["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # recall a 1/2, b 2/2, c 1/2; precision a 1/2, b 2/3, c 1/1
    assert scores["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    per = scores["per_class"]
    assert [per[n]["precision"] for n in NAMES] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [per[n]["recall"] for n in NAMES] == pytest.approx([1 / 2, 1.0, 1 / 2])
    f1 = [1 / 2, 2 * (2 / 3) / (2 / 3 + 1), 2 * (1 / 2) / (1 + 1 / 2)]  # 0.5, 0.8, 2/3
    assert [per[n]["f1"] for n in NAMES] == pytest.approx(f1)
    assert scores["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert [per[n]["support"] for n in NAMES] == [2, 2, 2]
    assert per_image_correct(y, _one_hot_probs([0, 1, 1, 1, 2, 0], 3)).tolist() == [1, 0, 1, 1, 1, 0]


def test_binary_auc_hand_computed() -> None:
    # positives score 0.35 and 0.8, negatives 0.1 and 0.4: of the 4 (pos, neg) pairs the
    # positive is higher in 3 (0.35 < 0.4 is the one miss) -> 3/4.
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    assert roc_auc_one_vs_rest(y, probs) == pytest.approx(0.75)
    assert classification_scores(y, probs, ("neg", "pos"))["roc_auc"] == pytest.approx(0.75)


def test_auc_ties_count_half_and_extremes() -> None:
    y = np.array([0, 1, 0, 1])
    flat = np.full((4, 2), 0.5)
    assert roc_auc_one_vs_rest(y, flat) == pytest.approx(0.5)
    # One tied pair (pos 0.5 vs neg 0.5) out of four, the others won: (3 + 0.5) / 4.
    p1 = np.array([0.2, 0.5, 0.5, 0.9])
    assert roc_auc_one_vs_rest(y, np.stack([1 - p1, p1], 1)) == pytest.approx(3.5 / 4)
    perfect = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    assert roc_auc_one_vs_rest(y, perfect) == pytest.approx(1.0)
    assert roc_auc_one_vs_rest(y, perfect[:, ::-1]) == pytest.approx(0.0)


def test_multiclass_auc_is_macro_one_vs_rest() -> None:
    # a: positives 0.8, 0.7 beat all negatives (0.2, 0.1, 0, 0) -> 1.
    # b: positives 0.5, 0.1 vs negatives 0.2, 0.3, 0.2, 0.1 -> 0.5 wins 4, 0.1 ties one -> 4.5 / 8.
    # c: positives 0.8, 0.9 vs negatives 0, 0, 0.3, 0.8 -> 0.9 wins 4, 0.8 wins 3 ties 1 -> 7.5 / 8.
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([
        [0.8, 0.2, 0.0],
        [0.7, 0.3, 0.0],
        [0.2, 0.5, 0.3],
        [0.1, 0.1, 0.8],
        [0.0, 0.2, 0.8],
        [0.0, 0.1, 0.9],
    ])
    expected = (1.0 + 4.5 / 8 + 7.5 / 8) / 3
    assert roc_auc_one_vs_rest(y, probs) == pytest.approx(expected)
    # An independent implementation agrees (ours does not call scikit-learn).
    assert expected == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def test_absent_class_and_zero_division() -> None:
    # Class c never occurs and is never predicted; b is never predicted.
    y = np.array([0, 0, 1, 1])
    scores = classification_scores(y, _one_hot_probs([0, 0, 0, 0], 3), NAMES)
    assert scores["roc_auc"] is None
    per = scores["per_class"]
    assert per["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert per["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per["a"]["precision"] == pytest.approx(0.5) and per["a"]["recall"] == 1.0
    # Balanced accuracy averages the classes that occur (a: 1, b: 0), not the absent c.
    assert scores["balanced_accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 * 0.5 / 1.5) / 3)
    assert scores["confusion_matrix"] == [[2, 0, 0], [2, 0, 0], [0, 0, 0]]


def test_random_cases_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 5):
        y = np.arange(60) % n_classes
        probs = rng.dirichlet(np.ones(n_classes), 60)
        probs[np.arange(60), y] += rng.uniform(0, 0.5, 60)  # better than chance, not perfect
        probs /= probs.sum(1, keepdims=True)
        names = [f"k{i}" for i in range(n_classes)]
        scores = classification_scores(y, probs, names)
        pred = probs.argmax(1)
        assert scores["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert scores["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
        assert scores["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
        sk_auc = skm.roc_auc_score(y, probs[:, 1]) if n_classes == 2 else skm.roc_auc_score(y, probs, multi_class="ovr")
        assert scores["roc_auc"] == pytest.approx(sk_auc)
        assert scores["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_bad_shapes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="probs must have shape"):
        classification_scores(np.array([0, 1]), np.array([0.2, 0.8]), ("a", "b"))
    with pytest.raises(ValueError, match="class indices"):
        classification_scores(np.array([0, 3]), np.full((2, 3), 1 / 3), NAMES)
    with pytest.raises(ValueError, match="non-empty"):
        per_image_correct(np.array([], dtype=int), np.zeros((0, 2)))
