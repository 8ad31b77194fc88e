"""Inference: class probabilities of one model or of a fold ensemble, with optional flip TTA.

Shape contract: images (N, 3, H, W) standardised as in training -> probabilities
(N, P, H, W) where P = 1 for a sigmoid head (foreground probability) or C for softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .engine import Precision
from .models import build_model


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """(N, P, H, W) -> (N, H, W) class indices; the same rule as metrics.predict_labels."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > 0.5).long()
    return probs.argmax(dim=1)


def load_models(checkpoints: Iterable[Path], model_cfg: dict[str, Any], out_channels: int, device: torch.device) -> list[nn.Module]:
    models = []
    for path in checkpoints:
        model = build_model(model_cfg, 3, out_channels)
        model.load_state_dict(load_checkpoint(path, device)["model"])
        models.append(model.to(device).eval())
    return models


@torch.no_grad()
def predict_batch(model: nn.Module, images: torch.Tensor, precision: Precision, tta: bool = False) -> torch.Tensor:
    """Probabilities of one model; with ``tta`` the mean over identity, h-flip and v-flip."""
    with precision.autocast():
        probs = probabilities(model(images).float())
        if tta:
            for dims in ((3,), (2,)):
                probs = probs + probabilities(model(images.flip(dims)).float()).flip(dims)
            probs = probs / 3
    return probs


@torch.no_grad()
def predict_ensemble(models: list[nn.Module], images: torch.Tensor, precision: Precision, tta: bool = False) -> list[torch.Tensor]:
    """Per-model probabilities followed by their mean (the fold ensemble), on ``images``' device."""
    per_model = [predict_batch(m, images, precision, tta) for m in models]
    return per_model + [torch.stack(per_model).mean(0)]


def restore_size(probs: torch.Tensor, orig_h: int, orig_w: int, size: int, policy: str) -> torch.Tensor:
    """Undo preprocessing: (P, S, S) probabilities -> (P, orig_h, orig_w).

    ``resize`` stretched the image to S x S, so the probabilities are stretched back;
    ``pad`` scaled the long side to S and centred the image, so the padding is cropped
    first. Probabilities (not labels) are interpolated so that edges stay smooth.
    """
    if policy == "pad":
        scale = size / max(orig_h, orig_w)
        h, w = max(1, round(orig_h * scale)), max(1, round(orig_w * scale))
        top, left = (size - h) // 2, (size - w) // 2
        probs = probs[:, top:top + h, left:left + w]
    return torch.nn.functional.interpolate(probs[None].float(), size=(orig_h, orig_w), mode="bilinear",
                                           align_corners=False)[0]


def colour_overlay(image: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Image with each foreground class tinted in its own colour (class 0 left as is)."""
    import numpy as np
    from matplotlib import colormaps

    palette = (np.array([colormaps["tab10"](k % 10)[:3] for k in range(num_classes)]) * 255).astype(np.float32)
    out = image.astype(np.float32).copy()
    for k in range(1, num_classes):
        mask = labels == k
        out[mask] = 0.5 * out[mask] + 0.5 * palette[k]
    return out.clip(0, 255).astype(np.uint8)
