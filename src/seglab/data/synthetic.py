"""Built-in synthetic 2D segmentation datasets.

Two kinds of data are generated, both meant to look roughly like the real
imaging modality they stand in for, so that a study run on them exercises
the same failure modes (thin occluders, tiny objects, class imbalance,
illumination fall-off) without needing a download:

* ``lesions``     -- dermoscopy-like skin images with one pigmented lesion
                     (binary masks, stored 0/255 as public datasets ship them).
* ``instruments`` -- endoscopy-like tissue images with 1-2 surgical
                     instruments (labels 0 background, 1 shaft, 2 tip).

Everything is deterministic: pair ``i`` is drawn from
``np.random.default_rng([seed, i])``, so it does not depend on how many pairs
are generated or in which order.  All geometric parameters are drawn in
normalised image units *before* any size-dependent array, so the same
``(seed, index)`` gives the same scene layout at every resolution (only
very small lesions are enlarged to stay at least ~1.5 px in radius).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["KINDS", "generate_dataset", "generate_pair"]

KINDS = ("lesions", "instruments")

# Files in images/ and masks/ that this module owns (used to drop stale pairs
# left by an earlier, larger generation into the same directory).
_ID_FILE_RE = re.compile(r"^p\d+_\d+\.png$")
_POOL_FILE_RE = re.compile(r"^u\d+\.png$")
# The unlabelled pool's folder, and the random stream its images are drawn from (labelled
# pairs use the stream [seed, index], the pool [seed, index, UNLABELLED_STREAM]).
UNLABELLED_DIR = "unlabelled"
UNLABELLED_STREAM = 1

_MIN_SIZE = 16

FloatArray = np.ndarray


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def generate_dataset(
    out_dir: Path, kind: str, count: int, size: int, seed: int, groups: int = 8, unlabelled: int = 0
) -> dict:
    """Write a synthetic dataset to ``out_dir`` and return its classes dict.

    Layout::

        out_dir/images/<id>.png   RGB uint8, size x size
        out_dir/masks/<id>.png    mode 'L'; 0/255 for ``lesions``,
                                  class indices 0..2 for ``instruments``
        out_dir/unlabelled/u<i>.png  ``unlabelled`` more images, no masks: a pool for
                                  colorization pretraining, drawn from a stream of
                                  their own (``generate_pair(..., stream=UNLABELLED_STREAM)``)
                                  so that none is a labelled image
        out_dir/classes.json      {"names", "mask_encoding", "ignore_index"}

    Ids look like ``p03_0017``: image ``i`` belongs to synthetic patient
    ``i % groups`` (round-robin), so group-aware splits have something to
    group by.  ``classes.json`` is written last, so its presence marks a
    complete dataset.  Pair files with this id pattern that are not part of
    the new dataset (left over from an earlier, larger run into the same
    directory) are removed so the directory always describes one dataset.

    Raises:
        ValueError: unknown ``kind``, ``count < 1``, ``size < 16``,
            ``groups < 1`` or a negative ``seed``.
    """
    _check_kind(kind)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    _check_size(size)
    _check_seed(seed)
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")

    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    mask_dir = out_dir / "masks"
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    # Drop the completion marker first: a run that dies half-way must not
    # leave an old classes.json vouching for a half-rewritten folder.
    (out_dir / "classes.json").unlink(missing_ok=True)

    # Widths grow only when needed so ids keep sorting in index order.
    gw = max(2, len(str(groups - 1)))
    iw = max(4, len(str(count - 1)))
    classes = _classes(kind)
    written: set[str] = set()
    for i in range(count):
        sample_id = f"p{i % groups:0{gw}d}_{i:0{iw}d}"
        image, labels = generate_pair(kind, i, size, seed)
        if classes["mask_encoding"] == "binary":
            labels = labels * np.uint8(255)  # publishers ship binary masks as 0/255
        _save_png(image, img_dir / f"{sample_id}.png")
        _save_png(labels, mask_dir / f"{sample_id}.png")
        written.add(f"{sample_id}.png")

    pool_dir = out_dir / UNLABELLED_DIR
    if unlabelled:
        pool_dir.mkdir(exist_ok=True)
    uw = max(4, len(str(unlabelled - 1)))
    for i in range(unlabelled):
        image, _ = generate_pair(kind, i, size, seed, stream=UNLABELLED_STREAM)
        _save_png(image, pool_dir / f"u{i:0{uw}d}.png")
        written.add(f"u{i:0{uw}d}.png")

    for directory in (img_dir, mask_dir, pool_dir):
        for path in directory.iterdir() if directory.is_dir() else []:
            if (_ID_FILE_RE.match(path.name) or _POOL_FILE_RE.match(path.name)) and path.name not in written:
                path.unlink()

    _atomic_write_bytes(
        out_dir / "classes.json", (json.dumps(classes, indent=2) + "\n").encode()
    )
    return classes


def generate_pair(kind: str, index: int, size: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generate one ``(image, labels)`` pair.

    Returns:
        image: ``(size, size, 3)`` uint8 RGB.
        labels: ``(size, size)`` uint8 class indices (0/1 for ``lesions``,
            0..2 for ``instruments``).

    Deterministic for ``(kind, index, size, seed)``; the generator is seeded
    with ``[seed, index]`` so pair ``index`` does not depend on the others;
    ``stream`` > 0 draws from ``[seed, index, stream]`` instead, a sequence no
    labelled pair is drawn from (the unlabelled pool).
    """
    _check_kind(kind)
    _check_size(size)
    _check_seed(seed)
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([int(seed), int(index)] + ([int(stream)] if stream else []))
    return _GENERATORS[kind](rng, int(size))


# --------------------------------------------------------------------------
# Validation / IO helpers
# --------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")


def _check_size(size: int) -> None:
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE} pixels, got {size}")


def _check_seed(seed: int) -> None:
    # numpy's SeedSequence rejects negative entries with a cryptic message.
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _classes(kind: str) -> dict:
    """Fresh classes dict (a new object each call so callers may mutate it)."""
    if kind == "lesions":
        return {"names": ["background", "lesion"], "mask_encoding": "binary", "ignore_index": None}
    return {"names": ["background", "shaft", "tip"], "mask_encoding": "labels", "ignore_index": None}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    # Write-then-rename so a crash never leaves a truncated file behind.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _save_png(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Shared image-synthesis primitives (all coordinates normalised to [0, 1])
# --------------------------------------------------------------------------


def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates in [0, 1]; (y, x) arrays of shape (size, size)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return yy, xx


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> FloatArray:
    """Zero-mean, unit-std smooth noise with about ``cells`` features across the image.

    A random lattice of fixed shape (independent of ``size``) is interpolated
    with a separable Gaussian kernel written as two small matrix products, so
    the texture is the same at every output size (only sharper) and costs far
    less than a wide ``gaussian_filter`` or a spline ``zoom``.  The lattice
    extends two cells past each border so statistics do not change near edges.
    """
    pad = 2
    lattice = rng.standard_normal((cells + 2 * pad, cells + 2 * pad)).astype(np.float32)
    centres = (np.arange(cells + 2 * pad, dtype=np.float32) - pad + 0.5) / cells
    pixels = (np.arange(size, dtype=np.float32) + 0.5) / size
    weights = np.exp(-0.5 * ((pixels[:, None] - centres[None, :]) * cells / 0.8) ** 2)
    weights /= weights.sum(axis=1, keepdims=True)
    field = weights @ lattice @ weights.T
    field -= field.mean()
    return field / (field.std() + 1e-6)


def _blend(base: FloatArray, colour: FloatArray, alpha: FloatArray) -> FloatArray:
    """Alpha-composite ``colour`` (RGB vector or HxWx3) over ``base`` (HxWx3)."""
    a = alpha[..., None]
    return base * (1.0 - a) + colour * a


def _vignette(yy: FloatArray, xx: FloatArray, strength: float, power: float) -> FloatArray:
    """Multiplicative illumination fall-off: 1 at the centre, 1-strength at corners."""
    r2 = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.5
    return 1.0 - strength * r2**power


def _finish(rng: np.random.Generator, img: FloatArray, noise_sigma: float) -> np.ndarray:
    """Add sensor noise and quantise to uint8."""
    img = img + rng.normal(0.0, noise_sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _bezier_alpha(
    size: int, p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, half_width_px: float
) -> FloatArray:
    """Anti-aliased coverage of a thin quadratic-Bezier stroke.

    The curve is rasterised as densely sampled points and turned into a
    distance field (one EDT), which is much cheaper than point-to-curve
    distances for every pixel and gives a clean sub-pixel edge.
    """
    t = np.linspace(0.0, 1.0, 6 * size, dtype=np.float32)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (n, 2) as (y, x)
    ij = np.rint(pts * size - 0.5).astype(np.int64)
    inside = np.all((ij >= 0) & (ij < size), axis=1)
    if not inside.any():
        return np.zeros((size, size), np.float32)
    canvas = np.ones((size, size), dtype=bool)
    canvas[ij[inside, 0], ij[inside, 1]] = False
    dist = ndimage.distance_transform_edt(canvas).astype(np.float32)
    return np.clip(half_width_px + 0.5 - dist, 0.0, 1.0)


def _edge_points(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random points just outside two *different* image edges, as (y, x).

    Different edges make a stroke cross the frame instead of looping back
    out through the side it entered, which real hairs rarely do.
    """
    first = int(rng.integers(4))
    second = (first + 1 + int(rng.integers(3))) % 4
    pos = rng.uniform(0.0, 1.0, 2)
    out = -0.05

    def on_side(side: int, t: float) -> np.ndarray:
        return np.array(
            [(out, t), (1 - out, t), (t, out), (t, 1 - out)][side], dtype=np.float32
        )

    return on_side(first, pos[0]), on_side(second, pos[1])


# --------------------------------------------------------------------------
# lesions: dermoscopy-like, binary
# --------------------------------------------------------------------------


def _lesion_radius(
    cos_t: FloatArray, sin_t: FloatArray, r0: float, amps: np.ndarray, phases: np.ndarray
) -> FloatArray:
    """Boundary radius as a function of angle: a circle perturbed by harmonics 2..K.

    Takes the angle as (cos, sin) and builds cos(k*theta), sin(k*theta) by the
    angle-addition recurrence, which avoids arctan2 and per-harmonic cos calls.
    """
    mod = np.zeros_like(cos_t)
    ck, sk = cos_t * cos_t - sin_t * sin_t, 2 * cos_t * sin_t  # k = 2
    for a, phi in zip(amps, phases):
        mod += a * (ck * np.cos(phi) - sk * np.sin(phi))  # a*cos(k*theta + phi)
        ck, sk = ck * cos_t - sk * sin_t, sk * cos_t + ck * sin_t
    return r0 * (1.0 + mod)


def _lesion_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(size)
    px = size / 96.0  # pixel-scale factor so strokes/blur look alike at any size

    # ---- scene parameters (normalised units; drawn before size-dependent noise)
    tiny = rng.random() < 0.05  # a few hard, very small lesions, as in real data
    if tiny:
        area = rng.uniform(0.008, 0.02)
    else:
        area = float(np.exp(rng.uniform(np.log(0.06), np.log(0.30))))
    r0 = float(np.sqrt(area / np.pi))
    margin = max(0.0, 0.5 - 1.15 * r0)  # keep most of the blob inside the frame
    cy, cx = (0.5 + rng.uniform(-margin, margin, 2)).tolist()
    n_harm = 7
    ks = np.arange(2, 2 + n_harm)
    # 1/k fall-off: low harmonics give lobes/elongation, high ones a ragged rim.
    amps = (rng.uniform(0.0, 1.0, n_harm) * 0.30 / ks).astype(np.float32)
    phases = rng.uniform(0.0, 2 * np.pi, n_harm).astype(np.float32)

    skin_r = rng.uniform(165, 235)  # fair to medium skin types
    skin = np.array(
        [skin_r, skin_r * rng.uniform(0.72, 0.82), skin_r * rng.uniform(0.58, 0.70)],
        dtype=np.float32,
    )
    # Lesion colour: lighter tan-brown rim, dark brown/black core.  Darker
    # pigment is always browner/blacker, so hue follows structure and a
    # grey-to-colour model has a learnable mapping.
    rim = np.array([152, 92, 60], np.float32) * rng.uniform(0.8, 1.1)
    core = np.array([72, 38, 26], np.float32) * rng.uniform(0.6, 1.2)
    pigment = np.array([48, 30, 24], np.float32) * rng.uniform(0.6, 1.2)
    veil = np.array([105, 100, 122], np.float32) * rng.uniform(0.85, 1.1)
    core_strength = rng.uniform(0.3, 1.0)
    structure = int(rng.integers(3))  # 0 plain gradient, 1 dots/globules, 2 network
    has_veil = rng.random() < 0.2  # blue-white veil: bluish-grey central area
    rim_blur_px = rng.uniform(0.6, 1.6) * px
    opacity = rng.uniform(0.85, 1.0)
    # Some lesions are faint at the rim (pigment fading into skin): the border
    # is then ambiguous, as in real dermoscopy, and segmentation is not trivial.
    rim_fade = rng.uniform(0.0, 0.6) if rng.random() < 0.6 else 0.0
    fade_width = rng.uniform(0.1, 0.5)
    pale = rng.uniform(0.0, 0.3)  # lightly pigmented lesions have less contrast

    # Freckles: small light-brown spots on the skin that are NOT the lesion,
    # so a model cannot simply segment "anything brown".
    n_freckles = int(rng.integers(0, 9))
    freckle_c = rng.uniform(0.05, 0.95, (n_freckles, 2)).astype(np.float32)
    freckle_s = rng.uniform(0.008, 0.03, n_freckles).astype(np.float32)
    freckle_a = rng.uniform(0.3, 0.7, n_freckles).astype(np.float32)

    n_dots = int(rng.integers(8, 30))
    dot_rho = (np.sqrt(rng.uniform(0, 1, n_dots)) * 0.8).astype(np.float32)
    dot_theta = rng.uniform(0, 2 * np.pi, n_dots).astype(np.float32)
    dot_sigma = rng.uniform(0.006, 0.014, n_dots).astype(np.float32)

    n_hairs = 0 if rng.random() < 0.3 else int(rng.integers(1, 6))
    hairs = []
    for h in range(n_hairs):
        p0, p2 = _edge_points(rng)
        if h == 0:
            # Bend the first hair through the lesion so hair-over-lesion
            # (which must NOT be segmented) is common.
            via = np.array([cy, cx], np.float32) + rng.normal(0, r0 * 0.5, 2).astype(np.float32)
            p1 = 2 * via - (p0 + p2) / 2  # quadratic Bezier passes `via` at t=0.5
        else:
            p1 = (p0 + p2) / 2 + rng.normal(0, 0.12, 2).astype(np.float32)
        hw = max(0.35, rng.uniform(0.35, 0.9) * px)
        hair_col = np.array([38, 28, 22], np.float32) * rng.uniform(0.6, 1.4)
        hairs.append((p0, p1, p2, hw, hair_col, rng.uniform(0.7, 0.95)))

    vig_strength = rng.uniform(0.2, 0.45)
    vig_power = rng.uniform(1.0, 2.0)
    gains = rng.uniform(0.95, 1.05, 3).astype(np.float32)  # white balance
    noise_sigma = rng.uniform(2.0, 5.0)

    # ---- skin background: low-frequency tone + mid-frequency mottling + redness
    tone = _smooth_noise(rng, size, 5)
    mottle = _smooth_noise(rng, size, 22)
    redness = _smooth_noise(rng, size, 7)
    img = np.broadcast_to(skin, (size, size, 3)) * (1.0 + 0.06 * tone + 0.03 * mottle)[..., None]
    # Erythema only ever reddens skin; a symmetric term would add green casts.
    red = np.clip(redness, 0, None)
    img = img + np.stack([6 * red, -10 * red, -8 * red], axis=-1)

    # ---- lesion geometry: d = 0 at centre, 1 on the boundary
    # A floor of ~1.5 px keeps tiny lesions visible at small image sizes (it
    # only changes geometry, not the random stream, so determinism holds).
    r_px = max(r0, 1.5 / size)
    dy, dx = yy - cy, xx - cx
    dist = np.sqrt(dx * dx + dy * dy)
    safe = np.maximum(dist, 1e-6)
    radius = _lesion_radius(dx / safe, dy / safe, r_px, amps, phases)
    d = dist / radius
    labels = (d < 1.0).astype(np.uint8)
    if not labels.any():  # every lesion image must have a lesion pixel
        labels.flat[int(np.argmin(d))] = 1
        d.flat[int(np.argmin(d))] = 0.0

    if n_freckles:
        fy = (yy[..., None] - freckle_c[:, 0]) / freckle_s
        fx = (xx[..., None] - freckle_c[:, 1]) / freckle_s
        spots = (freckle_a * np.exp(-0.5 * (fx * fx + fy * fy))).sum(-1)
        img = _blend(img, rim, np.clip(spots, 0, 0.6))

    depth = np.clip(1.0 - d, 0.0, 1.0)
    core_w = core_strength * (depth * depth * (3 - 2 * depth))  # smoothstep toward centre
    lesion = _blend(np.broadcast_to(rim, (size, size, 3)), core, core_w)
    # Blend the lesion part-way back toward the skin: uniformly (pale lesion)
    # and more strongly in an outer band (pigment fading out at the rim).
    fade = pale + (1.0 - pale) * rim_fade * np.clip(1.0 - depth / fade_width, 0.0, 1.0)
    if fade.any():
        lesion = lesion * (1.0 - fade[..., None]) + img * fade[..., None]
    if has_veil:
        lesion = _blend(lesion, veil, 0.7 * np.clip((depth - 0.35) / 0.3, 0, 1))

    pigment_alpha = np.zeros((size, size), np.float32)
    if structure == 1:
        dcos, dsin = np.cos(dot_theta), np.sin(dot_theta)
        r_dot = _lesion_radius(dcos, dsin, r_px, amps, phases) * dot_rho
        ddy = yy[..., None] - (cy + r_dot * dsin)
        ddx = xx[..., None] - (cx + r_dot * dcos)
        blobs = np.exp(-(ddx * ddx + ddy * ddy) / (2 * dot_sigma**2)).sum(-1)
        pigment_alpha = np.clip(1.5 * blobs, 0, 1).astype(np.float32)
    elif structure == 2:
        # Zero crossings of band-pass noise form a web of thin reticular lines.
        band = _smooth_noise(rng, size, 16) - 0.5 * _smooth_noise(rng, size, 6)
        pigment_alpha = np.exp(-((band / 0.35) ** 2)) * np.clip(depth * 4, 0, 1)
    lesion = _blend(lesion, pigment, 0.8 * pigment_alpha)
    lesion = lesion * (1.0 + 0.05 * tone + 0.06 * mottle)[..., None]  # shared illumination, uneven pigment

    # Soft rim: blurred coverage so the border is not a perfect step.
    alpha = ndimage.gaussian_filter(labels.astype(np.float32), rim_blur_px) * opacity
    img = _blend(img, lesion, alpha)

    # ---- hairs over everything (not part of the mask)
    for p0, p1, p2, hw, col, op in hairs:
        img = _blend(img, col, op * _bezier_alpha(size, p0, p1, p2, hw))

    img = img * _vignette(yy, xx, vig_strength, vig_power)[..., None] * gains
    return _finish(rng, img, noise_sigma), labels


# --------------------------------------------------------------------------
# instruments: endoscopy-like, 3 classes
# --------------------------------------------------------------------------


def _instrument_params(rng: np.random.Generator) -> dict:
    """Pose/appearance of one instrument in normalised units."""
    side = int(rng.integers(4))
    pos = rng.uniform(0.2, 0.8)
    # Entry point on the border and inward normal, both as (y, x).
    entry, normal = [
        ((0.0, pos), (1.0, 0.0)),
        ((1.0, pos), (-1.0, 0.0)),
        ((pos, 0.0), (0.0, 1.0)),
        ((pos, 1.0), (0.0, -1.0)),
    ][side]
    entry = np.array(entry, np.float32)
    normal = np.array(normal, np.float32)

    def direction(angle: float) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        return np.array([c * normal[0] - s * normal[1], s * normal[0] + c * normal[1]], np.float32)

    def exit_dist(d: np.ndarray) -> float:
        ts = []
        for k in range(2):
            if d[k] > 1e-6:
                ts.append((1.0 - entry[k]) / d[k])
            elif d[k] < -1e-6:
                ts.append(-entry[k] / d[k])
        return float(min(ts))

    angle = rng.uniform(-np.radians(40), np.radians(40))
    d = direction(angle)
    if exit_dist(d) < 0.7:  # heading into a near corner: swing the other way
        angle = -angle
        d = direction(angle)
    reach = exit_dist(d) * rng.uniform(0.5, 0.8)
    tip_len = rng.uniform(0.13, 0.2)
    return {
        "entry": entry,
        "dir": d,
        "shaft_len": max(reach - tip_len, 0.12),
        "tip_len": tip_len,
        "width": rng.uniform(0.09, 0.15),
        "jaw_open": rng.uniform(0.0, np.radians(30)) if rng.random() < 0.6 else 0.0,
        "grey": rng.uniform(150, 195),
        "tint": rng.uniform(-6, 10),  # slight blue cast of stainless steel
        "tip_grey": rng.uniform(45, 80),
        "spec_pos": rng.uniform(-0.5, 0.5),
        "ridge_period": rng.uniform(0.012, 0.02),
    }


def _render_instrument(
    p: dict, yy: FloatArray, xx: FloatArray
) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """Rasterise one instrument: (shaft mask, tip mask, RGB colour field)."""
    d = p["dir"]
    w, ls, lt = p["width"], p["shaft_len"], p["tip_len"]
    # u: distance along the instrument axis from the entry point; v: across it.
    ry, rx = yy - p["entry"][0], xx - p["entry"][1]
    u = ry * d[0] + rx * d[1]
    v = -ry * d[1] + rx * d[0]

    shaft = (u <= ls) & (np.abs(v) <= w / 2)

    # Tip = short clevis plus two tapered jaws hinged at the shaft end; each
    # jaw is rotated by +-half the opening angle around the hinge.
    clevis = (u >= ls) & (u <= ls + 0.25 * lt) & (np.abs(v) <= 0.42 * w)
    jaws = np.zeros_like(shaft)
    ridge_u = np.zeros_like(u)
    for sign in (1.0, -1.0):
        beta = sign * p["jaw_open"] / 2
        cb, sb = np.cos(beta), np.sin(beta)
        uj = (u - ls) * cb + v * sb
        vj = -(u - ls) * sb + v * cb
        s = np.clip(uj / lt, 0.0, 1.0)
        centre = sign * 0.2 * w * (1.0 - s)  # jaws converge to a point when closed
        half = 0.2 * w * (1.0 - 0.75 * s) + 0.02 * w
        jaw = (uj >= 0) & (uj <= lt) & (np.abs(vj - centre) <= half)
        jaws |= jaw
        ridge_u = np.where(jaw, uj, ridge_u)
    tip = clevis | jaws
    shaft &= ~tip

    # Shading: a lit cylinder (Lambert term across the width) plus a narrow
    # specular stripe; the tip is darker, grooved metal.
    nv = np.clip(2 * v / w, -1, 1)
    lambert = np.sqrt(1.0 - nv * nv)
    spec = np.exp(-(((nv - p["spec_pos"]) / 0.18) ** 2))
    along = 1.0 - 0.25 * np.clip(u / max(ls, 1e-3), 0, 1)  # farther = dimmer
    shaft_lum = p["grey"] * (0.55 + 0.45 * lambert) * along + 70 * spec
    ridges = 1.0 + 0.18 * np.sin(2 * np.pi * ridge_u / p["ridge_period"])
    tip_lum = p["tip_grey"] * (0.6 + 0.4 * lambert) * ridges + 25 * spec
    lum = np.where(tip, tip_lum, shaft_lum)
    tint = p["tint"]
    colour = np.stack([lum - 0.5 * tint, lum, lum + tint], axis=-1)
    return shaft, tip, colour


def _instrument_pair(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = _grid(size)
    px = size / 96.0

    # ---- scene parameters
    tissue = np.array(
        [rng.uniform(170, 215), rng.uniform(60, 95), rng.uniform(60, 90)], np.float32
    )
    fold_col = np.array([120, 30, 38], np.float32) * rng.uniform(0.8, 1.15)
    n_tools = 1 if rng.random() < 0.5 else 2
    tools = [_instrument_params(rng) for _ in range(n_tools)]
    n_spec = int(rng.integers(3, 10))
    spec_c = rng.uniform(0.05, 0.95, (n_spec, 2)).astype(np.float32)
    spec_s = rng.uniform(0.006, 0.02, (n_spec, 2)).astype(np.float32)
    shadow_shift = rng.uniform(-0.03, 0.03, 2)
    vig_strength = rng.uniform(0.35, 0.6)
    vig_power = rng.uniform(1.0, 1.8)
    edge_blur_px = rng.uniform(0.4, 0.9) * px
    vessel_strength = rng.uniform(0.1, 0.3)
    reflect = rng.uniform(0.1, 0.35)  # polished metal mirrors the red tissue
    haze = rng.uniform(0.2, 0.55) if rng.random() < 0.3 else 0.0  # cautery smoke
    haze_col = np.array([215, 200, 195], np.float32) * rng.uniform(0.85, 1.05)
    noise_sigma = rng.uniform(2.0, 5.0)

    # ---- tissue: folds (low freq), mucosal texture, faint vessels, highlights
    folds = _smooth_noise(rng, size, 4)
    texture = _smooth_noise(rng, size, 18)
    vessel_field = _smooth_noise(rng, size, 9)
    img = np.broadcast_to(tissue, (size, size, 3)) * (1.0 + 0.12 * folds + 0.05 * texture)[..., None]
    img = _blend(img, fold_col, np.clip(0.35 * (folds - 0.3), 0, 0.6))
    vessels = np.exp(-((vessel_field / 0.06) ** 2)) * vessel_strength
    img = _blend(img, np.array([110, 20, 30], np.float32), vessels)
    # Specular glints on wet mucosa: small saturated ellipses.
    gy = (yy[..., None] - spec_c[:, 0]) / spec_s[:, 0]
    gx = (xx[..., None] - spec_c[:, 1]) / spec_s[:, 1]
    glint = np.clip(1.4 * np.exp(-(gx * gx + gy * gy)).sum(-1), 0, 1)
    img = _blend(img, np.array([255, 248, 240], np.float32), glint)

    # ---- instruments, later ones occluding earlier ones
    labels = np.zeros((size, size), np.uint8)
    rendered = [_render_instrument(p, yy, xx) for p in tools]
    # Soft shadow cast on the tissue, offset from the tools, for depth cues.
    occupancy = np.zeros((size, size), np.float32)
    for shaft, tip, _ in rendered:
        occupancy = np.maximum(occupancy, (shaft | tip).astype(np.float32))
    # mode="nearest" continues the tools past the border (they enter from
    # outside the view), where a roll would wrap shadow onto the far edge.
    shifted = ndimage.shift(occupancy, shadow_shift * size, order=0, mode="nearest")
    shadow = ndimage.gaussian_filter(shifted, 0.03 * size)
    img = img * (1.0 - 0.45 * shadow)[..., None]
    # Mean tissue colour, reflected by the metal: keeps the instruments from
    # being separable by a single grey-vs-red colour threshold.
    tissue_mean = img.reshape(-1, 3).mean(axis=0)
    for shaft, tip, colour in rendered:
        cover = (shaft | tip).astype(np.float32)
        colour = colour * (1.0 - reflect) + tissue_mean * reflect * (colour.mean(-1, keepdims=True) / 128.0)
        img = _blend(img, colour, ndimage.gaussian_filter(cover, edge_blur_px))
        labels[shaft] = 1
        labels[tip] = 2

    if haze:
        # Patchy smoke lowers contrast over tissue and instruments alike.
        smoke = np.clip(0.5 + 0.5 * _smooth_noise(rng, size, 3), 0.0, 1.0) * haze
        img = _blend(img, haze_col, smoke)

    img = img * _vignette(yy, xx, vig_strength, vig_power)[..., None]
    return _finish(rng, img, noise_sigma), labels


_GENERATORS: dict[str, Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]] = {
    "lesions": _lesion_pair,
    "instruments": _instrument_pair,
}
