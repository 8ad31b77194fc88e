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
from .models.freeze import hold_frozen_batchnorm
from .runtime import select_device
from .stopping import EarlyStopping


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Execution:
    """How tensors run on the device: autocast dtype, loss scaler and memory format.

    ``auto`` (the default of ``study.precision`` and ``study.channels_last``) picks what is
    fastest where it was measured (``benchmarks/RESULTS.md``): on CUDA bf16 autocast (fp16
    with loss scaling where bf16 is missing) and channels-last tensors, which tensor cores
    want; on the CPU float32, and channels-last too (up to 10 % faster convolutions there).
    """

    device: torch.device
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = field(default=None, repr=False)
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: torch.device, precision: str = "auto", channels_last: bool | str = "auto") -> "Execution":
        if precision not in PRECISIONS:
            raise ValueError(f"study.precision: unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if precision == "auto":
            precision = "fp32" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        layout = True if channels_last == "auto" else bool(channels_last)
        if precision == "fp32":
            return cls(device, None, None, layout)
        if precision == "bf16":
            return cls(device, torch.bfloat16, None, layout)  # bf16 needs no loss scaling
        return cls(device, torch.float16, torch.amp.GradScaler(device.type), layout)

    @classmethod
    def for_study(cls, study: dict[str, Any]) -> "Execution":
        """From a validated study block: ``device``, ``precision`` and ``channels_last``."""
        device = select_device(study["device"])
        return cls.for_device(device, study["precision"], study["channels_last"])

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def prepare(self, model: nn.Module) -> nn.Module:
        """The model on the device, in this memory format."""
        return model.to(self.device, memory_format=self.memory_format)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the model's memory format (asynchronous from pinned memory)."""
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)


def run_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    execution: Execution,
    optimizer: torch.optim.Optimizer | None = None,
    metrics: MetricAccumulator | None = None,
) -> dict[str, float]:
    """One pass over ``batches``: trains when an optimizer is given, else evaluates.

    Returns the mean loss per image, images/s and, when ``metrics`` is given, its summary.
    """
    training = optimizer is not None
    model.train(training)
    if training:
        hold_frozen_batchnorm(model)  # a frozen encoder keeps its batch-norm statistics too
    device = execution.device
    total = torch.zeros((), device=device)
    count = 0
    start = time.perf_counter()
    with torch.set_grad_enabled(training):
        for images, targets in batches:
            images = execution.inputs(images)
            targets = targets.to(device, non_blocking=True)
            with execution.autocast():
                outputs = model(images)
                loss = loss_fn(outputs.float(), targets)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if execution.scaler is not None:
                    execution.scaler.scale(loss).backward()
                    execution.scaler.step(optimizer)
                    execution.scaler.update()
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
    execution: Execution,
    epochs: int,
    patience: int | None,
    on_epoch: Callable[[dict[str, Any], bool], None],
    metrics: MetricAccumulator | None = None,
    scheduler: Any = None,
    start_epoch: int = 0,
    stopper: EarlyStopping | None = None,
    selector: EarlyStopping | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    train_metrics: MetricAccumulator | None = None,
) -> EarlyStopping:
    """Train until ``epochs`` or until ``stopper`` (default: val_loss, ``patience``) says stop.

    ``on_epoch(record, is_best)`` receives ``{"epoch", "train_loss", "val_loss",
    "val_<metric>", "lr", "seconds", "train_images_per_s"}`` after every epoch; ``is_best``
    comes from ``selector`` (default: the stopper's monitor), which is returned. It is
    where the caller saves its resume state. To resume, pass the number of completed
    epochs as ``start_epoch`` and the restored ``stopper`` (with model, optimiser,
    scheduler and random generators already restored by the caller): the loop then
    continues exactly where it stopped, and does nothing if that run had stopped early.
    ``scheduler`` (an :class:`~seglab.schedule.EpochSchedule`) sets the learning rate at the
    start of each epoch and is fed the stopper's monitored value at its end.
    ``on_epoch_start(epoch)`` (0-based) runs before each epoch, e.g. to unfreeze an encoder.
    ``validate(model)``, when given, replaces the validation pass over ``val_batches`` (e.g.
    whole images by sliding windows for a patch-trained model) and returns the same keys.
    ``train_metrics``, when given, scores the training batches' predictions as they are made
    (the model changing within the epoch, as Keras reports it): ``train_<metric>`` in the record.
    """
    stopper = stopper or EarlyStopping(patience)
    selector = selector or stopper
    for epoch in range(start_epoch, epochs):
        if stopper.should_stop:
            break
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        if scheduler is not None:
            scheduler.apply(optimizer, epoch)
        start = time.perf_counter()
        train = run_epoch(model, train_batches, loss_fn, execution, optimizer, train_metrics)
        val = validate(model) if validate is not None else run_epoch(model, val_batches, loss_fn, execution, None, metrics)
        if not math.isfinite(train["loss"]):
            raise FloatingPointError(
                f"training loss became {train['loss']} at epoch {epoch + 1}; lower optimizer.lr"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": train["loss"],
            "val_loss": val["loss"],
            **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "images_per_s")},
            **{f"train_{k}": v for k, v in train.items() if k not in ("loss", "images_per_s")},
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - start,
            "train_images_per_s": train["images_per_s"],
        }
        is_best = selector.update(record)
        if stopper is not selector:
            stopper.update(record)
        if scheduler is not None:
            scheduler.observe(epoch, float(record[stopper.monitor]))
        on_epoch(record, is_best)
        if stopper.should_stop:
            break
    return selector
