"""Report figures as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any, Sequence

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


def _runs(frame: pd.DataFrame) -> list[tuple[tuple[int | None, int], pd.DataFrame]]:
    """The curves of each training run, in (repeat, fold) order; repeat None for curves without one."""
    if "repeat" in frame:
        return [((int(r), int(f)), run) for (r, f), run in frame.groupby(["repeat", "fold"], sort=True)]
    return [((None, int(f)), run) for f, run in frame.groupby("fold", sort=True)]


def learning_curves(curves: pd.DataFrame, variant: str) -> bytes:
    """Per training run (repeat and fold) of one variant: train and validation loss (left) and
    the score per epoch (right; Dice for segmentation), training solid and validation dashed in both
    (the training score comes from the training batches as they were trained on; histories older
    than it have none)."""
    score = next((c for c in ("val_dice", "val_accuracy") if c in curves), None)
    train_score = score.replace("val_", "train_", 1) if score else None
    fig, axes = plt.subplots(1, 2 if score else 1, figsize=(9.6 if score else 5.2, 3.4), squeeze=False)
    loss_ax = axes[0, 0]
    for (repeat, fold), frame in _runs(curves[curves["variant"] == variant]):
        name = f"fold {fold}" if repeat is None else f"r{repeat} fold {fold}"
        line = loss_ax.plot(frame["epoch"], frame["train_loss"], marker="o", ms=3, label=f"{name} train")[0]
        loss_ax.plot(frame["epoch"], frame["val_loss"], "--", marker="x", ms=3, color=line.get_color(), label=f"{name} val")
        if score:
            # As the loss panel: training solid, validation dashed.
            if train_score in frame and frame[train_score].notna().any():
                axes[0, 1].plot(frame["epoch"], frame[train_score], marker="o", ms=3, color=line.get_color(),
                                label=f"{name} train")
            axes[0, 1].plot(frame["epoch"], frame[score], "--", marker="x", ms=3, color=line.get_color(), label=f"{name} val")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(variant)
    loss_ax.legend(fontsize=7, ncol=2)
    loss_ax.grid(alpha=0.3)
    if score:
        axes[0, 1].set_xlabel("epoch")
        axes[0, 1].set_ylabel(score.removeprefix("val_").replace("_", " "))
        axes[0, 1].set_title(f"{variant}: train and validation {score.removeprefix('val_')}")
        axes[0, 1].legend(fontsize=7, ncol=2)
        axes[0, 1].grid(alpha=0.3)
    return to_png(fig)


def metric_bars(table: pd.DataFrame, metric: str = "dice") -> bytes:
    """Test score of each variant's ensemble, with the CV mean ± sd beside it."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(table)), 3.4))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table[f"cv_{metric}_mean"], 0.4, yerr=table[f"cv_{metric}_sd"], capsize=4, label="CV (mean ± sd)")
    run_sd = table.get(f"test_{metric}_repeat_sd")
    yerr = pd.to_numeric(run_sd, errors="coerce").fillna(0).to_numpy() if run_sd is not None else None
    ax.bar(x + 0.2, table[f"test_{metric}"], 0.4, yerr=yerr, capsize=4, label="test (fold ensemble, mean ± run-to-run sd)")
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


def metric_bars_ci(table: pd.DataFrame, metrics: tuple[str, ...] = ("dice", "iou")) -> bytes:
    """CV mean of each metric per variant with its t-based 95% CI as error bars, and the test ensemble score."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 1.3 * len(table)) * len(metrics) * 0.75, 3.4), squeeze=False)
    x = np.arange(len(table))
    for ax, metric in zip(axes[0], metrics):
        mean = table[f"cv_{metric}_mean"].astype(float).to_numpy()
        low = table[f"cv_{metric}_ci95_low"].astype(float).to_numpy()
        high = table[f"cv_{metric}_ci95_high"].astype(float).to_numpy()
        err = np.nan_to_num(np.vstack([mean - low, high - mean]))
        ax.bar(x - 0.2, mean, 0.4, yerr=err, capsize=4, label="CV mean (95% CI)")
        ax.bar(x + 0.2, table[f"test_{metric}"].astype(float), 0.4, label="test (fold ensemble)")
        ax.set_xticks(x, table.index, rotation=20, ha="right")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower left")
    return to_png(fig)


def best_epoch_losses(curves: pd.DataFrame, best_epochs: dict[str, list[int]]) -> pd.DataFrame:
    """Train and validation loss of each variant at its folds' kept (best) epochs, averaged over folds."""
    rows = {}
    for variant, epochs in best_epochs.items():
        frame = curves[curves["variant"] == variant]
        # best_epochs lists the runs in (repeat, fold) order, as the curves are sorted.
        runs = [run for _, run in _runs(frame)]
        picked = [run[run["epoch"] == epoch] for run, epoch in zip(runs, epochs or [])]
        picked = pd.concat([p for p in picked if len(p)]) if any(len(p) for p in picked) else frame.iloc[0:0]
        rows[variant] = {"train_loss": float(picked["train_loss"].mean()) if len(picked) else np.nan,
                         "val_loss": float(picked["val_loss"].mean()) if len(picked) else np.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def metric_and_loss_bars(table: pd.DataFrame, losses: pd.DataFrame) -> bytes:
    """Side by side, as the ISIC MobileNetV2 report drew them: test IoU and Dice of each
    variant (left), and its train and validation loss at the kept epochs (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(4.0, 1.1 * len(table)) * 1.6, 3.4))
    x = np.arange(len(table))
    for ax, pairs, ylabel in ((left, (("test_iou", "IoU"), ("test_dice", "Dice")), "test score (fold ensemble)"),
                              (right, (("train_loss", "train loss"), ("val_loss", "validation loss")), "loss at the kept epoch")):
        source = table if ax is left else losses.reindex(table.index)
        for i, (column, label) in enumerate(pairs):
            values = source[column].astype(float).to_numpy()
            bars = ax.bar(x + (i - 0.5) * 0.4, values, 0.4, label=label)
            ax.bar_label(bars, fmt="%.3f", fontsize=6, padding=1)
        ax.set_xticks(x, table.index, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    left.set_ylim(0, 1.08)
    fig.subplots_adjust(wspace=0.35)
    left.set_title("metrics", fontsize=9)
    right.set_title("losses (mean over folds)", fontsize=9)
    return to_png(fig)


def radar(table: pd.DataFrame, columns: list[tuple[str, str]]) -> bytes:
    """Each variant as a polygon over the test metrics (all in [0, 1], higher is better)."""
    labels = [label for _, label in columns]
    angles = np.linspace(0, 2 * np.pi, len(columns), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(4.6, 4.6), subplot_kw={"polar": True})
    for name, row in table.iterrows():
        values = [float(row[key]) for key, _ in columns]
        ax.plot(angles + angles[:1], values + values[:1], label=str(name))
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.08)
    ax.set_xticks(angles, labels, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.35, 1.1))
    return to_png(fig)


def confusion(matrix: np.ndarray, classes: Sequence[str], title: str, with_counts: bool = False) -> bytes:
    """Confusion matrix (rows: truth, columns: prediction), coloured by each row's share so that a
    rare class's errors show as clearly as a common one's. Cells show the share, and with
    ``with_counts`` (images) the count above it; pixel counts are too large to read."""
    m = np.asarray(matrix, dtype=float)
    share = m / np.clip(m.sum(axis=1, keepdims=True), 1, None)
    names = list(classes)
    size = (1.6 + 0.7 * len(names)) if with_counts else (1.0 + 0.45 * len(names))
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    shown = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8 if with_counts else 7)
    ax.set_yticks(range(len(names)), names, fontsize=8 if with_counts else 7)
    for i in range(len(names)):
        for j in range(len(names)):
            text = f"{int(m[i, j])}\n{share[i, j]:.0%}" if with_counts else f"{share[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7 if with_counts else 6,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(shown, ax=ax, fraction=0.046, label="share of the true class")
    return to_png(fig)


def sweep_heatmap(points: dict[str, dict[str, Any]], scores: dict[str, float], label: str) -> bytes:
    """Score over a one- or two-key sweep grid: rows the first key's values, columns the second's."""
    keys = list(next(iter(points.values())))
    rows = list(dict.fromkeys(p[keys[0]] for p in points.values()))
    cols = list(dict.fromkeys(p[keys[1]] for p in points.values())) if len(keys) > 1 else [None]
    grid = np.full((len(rows), len(cols)), np.nan)
    for name, point in points.items():
        col = cols.index(point[keys[1]]) if len(keys) > 1 else 0
        value = scores.get(name)
        grid[rows.index(point[keys[0]]), col] = np.nan if value is None else value
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.4 + 0.6 * len(rows)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white" if value < np.nanmean(grid) else "black")
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_ylabel(keys[0])
    if len(keys) > 1:
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_xlabel(keys[1])
    else:
        ax.set_xticks([])
    fig.colorbar(image, ax=ax, label=label)
    return to_png(fig)
