"""Reading images and masks from the formats publishers ship (PNG, JPEG, TIFF, GIF, BMP).

Masks are decoded in two steps so that every encoding shares one code path: the file
gives *raw values* (grey levels, label indices or packed RGB colours), and a value map
(raw value -> class index, IGNORE for ignored values) turns them into class indices.
A raw value absent from the map is reported as unknown instead of guessed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot be decoded as an image ({exc}). Replace or remove the file.") from None


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def intensity_range(path: Path) -> tuple[float, float] | None:
    """(min, max) of a 16-bit/integer/float image's values; None for an 8-bit image (whose
    mode the header tells, so an 8-bit file is not decoded here)."""
    try:
        with Image.open(path) as img:
            if img.mode not in HIGH_BIT_MODES:
                return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None  # read_image names the broken file
    arr = np.asarray(_open(path), dtype=np.float64)
    return float(arr.min()), float(arr.max())


def read_image(path: Path, value_range: tuple[float, float] | list[float] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; grayscale and palette images are converted.

    A 16-bit (or integer/float) image is mapped linearly from ``value_range`` (the dataset's
    min and max, from the fingerprint, so that every image of a dataset shares one scale and
    a dim scan stays dim) to 0..255; without one, from its own min and max.
    """
    img = _open(path)
    if img.mode in HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        low, high = value_range if value_range is not None else (arr.min(), arr.max())
        arr = np.clip(255 * (arr - low) / max(high - low, 1e-12), 0, 255).round().astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 colours -> one int32 per colour (r << 16 | g << 8 | b)."""
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def unpack_rgb(value: int) -> tuple[int, int, int]:
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def read_mask_raw(path: Path, encoding: str) -> np.ndarray:
    """(H, W) raw mask values for ``encoding`` (see :func:`decode_mask`)."""
    img = _open(path)
    if encoding == "binary":
        arr = np.asarray(img.convert("L"))
        # 0/1 masks and 0/255 masks (JPEG-noisy ones included) threshold at half their range.
        threshold = 1 if arr.max() <= 1 else 128
        return (arr >= threshold).astype(np.uint8)
    if encoding == "rgb":
        return pack_rgb(np.asarray(img.convert("RGB")))
    if encoding in ("labels", "grey_levels"):
        arr = np.asarray(img)  # palette PNGs give their indices, not their colours
        if arr.ndim == 3:
            if arr.shape[2] >= 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
                arr = arr[..., 0]  # grey stored as RGB: the three channels agree
            else:
                raise DataError(
                    f"{path}: a {encoding} mask must have one channel, this one has {arr.shape[2]} that differ. "
                    "Set dataset.mask_encoding: rgb with dataset.palette (or dataset.mask_mapping) for colour-coded masks."
                )
        if arr.dtype != np.uint8:
            if arr.max() > 255 or arr.min() < 0:
                raise DataError(f"{path}: mask values reach {arr.max()}; seglab handles label values 0..255 only.")
            arr = arr.astype(np.uint8)
        return arr
    raise ValueError(f"dataset.mask_encoding: unknown encoding {encoding!r}")


def apply_value_map(raw: np.ndarray, value_map: dict[int, int]) -> tuple[np.ndarray, list[int]]:
    """Map raw values to class indices; return (uint8 classes, sorted unknown raw values).

    Unknown values become IGNORE in the output, but the caller is told about them:
    verification reports them and refuses the pair, so nothing is guessed silently.
    """
    values, inverse = np.unique(raw, return_inverse=True)
    lookup = np.array([value_map.get(int(v), IGNORE) for v in values], dtype=np.uint8)
    unknown = [int(v) for v in values if int(v) not in value_map]
    return lookup[inverse.reshape(raw.shape)], unknown


def decode_mask(path: Path, classes: dict[str, Any]) -> tuple[np.ndarray, list[int]]:
    """(H, W) uint8 class indices (IGNORE where ignored) and the unknown raw values found.

    ``classes`` is the resolved class description (see ``verify.resolve_classes``):
    its ``mask_encoding`` says how to read raw values, its ``value_map`` (a list of
    [raw, class] pairs, so it survives JSON) how to turn them into classes.
    """
    raw = read_mask_raw(path, classes["mask_encoding"])
    return apply_value_map(raw, {int(k): int(v) for k, v in classes["value_map"]})


def describe_values(values: list[int], encoding: str) -> str:
    """Unknown raw values as the user sees them: colours for RGB masks, numbers otherwise."""
    if encoding == "rgb":
        return ", ".join(str(unpack_rgb(v)) for v in values[:10]) + (" ..." if len(values) > 10 else "")
    return str(values[:20])[1:-1] + (" ..." if len(values) > 20 else "")
