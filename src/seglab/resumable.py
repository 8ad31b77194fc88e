"""``engine.fit`` made resumable: the training loop both training stages share.

After every epoch the complete training state goes to ``<out_dir>/.resume/`` (see
:mod:`seglab.resume`), a folder Snakemake does not treat as an output and so does not
delete when a job fails. Started again, a job continues from there and, on the CPU, ends
with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import config_hash
from .data.loaders import loader_generators
from .engine import Execution, fit
from .stopping import EarlyStopping
from .metrics import MetricAccumulator
from .resume import ResumeStore, restore_training, training_state
from .tracking import Run

RESUME_DIR = ".resume"


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
    validate: Any = None,
    train_metrics: MetricAccumulator | None = None,
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
                   on_epoch_start=on_epoch_start, validate=validate, train_metrics=train_metrics)
    return selector, history
