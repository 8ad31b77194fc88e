"""Bring every verified pair to its training size and cache it as memory-mappable uint8 arrays.

Outputs (one folder): for the square policies (resize, pad) ``images.npy`` (N, S, S, 3)
uint8 and ``masks.npy`` (N, S, S) uint8 class indices with 255 = ignore; for ``native``
(each image at its own size, optionally capped) ``images.blob`` and ``masks.blob``, every
image's bytes back to back, with ``blob_index.csv`` (height, width and byte offsets per
row) to find them. A region-of-interest mask, when the dataset gives one, turns every
pixel outside it into 255 (ignored). Unless the prepared masks are the original ones,
``original_masks.blob`` keeps every mask at its original size (offsets in the manifest's
``original_offset``), for test scores at the size a user measures. Also ``manifest.csv`` (one row per image: id, source
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
from .contrast import equalise_contrast
from .io import IGNORE, DataError, decode_mask, intensity_range, read_image


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


def fit_native(image: np.ndarray, mask: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The pair at its own size, scaled down (aspect kept) when its longest side exceeds ``max_side``."""
    h, w = mask.shape
    if max_side is None or max(h, w) <= max_side:
        return image, mask
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR)),
            np.asarray(Image.fromarray(mask).resize(size, Image.NEAREST)))


def dataset_value_range(paths: list[Path]) -> tuple[float, float] | None:
    """(min, max) over the dataset's 16-bit images, None when all are 8-bit: one scale per
    dataset, so the relative brightness of images survives the 8-bit cache."""
    ranges = [r for r in (intensity_range(p) for p in paths) if r is not None]
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def read_roi(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool region of interest: the file's non-zero pixels."""
    roi = np.asarray(Image.open(path).convert("L")) > 0
    if roi.shape != shape:
        raise DataError(f"{path}: ROI size {roi.shape[1]}x{roi.shape[0]} differs from its image's "
                        f"{shape[1]}x{shape[0]}. Give one ROI mask of the image's size (dataset.folder.roi).")
    return roi


class _SquareStore:
    """(N, S, S, 3) images and (N, S, S) masks as .npy files written in place."""

    def __init__(self, out_dir: Path, count: int, size: int) -> None:
        self.out_dir = out_dir
        self.images = np.lib.format.open_memmap(out_dir / f"{layout.IMAGES}.tmp", mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
        self.masks = np.lib.format.open_memmap(out_dir / f"{layout.MASKS}.tmp", mode="w+", dtype=np.uint8, shape=(count, size, size))

    def put(self, i: int, image: np.ndarray, mask: np.ndarray) -> None:
        self.images[i], self.masks[i] = image, mask

    def close(self) -> None:
        self.images.flush()
        self.masks.flush()
        del self.images, self.masks
        for name in (layout.IMAGES, layout.MASKS):
            (self.out_dir / f"{name}.tmp").replace(self.out_dir / name)


class _BlobStore:
    """Images and masks of any size appended to two blobs; their offsets go to the index."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.images = open(out_dir / f"{layout.IMAGE_BLOB}.tmp", "wb")
        self.masks = open(out_dir / f"{layout.MASK_BLOB}.tmp", "wb")
        self.rows: list[dict[str, int]] = []

    def put(self, i: int, image: np.ndarray, mask: np.ndarray) -> None:
        # A grey image (three equal channels) is stored as one: a third of the bytes. Readers
        # get three channels back, as the models take them (seglab.data.prepared.BlobRows).
        if (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all():
            image = image[..., :1]
        self.rows.append({"index": i, "height": int(mask.shape[0]), "width": int(mask.shape[1]),
                          "channels": int(image.shape[2]), "image_offset": self.images.tell(),
                          "mask_offset": self.masks.tell()})
        self.images.write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.masks.write(np.ascontiguousarray(mask, np.uint8).tobytes())

    def close(self) -> None:
        self.images.close()
        self.masks.close()
        pd.DataFrame(self.rows).to_csv(self.out_dir / layout.BLOB_INDEX, index=False)
        for name in (layout.IMAGE_BLOB, layout.MASK_BLOB):
            (self.out_dir / f"{name}.tmp").replace(self.out_dir / name)


def preprocess(verify_report: dict[str, Any], size: int, policy: str, out_dir: Path,
               max_side: int | None = None, clahe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the cache, manifest and fingerprint for the verified pairs; return the fingerprint.

    ``clahe`` (preprocess.clahe) equalises each fitted image's contrast before it is cached.
    """
    pairs = verify_report["pairs"]
    classes = verify_report["classes"]
    num_classes = len(classes["names"])
    out_dir.mkdir(parents=True, exist_ok=True)
    store = _BlobStore(out_dir) if policy == "native" else _SquareStore(out_dir, len(pairs), size)
    originals = None if layout.keeps_original_size(policy, max_side) else open(out_dir / f"{layout.ORIGINAL_MASKS}.tmp", "wb")
    rows = []
    # Running sums in float64 keep the per-channel statistics exact for any dataset size.
    channel_sum = np.zeros(3)
    channel_sq = np.zeros(3)
    n_pixels = 0
    has_roi = any(pair.get("roi") for pair in pairs)
    value_range = dataset_value_range([Path(pair["image"]) for pair in pairs])
    for i, pair in enumerate(tqdm(pairs, desc="preprocess", unit="img", file=sys.stderr, mininterval=5.0)):
        image = read_image(Path(pair["image"]), value_range)
        if pair["mask"] is None:  # an unlabelled image (colorization only): every pixel ignored
            mask, unknown = np.full(image.shape[:2], IGNORE, np.uint8), None
        else:
            mask, unknown = decode_mask(Path(pair["mask"]), classes)
        if unknown:  # verification refuses such pairs: the file changed since it was verified
            raise DataError(f"{pair['mask']}: unknown mask values {unknown} (the file changed since verification). Re-run verify.")
        if pair.get("roi"):
            mask = np.where(read_roi(Path(pair["roi"]), mask.shape), mask, IGNORE).astype(np.uint8)
        img, msk = fit_native(image, mask, max_side) if policy == "native" else fit_to_size(image, mask, size, policy)
        img = equalise_contrast(img, clahe)
        store.put(i, img, msk)
        n_pixels += msk.size
        original_offset = None
        if originals is not None:
            original_offset = originals.tell()
            originals.write(np.ascontiguousarray(mask, np.uint8).tobytes())
        pixels = img.reshape(-1, 3).astype(np.float64) / 255.0
        channel_sum += pixels.sum(0)
        channel_sq += (pixels**2).sum(0)
        counts = np.bincount(msk[msk != IGNORE].ravel(), minlength=num_classes)[:num_classes]
        rows.append({
            "index": i, "id": pair["id"], "group": pair["group"], "image": pair["image"], "mask": pair["mask"],
            "sha256_image": pair["sha256_image"], "sha256_mask": pair["sha256_mask"],
            "orig_height": pair["height"], "orig_width": pair["width"], "original_offset": original_offset,
            # train/val/test/unlabelled for a pre-split dataset (empty otherwise): what the split reads.
            "role": pair.get("role") or "",
            **{f"pixels_{k}": int(c) for k, c in enumerate(counts)},
        })
    store.close()
    if originals is not None:
        originals.close()
        (out_dir / f"{layout.ORIGINAL_MASKS}.tmp").replace(out_dir / layout.ORIGINAL_MASKS)
    manifest = pd.DataFrame(rows)
    manifest.to_csv(out_dir / layout.MANIFEST, index=False)

    mean = channel_sum / n_pixels
    std = np.sqrt(np.maximum(channel_sq / n_pixels - mean**2, 1e-12))
    class_pixels = manifest[[f"pixels_{k}" for k in range(num_classes)]].sum().to_numpy()
    uses_ignore = any(cls == IGNORE for _, cls in classes["value_map"]) or policy == "pad" or has_roi
    fingerprint = {
        "num_images": len(pairs),
        "size": size,
        "policy": policy,
        "max_side": max_side,
        # Contrast equalisation applied to every image (and by `seglab predict` to new ones).
        "clahe": clahe,
        # 16-bit datasets: the raw values mapped to 0..255 for every image alike (None: 8-bit data).
        "value_range": list(value_range) if value_range is not None else None,
        # Pixels outside a region of interest are IGNORE in the masks and background in predictions.
        "roi": has_roi,
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
        "cache_bytes": int(sum((out_dir / name).stat().st_size for name in layout.store_files(policy, max_side))),
    }
    (out_dir / layout.FINGERPRINT).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return fingerprint


def _stats(series: pd.Series) -> dict[str, float]:
    return {"min": int(series.min()), "median": float(series.median()), "max": int(series.max())}
