"""Study-level tables: one row per variant, CV mean ± sd and 95% CI, pooled OOF and test scores.

Writes ``metrics.json`` (what ``dvc metrics show`` displays) and ``curves.csv``
(every fold's learning curve, what ``dvc plots show`` draws).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from .stats import t_interval

HEADLINE = ("dice", "iou", "pixel_accuracy", "precision", "recall")


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean, sd and t-based 95% CI over folds (sd 0 and CI NaN for a single value)."""
    low, high = t_interval(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95_low": low, "ci95_high": high}


def variant_row(metrics: dict[str, Any]) -> dict[str, Any]:
    cv, ensemble = metrics["cv"], metrics["test"]["ensemble"]
    fold_models = sorted(k for k in metrics["test"] if k.startswith("fold"))
    test_folds = [metrics["test"][k]["dice"] for k in fold_models]
    row: dict[str, Any] = {}
    for name in ("dice", "iou"):
        spread = _spread(cv[f"val_{name}_per_fold"]) if f"val_{name}_per_fold" in cv else {}
        row.update({f"cv_{name}_{k}": v for k, v in spread.items()})
        row[f"cv_{name}_per_fold"] = cv.get(f"val_{name}_per_fold")
    # Per-class CV IoU and Dice (mean over folds of each fold's best-epoch validation score):
    # what shows a class the variant never learns (0 IoU on poles and signs) behind a good mean.
    classes = metrics.get("classes") or []
    for name in ("iou", "dice"):
        row[f"cv_{name}_per_class"] = {
            label: cv[f"val_{name}_{k}_mean"] for k, label in enumerate(classes) if f"val_{name}_{k}_mean" in cv}
    oof = metrics.get("oof", {})
    pooled = oof.get("pooled", {})
    row.update({
        "oof_dice": pooled.get("dice"), "oof_iou": pooled.get("iou"), "oof_dice_dataset": pooled.get("dice_dataset"),
        "oof_images": oof.get("images"),
        "oof_dice_per_fold": [f["dice"] for f in oof.get("per_fold", [])],
        **{f"test_{k}": ensemble.get(k) for k in HEADLINE},
        "test_hd95": ensemble.get("hd95"),
        "test_dice_dataset": ensemble.get("dice_dataset"),
        "test_dice_folds": test_folds,
        **{f"test_dice_folds_{k}": v for k, v in _spread(test_folds).items()},
        "test_tta": metrics.get("tta", False),
        "params_trainable": metrics.get("params_trainable"),
        "params_frozen": metrics.get("params_frozen"),
        "train_seconds": round(metrics.get("train_seconds", 0.0), 1),
        "best_epochs": metrics.get("best_epochs"),
        "device": metrics.get("device"),
        "run_ids": {"variant": metrics.get("variant_run_id"), "folds": metrics.get("run_ids")},
    })
    return row


def study_metrics(study: dict[str, Any], per_variant: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = {name: variant_row(m) for name, m in per_variant.items()}
    best = max(rows, key=lambda n: rows[n]["test_dice"] if rows[n]["test_dice"] is not None else float("-inf"))
    return {"study": study["name"], "baseline": study["baseline"], "best_variant": best, "variants": rows}


def learning_curves(histories: dict[tuple[str, int], Path]) -> pd.DataFrame:
    frames = []
    for (variant, fold), path in sorted(histories.items()):
        frame = pd.read_csv(path)
        frame.insert(0, "fold", fold)
        frame.insert(0, "variant", variant)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
