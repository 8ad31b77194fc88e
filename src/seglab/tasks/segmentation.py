"""The segmentation task: image/mask pairs, per-pixel models, losses and scores (seglab's original path).

Each function only hands over to the modules that have always done the work, so a
segmentation study runs exactly as before the task registry existed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import layout

# The per-image score the significance tests compare, the per-fold OOF key, and its name in sentences.
COMPARE_SCORE = ("dice", "dice", "Dice")


def fetch(dataset: dict[str, Any], out: Path) -> None:
    from ..data.sources import fetch_dataset

    fetch_dataset(dataset, out)


def verify(cfg: dict[str, Any], raw: Path | None) -> dict[str, Any]:
    from ..data.verify import dataset_root, verify_dataset

    root = dataset_root(cfg["dataset"], raw)
    return verify_dataset(root, cfg["dataset"], cfg["verify"]["on_error"])


def verify_line(report: dict[str, Any]) -> str:
    return (f"verified {report['pairs_found']} pairs in {report['root']}: {report['pairs_ok']} usable, "
            f"{len(report['problems'])} problem(s)")


def store_files(preprocess: dict[str, Any]) -> tuple[str, ...]:
    return layout.store_files(preprocess["policy"], preprocess["max_side"])


def preprocess(cfg: dict[str, Any], verify_report: dict[str, Any], out: Path) -> str:
    from ..data.preprocess import preprocess as prepare

    fingerprint = prepare(verify_report, cfg["preprocess"]["size"], cfg["preprocess"]["policy"], out,
                          cfg["preprocess"]["max_side"], cfg["preprocess"]["clahe"])
    at = "their own size" if fingerprint["policy"] == "native" else f"{fingerprint['size']}px"
    return f"prepared {fingerprint['num_images']} images at {at}"


def split_strata(manifest: pd.DataFrame) -> np.ndarray | None:
    return None  # make_splits balances the folds on the foreground fraction


def train_fold(*args: Any) -> dict[str, Any]:
    from ..train import train_fold as train

    return train(*args)


def record_fold(run: Any, cfg: dict[str, Any], out: Path, fold: int, prepared: Path) -> None:
    from ..records import record_fold as record

    record(run, cfg, out, fold, prepared)


def evaluate_variant(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from ..evaluate import evaluate_variant as evaluate

    return evaluate(*args, **kwargs)


def record_evaluation(run: Any, cfg: dict[str, Any], out: Path, prepared: Path, splits: dict[str, Any]) -> None:
    from ..records import record_evaluation as record

    record(run, cfg, out, prepared, splits)
    for name in (layout.OOF_PER_IMAGE, layout.PER_CLASS):
        run.log_artifact(out / name)


def evaluation_line(metrics: dict[str, Any], folds: int) -> str:
    ensemble = metrics["test"]["ensemble"]
    return (f"{metrics['variant']} repeat {metrics['repeat']}: test Dice {ensemble['dice']:.4f} IoU {ensemble['iou']:.4f} "
            f"(ensemble of {folds} folds{', flip TTA' if metrics['tta'] else ''}); pooled out-of-fold Dice "
            f"{metrics['oof']['pooled']['dice']:.4f}")


def study_metrics(cfg: dict[str, Any], per_variant: dict[str, list[dict[str, Any]]], curves: pd.DataFrame) -> dict[str, Any]:
    """The study table, with the CV at the epoch chosen on the other folds (from the learning curves) when asked."""
    from ..aggregate import cross_fold_scores, study_metrics as table

    cross_fold = cross_fold_scores(curves, cfg["variants"]) if cfg["evaluate"]["cv_epoch_from_other_folds"] else None
    return table(cfg["study"], per_variant, dict(cfg["sweep"]["points"]), cross_fold)


def aggregate_line(name: str, row: dict[str, Any]) -> str:
    run_sd = row["test_dice_repeat_sd"]
    spread = f" ± {run_sd:.4f} run-to-run over {row['repeats']} repeats" if run_sd is not None else \
        " (one repeat: run-to-run sd not measured)"
    other = row.get("cv_dice_xfold_epoch_mean")
    other = f" (epoch chosen on the other folds: {other:.4f})" if other is not None else ""
    return (f"{name:>28s}: CV Dice {row['cv_dice_mean']:.4f} ± {row['cv_dice_sd']:.4f}{other}   "
            f"test Dice {row['test_dice']:.4f}{spread}")


def build_report(inputs: Any, out: Path) -> None:
    from ..report.document import build_report as build

    build(inputs, out)


def predict(cfg: dict[str, Any], prepared: Path, folds: list[Path], images: Path, out: Path, tta: bool,
            roi: Path | None, cams: bool) -> str:
    from ..config import read_json
    from ..predict import predict_folder

    if cams:
        from ..data.io import DataError

        raise DataError("--cam draws class activation maps of a classification study; this study segments. Remove --cam.")
    fingerprint = read_json(prepared / layout.FINGERPRINT)
    records = predict_folder(cfg, fingerprint, folds, images, out, tta=tta, roi=roi)
    pd.DataFrame(records).to_csv(out / "predictions.csv", index=False)
    return f"{len(records)} masks in {out / 'masks'}, overlays in {out / 'overlays'}"
