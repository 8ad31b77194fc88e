"""Classification scores: pure functions of true labels and predicted class probabilities.

numpy in, plain python floats/ints/lists out (they go straight into JSON, CSV and MLflow).
The prediction is the arg-max class.  Conventions, chosen to match common practice:

* precision of a class never predicted, recall of a class absent from ``y_true`` and the F1
  of either: 0.0 (zero division gives 0, not NaN, so a macro mean stays defined);
* ``balanced_accuracy``: mean recall over the classes present in ``y_true``;
* ``macro_f1``: mean F1 over all ``class_names``;
* ``roc_auc``: binary -> AUC of class 1's probability; multi-class -> macro one-vs-rest mean;
  ``None`` when a class is absent from ``y_true`` (its AUC is undefined).  Ties count a half
  (the Mann-Whitney statistic), so a constant score gives 0.5.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classification_scores", "per_image_correct", "roc_auc_one_vs_rest"]


def classification_scores(y_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict:
    """accuracy, balanced_accuracy, macro_f1, roc_auc, confusion_matrix (rows true, columns
    predicted) and per_class {name: {precision, recall, f1, support}}."""
    names = list(class_names)
    y, p = _checked(y_true, probs, len(names))
    n_classes = len(names)
    predicted = p.argmax(axis=1)
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (y, predicted), 1)

    true_pos = np.diag(matrix).astype(float)
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    precision = _ratio(true_pos, predicted_count)
    recall = _ratio(true_pos, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    return {
        "accuracy": float(true_pos.sum() / len(y)),
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1.mean()),
        "roc_auc": roc_auc_one_vs_rest(y, p),
        "confusion_matrix": matrix.tolist(),
        "per_class": {
            name: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "support": int(support[k]),
            }
            for k, name in enumerate(names)
        },
    }


def per_image_correct(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """1.0 where the arg-max class is the true one, else 0.0: the per-image score that the
    paired statistics (seglab.stats) consume, like per-image Dice for segmentation."""
    p = np.asarray(probs)
    y, p = _checked(y_true, p, p.shape[1] if p.ndim == 2 else 0)
    return (p.argmax(axis=1) == y).astype(np.float64)


def roc_auc_one_vs_rest(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """Binary (two columns): AUC of column 1; more classes: macro mean of one-vs-rest AUCs.
    None when some class has no example in ``y_true``."""
    y, p = _checked(y_true, probs, np.asarray(probs).shape[1])
    n_classes = p.shape[1]
    if np.any(np.bincount(y, minlength=n_classes) == 0):
        return None
    if n_classes == 2:
        return _auc(y == 1, p[:, 1])
    return float(np.mean([_auc(y == k, p[:, k]) for k in range(n_classes)]))


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """P(score of a random positive > that of a random negative) + 0.5 P(tie), by ranks."""
    ranks = _average_ranks(score)
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    run = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values))
    ranks[order] = mean_rank[run]
    return ranks


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _checked(y_true: np.ndarray, probs: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 1 or len(y) == 0:
        raise ValueError(f"y_true must be a non-empty 1-D array of class indices, got shape {y.shape}")
    if p.ndim != 2 or p.shape != (len(y), n_classes) or n_classes < 2:
        raise ValueError(
            f"probs must have shape (n_images, n_classes) = ({len(y)}, {n_classes}) with at least "
            f"2 classes, got {p.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_true must hold integer class indices in 0..{n_classes - 1}")
    return y.astype(np.int64), p
