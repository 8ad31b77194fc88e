"""Shared fixtures: the repository root, a tiny study config and the shared datasets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


def tiny_study(output_dir: str = "results", **overrides) -> dict:
    """A study small enough to run the whole workflow in about a minute on 2 CPU cores."""
    cfg = {
        "study": {"name": "tiny", "output_dir": output_dir, "seed": 1, "device": "cpu"},
        "dataset": {"name": "tiny-lesions", "source": "builtin",
                    "builtin": {"kind": "lesions", "count": 30, "size": 40, "groups": 6, "seed": 0}},
        "preprocess": {"size": 32},
        "split": {"folds": 2, "test_fraction": 0.2},
        "pretrain": {"epochs": 1, "batch_size": 8},
        "defaults": {"model": {"base": 4, "depth": 2}, "train": {"epochs": 2, "batch_size": 8, "patience": 2}},
        "variants": {"scratch": {}, "colorized": {"init": "colorization"}},
    }
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def workflow_env(tmp: Path) -> dict[str, str]:
    """Environment for a real Snakemake run in ``tmp``: this tree's seglab, a private MLflow store."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def snakemake_cmd(tmp: Path, configfile: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp),
            "--configfile", str(configfile), "--cores", "2", "--resources", "gpu=1", *extra]


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"{SHARED_DATASETS} is absent: the shared datasets sit beside the repository in CI")
    return SHARED_DATASETS
