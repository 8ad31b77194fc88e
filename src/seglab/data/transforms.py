"""Augmentation policies: albumentations pipelines applied to image and mask together."""

from __future__ import annotations

import albumentations as A

from .io import IGNORE

PRESETS = ("none", "flip", "light", "heavy")


def build_augmentation(cfg: dict, seed: int) -> A.Compose | None:
    """The training-time policy named by ``augmentation.preset`` (None: no augmentation).

    Geometric transforms fill new mask pixels with IGNORE so that invented borders are
    never scored as background. ``seed`` makes the random draws repeatable.
    """
    preset = cfg["preset"]
    if preset == "none":
        return None
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if preset == "flip":
        steps = flips
    elif preset == "light":
        steps = flips + [
            A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), fill=0, fill_mask=IGNORE, p=0.7),
            A.RandomBrightnessContrast(0.1, 0.1, p=0.5),
        ]
    elif preset == "heavy":
        steps = flips + [
            A.RandomRotate90(p=0.5),
            A.Affine(rotate=(-30, 30), translate_percent=(-0.1, 0.1), scale=(0.7, 1.3), fill=0, fill_mask=IGNORE, p=0.8),
            A.ElasticTransform(alpha=20, sigma=5, fill=0, fill_mask=IGNORE, p=0.2),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.ColorJitter(0.2, 0.2, 0.2, 0.05, p=0.5),
        ]
    else:
        raise ValueError(f"augmentation.preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return A.Compose(steps, seed=seed)
