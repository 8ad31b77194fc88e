"""Colour facts the colorization pretraining needs: is the dataset grey, and sRGB <-> CIELAB.

The Lab conversion follows the sRGB (D65) definition: linearise, to XYZ, to L*a*b*.
Shapes: (..., 3, H, W) float in [0, 1] <-> (..., 3, H, W) with L in [0, 100], a, b in about [-128, 127].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]])
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])
_DELTA = 6 / 29


def is_grayscale(images: np.ndarray, chunk: int = 256) -> bool:
    """True when every (N,H,W,3) image has three equal channels (a grey dataset stored as RGB).

    Reads chunk by chunk and stops at the first colour chunk, so a colour dataset costs one read.
    """
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start:start + chunk])
        if not (np.array_equal(block[..., 0], block[..., 1]) and np.array_equal(block[..., 1], block[..., 2])):
            return False
    return True


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIELAB (D65), channel dim -3."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,...jhw->...ihw", _RGB_TO_XYZ.to(rgb), linear) / _WHITE.to(rgb)[:, None, None]
    f = torch.where(xyz > _DELTA**3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * _DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(-3)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB (D65) -> sRGB clipped to [0, 1], channel dim -3."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=-3)
    xyz = torch.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4 / 29)) * _WHITE.to(lab)[:, None, None]
    linear = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab), xyz).clamp(0, 1)
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=1e-12) ** (1 / 2.4) - 0.055, 12.92 * linear).clamp(0, 1)


def ab_to_unit(lab: torch.Tensor) -> torch.Tensor:
    """(…,3,H,W) Lab -> (…,2,H,W) a, b scaled to [0, 1] (the sigmoid range of the head)."""
    return ((lab[..., 1:, :, :] + 128) / 255).clamp(0, 1)


def unit_to_ab(ab01: torch.Tensor) -> torch.Tensor:
    return ab01 * 255 - 128


def colorization_refusal(images_npy: Path, variants: list[str] | None = None) -> str | None:
    """The message refusing colorization on grey prepared images, or None when it can run.

    ``variants`` names the variants that need the pretraining (None: not known here).
    """
    if variants == [] or not is_grayscale(np.load(images_npy, mmap_mode="r")):
        return None
    who = f"variant(s) {', '.join(variants)}" if variants else "every variant with init: colorization"
    return (
        f"{images_npy}: every image is grayscale (three equal channels), so colorization pretraining has no "
        f"colour to learn and is skipped; {who} cannot run: set init to scratch (or file / imagenet) in the config."
    )
