"""Classification losses by name (the task's loss table): ``ce`` and ``focal`` on (N, K) logits
and (N,) integer labels, each with optional per-class weights.

``class_weights: auto`` is resolved from the fold's training labels before the loss is built
(:func:`auto_class_weights`), so the same config gives every fold the weights of its own data.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def auto_class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """Median-frequency balancing over images: class c weighs median(n) / n_c (0 for an absent class)."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    present = counts[counts > 0]
    median = float(np.median(present)) if len(present) else 1.0
    return [round(median / c, 6) if c > 0 else 0.0 for c in counts]


def _weights(cfg: dict[str, Any], num_classes: int, key: str) -> Tensor | None:
    weights = cfg["class_weights"]
    if weights is None:
        return None
    if len(weights) != num_classes:
        raise ValueError(f"{key}.class_weights: {len(weights)} weights for {num_classes} classes; give one per class, "
                         "in the order of the class names (sorted folder names or labels).")
    return torch.tensor(weights, dtype=torch.float32)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_true)**gamma, per-class weights
    (or alpha on classes 1.. and 1 - alpha on class 0), mean over the batch."""

    def __init__(self, gamma: float, weights: Tensor | None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weights", weights if weights is not None else torch.empty(0), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weights.numel():
            loss = loss * self.weights[target]
        return loss.mean()


def build_classification_loss(cfg: dict[str, Any], num_classes: int, key: str = "loss") -> nn.Module:
    """The loss a validated ``loss`` block names (``class_weights`` already resolved from auto)."""
    if cfg["name"] == "ce":
        return nn.CrossEntropyLoss(weight=_weights(cfg, num_classes, key), label_smoothing=cfg["label_smoothing"])
    if cfg["name"] == "focal":
        weights = _weights(cfg, num_classes, key)
        if cfg["alpha"] is not None:
            weights = torch.tensor([1 - cfg["alpha"]] + [cfg["alpha"]] * (num_classes - 1), dtype=torch.float32)
        return FocalLoss(cfg["gamma"], weights)
    raise ValueError(f"{key}.name: {cfg['name']!r} is not a classification loss; use ce or focal")


class AccuracyAccumulator:
    """Per-epoch validation scores from a running confusion matrix (the engine's metrics interface:
    ``update(logits, labels)``, ``compute()``, ``reset()``): accuracy, balanced accuracy, macro F1."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, logits: Tensor, target: Tensor) -> None:
        pred = logits.argmax(dim=1).cpu()
        flat = target.cpu() * self.num_classes + pred
        self.matrix += torch.bincount(flat, minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, float]:
        return scores_from_matrix(self.matrix.numpy())


def scores_from_matrix(matrix: np.ndarray | Sequence[Sequence[int]]) -> dict[str, float]:
    """accuracy, balanced accuracy (mean recall over present classes) and macro F1 (over every class,
    as :func:`seglab.class_scores.classification_scores` defines it) of a confusion matrix M[true, pred]."""
    m = np.asarray(matrix, dtype=float)
    tp = np.diag(m)
    support, predicted = m.sum(axis=1), m.sum(axis=0)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {"accuracy": float(tp.sum() / max(m.sum(), 1)),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
            "macro_f1": float(f1.mean())}
