"""Device choice, threads and seeding: everything that makes a run reproducible."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def select_device(preference: str) -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    if preference == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if preference == "cuda":
        raise RuntimeError("study.device is 'cuda' but no CUDA device is visible. Use device: auto or cpu.")
    return torch.device("cpu")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch. The CPU kernels used here are deterministic already;
    ``deterministic`` also asks CUDA for deterministic algorithms (warning where none exist)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def set_threads(threads: int | None) -> None:
    """Use the cores Snakemake gave the job, no more, so parallel jobs do not oversubscribe."""
    if threads:
        torch.set_num_threads(max(1, threads))
