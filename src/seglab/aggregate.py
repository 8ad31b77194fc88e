"""Study-level tables: one row per variant, CV mean ± sd and test scores.

Writes ``metrics.json`` (what ``dvc metrics show`` displays) and ``curves.csv``
(every fold's learning curve, what ``dvc plots show`` draws).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

HEADLINE = ("dice", "iou", "pixel_accuracy", "precision", "recall")


def variant_row(metrics: dict[str, Any]) -> dict[str, Any]:
    cv, ensemble = metrics["cv"], metrics["test"]["ensemble"]
    row: dict[str, Any] = {
        "cv_dice_mean": cv.get("val_dice_mean"),
        "cv_dice_sd": cv.get("val_dice_sd"),
        "cv_iou_mean": cv.get("val_iou_mean"),
        "cv_iou_sd": cv.get("val_iou_sd"),
        **{f"test_{k}": ensemble.get(k) for k in HEADLINE},
        "test_hd95": ensemble.get("hd95"),
        "test_dice_dataset": ensemble.get("dice_dataset"),
        "test_dice_folds": [metrics["test"][k]["dice"] for k in metrics["test"] if k.startswith("fold")],
        "params_trainable": metrics.get("params_trainable"),
        "params_frozen": metrics.get("params_frozen"),
        "train_seconds": round(metrics.get("train_seconds", 0.0), 1),
        "best_epochs": metrics.get("best_epochs"),
    }
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
