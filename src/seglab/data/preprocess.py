"""Bring every verified pair to one size and cache it as memory-mappable uint8 arrays.

Outputs (one folder): ``images.npy`` (N, S, S, 3) uint8, ``masks.npy`` (N, S, S) uint8
class indices with 255 = ignore, ``manifest.csv`` (one row per image: id, source
paths, sha256, original size, group, role in a pre-split dataset, per-class pixel counts) and ``fingerprint.json``
(normalisation mean/std, class frequencies, size statistics). Training reads the
arrays with ``mmap_mode='r'`` and never decodes an image file per epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .. import layout
from .io import IGNORE, DataError, decode_mask, read_image


def fit_to_size(image: np.ndarray, mask: np.ndarray, size: int, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Resize (stretch) or keep-aspect-and-pad an image/mask pair to size x size.

    Images use bilinear interpolation; masks nearest-neighbour so no new label appears.
    Padding is black in the image and IGNORE in the mask, so it never counts as a class.
    """
    h, w = mask.shape
    if policy == "resize":
        scale_w, scale_h = size, size
    elif policy == "pad":
        scale = size / max(h, w)
        scale_w, scale_h = max(1, round(w * scale)), max(1, round(h * scale))
    else:
        raise ValueError(f"preprocess.policy: unknown policy {policy!r}; use resize or pad")
    img = np.asarray(Image.fromarray(image).resize((scale_w, scale_h), Image.BILINEAR))
    msk = np.asarray(Image.fromarray(mask).resize((scale_w, scale_h), Image.NEAREST))
    if policy == "resize":
        return img, msk
    out_img = np.zeros((size, size, 3), np.uint8)
    out_msk = np.full((size, size), IGNORE, np.uint8)
    top, left = (size - scale_h) // 2, (size - scale_w) // 2
    out_img[top:top + scale_h, left:left + scale_w] = img
    out_msk[top:top + scale_h, left:left + scale_w] = msk
    return out_img, out_msk


def preprocess(verify_report: dict[str, Any], size: int, policy: str, out_dir: Path) -> dict[str, Any]:
    """Write the cache, manifest and fingerprint for the verified pairs; return the fingerprint."""
    pairs = verify_report["pairs"]
    classes = verify_report["classes"]
    num_classes = len(classes["names"])
    out_dir.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out_dir / f"{layout.IMAGES}.tmp", mode="w+", dtype=np.uint8, shape=(len(pairs), size, size, 3))
    masks = np.lib.format.open_memmap(out_dir / f"{layout.MASKS}.tmp", mode="w+", dtype=np.uint8, shape=(len(pairs), size, size))
    rows = []
    # Running sums in float64 keep the per-channel statistics exact for any dataset size.
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    for i, pair in enumerate(tqdm(pairs, desc="preprocess", unit="img", file=sys.stderr, mininterval=5.0)):
        image = read_image(Path(pair["image"]))
        if pair["mask"] is None:  # an unlabelled image (colorization only): every pixel ignored
            mask, unknown = np.full(image.shape[:2], IGNORE, np.uint8), None
        else:
            mask, unknown = decode_mask(Path(pair["mask"]), classes)
        if unknown:  # verification refuses such pairs: the file changed since it was verified
            raise DataError(f"{pair['mask']}: unknown mask values {unknown} (the file changed since verification). Re-run verify.")
        img, msk = fit_to_size(image, mask, size, policy)
        images[i], masks[i] = img, msk
        pixels = img.reshape(-1, 3).astype(np.float64) / 255.0
        channel_sum += pixels.sum(0)
        channel_sq += (pixels**2).sum(0)
        counts = np.bincount(msk[msk != IGNORE].ravel(), minlength=num_classes)[:num_classes]
        rows.append({
            "index": i, "id": pair["id"], "group": pair["group"], "image": pair["image"], "mask": pair["mask"],
            "sha256_image": pair["sha256_image"], "sha256_mask": pair["sha256_mask"],
            "orig_height": pair["height"], "orig_width": pair["width"],
            # train/val/test/unlabelled for a pre-split dataset (empty otherwise): what the split reads.
            "role": pair.get("role") or "",
            **{f"pixels_{k}": int(c) for k, c in enumerate(counts)},
        })
    images.flush()
    masks.flush()
    del images, masks
    (out_dir / f"{layout.IMAGES}.tmp").replace(out_dir / layout.IMAGES)
    (out_dir / f"{layout.MASKS}.tmp").replace(out_dir / layout.MASKS)
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out_dir / layout.MANIFEST, index=False)

    n_pixels = len(pairs) * size * size
    mean = channel_sum / n_pixels
    std = np.sqrt(np.maximum(channel_sq / n_pixels - mean**2, 1e-12))
    class_pixels = manifest[[f"pixels_{k}" for k in range(num_classes)]].sum().to_numpy()
    uses_ignore = any(cls == IGNORE for _, cls in classes["value_map"]) or policy == "pad"
    fingerprint = {
        "num_images": len(pairs),
        "size": size,
        "policy": policy,
        "classes": classes["names"],
        "num_classes": num_classes,
        "ignore_index": IGNORE if uses_ignore else None,
        "mean": mean.round(6).tolist(),
        "std": std.round(6).tolist(),
        "class_frequency": (class_pixels / max(class_pixels.sum(), 1)).round(6).tolist(),
        "images_with_class": [int((manifest[f"pixels_{k}"] > 0).sum()) for k in range(num_classes)],
        "orig_height": _stats(manifest["orig_height"]),
        "orig_width": _stats(manifest["orig_width"]),
        "groups": int(manifest["group"].nunique()),
        "ignored_pixel_fraction": round(1 - float(class_pixels.sum()) / max(n_pixels, 1), 6),
        "cache_bytes": int((out_dir / layout.IMAGES).stat().st_size + (out_dir / layout.MASKS).stat().st_size),
    }
    (out_dir / layout.FINGERPRINT).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return fingerprint


def _stats(series: pd.Series) -> dict[str, float]:
    return {"min": int(series.min()), "median": float(series.median()), "max": int(series.max())}
