"""Early stopping and best-epoch selection: which epoch value is better, and when to stop.

Pure Python (no torch), so the stages that only read training histories (aggregate,
report) decide "best epoch" exactly as training did without importing the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``auto`` minimises losses and distances (``*loss``, ``*hd95``) and maximises scores."""
    if mode != "auto":
        return mode
    return "min" if monitor.endswith(("loss", "hd95")) else "max"


@dataclass
class EarlyStopping:
    """Track the best value of ``monitor`` (a key of the epoch record); stop after
    ``patience`` epochs without improving on it by more than ``min_delta``.

    ``mode`` is ``min`` (lower is better) or ``max``; ``patience=None`` never stops, which
    makes the same class the best-checkpoint selector. A NaN value never counts as better.
    """

    patience: int | None
    monitor: str = "val_loss"
    mode: str = "min"
    min_delta: float = 0.0
    best: float = math.nan
    best_epoch: int = -1
    bad_epochs: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode for {self.monitor} must be 'min' or 'max', got {self.mode!r}")
        if math.isnan(self.best):
            self.best = math.inf if self.mode == "min" else -math.inf

    def improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; return True when it is the best so far."""
        if math.isfinite(value) and self.improves(value):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    def update(self, record: dict[str, Any]) -> bool:
        """:meth:`step` with the monitored key of an epoch record."""
        if self.monitor not in record:
            known = ", ".join(k for k in record if k.startswith("val_"))
            raise ValueError(f"monitor {self.monitor!r} is not in the epoch record; use one of: {known}")
        return self.step(float(record[self.monitor]), int(record["epoch"]))

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience
