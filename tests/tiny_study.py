"""A tiny study for tests that train: the built-in generator, 32 px, a 4-channel U-Net.

``prepare`` runs the real data stages (download -> verify -> preprocess -> split)
through the ``seglab`` command line and returns the paths a training job needs.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from seglab.cli import main
from seglab.config import stage_configs, validate

SRC = Path(__file__).resolve().parents[1] / "src"
PROJECT = Path(__file__).resolve().parents[1]

TINY: dict[str, Any] = {
    "study": {"name": "tiny", "output_dir": "results", "seed": 7, "device": "cpu"},
    "dataset": {"name": "tiny", "source": "builtin", "builtin": {"kind": "lesions", "count": 24, "size": 32, "groups": 6}},
    "preprocess": {"size": 32},
    "split": {"folds": 2, "test_fraction": 0.2},
    "pretrain": {"epochs": 2, "batch_size": 4},
    "tracking": {"enabled": False},
    "defaults": {
        "model": {"name": "unet", "base": 4, "depth": 2, "dropout": 0.1},
        "augmentation": {"preset": "light"},
        "train": {"epochs": 4, "batch_size": 4, "patience": 10},
    },
    "variants": {"unet-bce": {}},
}


def tiny_config(**overrides: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(TINY)
    for section, value in overrides.items():
        cfg[section] = {**cfg.get(section, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_stage_configs(root: Path, raw: dict[str, Any]) -> Path:
    cfg = validate(copy.deepcopy(raw))
    stage = root / "config"
    for rel, content in stage_configs(cfg).items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(json.dumps(content, indent=2, sort_keys=True))
    return stage


def prepare(root: Path, raw: dict[str, Any] | None = None) -> dict[str, Path]:
    """Run the data stages of ``raw`` (default: TINY) under ``root``."""
    stage = write_stage_configs(root, raw or TINY)
    paths = {"stage": stage, "raw": root / "raw", "verify": root / "verify.json",
             "prepared": root / "prepared", "splits": root / "splits.json"}
    assert main(["download", "--config", str(stage / "dataset.json"), "--out", str(paths["raw"])]) == 0
    assert main(["verify", "--config", str(stage / "prepare.json"), "--raw", str(paths["raw"]), "--out", str(paths["verify"])]) == 0
    assert main(["preprocess", "--config", str(stage / "prepare.json"), "--verify", str(paths["verify"]), "--out", str(paths["prepared"])]) == 0
    assert main(["split", "--config", str(stage / "split.json"), "--prepared", str(paths["prepared"]),
                 "--verify", str(paths["verify"]), "--out", str(paths["splits"])]) == 0
    return paths


def train_args(paths: dict[str, Path], out: Path, variant: str = "unet-bce", fold: int = 0) -> list[str]:
    return ["train", "--config", str(paths["stage"] / "variants" / f"{variant}.json"), "--prepared", str(paths["prepared"]),
            "--splits", str(paths["splits"]), "--fold", str(fold), "--out", str(out), "--threads", "1"]


def seglab_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **extra}
    return env


def seglab_process(args: list[str], cwd: Path, **popen: Any) -> subprocess.Popen:
    """``python -m seglab ARGS`` in a child process (the same interpreter, this tree's seglab)."""
    return subprocess.Popen([sys.executable, "-m", "seglab", *args], cwd=cwd, env=seglab_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_seglab(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglab", *args], cwd=cwd, env=seglab_env(**env),
                          capture_output=True, text=True, timeout=600)
