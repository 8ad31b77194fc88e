"""Classification report figures: the confusion matrix and class-activation-map overlays.

Each function draws one matplotlib figure (Agg, no display) and writes it as one PNG.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..cam import overlay
from .figures import confusion, plt, to_png

__all__ = ["CamSample", "cam_grid_figure", "confusion_matrix_figure"]

_CORRECT, _WRONG = "tab:green", "tab:red"
_GRID_COLUMNS = 4  # overlays per row


@dataclass(frozen=True)
class CamSample:
    image: np.ndarray  # uint8, HxWx3 or HxW
    cam: np.ndarray  # HxW float in [0, 1]
    true: str
    predicted: str
    probability: float  # the model's probability of the predicted class

    @property
    def correct(self) -> bool:
        return self.true == self.predicted


def confusion_matrix_figure(
    matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: Path, title: str
) -> Path:
    """Heat map of the image counts (rows: true class, columns: predicted), each cell
    labelled with its count and its share of the true class; written to ``path``."""
    counts = np.asarray(matrix, dtype=np.int64)
    names = list(class_names)
    if counts.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix of shape {counts.shape} does not match {len(names)} class names")
    return _write(confusion(counts, names, title, with_counts=True), path)


def cam_grid_figure(samples: Sequence[CamSample], path: Path, title: str) -> Path:
    """Each sample's CAM overlaid on its image, titled with the true and predicted class and
    the predicted probability, marked correct (green) or misclassified (red)."""
    if not samples:
        raise ValueError("cam_grid_figure needs at least one sample")
    columns = min(_GRID_COLUMNS, len(samples))
    rows = math.ceil(len(samples) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.3 * columns, 2.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples):
        ax.imshow(overlay(sample.image, sample.cam))
        verdict, colour = ("correct", _CORRECT) if sample.correct else ("MISCLASSIFIED", _WRONG)
        ax.set_title(
            f"{verdict}\ntrue {sample.true} / pred {sample.predicted}\np = {sample.probability:.2f}",
            fontsize=7, color=colour,
        )
        for spine in ax.spines.values():  # a coloured frame, visible even in a thumbnail
            spine.set_visible(True)
            spine.set_color(colour)
            spine.set_linewidth(2)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return _write(to_png(fig), path)


def _write(png: bytes, path: Path) -> Path:
    # Write-then-rename so a reader never sees half a PNG.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(png)
    os.replace(tmp, path)
    return path
