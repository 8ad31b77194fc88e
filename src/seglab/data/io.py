"""Reading images and masks from the formats publishers ship (PNG, JPEG, TIFF, GIF, BMP)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")

# The value prepared masks use for "ignore this pixel" (the dataset's own ignore label
# and padding are both mapped to it), so every later stage needs one convention only.
IGNORE = 255


class DataError(ValueError):
    """A problem with the user's data files, naming the file and the fix."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now: a truncated file fails here, not in the middle of training
        return img
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot be decoded as an image ({exc}). Replace or remove the file.") from None


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; grayscale and palette images are converted."""
    img = _open(path)
    if img.mode in ("I;16", "I;16B", "I"):
        # 16-bit scans: scale to 8 bits so every dataset shares one cache format.
        arr = np.asarray(img, dtype=np.float64)
        arr = (255 * (arr - arr.min()) / max(arr.max() - arr.min(), 1)).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def read_mask(path: Path, encoding: str) -> np.ndarray:
    """(H, W) uint8 class indices.

    ``binary``: any 0/255, 0/1 or JPEG-noisy mask thresholded at half its range.
    ``labels``: the stored values are the class indices (palette PNGs give their indices).
    """
    img = _open(path)
    if encoding == "binary":
        arr = np.asarray(img.convert("L"))
        threshold = 1 if arr.max() <= 1 else 128
        return (arr >= threshold).astype(np.uint8)
    if encoding == "labels":
        arr = np.asarray(img)
        if arr.ndim == 3:
            raise DataError(
                f"{path}: a label mask must have one channel, this one has {arr.shape[2]}. "
                "Set dataset.mask_encoding to binary, or convert colour-coded masks to label maps."
            )
        return arr.astype(np.uint8)
    raise ValueError(f"dataset.mask_encoding: unknown encoding {encoding!r}")
