"""The training engine: epochs, mixed precision, early stopping. No I/O, no tracking.

Whatever must happen at the end of an epoch (logging, checkpoints, progress lines) is
the caller's ``on_epoch`` callback, so this loop stays short and testable. Losses are
accumulated on the device and read once per epoch: no host-device sync per step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .metrics import MetricAccumulator


@dataclass
class EarlyStopping:
    """Stop after ``patience`` epochs without a better monitored value (lower is better)."""

    patience: int
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; return True when it is the best so far."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


@dataclass
class Precision:
    """Autocast settings: bf16/fp16 on CUDA, full precision on the CPU."""

    device: torch.device
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)

    @classmethod
    def for_device(cls, device: torch.device) -> "Precision":
        if device.type != "cuda":
            return cls(device)
        if torch.cuda.is_bf16_supported():
            return cls(device, torch.bfloat16)  # bf16 needs no loss scaling
        return cls(device, torch.float16, torch.amp.GradScaler("cuda"))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)


def run_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    precision: Precision,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: MetricAccumulator | None = None,
) -> dict[str, float]:
    """One pass over ``batches``: trains when an optimizer is given, else evaluates.

    Returns the mean loss per image, images/s and, when ``metrics`` is given, its summary.
    """
    training = optimizer is not None
    model.train(training)
    device = precision.device
    total = torch.zeros((), device=device)
    count = 0
    start = time.perf_counter()
    with torch.set_grad_enabled(training):
        for images, targets in batches:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with precision.autocast():
                outputs = model(images)
                loss = loss_fn(outputs.float(), targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if precision.scaler is not None:
                    precision.scaler.scale(loss).backward()
                    precision.scaler.step(optimizer)
                    precision.scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            total += loss.detach() * images.shape[0]
            count += images.shape[0]
            if metrics is not None:
                metrics.update(outputs.detach().float(), targets)
    if count == 0:
        raise ValueError("an epoch saw no images: the split left this set empty")
    result = {"loss": float(total / count), "images_per_s": count / max(time.perf_counter() - start, 1e-9)}
    if metrics is not None:
        result.update(metrics.compute())
        metrics.reset()
    return result


def fit(
    model: nn.Module,
    train_batches: Iterable,
    val_batches: Iterable,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    precision: Precision,
    epochs: int,
    patience: int,
    on_epoch: Callable[[dict[str, Any], bool], None],
    metrics: MetricAccumulator | None = None,
    scheduler: Any = None,
    start_epoch: int = 0,
    stopper: EarlyStopping | None = None,
) -> EarlyStopping:
    """Train until ``epochs`` or early stopping on validation loss.

    ``on_epoch(record, is_best)`` receives ``{"epoch", "train_loss", "val_loss",
    "val_<metric>", "lr", "seconds", "train_images_per_s"}`` after every epoch; it is
    where the caller saves its resume state. To resume, pass the number of completed
    epochs as ``start_epoch`` and the restored ``stopper`` (with model, optimiser,
    scheduler and random generators already restored by the caller): the loop then
    continues exactly where it stopped, and does nothing if that run had stopped early.
    """
    stopper = stopper or EarlyStopping(patience)
    for epoch in range(start_epoch, epochs):
        if stopper.should_stop:
            break
        start = time.perf_counter()
        train = run_epoch(model, train_batches, loss_fn, precision, optimizer)
        val = run_epoch(model, val_batches, loss_fn, precision, None, metrics)
        if not math.isfinite(train["loss"]):
            raise FloatingPointError(
                f"training loss became {train['loss']} at epoch {epoch + 1}; lower optimizer.lr"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "val_loss": val["loss"],
            **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "images_per_s")},
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
            "train_images_per_s": train["images_per_s"],
        }
        is_best = stopper.step(val["loss"], epoch + 1)
        if scheduler is not None:
            scheduler.step()
        on_epoch(record, is_best)
        if stopper.should_stop:
            break
    return stopper
