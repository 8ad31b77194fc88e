"""DataLoaders for training and evaluation: seeded, resumable, and fast on a GPU.

Every stage that iterates a dataset builds its loader here, so the batch order and the
augmentation draws depend on the seed alone (not on the number of worker processes),
and a resumed job can restore them exactly.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .dataset import SeededShuffle


def loader_workers(setting: int | str, device: torch.device) -> int:
    """``train.num_workers``: a number, or ``auto``: none on the CPU, where the model is the
    bottleneck and workers would take cores from it (benchmarks/RESULTS.md), and on CUDA
    one per core the job was given beyond its own (at least 2, at most 8) so that batches
    are decoded and augmented while the GPU computes."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return min(8, max(2, torch.get_num_threads() - 1))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, workers: int, device: torch.device) -> DataLoader:
    # Fixed generators make the batch order and the augmentation draws part of the seed,
    # hence reproducible, and their states are what a resumed job restores. The sampler has
    # its own, because a DataLoader draws a seed from its generator whenever an epoch starts
    # its workers (every epoch without workers, once with persistent ones): sharing one
    # would make the batches depend on num_workers, and a loader without a generator would
    # draw from torch's global one and shift the dropout masks.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededShuffle(len(dataset), torch.Generator().manual_seed(seed)) if shuffle else None,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=shuffle and len(dataset) > batch_size,
    )


def loader_generators(loader: DataLoader) -> list[torch.Generator | None]:
    """The random generators that fix a loader's epochs: its sampler's and its own."""
    return [getattr(loader.sampler, "generator", None), loader.generator]
