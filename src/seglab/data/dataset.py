"""Torch datasets over the preprocessed cache (memory-mapped, never re-decoded)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .prepared import PreparedData

# A dataset key: an index, or (augmentation seed, index) as SeededShuffle yields them.
Key = int | tuple[int, int]


class SeededShuffle(Sampler):
    """A shuffled epoch whose every item carries its own augmentation seed.

    Each epoch draws one seed and a permutation from ``generator``; item ``i`` is yielded
    as ``(epoch_seed + i, i)``. The dataset re-seeds its augmentation with that seed before
    drawing, so what an image looks like depends on the seed, the epoch and the image only:
    not on which worker process loads it or in which order. Worker processes then draw
    different augmentations (a forked copy of one seeded pipeline would repeat the same
    draws in every worker), and a resumed run, whose ``generator`` state is restored,
    sees exactly the epochs an uninterrupted run would, with or without workers.
    """

    def __init__(self, length: int, generator: torch.Generator) -> None:
        self.length, self.generator = length, generator

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        epoch_seed = int(torch.randint(0, 2**31, (), generator=self.generator))
        order = torch.randperm(self.length, generator=self.generator).tolist()
        return iter([(epoch_seed + i, i) for i in order])


def split_key(key: Key, augment: Any) -> int:
    """The index of ``key``; re-seeds ``augment`` first when the key carries a seed."""
    if isinstance(key, tuple):
        seed, key = key
        if augment is not None:
            from .transforms import reseed

            reseed(augment, seed)
    return int(key)


def normalise(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32, standardised with the dataset fingerprint.

    ``np.array`` copies the read-only memory-mapped row so torch gets a writable buffer.
    """
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
    return (x - mean[:, None, None]) / std[:, None, None]


class SegmentationDataset(Dataset):
    """(image (3,H,W) float32, mask (H,W) int64) pairs; IGNORE pixels stay IGNORE."""

    def __init__(self, data: PreparedData, ids: Sequence[str], augment=None) -> None:
        self.data = data
        self.ids = list(ids)
        self.rows = data.indices(self.ids)
        self.augment = augment
        self.mean = torch.tensor(data.fingerprint["mean"], dtype=torch.float32)
        self.std = torch.tensor(data.fingerprint["std"], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[split_key(key, self.augment)]
        image, mask = self.data.images[row], self.data.masks[row]
        if self.augment is not None:
            out = self.augment(image=np.asarray(image), mask=np.asarray(mask))
            image, mask = out["image"], out["mask"]
        return normalise(image, self.mean, self.std), torch.from_numpy(np.array(mask)).long()


class ColorizationDataset(Dataset):
    """(grey image as 3 identical standardised channels, RGB target in [0, 1]).

    The grey input keeps three channels so the pretrained network has exactly the
    architecture that is fine-tuned on colour images.
    """

    GREY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])

    def __init__(self, data: PreparedData, ids: Sequence[str], augment=None) -> None:
        self.data = data
        self.rows = data.indices(ids)
        self.augment = augment
        mean = torch.tensor(data.fingerprint["mean"], dtype=torch.float32)
        std = torch.tensor(data.fingerprint["std"], dtype=torch.float32)
        self.grey_mean = float((mean * self.GREY_WEIGHTS).sum())
        self.grey_std = float((std * self.GREY_WEIGHTS).sum())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        image = np.asarray(self.data.images[self.rows[split_key(key, self.augment)]])
        if self.augment is not None:
            image = self.augment(image=image)["image"]
        rgb = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        grey = (rgb * self.GREY_WEIGHTS[:, None, None]).sum(0, keepdim=True)
        grey = (grey - self.grey_mean) / self.grey_std
        return grey.expand(3, -1, -1).contiguous(), rgb

