"""Evaluate a variant: out-of-fold predictions of every fold model, and the held-out test set.

Out of fold (OOF): the best checkpoint of fold k predicts fold k's validation images,
which it never trained on; pooled over folds every training image gets exactly one
honest prediction, and the pooled OOF score uses all of them at once.
Test: every fold model and the fold ensemble (mean of probabilities) on the test images,
optionally with flip test-time augmentation, scored at each image's original size (the
probabilities mapped back from the prepared size, against the original mask). OOF scores
stay at the prepared size, like the fold summaries they sit beside.

Writes to the output folder:

* ``per_image.csv`` — test set, one row per (model, image): headline metrics (mean over
  foreground classes) and ``dice_<k>``/``iou_<k>`` for every class k;
* ``oof_per_image.csv`` — the same columns for the OOF predictions, plus ``fold``;
* ``per_class.csv`` — per (set, model, class): per-image mean Dice/IoU/precision/recall;
* ``metrics.json`` — test summary per model, OOF summary (pooled and per fold), CV
  summary from the fold summaries, the test confusion matrix of the ensemble, run ids;
* ``ensemble_predictions.npy`` — the ensemble's test label maps (for the report's overlays).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from . import layout
from .data.dataset import SegmentationDataset
from .data.prepared import PreparedData
from .data.loaders import make_loader
from .data.splits import fold_ids
from .engine import Execution
from .metrics import METRIC_NAMES, confusion_counts, hd95, scores_from_counts, summarize
from .models import output_channels
from .data.io import IGNORE
from .inference import (inference_window, labels_from_probabilities, load_models, predict_batch, predict_whole_image,
                        to_original_size)
from .stats import t_interval

PER_CLASS_METRICS = ("dice", "iou", "precision", "recall")
# Images per inference batch: no gradients are kept, so it can be larger than training's.
EVAL_BATCH = 32


def per_image_table(counts: torch.Tensor, ids: list[str], foreground: list[int], model: str) -> pd.DataFrame:
    """One row per image: mean over foreground classes of each metric, and per-class Dice and IoU."""
    scores = scores_from_counts(counts)
    table: dict[str, Any] = {"model": model, "id": ids}
    for name in METRIC_NAMES:
        if name == "pixel_accuracy":
            # Overall accuracy, as summarize() defines it: correct pixels over non-ignored pixels.
            correct = counts[..., 0].sum(dim=1).double()
            table[name] = (correct / counts[:, 0, :].sum(dim=-1).clamp(min=1).double()).numpy()
        else:
            table[name] = scores[name][:, foreground].mean(dim=1).numpy()
    for k in range(counts.shape[1]):
        table[f"dice_{k}"] = scores["dice"][:, k].numpy()
        table[f"iou_{k}"] = scores["iou"][:, k].numpy()
    return pd.DataFrame(table)


def per_class_table(counts: torch.Tensor, classes: list[str], split: str, model: str) -> pd.DataFrame:
    """Per class: the per-image mean of each metric (images with no valid pixel left out)."""
    used = counts[counts[:, 0, :].sum(dim=-1) > 0]
    scores = scores_from_counts(used)
    rows = []
    for k, name in enumerate(classes):
        row = {"set": split, "model": model, "class_index": k, "class": name,
               "images_with_class": int(((used[:, k, 0] + used[:, k, 2]) > 0).sum())}
        row.update({m: float(scores[m][:, k].mean()) if len(used) else float("nan") for m in PER_CLASS_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Pixel confusion matrix M[true, predicted] (K, K) over a batch, ignored pixels left out."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    flat = target[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes).cpu().numpy()


def nanmean(values: list[float]) -> float:
    """Mean of the defined values; NaN, without numpy's empty-slice warning, when none is
    (HD95 is undefined for an image whose class is in the prediction or the truth only)."""
    defined = [v for v in values if not np.isnan(v)]
    return float(np.mean(defined)) if defined else float("nan")


def fold_facts(fold_summaries: list[dict[str, Any]], run_id: str | None) -> dict[str, Any]:
    """What an evaluation records of the fold models it ensembles (any task): the CV summary,
    parameter counts, training time, best epochs, device and the MLflow runs."""
    return {
        "cv": cv_summary(fold_summaries),
        "params_trainable": fold_summaries[0].get("params_trainable"),
        "params_frozen": fold_summaries[0].get("params_frozen"),
        "train_seconds": sum(s["train_seconds"] for s in fold_summaries),
        "best_epochs": [s["best_epoch"] for s in fold_summaries],
        "device": fold_summaries[0].get("device"),
        "run_ids": [s.get("run_id") for s in fold_summaries],
        "variant_run_id": run_id,
    }


def cv_summary(fold_summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and t-based 95% CI over folds of the best-epoch validation metrics."""
    out: dict[str, Any] = {"folds": len(fold_summaries)}
    keys = [k for k in fold_summaries[0] if k.startswith("val_")]
    for key in keys:
        values = [float(s[key]) for s in fold_summaries]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[f"{key}_ci95"] = list(t_interval(values))
        out[f"{key}_per_fold"] = values
    return out


@torch.no_grad()
def predictions(models: list[torch.nn.Module], data: PreparedData, ids: list[str], execution: Execution, tta: bool,
                inference: dict[str, Any], window: int | None) -> Iterator[tuple[list[torch.Tensor], torch.Tensor, np.ndarray]]:
    """(per-model probabilities, each (N, P, H, W); targets (N, H, W); the N cache rows) over ``ids``, on the device.

    Square prepared images without a window go in batches of EVAL_BATCH, one forward pass
    each; with a window (patch-trained models) or native sizes, one whole image at a time
    by sliding windows (:func:`~seglab.inference.predict_whole_image`).
    """
    device = execution.device
    dataset = SegmentationDataset(data, ids)
    if window is None and not data.native:
        start = 0
        for images, targets in make_loader(dataset, EVAL_BATCH, False, 0, 0, device):
            images = execution.inputs(images)
            rows = dataset.rows[start:start + len(images)]
            start += len(images)
            yield [predict_batch(m, images, execution, tta) for m in models], targets.to(device), rows
        return
    for i in range(len(dataset)):
        image, target = dataset[i]
        probs = predict_whole_image(models, image, execution, tta, window, inference["overlap"], inference["batch_size"])
        yield [p[None] for p in probs], target[None].to(device), dataset.rows[i:i + 1]


def at_original_size(batches: Iterator[tuple[list[torch.Tensor], torch.Tensor, np.ndarray]], data: PreparedData,
                     device: torch.device) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """One image at a time, its probabilities mapped back to the original size and scored
    against the original mask (what a user measures), whatever size the network saw."""
    for per_model, _, rows in batches:
        for i, row in enumerate(rows):
            h, w = int(data.manifest["orig_height"][row]), int(data.manifest["orig_width"][row])
            target = torch.from_numpy(np.array(data.original_masks[row])).long().to(device)
            yield [to_original_size(p[i], h, w, data.fingerprint)[None] for p in per_model], target[None]


def outside_roi_to_background(labels: torch.Tensor, targets: torch.Tensor, data: PreparedData) -> torch.Tensor:
    """Predictions outside the region of interest (IGNORE in a ROI dataset's masks) become background.

    Metrics ignore those pixels anyway; this is what the saved label maps show.
    """
    if data.fingerprint.get("roi"):
        return labels.masked_fill(targets == IGNORE, 0)
    return labels


def stack_label_maps(maps: list[np.ndarray]) -> np.ndarray:
    """(N, H, W) uint8: maps of different sizes (native images) padded with 0 at the bottom/right;
    a reader crops each to its image's size."""
    height, width = max(m.shape[0] for m in maps), max(m.shape[1] for m in maps)
    out = np.zeros((len(maps), height, width), np.uint8)
    for i, m in enumerate(maps):
        out[i, :m.shape[0], :m.shape[1]] = m
    return out


@torch.no_grad()
def out_of_fold(models: list[torch.nn.Module], folds: list[int], data: PreparedData, splits: dict[str, Any],
                execution: Execution, tta: bool, inference: dict[str, Any] | None = None,
                window: int | None = None) -> tuple[pd.DataFrame, torch.Tensor, list[torch.Tensor]]:
    """Each fold's model on its own validation fold: per-image table, pooled counts, counts per fold."""
    fg = data.foreground_classes
    tables, per_fold = [], []
    for k, model in zip(folds, models):
        _, val_ids = fold_ids(splits, k)
        counts = []
        for (probs,), targets, _ in predictions([model], data, val_ids, execution, tta, inference or {}, window):
            labels = labels_from_probabilities(probs)
            counts.append(confusion_counts(labels, targets, data.num_classes, data.ignore_index).cpu())
        stacked = torch.cat(counts)
        per_fold.append(stacked)
        table = per_image_table(stacked, val_ids, fg, layout.fold_name(k))
        table.insert(1, "fold", k)
        tables.append(table)
    return pd.concat(tables, ignore_index=True), torch.cat(per_fold), per_fold


@torch.no_grad()
def evaluate_variant(
    variant: dict[str, Any],
    prepared: Path,
    splits: dict[str, Any],
    checkpoints: list[Path],
    fold_summaries: list[dict[str, Any]],
    out_dir: Path,
    tta: bool = False,
    run_id: str | None = None,
) -> dict[str, Any]:
    execution = Execution.for_study(variant["study"])
    data = PreparedData(prepared)
    fg = data.foreground_classes
    classes = list(data.fingerprint["classes"])
    test_ids = splits["test"]
    window = inference_window(variant)
    models = load_models(checkpoints, variant["model"], output_channels(data.num_classes, variant["model"]["binary_head"]), execution)
    folds = [layout.fold_of(path)[1] for path in checkpoints]
    names = [layout.fold_name(k) for k in folds] + ["ensemble"]
    counts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    boundary: list[float] = []
    ensemble_labels: list[np.ndarray] = []
    confusion = np.zeros((data.num_classes, data.num_classes), dtype=np.int64)
    test_batches = predictions(models, data, test_ids, execution, tta, variant["inference"], window)
    for per_model, targets in at_original_size(test_batches, data, execution.device):
        for name, probs in zip(names, per_model + [torch.stack(per_model).mean(0)]):
            labels = labels_from_probabilities(probs)
            counts[name].append(confusion_counts(labels, targets, data.num_classes, data.ignore_index).cpu())
            if name == "ensemble":
                confusion += confusion_matrix(labels, targets, data.num_classes, data.ignore_index)
                labels = outside_roi_to_background(labels, targets, data)
                ensemble_labels.extend(labels.cpu().numpy().astype(np.uint8))
                for pred, truth in zip(labels.cpu().numpy(), targets.cpu().numpy()):
                    boundary.append(nanmean([hd95(pred == k, truth == k) for k in fg]))

    tables, class_tables, test = [], [], {}
    for name in names:
        stacked = torch.cat(counts[name])
        test[name] = summarize(stacked, fg)
        tables.append(per_image_table(stacked, test_ids, fg, name))
        class_tables.append(per_class_table(stacked, classes, "test", name))
    per_image = pd.concat(tables, ignore_index=True)
    per_image.loc[per_image["model"] == "ensemble", "hd95"] = boundary
    test["ensemble"]["hd95"] = nanmean(boundary)

    oof_table, oof_counts, oof_per_fold = out_of_fold(models, folds, data, splits, execution, tta, variant["inference"], window)
    class_tables.append(per_class_table(oof_counts, classes, "oof", "pooled"))
    oof = {"pooled": summarize(oof_counts, fg),
           "per_fold": [summarize(c, fg) for c in oof_per_fold],
           "images": int(len(oof_counts))}

    out_dir.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(out_dir / layout.PER_IMAGE, index=False)
    oof_table.to_csv(out_dir / layout.OOF_PER_IMAGE, index=False)
    pd.concat(class_tables, ignore_index=True).to_csv(out_dir / layout.PER_CLASS, index=False)
    np.save(out_dir / layout.ENSEMBLE_PREDICTIONS, stack_label_maps(ensemble_labels))
    metrics = {
        "variant": variant["variant"],
        "repeat": splits["repeat"],
        "test_images": len(test_ids),
        "tta": tta,
        "classes": classes,
        "test": test,
        "test_confusion": confusion.tolist(),
        "oof": oof,
        **fold_facts(fold_summaries, run_id),
    }
    (out_dir / layout.EVAL_METRICS).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics
