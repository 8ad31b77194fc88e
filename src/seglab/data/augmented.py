"""Training sets made larger by augmentation, and a preview of what augmentation does.

* online multiplier: :class:`Repeated` shows each image ``k`` times per epoch, each with a
  fresh random augmentation;
* offline multiplier: :func:`offline_copies` draws ``k - 1`` augmented copies of every
  image once (seeded), kept in memory and trained on with the originals, unchanged across
  epochs (the "augmented dataset" of the lab reports);
* :func:`augmentation_grid`: a PNG of augmented training samples with their masks.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import Key, normalise, split_key
from .prepared import PreparedData
from .io import IGNORE


class Repeated(Dataset):
    """``dataset`` seen ``times`` times: item ``i`` is ``dataset[i % len(dataset)]``."""

    def __init__(self, dataset: Dataset, times: int) -> None:
        self.dataset, self.times = dataset, times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key: Key):
        # The seed stays with the key: each repeat of an image gets its own augmentation.
        if isinstance(key, tuple):
            return self.dataset[(key[0], key[1] % len(self.dataset))]
        return self.dataset[key % len(self.dataset)]


class ArrayDataset(Dataset):
    """In-memory (N,H,W,3) uint8 images and (N,H,W) uint8 masks, normalised like
    :class:`~seglab.data.dataset.SegmentationDataset`."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, data: PreparedData) -> None:
        self.images, self.masks = images, masks
        self.mean = torch.tensor(data.fingerprint["mean"], dtype=torch.float32)
        self.std = torch.tensor(data.fingerprint["std"], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        i = split_key(key, None)  # the copies were augmented once, when they were made
        return normalise(self.images[i], self.mean, self.std), torch.from_numpy(np.ascontiguousarray(self.masks[i])).long()


def offline_copies(data: PreparedData, ids: Sequence[str], augment, multiplier: int) -> tuple[np.ndarray, np.ndarray]:
    """The originals of ``ids`` followed by ``multiplier - 1`` augmented copies of each.

    ``augment`` is a seeded albumentations Compose, so the copies are the same on every run.
    """
    rows = data.indices(ids)
    images = [np.asarray(data.images[r]) for r in rows]
    masks = [np.asarray(data.masks[r]) for r in rows]
    out_i, out_m = list(images), list(masks)
    for _ in range(multiplier - 1):
        for image, mask in zip(images, masks):
            drawn = augment(image=image, mask=mask)
            out_i.append(drawn["image"])
            out_m.append(drawn["mask"])
    return np.stack(out_i), np.stack(out_m)


def augmentation_grid(dataset: Dataset, n: int, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> bytes:
    """PNG of ``n`` training samples as the network sees them: image above, mask below
    (ignored pixels, e.g. borders invented by a rotation, in white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import to_png

    n = min(n, len(dataset))
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.2), squeeze=False)
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    for c in range(n):
        image, mask = dataset[c]
        rgb = (image * s + m).clamp(0, 1).permute(1, 2, 0).numpy()
        shown = np.where(mask.numpy() == IGNORE, np.nan, mask.numpy().astype(float))
        axes[0, c].imshow(rgb)
        axes[1, c].imshow(shown, cmap="viridis", vmin=0, vmax=max(num_classes - 1, 1), interpolation="nearest")
        for r in range(2):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_ylabel("image", fontsize=8)
    axes[1, 0].set_ylabel("mask", fontsize=8)
    fig.suptitle("augmented training samples", fontsize=9)
    return to_png(fig)
