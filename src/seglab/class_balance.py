"""``class_weights: auto``: median-frequency balancing from a fold's training images.

SegNet trained CamVid with weights ``median(f) / f_c``, where ``f_c`` is the number of
pixels of class c divided by the number of pixels of the images in which c appears. A class
as frequent as the median weighs 1, a rare one (poles, signs) more, a common one (road, sky)
less. Counted on the training images of the fold only, so validation and test pixels never
shape the loss. Pure functions over the manifest's per-class pixel counts.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd


def median_frequency_weights(pixels: np.ndarray) -> list[float]:
    """(images, classes) pixel counts -> one weight per class; a class absent from every image weighs 0."""
    pixels = np.asarray(pixels, dtype=np.float64)
    present = pixels > 0
    image_pixels = pixels.sum(axis=1, keepdims=True)
    denominator = (image_pixels * present).sum(axis=0)
    seen = denominator > 0
    freq = np.where(seen, pixels.sum(axis=0) / np.maximum(denominator, 1), 0.0)
    median = float(np.median(freq[seen])) if seen.any() else 1.0
    return [round(median / f, 6) if f > 0 else 0.0 for f in freq]


def fold_class_weights(manifest: pd.DataFrame, ids: list[str], num_classes: int) -> list[float]:
    """Median-frequency weights of the images ``ids`` (the fold's training images)."""
    rows = manifest.set_index("id").loc[list(ids)]
    return median_frequency_weights(rows[[f"pixels_{k}" for k in range(num_classes)]].to_numpy())


def resolve_auto_weights(loss: dict[str, Any], weights: list[float]) -> dict[str, Any]:
    """The loss block with every ``class_weights: auto`` (in a sum's terms too) replaced by ``weights``."""
    loss = copy.deepcopy(loss)
    if loss["name"] == "sum":
        loss["terms"] = [resolve_auto_weights(term, weights) for term in loss["terms"]]
    elif loss.get("class_weights") == "auto":  # only ce, weighted_dice and focal have the key
        loss["class_weights"] = list(weights)
    return loss


def uses_auto_weights(loss: dict[str, Any]) -> bool:
    if loss["name"] == "sum":
        return any(uses_auto_weights(term) for term in loss["terms"])
    return loss.get("class_weights") == "auto"
