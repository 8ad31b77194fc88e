"""Learning-rate schedules by name, stepped once per epoch: none, cosine, poly, plateau,
each with an optional linear warm-up.

The schedule is a pure function of the epoch (and, for plateau, of the monitored values
seen so far), so the learning rate of any epoch can be tested without training anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

SCHEDULES = ("none", "cosine", "poly", "plateau")


@dataclass
class EpochSchedule:
    """Sets every param group's learning rate at the start of each epoch.

    * warm-up: epochs ``0..warmup-1`` ramp linearly, ``lr * (e + 1) / (warmup + 1)``;
    * ``cosine``: ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2``, ``t`` from 0 to 1 over
      the epochs after warm-up;
    * ``poly``: ``min_lr + (lr - min_lr) * (1 - t) ** power``;
    * ``plateau``: multiply by ``factor`` after ``patience`` epochs without improvement of the
      monitored value (by more than ``min_delta`` in direction ``mode``), not below ``min_lr``;
    * ``none``: constant after warm-up.
    """

    name: str
    base_lr: float
    epochs: int
    warmup_epochs: int = 0
    min_lr: float = 0.0
    power: float = 0.9
    factor: float = 0.1
    patience: int = 3
    mode: str = "min"
    min_delta: float = 0.0
    _scale: float = field(default=1.0, init=False)
    _best: float = field(default=math.nan, init=False)
    _bad: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"schedule.name: unknown schedule {self.name!r}; use one of {', '.join(SCHEDULES)}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"schedule mode must be 'min' or 'max', got {self.mode!r}")

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 0-based ``epoch`` (plateau: given the values seen so far)."""
        if epoch < self.warmup_epochs:
            return self.base_lr * (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.epochs - self.warmup_epochs - 1)
        t = min(1.0, (epoch - self.warmup_epochs) / span)
        if self.name == "cosine":
            return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t)) / 2
        if self.name == "poly":
            return self.min_lr + (self.base_lr - self.min_lr) * (1 - t) ** self.power
        if self.name == "plateau":
            return max(self.min_lr, self.base_lr * self._scale)
        return self.base_lr

    def observe(self, epoch: int, value: float) -> None:
        """Feed the monitored value at the end of 0-based ``epoch`` (used by plateau only)."""
        if self.name != "plateau" or epoch < self.warmup_epochs or not math.isfinite(value):
            return
        better = math.isnan(self._best) or (
            value < self._best - self.min_delta if self.mode == "min" else value > self._best + self.min_delta
        )
        if better:
            self._best, self._bad = value, 0
            return
        self._bad += 1
        if self._bad >= self.patience:
            self._scale *= self.factor
            self._bad = 0

    def state_dict(self) -> dict[str, float]:
        """The plateau bookkeeping, so a resumed job continues with the same learning rate."""
        return {"scale": self._scale, "best": self._best, "bad": self._bad}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._scale, self._best, self._bad = state["scale"], state["best"], int(state["bad"])

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        lr = self.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr


def build_schedule(cfg: dict[str, Any], optimizer: torch.optim.Optimizer, epochs: int, mode: str) -> EpochSchedule:
    """From a variant's ``schedule`` block; ``mode`` is the direction of the plateau monitor.

    The peak rate is the one ``optimizer`` was built with (``optimizer.lr`` is read there
    only), as torch's own schedulers take their base rates from the optimiser.
    """
    return EpochSchedule(
        name=cfg["name"], base_lr=optimizer.param_groups[0]["lr"], epochs=epochs, warmup_epochs=cfg["warmup_epochs"],
        min_lr=cfg["min_lr"], power=cfg["power"], factor=cfg["factor"], patience=cfg["patience"], mode=mode,
    )
