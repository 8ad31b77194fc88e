"""Train one variant on one cross-validation fold.

This wires data, model, loss and engine together and writes the stage's files.
Tracking is passed in as a ``Run`` (or ``NullRun``), so the library runs and tests
without MLflow. Training is resumable (:mod:`seglab.resumable`): a job started again
continues from its last epoch, and the stage's outputs are written only once training
is complete.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from torch.utils.data import Dataset

from . import layout
from .data.augmented import ArrayDataset, Repeated, augmentation_grid, offline_copies
from .data.dataset import SegmentationDataset
from .data.prepared import PreparedData
from .data.io import IGNORE, sha256_file
from .data.loaders import loader_workers, make_loader
from .data.splits import fold_ids
from .data.transforms import build_augmentation
from .class_balance import fold_class_weights, resolve_auto_weights, uses_auto_weights
from .data.patches import PatchDataset
from .engine import Execution
from .stopping import EarlyStopping, monitor_mode
from .inference import inference_window, validate_whole_images
from .losses import build_loss
from .metrics import MetricAccumulator
from .models import build_model, count_parameters, output_channels
from .models.freeze import set_encoder_trainable
from .models.weights import initialise
from .resumable import RESUME_DIR, fit_resumable, resume_key
from .resume import ResumeStore
from .runtime import seed_everything
from .schedule import build_schedule
from .seeds import training_seed
from .tracking import NullRun, Run


def build_optimizer(cfg: dict[str, Any], params) -> torch.optim.Optimizer:
    """The optimiser of a validated ``optimizer`` block. It owns the learning rate: built at
    ``optimizer.lr``, the peak that :func:`~seglab.schedule.build_schedule` reads back from it."""
    name = cfg["name"]
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"optimizer.name: unknown optimiser {name!r}; use adam, adamw or sgd")


def build_train_set(data: PreparedData, ids: list[str], augmentation: dict[str, Any], seed: int,
                    cfg_train: dict[str, Any] | None = None) -> tuple[Dataset, Any]:
    """The training dataset the augmentation block asks for, and its albumentations policy.

    online: each epoch draws fresh augmentations, the set repeated ``multiplier`` times;
    offline: originals plus ``multiplier - 1`` augmented copies drawn once, no further augmentation.
    With ``train.patch_size``: random patches (online only; see :mod:`seglab.data.patches`),
    ``multiplier`` patches per image and epoch.
    """
    augment = build_augmentation(augmentation, seed)
    times = augmentation["multiplier"]
    if cfg_train is not None and cfg_train["patch_size"] is not None:
        patches = PatchDataset(data, ids, cfg_train["patch_size"], cfg_train["foreground_fraction"], augment)
        return (Repeated(patches, times) if times > 1 else patches), augment
    if augmentation["mode"] == "offline":
        if augment is None or times == 1:
            return SegmentationDataset(data, ids), augment
        return ArrayDataset(*offline_copies(data, ids, augment, times), data), augment
    dataset: Dataset = SegmentationDataset(data, ids, augment)
    return (Repeated(dataset, times) if times > 1 else dataset), augment


class Controls(NamedTuple):
    """What steers one fold's training (any task): the optimiser over every parameter, early
    stopping, best-checkpoint selection, the learning-rate schedule and the unfreeze epoch."""

    optimizer: torch.optim.Optimizer
    stopper: EarlyStopping
    selector: EarlyStopping
    schedule: Any
    unfreeze_at: int | None


def build_controls(variant: dict[str, Any], model: torch.nn.Module) -> Controls:
    # Every parameter goes to the optimiser: frozen ones get no gradient, hence no update,
    # and start moving as soon as the encoder is unfrozen.
    cfg_train = variant["train"]
    optimizer = build_optimizer(variant["optimizer"], model.parameters())
    stopper, selector = build_stoppers(cfg_train)
    schedule = build_schedule(variant["schedule"], optimizer, cfg_train["epochs"], stopper.mode)
    unfreeze_at = cfg_train["unfreeze_at_epoch"] if cfg_train["freeze_encoder"] else None
    return Controls(optimizer, stopper, selector, schedule, unfreeze_at)


def build_stoppers(cfg_train: dict[str, Any]) -> tuple[EarlyStopping, EarlyStopping]:
    """Early stopping on ``train.monitor`` and best-checkpoint selection on ``train.checkpoint_metric``."""
    monitor = cfg_train["monitor"]
    stopper = EarlyStopping(cfg_train["patience"], monitor, monitor_mode(monitor, cfg_train["mode"]), cfg_train["min_delta"])
    metric = cfg_train["checkpoint_metric"] or monitor
    mode = monitor_mode(metric, cfg_train["checkpoint_mode"] if cfg_train["checkpoint_metric"] else cfg_train["mode"])
    if metric == monitor and mode == stopper.mode:
        return stopper, stopper
    return stopper, EarlyStopping(None, metric, mode)


def train_fold(
    variant: dict[str, Any],
    prepared: Path,
    splits: dict[str, Any],
    fold: int,
    out_dir: Path,
    init_weights: Path | None = None,
    run: Run | None = None,
) -> dict[str, Any]:
    """Train ``variant`` on fold ``fold``; write the checkpoint, history and summary (and
    the augmentation preview when the variant augments) to ``out_dir`` (names in :mod:`seglab.layout`).

    Resumes from ``out_dir/.resume`` when a previous attempt of the same job left a state there.
    """
    run = run or NullRun()
    study = variant["study"]
    seed = training_seed(variant, splits["repeat"], fold)
    seed_everything(seed, study["deterministic"])
    execution = Execution.for_study(study)
    device = execution.device
    data = PreparedData(prepared)
    train_ids, val_ids = fold_ids(splits, fold)
    cfg_train = variant["train"]

    train_set, augment = build_train_set(data, train_ids, variant["augmentation"], seed, cfg_train)
    val_set = SegmentationDataset(data, val_ids)
    workers = loader_workers(cfg_train["num_workers"], device)
    train_loader = make_loader(train_set, cfg_train["batch_size"], True, seed, workers, device)
    val_loader = make_loader(val_set, cfg_train["batch_size"], False, seed, workers, device)

    model = build_model(variant["model"], 3, output_channels(data.num_classes, variant["model"]["binary_head"]))
    init = initialise(model, variant, init_weights)
    if cfg_train["freeze_encoder"]:
        set_encoder_trainable(model, False)
    execution.prepare(model)
    # Augmentation fills pixels it invents (rotation borders ...) with IGNORE even when the
    # dataset has no ignore label, so training always ignores IGNORE; no real label equals it.
    ignore = data.ignore_index if data.ignore_index is not None else IGNORE
    loss_cfg, class_weights = variant["loss"], None
    if uses_auto_weights(loss_cfg):  # class_weights: auto, from this fold's training images
        class_weights = fold_class_weights(data.manifest, train_ids, data.num_classes)
        loss_cfg = resolve_auto_weights(loss_cfg, class_weights)
        run.log_params({"class_weights_auto": class_weights})
    loss_fn = build_loss(loss_cfg, data.num_classes, ignore)
    optimizer, stopper, selector, schedule, unfreeze_at = build_controls(variant, model)
    metrics = MetricAccumulator(data.num_classes, ignore, data.foreground_classes)
    train_metrics = MetricAccumulator(data.num_classes, ignore, data.foreground_classes)  # train_dice ... per epoch
    params = count_parameters(model)

    run.log_params({
        "fold": fold, "repeat": splits["repeat"], "seed": seed, "device": device.type, "train_images": len(train_ids),
        "train_samples_per_epoch": len(train_set), "val_images": len(val_ids), "loader_workers": workers,
        "precision": str(execution.dtype or torch.float32).removeprefix("torch."), "channels_last": execution.channels_last,
        "transferred_tensors": init["loaded"], **params,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    if augment is not None and variant["augmentation"]["grid_samples"] > 0:
        grid = out_dir / layout.AUGMENTATION_PREVIEW
        grid.write_bytes(augmentation_grid(train_set, variant["augmentation"]["grid_samples"], data.num_classes,
                                           data.fingerprint["mean"], data.fingerprint["std"]))
        run.log_artifact(grid)
    prefix = f"[{variant['variant']} fold {fold}]"
    best_path = out_dir / layout.CHECKPOINT
    key = resume_key({k: v for k, v in variant.items() if k != "tracking"}, data.fingerprint, splits, fold,
                     sha256_file(init_weights) if init_weights is not None and variant["init"] == "colorization" else None)
    store = ResumeStore(out_dir / RESUME_DIR, key)

    def on_epoch_start(epoch: int) -> None:
        # ">=" so that a job resumed after the unfreeze epoch trains its encoder too.
        if unfreeze_at is not None and epoch >= unfreeze_at and not state["unfrozen"]:
            set_encoder_trainable(model, True)
            state["unfrozen"] = True
            print(f"{prefix} epoch {epoch + 1}: encoder unfrozen", flush=True)

    # A patch-trained model is validated on whole images by sliding windows, as evaluation sees them.
    window = inference_window(variant)
    validate = None if window is None else partial(
        validate_whole_images, dataset=val_set, loss_fn=loss_fn, execution=execution, metrics=metrics, window=window,
        overlap=variant["inference"]["overlap"], batch_size=variant["inference"]["batch_size"])

    state = {"unfrozen": False}
    selector, history = fit_resumable(
        model, train_loader, val_loader, loss_fn, optimizer, execution,
        cfg_train["epochs"], cfg_train["patience"], store, run, prefix, metrics, augment,
        stopper=stopper, selector=selector, scheduler=schedule, on_epoch_start=on_epoch_start, validate=validate,
        train_metrics=train_metrics,
    )
    # Summed over epochs, so a resumed job reports its whole training time, not the last attempt's.
    seconds = sum(r["seconds"] for r in history)
    if selector.best_epoch < 0:
        raise ValueError(f"{selector.monitor} was never finite; no checkpoint was saved. Pick another train.checkpoint_metric.")
    best = next(r for r in history if r["epoch"] == selector.best_epoch)
    pd.DataFrame(history).to_csv(out_dir / layout.HISTORY, index=False)
    summary = {
        "variant": variant["variant"], "repeat": splits["repeat"], "fold": fold, "seed": seed, "best_epoch": selector.best_epoch,
        "epochs_run": len(history), "train_seconds": round(seconds, 2), "device": device.type,
        **params, "init": init["init"], "init_tensors_loaded": init["loaded"],
        "init_weights": str(init_weights) if init_weights is not None else None,
        "encoder_frozen": cfg_train["freeze_encoder"], "encoder_unfrozen_at_epoch": unfreeze_at,
        "monitor": stopper.monitor, "checkpoint_metric": selector.monitor,
        "stopped_early": len(history) < cfg_train["epochs"], "train_samples_per_epoch": len(train_set),
        "class_weights": class_weights,
        **{k: v for k, v in best.items() if k.startswith("val_")},
        "checkpoint": str(best_path), "run_id": run.run_id,
    }
    store.publish_best(selector.best_epoch, best_path)
    (out_dir / layout.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    run.log_metrics({f"best_{k}": v for k, v in best.items() if k.startswith("val_")} | {"best_epoch": selector.best_epoch, "train_seconds": seconds})
    run.log_artifact(out_dir / layout.HISTORY)
    store.clear()
    return summary
