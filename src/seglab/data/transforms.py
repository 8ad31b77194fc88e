"""Augmentation policies: albumentations pipelines applied to image and mask together.

A variant's policy is its ``preset`` (``none``, ``flip``, ``light``, ``heavy``) followed by
the transforms of its ``policy`` list, each ``{name: <albumentations class>, params: {...}}``
or a group ``{one_of: [<transforms>], p: ...}`` of which one is applied.
"""

from __future__ import annotations

import inspect
import random
from typing import Any

import albumentations as A
import numpy as np

from .io import IGNORE

PRESETS = ("none", "flip", "light", "heavy")


def _preset(preset: str) -> list[A.BasicTransform]:
    flips = [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
    if preset == "none":
        return []
    if preset == "flip":
        return flips
    if preset == "light":
        return flips + [
            A.Affine(rotate=(-10, 10), translate_percent=(-0.1, 0.1), scale=(0.8, 1.2), fill=0, fill_mask=IGNORE, p=0.7),
            A.RandomBrightnessContrast(0.1, 0.1, p=0.5),
        ]
    if preset == "heavy":
        return flips + [
            A.RandomRotate90(p=0.5),
            A.Affine(rotate=(-30, 30), translate_percent=(-0.1, 0.1), scale=(0.7, 1.3), fill=0, fill_mask=IGNORE, p=0.8),
            A.ElasticTransform(alpha=20, sigma=5, fill=0, fill_mask=IGNORE, p=0.2),
            A.GaussianBlur(blur_limit=(3, 5), p=0.2),
            A.ColorJitter(0.2, 0.2, 0.2, 0.05, p=0.5),
        ]
    raise ValueError(f"augmentation.preset: unknown preset {preset!r}; known: {', '.join(PRESETS)}")


def _transform_classes() -> dict[str, type]:
    """Every albumentations transform that acts on one image (and its mask)."""
    return {
        name: obj for name, obj in vars(A).items()
        if inspect.isclass(obj) and issubclass(obj, (A.DualTransform, A.ImageOnlyTransform))
        and obj not in (A.DualTransform, A.ImageOnlyTransform)
    }


def parse_policy(items: list[dict[str, Any]], key: str = "augmentation.policy") -> list[A.BasicTransform]:
    """``[{name, params} | {one_of: [...], p}]`` -> albumentations transforms; ValueError naming the item.

    ``{one_of: [t1, t2, ...], p}`` applies one of its transforms (picked uniformly, or by their
    own ``p`` as weights) with probability ``p`` (albumentations' ``OneOf``).

    Transforms that invent pixels (rotation, shift, elastic ...) take ``fill_mask`` = the
    ignore label unless the item sets it, so invented borders are never scored as background.
    """
    classes = _transform_classes()
    transforms = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        if "one_of" in item:
            members = item["one_of"]
            if not members or any("one_of" in m for m in members):
                raise ValueError(f"{where}.one_of: list one or more transforms ({{name, params}}), not nested one_of groups.")
            transforms.append(A.OneOf(parse_policy(members, f"{where}.one_of"), p=item.get("p", 1.0)))
            continue
        transforms.append(_transform(classes, item, where))
    return transforms


def _transform(classes: dict[str, type], item: dict[str, Any], key: str) -> A.BasicTransform:
    name, params = item.get("name"), dict(item.get("params") or {})
    cls = classes.get(name)
    if cls is None:
        close = [n for n in classes if isinstance(name, str) and name.lower()[:4] in n.lower()][:6]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"{key}.name: {name!r} is not an albumentations image/mask transform.{hint}")
    accepted = [n for n, p in inspect.signature(cls).parameters.items() if p.kind != p.VAR_KEYWORD]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{key}.params: {name} has no parameter {unknown[0]!r}; it accepts: {', '.join(accepted)}.")
    if "fill_mask" in accepted and "fill_mask" not in params:
        params["fill_mask"] = IGNORE
    # YAML has no tuples: albumentations wants (low, high) ranges.
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    try:
        return cls(**params)
    except Exception as exc:  # albumentations raises TypeError or pydantic's ValidationError
        first = str(exc).strip().splitlines()
        raise ValueError(f"{key}.params: {name} refuses {params}: {' '.join(first[:3])}") from None


def build_augmentation(cfg: dict, seed: int) -> A.Compose | None:
    """The training-time policy: the preset then the ``policy`` list (None: no augmentation).

    ``seed`` makes the random draws repeatable.
    """
    steps = _preset(cfg["preset"]) + parse_policy(cfg.get("policy") or [])
    if not steps:
        return None
    return reseed(A.Compose(steps), seed)


def reseed(augment: A.Compose, seed: int) -> A.Compose:
    """Give the whole pipeline one random stream started at ``seed``.

    Not ``Compose(seed=...)`` / ``set_random_seed``: those give every transform its own
    generator with the same seed, so HorizontalFlip and VerticalFlip draw the same numbers
    and only ever flip together (identity or 180 degrees, never one flip alone). One shared
    stream makes the transforms independent, and it is also 3-7x cheaper to set per image.
    """
    augment.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return augment
