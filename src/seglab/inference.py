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
from .engine import Execution
from .models import build_model
from .sliding_window import sliding_window_inference

# Flip TTA: identity, horizontal flip, vertical flip.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))
TTA_PASSES = len(TTA_FLIPS)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def labels_from_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """(N, P, H, W) -> (N, H, W) class indices; the same rule as metrics.predict_labels."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > 0.5).long()
    return probs.argmax(dim=1)


def load_models(checkpoints: Iterable[Path], model_cfg: dict[str, Any], out_channels: int, execution: Execution) -> list[nn.Module]:
    """The fold models, in eval mode, on the device in the execution's memory format."""
    models = []
    for path in checkpoints:
        model = build_from_state(model_cfg, out_channels, load_checkpoint(path, execution.device)["model"])
        models.append(execution.prepare(model).eval())
    return models


def build_from_state(model_cfg: dict[str, Any], out_channels: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """The model with ``state`` as its weights, without first drawing random ones.

    Built on the meta device, a model allocates and initialises nothing (random init of a
    ResNet34-UNet costs more than loading its weights); ``assign=True`` then adopts the
    loaded tensors. A model with a tensor the state does not hold (a non-persistent buffer)
    is built the ordinary way instead.
    """
    with torch.device("meta"):
        model = build_model(model_cfg, 3, out_channels)
    model.load_state_dict(state, assign=True)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        model = build_model(model_cfg, 3, out_channels)
        model.load_state_dict(state)
    return model


@torch.no_grad()
def predict_batch(model: nn.Module, images: torch.Tensor, execution: Execution, tta: bool = False) -> torch.Tensor:
    """Probabilities of one model; with ``tta`` the mean over identity, h-flip and v-flip."""
    images = execution.inputs(images)
    with execution.autocast():
        probs = None
        for dims in TTA_FLIPS if tta else ((),):
            flipped = images.flip(dims) if dims else images
            out = probabilities(model(flipped).float())
            out = out.flip(dims) if dims else out
            probs = out if probs is None else probs + out
    return probs / TTA_PASSES if tta else probs


@torch.no_grad()
def predict_ensemble(models: list[nn.Module], images: torch.Tensor, execution: Execution, tta: bool = False) -> list[torch.Tensor]:
    """Per-model probabilities followed by their mean (the fold ensemble), on ``images``' device."""
    per_model = [predict_batch(m, images, execution, tta) for m in models]
    return per_model + [torch.stack(per_model).mean(0)]


def inference_window(variant: dict[str, Any]) -> int | None:
    """The sliding-window side of a variant: ``inference.window``, else ``train.patch_size``."""
    return variant["inference"]["window"] or variant["train"]["patch_size"]


@torch.no_grad()
def predict_whole_image(models: list[nn.Module], image: torch.Tensor, execution: Execution, tta: bool,
                        window: int | None, overlap: float, batch_size: int) -> torch.Tensor:
    """Per-model probabilities (M, P, H, W) of one standardised (C, H, W) image.

    With a ``window``, by Gaussian-blended sliding windows (TTA applied to every window);
    without one, one forward pass over the whole image. Each model's probabilities are
    blended separately, so the fold ensemble (their mean) is exactly the mean of the
    per-model results; the accumulator holds M x P channels at the image's size.
    """
    image = image.to(execution.device)
    if window is None:
        return torch.stack([predict_batch(m, image[None], execution, tta)[0] for m in models])

    def predict(batch: torch.Tensor) -> torch.Tensor:
        return torch.cat([predict_batch(m, batch, execution, tta) for m in models], dim=1)

    out = sliding_window_inference(image, predict, (window, window), overlap, batch_size)
    return out.reshape(len(models), -1, *out.shape[1:])


def logits_of(probs: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Logits whose sigmoid/softmax is ``probs``: blended probabilities go through the loss as
    the model's own outputs would (BCE on logit(p) is BCE on p; softmax(log p) is p)."""
    probs = probs.clamp(eps, 1 - eps)
    return torch.logit(probs) if probs.shape[1] == 1 else probs.log()


@torch.no_grad()
def validate_whole_images(model: nn.Module, dataset: Any, loss_fn: Any, execution: Execution, metrics: Any,
                          window: int, overlap: float, batch_size: int) -> dict[str, float]:
    """A validation epoch on whole images by sliding windows: what a patch-trained model is
    evaluated on. Returns the mean loss per image, images/s and the metrics' summary
    (the same keys as :func:`~seglab.engine.run_epoch`)."""
    import time

    model.eval()
    start = time.perf_counter()
    total = 0.0
    for i in range(len(dataset)):
        image, target = dataset[i]
        target = target[None].to(execution.device)
        logits = logits_of(predict_whole_image([model], image, execution, False, window, overlap, batch_size)[0][None])
        total += float(loss_fn(logits, target))
        metrics.update(logits, target)
    if len(dataset) == 0:
        raise ValueError("an epoch saw no images: the split left this set empty")
    result = {"loss": total / len(dataset), "images_per_s": len(dataset) / max(time.perf_counter() - start, 1e-9)}
    result.update(metrics.compute())
    metrics.reset()
    return result


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


def to_original_size(probs: torch.Tensor, h: int, w: int, fingerprint: dict[str, Any]) -> torch.Tensor:
    """(P, h', w') probabilities of a prepared image -> (P, h, w) at its original size,
    whatever the preprocessing policy (square resize/pad, or native with max_side)."""
    if fingerprint["policy"] != "native":
        return restore_size(probs, h, w, int(fingerprint["size"]), fingerprint["policy"])
    if tuple(probs.shape[1:]) == (h, w):
        return probs
    return torch.nn.functional.interpolate(probs[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]


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
