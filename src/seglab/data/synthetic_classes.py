"""Built-in synthetic CLASSIFICATION set: one deciding shape among uninformative clutter.

Each image shows exactly one filled shape (circle, square or triangle); the shape's kind
is the class.  Everything else in the image carries no class information, so a model must
find the shape to classify, and a class activation map that looks anywhere else misses:

* the shape's place, size, tilt (upright +- 20 degrees) and colour are drawn from the same
  distributions for every class (the three shapes have equal area, so size is no cue either,
  and one border margin, the triangle's, so place is none);
* the background is a coloured field with a faint, broad shading (too broad to look like a
  shape: finer blobs were taken for circles), crossed by thin straight lines whose colours
  come from the same distribution as the shape's, plus sensor noise.

``evidence`` marks the deciding shape's pixels, so tests can check that a CAM points at it.

Deterministic: image ``i`` is drawn from ``np.random.default_rng([seed, i])`` and its class
is ``i % n_classes``, so an image does not depend on how many are generated (classes are
balanced: ``count // n_classes`` each, the remainder going to the first classes).  All
geometry is drawn in normalised units, so the same ``(seed, i)`` gives the same scene
layout at every size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

__all__ = ["CLASS_NAMES", "ShapeSet", "make_shapes", "shape_ids", "write_evidence", "write_image_folder"]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")

_MIN_SIZE = 24  # below this the shapes are a handful of pixels and hardly tell apart
_RADIUS = (0.14, 0.19)  # radius of the equal-area circle, in image widths
_TRIANGLE_R = float(np.sqrt(4 * np.pi / (3 * np.sqrt(3))))  # circumradius of the equal-area triangle / r
_SQUARE_H = float(np.sqrt(np.pi) / 2)  # half side of the equal-area square / r
_TILT = np.deg2rad(20)  # shapes stand upright, tilted by at most this much


@dataclass(frozen=True)
class ShapeSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64 index into class_names
    evidence: np.ndarray  # (N, H, W) bool: the deciding shape's pixels
    class_names: tuple[str, ...]

    @property
    def ids(self) -> list[str]:
        return shape_ids(len(self.labels))


def shape_ids(count: int) -> list[str]:
    """``shape_00000``, ... : zero-padded (at least 5 digits) so ids sort in index order."""
    width = max(5, len(str(count - 1)))
    return [f"shape_{i:0{width}d}" for i in range(count)]


def make_shapes(count: int, size: int, seed: int, class_names: Sequence[str] = CLASS_NAMES) -> ShapeSet:
    """Generate ``count`` RGB images of ``size`` x ``size`` pixels.

    ``class_names`` picks the shapes (any non-empty subset of CLASS_NAMES, in the order
    that defines the label indices).

    Raises:
        ValueError: count < 1, size < 24, a negative seed, or unknown/duplicate class names.
    """
    names = tuple(class_names)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} pixels, got {size}")
    if seed < 0:  # numpy's SeedSequence rejects negative entries with a cryptic message
        raise ValueError(f"seed must be >= 0, got {seed}")
    unknown = [n for n in names if n not in _SHAPES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"class_names must be distinct names from {', '.join(CLASS_NAMES)}; got {list(names)}"
        )

    images = np.empty((count, size, size, 3), np.uint8)
    evidence = np.empty((count, size, size), bool)
    labels = np.arange(count, dtype=np.int64) % len(names)
    for i in range(count):
        rng = np.random.default_rng([int(seed), i])
        images[i], evidence[i] = _draw(rng, size, _SHAPES[names[int(labels[i])]])
    return ShapeSet(images=images, labels=labels, evidence=evidence, class_names=names)


def write_image_folder(shapes: ShapeSet, root: Path) -> None:
    """``root/<class>/<id>.png`` for every image: the layout ``torchvision.datasets.ImageFolder`` reads."""
    root = Path(root)
    for name in shapes.class_names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for sample_id, image, label in zip(shapes.ids, shapes.images, shapes.labels):
        _save_png(image, root / shapes.class_names[int(label)] / f"{sample_id}.png")


def write_evidence(shapes: ShapeSet, root: Path) -> None:
    """``root/<id>.png``: the deciding shape's pixels as 255, all else 0 (ids match the images)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for sample_id, mask in zip(shapes.ids, shapes.evidence):
        _save_png(mask.astype(np.uint8) * np.uint8(255), root / f"{sample_id}.png")


# --------------------------------------------------------------------------
# Drawing (coordinates normalised to [0, 1]; u, v are the shape's own rotated axes)
# --------------------------------------------------------------------------


def _circle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    return u * u + v * v <= r * r


def _square(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    h = _SQUARE_H * r
    return (np.abs(u) <= h) & (np.abs(v) <= h)


def _triangle(u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    # Equilateral triangle of circumradius R centred at 0: inside all three edge half-planes,
    # each at distance R/2 from the centre along its outward normal.
    big_r = _TRIANGLE_R * r
    inside = np.ones(u.shape, bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        inside &= u * np.cos(angle) + v * np.sin(angle) <= big_r / 2
    return inside


_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
}


def _colour(rng: np.random.Generator, away_from: float) -> np.ndarray:
    """A saturated-ish random colour whose brightness differs from ``away_from`` by >= 60."""
    colour = rng.uniform(0, 255, 3)
    shift = 60 - abs(colour.mean() - away_from)
    if shift > 0:  # push brightness away from the background so the shape is always visible
        colour = colour + (shift if colour.mean() >= away_from else -shift)
        if not 0 <= colour.mean() <= 255:  # no room on that side: go to the other one
            colour = colour - np.sign(colour.mean() - away_from) * 120
    return np.clip(colour, 0, 255)


def _draw(rng: np.random.Generator, size: int, shape: Callable) -> tuple[np.ndarray, np.ndarray]:
    # ---- scene parameters (normalised units, drawn before anything size-dependent)
    r = rng.uniform(*_RADIUS)
    # One margin for all shapes (that of the widest, the triangle), so place is no cue.
    margin = _TRIANGLE_R * r + 1.5 / size
    cy, cx = rng.uniform(margin, 1 - margin, 2)
    angle = rng.uniform(-_TILT, _TILT)
    background = rng.uniform(50, 205, 3)
    texture_gain = rng.uniform(4, 12)
    n_lines = int(rng.integers(2, 6))
    lines = [
        (rng.uniform(0, 1, 2), rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 0.8), rng.uniform(0, 255, 3))
        for _ in range(n_lines)
    ]
    shape_colour = _colour(rng, float(background.mean()))
    noise_sigma = rng.uniform(3, 8)

    # ---- raster
    c = (np.arange(size) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    img = background + texture_gain * _texture(rng, size)[..., None]
    for (py, px), theta, half_width_px, colour in lines:  # infinite lines crossing the frame
        dist_px = np.abs((yy - py) * np.cos(theta) - (xx - px) * np.sin(theta)) * size
        img = np.where((dist_px <= half_width_px)[..., None], colour, img)
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    mask = shape(u, v, r)
    img = np.where(mask[..., None], shape_colour, img)
    img = img + rng.normal(0, noise_sigma, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth zero-mean unit-std noise: a coarse random lattice, bilinearly enlarged."""
    cells = 3
    lattice = rng.standard_normal((cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    t = pos - i0
    rows = lattice[i0] * (1 - t)[:, None] + lattice[i0 + 1] * t[:, None]  # (size, cells+1)
    field = rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]
    return (field - field.mean()) / (field.std() + 1e-6)


def _save_png(array: np.ndarray, path: Path) -> None:
    # Write-then-rename so a crash never leaves a truncated PNG behind.
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
