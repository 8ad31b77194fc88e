"""The preprocess stage's output opened read-only: memory-mapped arrays, manifest, fingerprint.

No torch here: the stages that only read the prepared data (report, records) open it without
paying torch's import; the torch datasets over it live in :mod:`seglab.data.dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .. import layout


class BlobRows:
    """Rows of a native-size cache: ``rows[i]`` is image i's (H, W[, C]) array, a read-only
    view into one memory-mapped blob (nothing is read until it is used).

    Grey images are stored with one channel and read back as three equal ones (a copy),
    since every model takes three input channels.
    """

    def __init__(self, blob: Path, index: pd.DataFrame, kind: str) -> None:
        self.data = np.memmap(blob, dtype=np.uint8, mode="r") if blob.stat().st_size else np.zeros(0, np.uint8)
        self.index = index
        self.kind = kind

    def __len__(self) -> int:
        return len(self.index)

    def shape(self, row: int) -> tuple[int, ...]:
        r = self.index.iloc[int(row)]
        return (int(r.height), int(r.width), int(r.channels)) if self.kind == "image" else (int(r.height), int(r.width))

    def __getitem__(self, row: int) -> np.ndarray:
        shape = self.shape(row)
        start = int(self.index.iloc[int(row)][f"{self.kind}_offset"])
        array = self.data[start:start + int(np.prod(shape))].reshape(shape)
        if self.kind == "image" and shape[2] == 1:
            return np.repeat(array, 3, axis=2)
        return array

    def stored_channels(self, row: int) -> int:
        return int(self.index.iloc[int(row)].channels)


class PreparedData:
    """The output of the preprocess stage, opened read-only.

    ``images[row]`` (H, W, 3) uint8 and ``masks[row]`` (H, W) uint8 read the same way from
    either cache: the square arrays of resize/pad or the native-size blobs.
    """

    def __init__(self, folder: Path) -> None:
        import json

        self.folder = Path(folder)
        if (self.folder / layout.BLOB_INDEX).is_file():
            index = pd.read_csv(self.folder / layout.BLOB_INDEX)
            self.images: Any = BlobRows(self.folder / layout.IMAGE_BLOB, index, "image")
            self.masks: Any = BlobRows(self.folder / layout.MASK_BLOB, index, "mask")
        else:
            self.images = np.load(self.folder / layout.IMAGES, mmap_mode="r")
            self.masks = np.load(self.folder / layout.MASKS, mmap_mode="r")
        self.manifest = pd.read_csv(self.folder / layout.MANIFEST, dtype={"id": str, "group": str})
        self.fingerprint: dict[str, Any] = json.loads((self.folder / layout.FINGERPRINT).read_text())
        self._row = {id_: i for i, id_ in enumerate(self.manifest["id"])}
        # Masks at their original size: the prepared ones when preprocessing kept the size.
        self.original_masks: Any = self.masks
        if (self.folder / layout.ORIGINAL_MASKS).is_file():
            index = pd.DataFrame({"height": self.manifest["orig_height"], "width": self.manifest["orig_width"],
                                  "channels": 1, "mask_offset": self.manifest["original_offset"]})
            self.original_masks = BlobRows(self.folder / layout.ORIGINAL_MASKS, index, "mask")

    @property
    def native(self) -> bool:
        """Images keep their own sizes (they cannot be stacked into one batch)."""
        return self.fingerprint["policy"] == "native"

    @property
    def num_classes(self) -> int:
        return int(self.fingerprint["num_classes"])

    @property
    def ignore_index(self) -> int | None:
        return self.fingerprint["ignore_index"]

    @property
    def foreground_classes(self) -> list[int]:
        """Every class but the background (0): what the headline scores average over."""
        return list(range(1, self.num_classes))

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self._row[i] for i in ids], dtype=np.int64)
