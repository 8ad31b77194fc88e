"""Report figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# Overlay colours: true positive, false positive, false negative.
TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 200, 0), (230, 30, 30), (30, 90, 255)


def to_png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def learning_curves(curves: pd.DataFrame, variant: str) -> bytes:
    """Train and validation loss of every fold of one variant in one figure."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for fold, frame in curves[curves["variant"] == variant].groupby("fold"):
        line = ax.plot(frame["epoch"], frame["train_loss"], label=f"fold {fold} train")[0]
        ax.plot(frame["epoch"], frame["val_loss"], "--", color=line.get_color(), label=f"fold {fold} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(variant)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return to_png(fig)


def metric_bars(table: pd.DataFrame, metric: str = "dice") -> bytes:
    """Test score of each variant's ensemble, with the CV mean ± sd beside it."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table)), 3.4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table[f"cv_{metric}_mean"], 0.4, yerr=table[f"cv_{metric}_sd"], capsize=4, label="CV (mean ± sd)")
    ax.bar(x + 0.2, table[f"test_{metric}"], 0.4, label="test (fold ensemble)")
    ax.set_xticks(x, table.index, rotation=20, ha="right")
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return to_png(fig)


def overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, foreground: list[int]) -> np.ndarray:
    """Image with true positives green, false positives red, false negatives blue."""
    out = image.astype(np.float32).copy()
    fg_t, fg_p = np.isin(truth, foreground), np.isin(pred, foreground)
    for mask, colour in ((fg_t & fg_p & (truth == pred), TP_COLOUR), (fg_p & ~(fg_t & (truth == pred)), FP_COLOUR),
                         (fg_t & (truth != pred), FN_COLOUR)):
        out[mask] = 0.45 * out[mask] + 0.55 * np.array(colour)
    return out.clip(0, 255).astype(np.uint8)


def sample_grid(rows: list[dict[str, Any]], num_classes: int) -> bytes:
    """Rows of (image, truth, prediction, overlay) with a caption each (best/median/worst)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(8, 2.1 * len(rows)), squeeze=False)
    vmax = max(num_classes - 1, 1)
    for r, row in enumerate(rows):
        panels = [row["image"], row["truth"], row["pred"], row["overlay"]]
        titles = ["image", "truth", "prediction", "TP green / FP red / FN blue"]
        for c, (panel, title) in enumerate(zip(panels, titles)):
            ax = axes[r, c]
            if panel.ndim == 2:
                ax.imshow(np.where(panel == 255, np.nan, panel), cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            else:
                ax.imshow(panel)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r, 0].set_ylabel(row["caption"], fontsize=8)
    return to_png(fig)


def colorization_grid(samples: dict[str, np.ndarray]) -> bytes:
    """Grey input, recoloured output and true colour for a few validation images."""
    n = len(samples["grey"])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for r, key in enumerate(("grey", "predicted", "true")):
        for c in range(n):
            axes[r, c].imshow(samples[key][c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(key, fontsize=8)
    return to_png(fig)


def pretrain_curve(history: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    ax.plot(history["epoch"], history["train_loss"], label="train MSE")
    ax.plot(history["epoch"], history["val_loss"], "--", label="validation MSE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE")
    ax.set_title("colorization pretraining")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return to_png(fig)
