"""Resume state of a training job: what to save after every epoch, and where.

A job killed at any moment (SIGKILL, pre-emption, out of memory) and started again must
end with exactly the numbers an uninterrupted run gives on the CPU. So the state
written after each epoch holds everything the next epoch depends on: weights,
optimiser, scheduler, loss scaler, early stopping, the history so far, and every random
generator that is drawn from during training (torch CPU/CUDA, NumPy, Python, the
DataLoader's shuffling generator and the albumentations pipeline's own generators).

The files live in a folder Snakemake does not own (``ResumeStore``): Snakemake deletes
the declared outputs of a failed job, and the resume state must survive exactly that.
Epoch ``e`` is written as ``last-<e>.pt`` (atomic, with a sha256 sidecar) and the two
newest are kept, so a checkpoint that is damaged is reported and the previous one is
used. A new best epoch ``b`` is written as ``best-<b>.pt`` *before* its ``last``; every
``last`` names its best epoch, and a ``best`` is deleted only once no kept ``last``
needs it. So whatever instant a job is killed at, the newest intact ``last`` has its
matching ``best`` on disk.
"""

from __future__ import annotations

import random
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, sidecar
from .stopping import EarlyStopping

FORMAT = 1
KEEP = 2
_LAST = re.compile(r"^last-(\d+)\.pt$")
_BEST = re.compile(r"^best-(\d+)\.pt$")


# --- random generators -------------------------------------------------------------

def _walk_augmentation(augment: Any) -> list[Any]:
    """The Compose and every nested transform: albumentations gives each its own generators."""
    if augment is None:
        return []
    found = [augment]
    for child in getattr(augment, "transforms", []) or []:
        found.extend(_walk_augmentation(child))
    return found


def capture_rng(generators: Iterable[torch.Generator | None], augment: Any = None) -> dict[str, Any]:
    """Every random state the next epoch draws from, as tensors and plain data
    (``weights_only=True`` loads them back without unpickling objects)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(np.random.get_state()),
        "python": _python_state(random.getstate()),
        "generators": [g.get_state() if g is not None else None for g in generators],
        "augment": [
            {"numpy": t.random_generator.bit_generator.state, "python": _python_state(t.py_random.getstate())}
            for t in _walk_augmentation(augment)
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: Iterable[torch.Generator | None], augment: Any = None) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(_numpy_state_back(state["numpy"]))
    random.setstate(_python_state_back(state["python"]))
    for generator, saved in zip(generators, state["generators"], strict=True):
        if generator is not None and saved is not None:
            generator.set_state(saved)
    transforms = _walk_augmentation(augment)
    if len(transforms) != len(state["augment"]):
        raise CheckpointError("the saved augmentation state does not match this augmentation pipeline")
    for transform, saved in zip(transforms, state["augment"]):
        transform.random_generator.bit_generator.state = saved["numpy"]
        transform.py_random.setstate(_python_state_back(saved["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state(s: tuple) -> dict[str, Any]:
    return {"name": s[0], "keys": torch.from_numpy(s[1].astype(np.int64)), "pos": int(s[2]),
            "has_gauss": int(s[3]), "gauss": float(s[4])}


def _numpy_state_back(s: dict[str, Any]) -> tuple:
    return (s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"])


def _python_state(s: tuple) -> list[Any]:
    # (version, tuple of 625 ints, gauss_next): lists/ints/floats load with weights_only.
    return [s[0], list(s[1]), s[2]]


def _python_state_back(s: list[Any]) -> tuple:
    return (s[0], tuple(s[1]), s[2])


# --- what a training job saves -----------------------------------------------------

def training_state(
    *,
    key: str,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stopper: EarlyStopping,
    history: list[dict[str, Any]],
    generators: Iterable[torch.Generator | None],
    augment: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    early_stop: EarlyStopping | None = None,
) -> dict[str, Any]:
    """The resume state after ``epoch`` epochs (1-based count of completed epochs).

    ``stopper`` is the best-checkpoint selector (its best epoch names the best file);
    ``early_stop`` the early-stopping monitor when it is a different one.
    """
    return {
        "format": FORMAT,
        "key": key,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "stopper": asdict(stopper),
        "early_stop": asdict(early_stop) if early_stop is not None else None,
        "history": history,
        "rng": capture_rng(generators, augment),
    }


def restore_training(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generators: Iterable[torch.Generator | None],
    augment: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> tuple[int, EarlyStopping, EarlyStopping | None, list[dict[str, Any]]]:
    """Put a saved state back; return (completed epochs, selector, early stopping or None, history)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], generators, augment)
    early = state.get("early_stop")
    return (int(state["epoch"]), EarlyStopping(**state["stopper"]),
            EarlyStopping(**early) if early else None, list(state["history"]))


# --- where it is kept ----------------------------------------------------------------

class ResumeStore:
    """``last-<epoch>.pt`` (two newest kept) and the ``best-<epoch>.pt`` they refer to.

    ``key`` identifies what is being trained (config, data, split, fold, init weights):
    a saved state with another key belongs to a different job and is not resumed from.
    """

    def __init__(self, folder: Path, key: str, log=None) -> None:
        self.folder = Path(folder)
        self.key = key
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._best_of: dict[int, int] = {}  # last epoch -> its best epoch, where known

    def best_path(self, epoch: int) -> Path:
        return self.folder / f"best-{epoch:04d}.pt"

    def _files(self, pattern: re.Pattern) -> list[tuple[int, Path]]:
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := pattern.match(p.name))]
        return sorted(found, reverse=True)

    def load(self, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
        """The newest intact state of this job, or None (a fresh start).

        A damaged file (no sidecar, sha256 mismatch, unreadable) is reported and skipped,
        never used; a state of another job is reported and ignored.
        """
        lasts = self._files(_LAST)
        for epoch, path in lasts:
            if not sidecar(path).is_file():
                self.log(f"seglab: warning: {path} has no sha256 sidecar (the job stopped while writing it); trying an older checkpoint.")
                continue
            try:
                state = load_checkpoint(path, map_location)
            except CheckpointError as exc:
                self.log(f"seglab: warning: {exc} Not using it; trying an older checkpoint.")
                continue
            if state.get("format") != FORMAT or state.get("key") != self.key:
                self.log(f"seglab: warning: {path} was written for another configuration, data or split; starting afresh.")
                self.clear()
                return None
            best_epoch = state["stopper"]["best_epoch"]
            if not self._best_intact(best_epoch):
                self.log(f"seglab: warning: {self.best_path(best_epoch)}, the best weights {path} refers to, "
                         "is missing or damaged; trying an older checkpoint.")
                continue
            self._best_of[epoch] = best_epoch
            self.log(f"seglab: resuming from {path} (epoch {epoch} done).")
            return state
        if lasts:
            self.log(f"seglab: warning: no intact checkpoint in {self.folder}; starting afresh.")
            self.clear()
        return None

    def _best_intact(self, best_epoch: int) -> bool:
        if best_epoch < 1:
            return True
        try:
            best = load_checkpoint(self.best_path(best_epoch))
        except CheckpointError:
            return False
        return best.get("key") == self.key and best.get("epoch") == best_epoch

    def save_best(self, model: torch.nn.Module, epoch: int) -> None:
        """Called before ``save_last`` of the same epoch."""
        save_checkpoint({"model": model.state_dict(), "epoch": epoch, "key": self.key}, self.best_path(epoch))

    def save_last(self, state: dict[str, Any]) -> None:
        """Write this epoch's state, then drop the lasts beyond ``KEEP`` and the bests no kept last needs."""
        epoch = state["epoch"]
        save_checkpoint(state, self.folder / f"last-{epoch:04d}.pt")
        self._best_of[epoch] = state["stopper"]["best_epoch"]
        lasts = self._files(_LAST)
        for _, old in lasts[KEEP:]:
            self._remove(old)
        kept = [e for e, _ in lasts[:KEEP]]
        if all(e in self._best_of for e in kept):
            needed = {self._best_of[e] for e in kept}
            for best_epoch, path in self._files(_BEST):
                if best_epoch not in needed:
                    self._remove(path)

    @staticmethod
    def _remove(path: Path) -> None:
        sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def publish_best(self, epoch: int, target: Path) -> str:
        """Copy the best weights to the stage's output (verified, atomic, with sidecar)."""
        state = load_checkpoint(self.best_path(epoch))
        return save_checkpoint({"model": state["model"], "epoch": state["epoch"]}, target)

    def clear(self) -> None:
        """Drop every saved state (the job is complete, or the state belongs to another job)."""
        shutil.rmtree(self.folder, ignore_errors=True)
