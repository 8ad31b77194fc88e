"""Random training patches of the prepared images (``train.patch_size``).

Every item is a fresh square crop of one training image, so an epoch sees each image
once (``augmentation.multiplier`` times with an online multiplier) at a new place.
A share ``foreground_fraction`` of the crops is centred on a foreground pixel, as
nnU-Net oversamples a third of its patches: thin or small structures (vessels, poles,
signs) would otherwise be missed by most uniform crops. The class a centred crop aims at
is drawn uniformly among the foreground classes present in the image, so a rare class is
aimed at as often as a common one (class-aware sampling for multi-class data).
Augmentation runs on the crop, which is much cheaper than on a large image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import Key, normalise
from .prepared import PreparedData
from .io import IGNORE


def patch_origin(mask: np.ndarray, patch: int, rng: np.random.Generator, centre_on: int | None) -> tuple[int, int]:
    """(top, left) of a ``patch`` crop of a mask at least ``patch`` on each side: uniform,
    or centred on a random pixel of class ``centre_on`` (clamped to stay inside)."""
    h, w = mask.shape
    if centre_on is not None:
        ys, xs = np.nonzero(mask == centre_on)
        if len(ys):
            i = int(rng.integers(len(ys)))
            top = min(max(int(ys[i]) - patch // 2, 0), h - patch)
            left = min(max(int(xs[i]) - patch // 2, 0), w - patch)
            return top, left
    return int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))


def pad_to(image: np.ndarray, mask: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """A side shorter than the patch is padded (image 0, mask IGNORE) at its bottom/right."""
    h, w = mask.shape
    if h >= patch and w >= patch:
        return image, mask
    ph, pw = max(patch - h, 0), max(patch - w, 0)
    return (np.pad(image, ((0, ph), (0, pw), (0, 0))),
            np.pad(mask, ((0, ph), (0, pw)), constant_values=IGNORE))


class PatchDataset(Dataset):
    """(patch image (3, p, p) float32, patch mask (p, p) int64), one random crop per item.

    A key carrying a seed (from :class:`~seglab.data.dataset.SeededShuffle`) fixes the crop
    and the augmentation, so resumed and worker-parallel runs draw the same patches.
    """

    def __init__(self, data: PreparedData, ids: Sequence[str], patch: int, foreground_fraction: float, augment=None) -> None:
        self.data = data
        self.rows = data.indices(list(ids))
        self.patch = patch
        self.foreground_fraction = foreground_fraction
        self.augment = augment
        self.mean = torch.tensor(data.fingerprint["mean"], dtype=torch.float32)
        self.std = torch.tensor(data.fingerprint["std"], dtype=torch.float32)
        # Foreground classes present in each image, from the manifest's pixel counts.
        counts = data.manifest[[f"pixels_{k}" for k in range(data.num_classes)]].to_numpy()
        self.present = [[k for k in data.foreground_classes if counts[r, k] > 0] for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        seed, index = key if isinstance(key, tuple) else (int(key), int(key))
        rng = np.random.default_rng([seed, 0x5EC])
        if self.augment is not None:
            from .transforms import reseed

            reseed(self.augment, seed)
        row = self.rows[index]
        image, mask = pad_to(np.asarray(self.data.images[row]), np.asarray(self.data.masks[row]), self.patch)
        centre_on = None
        if self.present[index] and rng.random() < self.foreground_fraction:
            centre_on = self.present[index][int(rng.integers(len(self.present[index])))]
        top, left = patch_origin(mask, self.patch, rng, centre_on)
        image = np.ascontiguousarray(image[top:top + self.patch, left:left + self.patch])
        mask = np.ascontiguousarray(mask[top:top + self.patch, left:left + self.patch])
        if self.augment is not None:
            out = self.augment(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return normalise(image, self.mean, self.std), torch.from_numpy(np.array(mask)).long()
