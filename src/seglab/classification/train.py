"""Train one classification variant on one cross-validation fold.

The same engine, resume store, early stopping, schedules, augmentation policies and seeds as
segmentation (:mod:`seglab.train`, :mod:`seglab.resumable`); only the dataset, the model, the
loss and the per-epoch validation scores (accuracy, balanced accuracy, macro F1) are the task's.
Writes the fold's checkpoint, history, summary and augmentation preview (file names: :mod:`seglab.layout`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import layout
from ..data.augmented import Repeated
from ..data.io import sha256_file
from ..data.loaders import loader_workers, make_loader
from ..data.splits import fold_ids
from ..data.transforms import build_augmentation
from ..engine import Execution
from ..models import count_parameters
from ..models.freeze import set_encoder_trainable
from ..resumable import RESUME_DIR, fit_resumable, resume_key
from ..resume import ResumeStore
from ..runtime import seed_everything
from ..seeds import training_seed
from ..tracking import NullRun, Run
from ..train import build_controls
from .data import ClassificationDataset, PreparedImages
from .losses import AccuracyAccumulator, auto_class_weights, build_classification_loss
from .models import build_classifier, initialise_classifier, input_channels, set_trainable


def resolve_loss(loss_cfg: dict[str, Any], labels: np.ndarray, num_classes: int) -> tuple[dict[str, Any], list[float] | None]:
    """The loss block with ``class_weights: auto`` replaced by the fold's own weights."""
    if loss_cfg.get("class_weights") != "auto":
        return loss_cfg, None
    weights = auto_class_weights(labels, num_classes)
    return {**loss_cfg, "class_weights": weights}, weights


def augmentation_preview(dataset: ClassificationDataset, count: int) -> bytes:
    """A grid of augmented training images with their class, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..report.figures import to_png

    count = min(count, len(dataset))
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count, 1.9), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image, label = dataset[(i, i)]
        x = image[: len(dataset.mean)]
        x = ((x - x.min()) / (x.max() - x.min()).clamp(min=1e-6)).permute(1, 2, 0).numpy()  # shown min-max scaled
        ax.imshow(x[..., 0] if x.shape[2] == 1 else x, cmap="gray" if x.shape[2] == 1 else None)
        ax.set_title(dataset.data.classes[int(label)], fontsize=7)
        ax.axis("off")
    return to_png(fig)


def train_fold(variant: dict[str, Any], prepared: Path, splits: dict[str, Any], fold: int, out_dir: Path,
               init_weights: Path | None = None, run: Run | None = None) -> dict[str, Any]:
    """Train ``variant`` on fold ``fold``; resumes from ``out_dir/.resume`` like segmentation's."""
    run = run or NullRun()
    seed = training_seed(variant, splits["repeat"], fold)
    seed_everything(seed, variant["study"]["deterministic"])
    execution = Execution.for_study(variant["study"])
    device = execution.device
    data = PreparedImages(prepared)
    train_ids, val_ids = fold_ids(splits, fold)
    cfg_train, aug_cfg = variant["train"], variant["augmentation"]
    channels = input_channels(variant["model"], data.channels)

    augment = build_augmentation(aug_cfg, seed)
    base_set = ClassificationDataset(data, train_ids, channels, augment)
    train_set = Repeated(base_set, aug_cfg["multiplier"]) if aug_cfg["multiplier"] > 1 else base_set
    val_set = ClassificationDataset(data, val_ids, channels)
    workers = loader_workers(cfg_train["num_workers"], device)
    train_loader = make_loader(train_set, cfg_train["batch_size"], True, seed, workers, device)
    val_loader = make_loader(val_set, cfg_train["batch_size"], False, seed, workers, device)

    model = build_classifier(variant["model"], channels, data.num_classes)
    init = initialise_classifier(model, variant, init_weights)
    set_trainable(model, cfg_train["last_layer_only"])
    if cfg_train["freeze_encoder"]:
        set_encoder_trainable(model, False)
    execution.prepare(model)
    loss_cfg, class_weights = resolve_loss(variant["loss"], data.labels[data.indices(train_ids)], data.num_classes)
    if class_weights is not None:
        run.log_params({"class_weights_auto": class_weights})
    loss_fn = build_classification_loss(loss_cfg, data.num_classes).to(device)
    optimizer, stopper, selector, schedule, unfreeze_at = build_controls(variant, model)
    metrics = AccuracyAccumulator(data.num_classes)
    params = count_parameters(model)

    run.log_params({
        "fold": fold, "repeat": splits["repeat"], "seed": seed, "device": device.type, "train_images": len(train_ids),
        "train_samples_per_epoch": len(train_set), "val_images": len(val_ids), "loader_workers": workers,
        "input_channels": channels, "transferred_tensors": init["loaded"], **params,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    if augment is not None and aug_cfg["grid_samples"] > 0:
        grid = out_dir / layout.AUGMENTATION_PREVIEW
        grid.write_bytes(augmentation_preview(base_set, aug_cfg["grid_samples"]))
        run.log_artifact(grid)
    prefix = f"[{variant['variant']} fold {fold}]"
    best_path = out_dir / layout.CHECKPOINT
    key = resume_key({k: v for k, v in variant.items() if k != "tracking"}, data.fingerprint, splits, fold,
                     sha256_file(init_weights) if init_weights is not None else None)
    store = ResumeStore(out_dir / RESUME_DIR, key)
    state = {"unfrozen": False}

    def on_epoch_start(epoch: int) -> None:
        if unfreeze_at is not None and epoch >= unfreeze_at and not state["unfrozen"]:
            set_encoder_trainable(model, True)
            state["unfrozen"] = True
            print(f"{prefix} epoch {epoch + 1}: encoder unfrozen", flush=True)

    selector, history = fit_resumable(
        model, train_loader, val_loader, loss_fn, optimizer, execution, cfg_train["epochs"], cfg_train["patience"],
        store, run, prefix, metrics, augment, stopper=stopper, selector=selector, scheduler=schedule,
        on_epoch_start=on_epoch_start,
    )
    if selector.best_epoch < 0:
        raise ValueError(f"{selector.monitor} was never finite; no checkpoint was saved. Pick another train.checkpoint_metric.")
    best = next(r for r in history if r["epoch"] == selector.best_epoch)
    pd.DataFrame(history).to_csv(out_dir / layout.HISTORY, index=False)
    seconds = sum(r["seconds"] for r in history)
    summary = {
        "variant": variant["variant"], "repeat": splits["repeat"], "fold": fold, "seed": seed, "best_epoch": selector.best_epoch,
        "epochs_run": len(history), "train_seconds": round(seconds, 2), "device": device.type, **params,
        "init": init["init"], "init_tensors_loaded": init["loaded"], "encoder_frozen": cfg_train["freeze_encoder"],
        "last_layer_only": cfg_train["last_layer_only"], "encoder_unfrozen_at_epoch": unfreeze_at,
        "monitor": stopper.monitor, "checkpoint_metric": selector.monitor, "stopped_early": len(history) < cfg_train["epochs"],
        "train_samples_per_epoch": len(train_set), "class_weights": class_weights, "input_channels": channels,
        **{k: v for k, v in best.items() if k.startswith("val_")},
        "checkpoint": str(best_path), "run_id": run.run_id,
    }
    store.publish_best(selector.best_epoch, best_path)
    (out_dir / layout.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    run.log_metrics({f"best_{k}": v for k, v in best.items() if k.startswith("val_")}
                    | {"best_epoch": selector.best_epoch, "train_seconds": seconds})
    run.log_artifact(out_dir / layout.HISTORY)
    store.clear()
    return summary


def load_classifiers(checkpoints: list[Path], variant: dict[str, Any], data_channels: int, num_classes: int,
                     execution: Execution) -> list[torch.nn.Module]:
    """The fold models in eval mode on the device."""
    from ..checkpoint import load_checkpoint

    models = []
    for path in checkpoints:
        model = build_classifier(variant["model"], input_channels(variant["model"], data_channels), num_classes)
        model.load_state_dict(load_checkpoint(path, execution.device)["model"])
        models.append(execution.prepare(model).eval())
    return models
