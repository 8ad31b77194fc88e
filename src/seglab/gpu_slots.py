"""One GPU per training job on a multi-GPU machine.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say
*which* GPU a job should use. Each job therefore takes the first free slot: an
exclusive lock file per device under ``.seglab/gpu-slots/``. The lock is held for the
life of the process (the OS releases it if the job is killed), and the job pins
``CUDA_VISIBLE_DEVICES`` to its slot before CUDA is initialised.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

DEFAULT_DIR = Path(".seglab") / "gpu-slots"


@dataclass
class Slot:
    index: int
    lock: FileLock

    def release(self) -> None:
        self.lock.release()


def acquire_slot(slots: int, lock_dir: Path = DEFAULT_DIR, wait_s: float = 3600.0, poll_s: float = 0.5) -> Slot:
    """Lock the first free slot of ``slots``; wait for one to free up (at most ``wait_s``)."""
    if slots < 1:
        raise ValueError("slots must be at least 1")
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for index in range(slots):
            lock = FileLock(str(lock_dir / f"gpu{index}.lock"))
            try:
                lock.acquire(timeout=0)
                return Slot(index, lock)
            except Timeout:
                continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {slots} in {lock_dir} after {wait_s:.0f}s")
        time.sleep(poll_s)


def pin_visible_gpu(lock_dir: Path = DEFAULT_DIR) -> Slot | None:
    """On a machine with several visible GPUs, take a slot and make it the only visible device.

    Must run before torch initialises CUDA. Returns None (and changes nothing) with fewer
    than two GPUs, when the user already chose devices with CUDA_VISIBLE_DEVICES, or in a
    SLURM job: there the scheduler owns the devices, and lock files in a project folder
    that several nodes share would make jobs on different machines wait for each other.
    """
    if "CUDA_VISIBLE_DEVICES" in os.environ or "SLURM_JOB_ID" in os.environ:
        return None
    count = _gpu_count()
    if count < 2:
        return None
    slot = acquire_slot(count, lock_dir)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(slot.index)
    return slot


def _gpu_count() -> int:
    """Count GPUs without initialising CUDA in this process (nvidia-smi, when present)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0
