"""Train one variant on one cross-validation fold, and the colorization pretraining.

These functions wire data, model, loss and engine together and write the stage's
files. Tracking is passed in as a ``Run`` (or ``NullRun``), so the library runs and
tests without MLflow.

Both are resumable: after every epoch the complete training state goes to
``<out_dir>/.resume/`` (see :mod:`seglab.resume`), a folder Snakemake does not treat
as an output and so does not delete when a job fails. Started again, a job continues
from there and, on the CPU, ends with exactly the weights and metrics of an
uninterrupted run. The stage's outputs are written only once training is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint
from .config import config_hash
from .config import ConfigError
from .data.augmented import ArrayDataset, Repeated, augmentation_grid, offline_copies
from .data.colour import ab_to_unit, colorization_refusal, lab_to_rgb, rgb_to_lab, unit_to_ab
from .data.dataset import ColorizationDataset, PreparedData, SeededShuffle, SegmentationDataset
from .data.io import IGNORE
from .data.splits import fold_ids
from .data.transforms import build_augmentation
from .data.io import sha256_file
from .engine import EarlyStopping, Execution, fit, monitor_mode
from .losses import build_loss
from .metrics import MetricAccumulator
from .models import build_model, count_parameters, output_channels
from .models.freeze import set_encoder_trainable
from .models.weights import initialise
from .runtime import seed_everything
from .schedule import build_schedule
from .resume import ResumeStore, restore_training, training_state
from .tracking import NullRun, Run

RESUME_DIR = ".resume"


def loader_workers(setting: int | str, device: torch.device) -> int:
    """``train.num_workers``: a number, or ``auto``: none on the CPU, where the model is the
    bottleneck and workers would take cores from it (benchmarks/RESULTS.md), and on CUDA
    one per core the job was given beyond its own (at least 2, at most 8) so that batches
    are decoded and augmented while the GPU computes."""
    if setting != "auto":
        return int(setting)
    if device.type != "cuda":
        return 0
    return min(8, max(2, torch.get_num_threads() - 1))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, workers: int, device: torch.device) -> DataLoader:
    # Fixed generators make the batch order and the augmentation draws part of the seed,
    # hence reproducible, and their states are what a resumed job restores. The sampler has
    # its own, because a DataLoader draws a seed from its generator whenever an epoch starts
    # its workers (every epoch without workers, once with persistent ones): sharing one
    # would make the batches depend on num_workers, and a loader without a generator would
    # draw from torch's global one and shift the dropout masks.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=SeededShuffle(len(dataset), torch.Generator().manual_seed(seed)) if shuffle else None,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=shuffle and len(dataset) > batch_size,
    )


def loader_generators(loader: DataLoader) -> list[torch.Generator | None]:
    """The random generators that fix a loader's epochs: its sampler's and its own."""
    return [getattr(loader.sampler, "generator", None), loader.generator]


def build_optimizer(cfg: dict[str, Any], params) -> torch.optim.Optimizer:
    name = cfg["name"]
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    raise ValueError(f"optimizer.name: unknown optimiser {name!r}; use adam, adamw or sgd")


def foreground_classes(data: PreparedData) -> list[int]:
    return list(range(1, data.num_classes))


def _epoch_line(prefix: str, record: dict[str, Any], is_best: bool) -> str:
    extra = f" val_dice={record['val_dice']:.4f}" if "val_dice" in record else ""
    best = " *best*" if is_best else ""
    return (f"{prefix} epoch {record['epoch']:3d} train_loss={record['train_loss']:.4f} "
            f"val_loss={record['val_loss']:.4f}{extra} {record['seconds']:.1f}s "
            f"({record['train_images_per_s']:.0f} img/s){best}")


def resume_key(*parts: Any) -> str:
    """What a resume state must match to be continued: config, data, split, fold, init."""
    return config_hash([p for p in parts], length=16)


def fit_resumable(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    loss_fn: Any,
    optimizer: torch.optim.Optimizer,
    execution: Execution,
    epochs: int,
    patience: int,
    store: ResumeStore,
    run: Run,
    prefix: str,
    metrics: MetricAccumulator | None = None,
    augment: Any = None,
    stopper: EarlyStopping | None = None,
    selector: EarlyStopping | None = None,
    scheduler: Any = None,
    on_epoch_start: Any = None,
) -> tuple[EarlyStopping, list[dict[str, Any]]]:
    """``engine.fit`` with a resume state saved after every epoch and restored at start.

    The engine stays free of I/O: the restored state goes in through ``start_epoch``
    and ``stopper``, and the new state comes out through the ``on_epoch`` callback.
    """
    generators = [*loader_generators(train_loader), *loader_generators(val_loader)]
    stopper = stopper or EarlyStopping(patience)
    selector = selector or stopper
    history: list[dict[str, Any]] = []
    start_epoch = 0
    saved = store.load(execution.device)
    if saved is not None:
        start_epoch, selector, early, history = restore_training(
            saved, model=model, optimizer=optimizer, generators=generators, augment=augment,
            scheduler=scheduler, scaler=execution.scaler,
        )
        stopper = early or selector
        # A killed job may have saved an epoch but not logged it: log what the run lacks.
        logged = run.logged_steps("train_loss")
        for record in history:
            if record["epoch"] not in logged:
                run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])

    def on_epoch(record: dict[str, Any], is_best: bool) -> None:
        history.append(record)
        # best before last: every saved last refers to a best already on disk.
        if is_best:
            store.save_best(model, record["epoch"])
        store.save_last(training_state(
            key=store.key, epoch=record["epoch"], model=model, optimizer=optimizer, stopper=selector,
            history=history, generators=generators, augment=augment, scheduler=scheduler, scaler=execution.scaler,
            early_stop=stopper if stopper is not selector else None,
        ))
        run.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=record["epoch"])
        print(_epoch_line(prefix, record, is_best), flush=True)

    selector = fit(model, train_loader, val_loader, loss_fn, optimizer, execution, epochs, patience, on_epoch,
                   metrics, scheduler=scheduler, start_epoch=start_epoch, stopper=stopper, selector=selector,
                   on_epoch_start=on_epoch_start)
    return selector, history


def build_train_set(data: PreparedData, ids: list[str], augmentation: dict[str, Any], seed: int) -> tuple[Dataset, Any]:
    """The training dataset the augmentation block asks for, and its albumentations policy.

    online: each epoch draws fresh augmentations, the set repeated ``multiplier`` times;
    offline: originals plus ``multiplier - 1`` augmented copies drawn once, no further augmentation.
    """
    augment = build_augmentation(augmentation, seed)
    times = augmentation["multiplier"]
    if augmentation["mode"] == "offline":
        if augment is None or times == 1:
            return SegmentationDataset(data, ids), augment
        return ArrayDataset(*offline_copies(data, ids, augment, times), data), augment
    dataset: Dataset = SegmentationDataset(data, ids, augment)
    return (Repeated(dataset, times) if times > 1 else dataset), augment


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
    """Train ``variant`` on fold ``fold``; write best.pt, history.csv, summary.json (and
    augmentation.png when the variant augments) to ``out_dir``.

    Resumes from ``out_dir/.resume`` when a previous attempt of the same job left a state there.
    """
    run = run or NullRun()
    study = variant["study"]
    seed = study["seed"] + fold
    seed_everything(seed, study["deterministic"])
    execution = Execution.for_study(study)
    device = execution.device
    data = PreparedData(prepared)
    train_ids, val_ids = fold_ids(splits, fold)
    cfg_train = variant["train"]

    train_set, augment = build_train_set(data, train_ids, variant["augmentation"], seed)
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
    loss_fn = build_loss(variant["loss"], data.num_classes, ignore)
    # Every parameter goes to the optimiser: frozen ones get no gradient, hence no update,
    # and start moving as soon as the encoder is unfrozen.
    optimizer = build_optimizer(variant["optimizer"], model.parameters())
    metrics = MetricAccumulator(data.num_classes, ignore, foreground_classes(data))
    params = count_parameters(model)
    stopper, selector = build_stoppers(cfg_train)
    schedule = build_schedule(variant["schedule"], variant["optimizer"]["lr"], cfg_train["epochs"], stopper.mode)
    unfreeze_at = cfg_train["unfreeze_at_epoch"] if cfg_train["freeze_encoder"] else None

    run.log_params({
        "fold": fold, "seed": seed, "device": device.type, "train_images": len(train_ids),
        "train_samples_per_epoch": len(train_set), "val_images": len(val_ids), "loader_workers": workers,
        "precision": str(execution.dtype or torch.float32).removeprefix("torch."), "channels_last": execution.channels_last,
        "transferred_tensors": init["loaded"], **params,
    })
    out_dir.mkdir(parents=True, exist_ok=True)
    if augment is not None and variant["augmentation"]["grid_samples"] > 0:
        grid = out_dir / "augmentation.png"
        grid.write_bytes(augmentation_grid(train_set, variant["augmentation"]["grid_samples"], data.num_classes,
                                           data.fingerprint["mean"], data.fingerprint["std"]))
        run.log_artifact(grid)
    prefix = f"[{variant['variant']} fold {fold}]"
    best_path = out_dir / "best.pt"
    key = resume_key({k: v for k, v in variant.items() if k != "tracking"}, data.fingerprint, splits, fold,
                     sha256_file(init_weights) if init_weights is not None and variant["init"] == "colorization" else None)
    store = ResumeStore(out_dir / RESUME_DIR, key)

    def on_epoch_start(epoch: int) -> None:
        # ">=" so that a job resumed after the unfreeze epoch trains its encoder too.
        if unfreeze_at is not None and epoch >= unfreeze_at and not state["unfrozen"]:
            set_encoder_trainable(model, True)
            state["unfrozen"] = True
            print(f"{prefix} epoch {epoch + 1}: encoder unfrozen", flush=True)

    state = {"unfrozen": False}
    selector, history = fit_resumable(
        model, train_loader, val_loader, loss_fn, optimizer, execution,
        cfg_train["epochs"], cfg_train["patience"], store, run, prefix, metrics, augment,
        stopper=stopper, selector=selector, scheduler=schedule, on_epoch_start=on_epoch_start,
    )
    # Summed over epochs, so a resumed job reports its whole training time, not the last attempt's.
    seconds = sum(r["seconds"] for r in history)
    if selector.best_epoch < 0:
        raise ValueError(f"{selector.monitor} was never finite; no checkpoint was saved. Pick another train.checkpoint_metric.")
    best = next(r for r in history if r["epoch"] == selector.best_epoch)
    pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)
    summary = {
        "variant": variant["variant"], "fold": fold, "best_epoch": selector.best_epoch,
        "epochs_run": len(history), "train_seconds": round(seconds, 2), "device": device.type,
        **params, "init": init["init"], "init_tensors_loaded": init["loaded"],
        "encoder_frozen": cfg_train["freeze_encoder"], "encoder_unfrozen_at_epoch": unfreeze_at,
        "monitor": stopper.monitor, "checkpoint_metric": selector.monitor,
        "stopped_early": len(history) < cfg_train["epochs"], "train_samples_per_epoch": len(train_set),
        **{k: v for k, v in best.items() if k.startswith("val_")},
        "checkpoint": str(best_path), "run_id": run.run_id,
    }
    store.publish_best(selector.best_epoch, best_path)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.log_metrics({f"best_{k}": v for k, v in best.items() if k.startswith("val_")} | {"best_epoch": selector.best_epoch, "train_seconds": seconds})
    run.log_artifact(out_dir / "history.csv")
    store.clear()
    return summary


def pretrain_colorization(
    cfg: dict[str, Any],
    prepared: Path,
    splits: dict[str, Any],
    out_dir: Path,
    run: Run | None = None,
) -> dict[str, Any]:
    """Colorization pretraining: the variant's architecture learns colour from grey (MSE), on
    training images only (never the test split). ``pretrain.target`` rgb predicts RGB in
    [0, 1] with a 3-channel head; lab predicts CIELAB a, b (scaled to [0, 1]) with a
    2-channel head. A grey dataset is refused with a ConfigError: there is no colour to learn."""
    run = run or NullRun()
    study, pre = cfg["study"], cfg["pretrain"]
    target = pre.get("target", "rgb")
    refusal = colorization_refusal(Path(prepared) / "images.npy")
    if refusal:
        raise ConfigError(refusal)
    seed_everything(study["seed"], study["deterministic"])
    execution = Execution.for_study(study)
    device = execution.device
    data = PreparedData(prepared)
    ids = sorted(i for fold in splits["folds"] for i in fold)
    n_val = max(1, int(round(len(ids) * pre["val_fraction"])))
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(study["seed"])).tolist()
    val_ids = [ids[i] for i in order[:n_val]]
    train_ids = [ids[i] for i in order[n_val:]]
    flips = build_augmentation({"preset": "flip"}, study["seed"])
    workers = loader_workers("auto", device)
    train_loader = make_loader(ColorizationDataset(data, train_ids, flips), pre["batch_size"], True, study["seed"], workers, device)
    val_set = ColorizationDataset(data, val_ids)
    val_loader = make_loader(val_set, pre["batch_size"], False, study["seed"], workers, device)

    model = execution.prepare(build_model(cfg["model"], 3, 3 if target == "rgb" else 2))
    mse = nn.MSELoss()

    def loss_fn(output: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        wanted = rgb if target == "rgb" else ab_to_unit(rgb_to_lab(rgb))
        return mse(torch.sigmoid(output), wanted)

    optimizer = torch.optim.Adam(model.parameters(), lr=pre["lr"])
    run.log_params({"train_images": len(train_ids), "val_images": len(val_ids), **{f"pretrain.{k}": v for k, v in pre.items()},
                    **{f"model.{k}": v for k, v in cfg["model"].items()}})
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / "weights.pt"
    key = resume_key(cfg["pretrain"], cfg["model"], cfg["study"]["seed"], data.fingerprint, train_ids, val_ids)
    store = ResumeStore(out_dir / RESUME_DIR, key)
    stopper, history = fit_resumable(
        model, train_loader, val_loader, loss_fn, optimizer, execution,
        pre["epochs"], pre["epochs"], store, run, f"[colorization {target}]", augment=flips,
    )
    store.publish_best(stopper.best_epoch, weights)
    pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)

    model.load_state_dict(load_checkpoint(weights, device)["model"])
    samples = colorization_samples(model, val_set, device, n=min(6, len(val_set)), target=target)
    from .report import figures  # matplotlib (~0.5 s) only for the pretraining job's figure

    (out_dir / "samples.png").write_bytes(figures.colorization_grid(samples))
    summary = {"best_epoch": stopper.best_epoch, "best_val_mse": stopper.best, "target": target,
               "train_images": len(train_ids), "val_images": len(val_ids), "run_id": run.run_id}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.log_metrics({"best_val_mse": stopper.best})
    run.log_artifact(out_dir / "samples.png")
    run.log_artifact(out_dir / "history.csv")
    store.clear()
    return summary


@torch.no_grad()
def colorization_samples(model: nn.Module, dataset: ColorizationDataset, device: torch.device, n: int,
                         target: str = "rgb") -> dict[str, np.ndarray]:
    """Grey input, recoloured output and true colour of ``n`` validation images, as uint8 (n,H,W,3).

    With the lab target the recoloured image is the true lightness with the predicted a, b.
    """
    model.eval()
    greys, preds, trues = [], [], []
    for i in range(n):
        grey, rgb = dataset[i]
        out = torch.sigmoid(model(grey[None].to(device))).cpu()[0]
        if target == "lab":
            lightness = rgb_to_lab(rgb)[:1]
            out = lab_to_rgb(torch.cat([lightness, unit_to_ab(out)]))
        grey01 = (grey[0] * dataset.grey_std + dataset.grey_mean).clamp(0, 1)
        greys.append(grey01[None].expand(3, -1, -1))
        preds.append(out)
        trues.append(rgb)

    def as_uint8(items: list[torch.Tensor]) -> torch.Tensor:
        return (torch.stack(items).permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8)

    return {"grey": as_uint8(greys).numpy(), "predicted": as_uint8(preds).numpy(), "true": as_uint8(trues).numpy()}
