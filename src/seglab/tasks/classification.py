"""The classification task: one label per image (see :mod:`seglab.tasks` for the functions a task
offers). The work is done in :mod:`seglab.classification`; this module only names it for the stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import layout

# Per-image correctness (0/1) of the ensemble, and each fold's OOF accuracy, are what the
# paired tests compare (seglab.stats is score-agnostic).
COMPARE_SCORE = ("correct", "accuracy", "accuracy")


def fetch(dataset: dict[str, Any], out: Path) -> None:
    from ..classification.sources import fetch_classification

    fetch_classification(dataset, out)


def verify(cfg: dict[str, Any], raw: Path | None) -> dict[str, Any]:
    from ..classification.data import verify_images

    return verify_images(cfg["dataset"], raw, cfg["verify"]["on_error"])


def verify_line(report: dict[str, Any]) -> str:
    counts = ", ".join(f"{c} {n}" for c, n in report["class_counts"].items())
    empty = f"; empty classes: {', '.join(report['empty_classes'])}" if report["empty_classes"] else ""
    return (f"verified {report['pairs_found']} images in {report['root']}: {report['pairs_ok']} usable, "
            f"{len(report['problems'])} problem(s); classes: {counts}{empty}")


def store_files(preprocess: dict[str, Any]) -> tuple[str, ...]:
    from ..classification.data import STORE_FILES

    return STORE_FILES


def preprocess(cfg: dict[str, Any], verify_report: dict[str, Any], out: Path) -> str:
    from ..classification.data import preprocess_images

    fp = preprocess_images(verify_report, cfg["preprocess"]["size"], cfg["preprocess"]["policy"], out,
                           cfg["preprocess"]["standardise"])
    return f"prepared {fp['num_images']} images of {fp['num_classes']} classes at {fp['size']}px, {fp['channels']} channel(s)"


def split_strata(manifest: pd.DataFrame) -> np.ndarray:
    return manifest["label"].to_numpy(dtype=int)  # folds and test set stratified by class


def train_fold(*args: Any) -> dict[str, Any]:
    from ..classification.train import train_fold as train

    return train(*args)


def record_fold(run: Any, cfg: dict[str, Any], out: Path, fold: int, prepared: Path) -> None:
    """Learning curves (loss and accuracy), resolved config, weights path and sha256, and the model
    itself when ``tracking.log_model`` asks for it."""
    from ..records import record_fold as record

    record(run, cfg, out, fold, prepared, classifier_and_example)


def classifier_and_example(cfg: dict[str, Any], checkpoint: Path, fingerprint: dict[str, Any]) -> tuple[Any, Any]:
    import torch

    from ..classification.models import input_channels
    from ..classification.train import load_classifiers
    from ..engine import Execution

    model = load_classifiers([checkpoint], cfg, fingerprint["channels"], fingerprint["num_classes"],
                             Execution(torch.device("cpu")))[0]
    size = fingerprint["size"]
    return model, np.zeros((1, input_channels(cfg["model"], fingerprint["channels"]), size, size), dtype=np.float32)


def evaluate_variant(*args: Any, **kwargs: Any) -> dict[str, Any]:
    from ..classification.evaluate import evaluate_variant as evaluate

    return evaluate(*args, **kwargs)


def record_evaluation(run: Any, cfg: dict[str, Any], out: Path, prepared: Path, splits: dict[str, Any]) -> None:
    """The evaluation run: the per-image and per-class CSVs, metrics JSON, confusion matrix, CAM overlays, config."""
    import json
    import tempfile

    from ..records import record_config
    from ..report.class_figures import confusion_matrix_figure

    for name in (layout.PER_IMAGE, layout.OOF_PER_IMAGE, layout.PER_CLASS, layout.EVAL_METRICS):
        run.log_artifact(out / name)
    metrics = json.loads((out / layout.EVAL_METRICS).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run.log_artifact(confusion_matrix_figure(metrics["test_confusion"], metrics["classes"],
                                                 Path(tmp) / "confusion_matrix.png", f"{cfg['variant']}: test images"), "plots")
    if (out / layout.CAM_OVERLAYS).is_file():
        run.log_artifact(out / layout.CAM_OVERLAYS, "plots")
    record_config(run, cfg, "variant")


def evaluation_line(metrics: dict[str, Any], folds: int) -> str:
    ensemble = metrics["test"]["ensemble"]
    return (f"{metrics['variant']} repeat {metrics['repeat']}: test accuracy {ensemble['accuracy']:.4f} balanced "
            f"{ensemble['balanced_accuracy']:.4f} macro F1 {ensemble['macro_f1']:.4f} (ensemble of {folds} folds"
            f"{', flip TTA' if metrics['tta'] else ''}); pooled out-of-fold accuracy {metrics['oof']['pooled']['accuracy']:.4f}")


def study_metrics(cfg: dict[str, Any], per_variant: dict[str, list[dict[str, Any]]], curves: pd.DataFrame) -> dict[str, Any]:
    """The study table (the learning curves add nothing to it here)."""
    from ..classification.aggregate import study_metrics as table

    return table(cfg["study"], per_variant, dict(cfg["sweep"]["points"]))


def aggregate_line(name: str, row: dict[str, Any]) -> str:
    from ..classification.aggregate import aggregate_line as line

    return line(name, row)


def build_report(inputs: Any, out: Path) -> None:
    from ..classification.report import build_report as build

    build(inputs, out)


def predict(cfg: dict[str, Any], prepared: Path, folds: list[Path], images: Path, out: Path, tta: bool,
            roi: Path | None, cams: bool) -> str:
    from ..classification.predict import predict_images

    if roi is not None:
        from ..data.io import DataError

        raise DataError("--roi masks regions of a segmentation; a classification study labels whole images. Remove --roi.")
    return predict_images(cfg, prepared, folds, images, out, tta, cams)
