"""Evaluate a variant on the held-out test set: every fold model and the fold ensemble.

Writes ``per_image.csv`` (one row per model and test image), ``metrics.json`` (test
summary per model, CV summary over folds) and the sample-overlay figure.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .data.dataset import PreparedData, SegmentationDataset
from .engine import Precision
from .metrics import METRIC_NAMES, confusion_counts, hd95, scores_from_counts, summarize
from .models import output_channels
from .predict import labels_from_probabilities, load_models, predict_ensemble
from .runtime import select_device
from .train import foreground_classes, make_loader


def per_image_table(counts: torch.Tensor, ids: list[str], foreground: list[int], model: str) -> pd.DataFrame:
    """One row per image: mean over foreground classes of each metric, and per-class Dice."""
    scores = scores_from_counts(counts)
    table = {"model": model, "id": ids}
    for name in METRIC_NAMES:
        if name == "pixel_accuracy":
            # Overall accuracy, as summarize() defines it: correct pixels over non-ignored pixels.
            correct = counts[..., 0].sum(dim=1).double()
            table[name] = (correct / counts[:, 0, :].sum(dim=-1).clamp(min=1).double()).numpy()
        else:
            table[name] = scores[name][:, foreground].mean(dim=1).numpy()
    if len(foreground) > 1:
        for k in foreground:
            table[f"dice_{k}"] = scores["dice"][:, k].numpy()
    return pd.DataFrame(table)


def cv_summary(fold_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over folds of the best-epoch validation metrics."""
    out: dict[str, Any] = {"folds": len(fold_summaries)}
    keys = [k for k in fold_summaries[0] if k.startswith("val_")]
    for key in keys:
        values = [float(s[key]) for s in fold_summaries]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key}_per_fold"] = values
    return out


@torch.no_grad()
def evaluate_variant(
    variant: dict[str, Any],
    prepared: Path,
    splits: dict[str, Any],
    checkpoints: list[Path],
    fold_summaries: list[dict[str, Any]],
    out_dir: Path,
    tta: bool = False,
) -> dict[str, Any]:
    device = select_device(variant["study"]["device"])
    data = PreparedData(prepared)
    fg = foreground_classes(data)
    test_ids = splits["test"]
    loader = make_loader(SegmentationDataset(data, test_ids), 32, False, 0, 0, device)
    models = load_models(checkpoints, variant["model"], output_channels(data.num_classes, variant["model"]["binary_head"]), device)
    names = [f"fold{k}" for k in range(len(models))] + ["ensemble"]
    counts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    boundary: list[float] = []
    ensemble_labels: list[np.ndarray] = []
    precision = Precision.for_device(device)
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        for name, probs in zip(names, predict_ensemble(models, images, precision, tta)):
            labels = labels_from_probabilities(probs)
            counts[name].append(confusion_counts(labels, targets, data.num_classes, data.ignore_index).cpu())
            if name == "ensemble":
                ensemble_labels.extend(labels.cpu().numpy().astype(np.uint8))
                for pred, truth in zip(labels.cpu().numpy(), targets.cpu().numpy()):
                    boundary.append(float(np.nanmean([hd95(pred == k, truth == k) for k in fg])) if fg else float("nan"))

    tables, test = [], {}
    for name in names:
        stacked = torch.cat(counts[name])
        test[name] = summarize(stacked, fg)
        tables.append(per_image_table(stacked, test_ids, fg, name))
    per_image = pd.concat(tables, ignore_index=True)
    per_image.loc[per_image["model"] == "ensemble", "hd95"] = boundary
    test["ensemble"]["hd95"] = float(np.nanmean(boundary)) if boundary else float("nan")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(out_dir / "per_image.csv", index=False)
    np.save(out_dir / "ensemble_predictions.npy", np.stack(ensemble_labels))
    metrics = {
        "variant": variant["variant"],
        "test_images": len(test_ids),
        "tta": tta,
        "test": test,
        "cv": cv_summary(fold_summaries),
        "params_trainable": fold_summaries[0].get("params_trainable"),
        "params_frozen": fold_summaries[0].get("params_frozen"),
        "train_seconds": sum(s["train_seconds"] for s in fold_summaries),
        "best_epochs": [s["best_epoch"] for s in fold_summaries],
        "run_ids": [s.get("run_id") for s in fold_summaries],
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics
