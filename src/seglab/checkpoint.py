"""Checkpoints that survive a crash and cannot run code when loaded.

Writes go to a temporary file in the same folder, are flushed to disk, then renamed
over the target (atomic on POSIX), and a ``<file>.sha256`` sidecar records the digest.
Loading verifies the digest and uses ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.io import sha256_file

if TYPE_CHECKING:
    import torch

# torch is imported where a checkpoint is written or read, not here: every stage's command
# imports CheckpointError, and the stages that never touch weights (data, summaries, report)
# should not pay torch's ~1.5 s import per job.


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not match its sha256 sidecar."""


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(obj: dict[str, Any], path: Path) -> str:
    """Atomically write ``obj`` with torch.save and its sha256 sidecar; return the digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import torch

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        side_tmp = sidecar(tmp)
        side_tmp.write_text(f"{digest}  {path.name}\n")
        tmp.replace(path)
        side_tmp.replace(sidecar(path))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        sidecar(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"{path}: could not write the checkpoint ({exc}). Free disk space and re-run; earlier checkpoints are intact.") from None
    return digest


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load after checking the sha256 sidecar; never unpickles arbitrary objects."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found. Run the stage that writes it first.")
    side = sidecar(path)
    if side.is_file():
        expected = side.read_text().split()[0]
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointError(f"{path}: sha256 {actual[:12]}… does not match its sidecar ({expected[:12]}…); the file is corrupt.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({exc}).") from None
