"""Evaluate a classification variant: out-of-fold predictions and the held-out test set.

The same files and keys as segmentation's evaluation (:mod:`seglab.evaluate`), with image-level
scores (:mod:`seglab.class_scores`):

* ``per_image.csv`` — test set, one row per (model, image): ``label``, ``predicted``,
  ``probability`` (of the predicted class), ``correct`` (0/1, the paired tests' per-image score)
  and ``prob_<class>`` for every class;
* ``oof_per_image.csv`` — the same for each fold's model on its own validation fold, plus ``fold``;
* ``per_class.csv`` — per (set, model, class): precision, recall, F1, support;
* ``metrics.json`` — per model (``fold<k>``, ``ensemble``) accuracy, balanced accuracy, macro F1,
  ROC AUC; the ensemble's confusion matrix; OOF pooled and per fold; the CV summary; run ids;
* ``ensemble_predictions.npy`` — the ensemble's (N, K) test probabilities (float32);
* ``cam_overlays.png`` — Grad-CAMs of the most confident correct and misclassified test images.

The ensemble averages the fold models' probabilities; ``tta`` averages each model over the
image and its horizontal mirror.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import layout
from ..class_scores import classification_scores, per_image_correct
from ..data.loaders import make_loader
from ..data.splits import fold_ids
from ..engine import Execution
from ..evaluate import EVAL_BATCH, fold_facts
from .cams import write_cam_grid
from .data import ClassificationDataset, PreparedImages
from .models import input_channels
from .train import load_classifiers

# Scores of a model that are plain numbers (what the study table and MLflow read).
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


@torch.no_grad()
def probabilities(models: list[torch.nn.Module], dataset: ClassificationDataset, execution: Execution,
                  tta: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """(per-model (N, K) softmax probabilities, (N,) labels) over ``dataset``."""
    per_model: list[list[np.ndarray]] = [[] for _ in models]
    labels = []
    for images, targets in make_loader(dataset, EVAL_BATCH, False, 0, 0, execution.device):
        images = execution.inputs(images)
        for k, model in enumerate(models):
            with execution.autocast():
                probs = model(images).float().softmax(dim=1)
                if tta:
                    probs = (probs + model(images.flip(-1)).float().softmax(dim=1)) / 2
            per_model[k].append(probs.cpu().numpy())
        labels.append(targets.numpy())
    return [np.concatenate(p) for p in per_model], np.concatenate(labels)


def per_image_frame(model: str, ids: list[str], labels: np.ndarray, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    predicted = probs.argmax(axis=1)
    frame = pd.DataFrame({"model": model, "id": ids, "label": labels, "true_class": [classes[i] for i in labels],
                          "predicted": predicted, "predicted_class": [classes[i] for i in predicted],
                          "probability": probs.max(axis=1), "correct": per_image_correct(labels, probs)})
    for k, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, k]
    return frame


def per_class_frame(scores: dict[str, Any], split: str, model: str) -> pd.DataFrame:
    return pd.DataFrame([{"set": split, "model": model, "class_index": k, "class": name, **values}
                         for k, (name, values) in enumerate(scores["per_class"].items())])


def headline(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: scores[k] for k in HEADLINE}


@torch.no_grad()
def evaluate_variant(variant: dict[str, Any], prepared: Path, splits: dict[str, Any], checkpoints: list[Path],
                     fold_summaries: list[dict[str, Any]], out_dir: Path, tta: bool = False,
                     run_id: str | None = None) -> dict[str, Any]:
    execution = Execution.for_study(variant["study"])
    data = PreparedImages(prepared)
    classes = data.classes
    channels = input_channels(variant["model"], data.channels)
    models = load_classifiers(checkpoints, variant, data.channels, data.num_classes, execution)
    folds = [layout.fold_of(path)[1] for path in checkpoints]
    names = [layout.fold_name(k) for k in folds]

    test_ids = list(splits["test"])
    per_model, labels = probabilities(models, ClassificationDataset(data, test_ids, channels), execution, tta)
    per_model.append(np.mean(per_model, axis=0))
    names.append("ensemble")
    tables, class_tables, test = [], [], {}
    for name, probs in zip(names, per_model):
        scores = classification_scores(labels, probs, classes)
        test[name] = headline(scores)
        tables.append(per_image_frame(name, test_ids, labels, probs, classes))
        class_tables.append(per_class_frame(scores, "test", name))
        if name == "ensemble":
            confusion = scores["confusion_matrix"]

    oof_tables, oof_probs, oof_labels, oof_per_fold = [], [], [], []
    for k, model in zip(folds, models):
        _, val_ids = fold_ids(splits, k)
        (probs,), fold_labels = probabilities([model], ClassificationDataset(data, val_ids, channels), execution, tta)
        oof_per_fold.append(headline(classification_scores(fold_labels, probs, classes)))
        frame = per_image_frame(layout.fold_name(k), val_ids, fold_labels, probs, classes)
        frame.insert(1, "fold", k)
        oof_tables.append(frame)
        oof_probs.append(probs)
        oof_labels.append(fold_labels)
    pooled = classification_scores(np.concatenate(oof_labels), np.concatenate(oof_probs), classes)
    class_tables.append(per_class_frame(pooled, "oof", "pooled"))
    oof = {"pooled": headline(pooled), "per_fold": oof_per_fold, "images": int(sum(len(x) for x in oof_labels)),
           "confusion": pooled["confusion_matrix"]}

    out_dir.mkdir(parents=True, exist_ok=True)
    pd.concat(tables, ignore_index=True).to_csv(out_dir / layout.PER_IMAGE, index=False)
    pd.concat(oof_tables, ignore_index=True).to_csv(out_dir / layout.OOF_PER_IMAGE, index=False)
    pd.concat(class_tables, ignore_index=True).to_csv(out_dir / layout.PER_CLASS, index=False)
    np.save(out_dir / layout.ENSEMBLE_PREDICTIONS, per_model[-1].astype(np.float32))
    ensemble_table = tables[-1]
    write_cam_grid(models, ClassificationDataset(data, test_ids, channels), ensemble_table, execution,
                   out_dir / layout.CAM_OVERLAYS, f"{variant['variant']}: Grad-CAM of the predicted class (fold ensemble)")
    metrics = {
        "task": "classification", "variant": variant["variant"], "repeat": splits["repeat"], "test_images": len(test_ids),
        "tta": tta, "classes": classes, "test": test, "test_confusion": confusion, "oof": oof,
        **fold_facts(fold_summaries, run_id),
    }
    (out_dir / layout.EVAL_METRICS).write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    return metrics
