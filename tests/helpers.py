"""The test harness: the repository, the environment of a real run, the one way to run
Snakemake, the one tiny study, and copying a finished study.

Tests import what they need from here (``tests.conftest`` re-exports the common names);
no test module imports helpers from another test module.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
VENV_BIN = Path(sys.executable).parent


# ------------------------------------------------------------------ the tiny study

def tiny_study(output_dir: str = "results", **overrides: Any) -> dict[str, Any]:
    """A study small enough to run the whole workflow in about a minute on 2 CPU cores.

    Each keyword replaces one top-level section.
    """
    cfg: dict[str, Any] = {
        "study": {"name": "tiny", "output_dir": output_dir, "seed": 1, "device": "cpu"},
        "dataset": {"name": "tiny-lesions", "source": "builtin",
                    "builtin": {"kind": "lesions", "count": 30, "size": 40, "groups": 6, "seed": 0}},
        "preprocess": {"size": 32},
        "split": {"folds": 2, "test_fraction": 0.2},
        "pretrain": {"epochs": 1, "batch_size": 8},
        "defaults": {"model": {"base": 4, "depth": 2}, "train": {"epochs": 2, "batch_size": 8, "patience": 2}},
        "variants": {"scratch": {}, "colorized": {"init": "colorization"}},
    }
    cfg.update(overrides)
    return cfg


# The tiny study as tests that run single stages in-process use it: one variant, no tracking,
# 32 px images generated at their final size, and enough epochs to interrupt and resume.
TINY: dict[str, Any] = tiny_study(
    study={"name": "tiny", "output_dir": "results", "seed": 7, "device": "cpu"},
    dataset={"name": "tiny", "source": "builtin", "builtin": {"kind": "lesions", "count": 24, "size": 32, "groups": 6}},
    pretrain={"epochs": 2, "batch_size": 4},
    tracking={"enabled": False},
    defaults={
        "model": {"name": "unet", "base": 4, "depth": 2, "dropout": 0.1},
        "augmentation": {"preset": "light"},
        "train": {"epochs": 4, "batch_size": 4, "patience": 10},
    },
    variants={"unet-bce": {}},
)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """:data:`TINY` with sections changed: a dict is merged into its section, anything else replaces it."""
    cfg = copy.deepcopy(TINY)
    for section, value in overrides.items():
        cfg[section] = {**cfg.get(section, {}), **value} if isinstance(value, dict) else value
    return cfg


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ------------------------------------------------------------------ environment and commands

def seglab_env(**extra: str) -> dict[str, str]:
    """This process's environment with this tree's seglab first on PYTHONPATH and the venv's tools on PATH.

    HF_HUB_OFFLINE: nothing may download at test time (published weights come from the cache or not at all).
    MLFLOW_TRACKING_URI only when a test passes it: a value from the shell (a developer's server), or one
    that in-process MLflow code exported into this process, must not decide where a test's runs go.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.update(extra)
    return env


def workflow_env(tmp: Path) -> dict[str, str]:
    """Environment for a real Snakemake run in ``tmp``: this tree's seglab, a private MLflow store."""
    return seglab_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")


def snakemake_cmd(tmp: Path, configfile: Path | None, *extra: str, cores: int = 2, gpus: int = 1) -> list[str]:
    """The command line of a real Snakemake run of this tree's workflow in ``tmp``.

    ``configfile`` None: Snakemake reads ``tmp/config.yaml``, as ``make run`` does.
    """
    config = ["--configfile", str(configfile)] if configfile is not None else []
    # ``extra`` (targets, flags) before --configfile and --resources: both take several values
    # and would swallow a target written after them.
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp),
            *extra, *config, "--cores", str(cores), "--resources", f"gpu={gpus}"]


def run_snakemake(tmp: Path, configfile: Path | None, *extra: str, env: dict[str, str] | None = None,
                  timeout: float = 1200, **options: int) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_cmd` to the end in ``tmp`` (default environment: :func:`workflow_env`)."""
    return subprocess.run(snakemake_cmd(tmp, configfile, *extra, **options), cwd=tmp,
                          env=workflow_env(tmp) if env is None else env, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake run or dry run, as {rule: count}."""
    table = output[output.index("Job stats"):].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def seglab_process(args: list[str], cwd: Path, **popen: Any) -> subprocess.Popen:
    """``python -m seglab ARGS`` in a child process (the same interpreter, this tree's seglab)."""
    return subprocess.Popen([sys.executable, "-m", "seglab", *args], cwd=cwd, env=seglab_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def run_seglab(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglab", *args], cwd=cwd, env=seglab_env(**env),
                          capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------ stages in-process

def write_stage_configs(root: Path, raw: dict[str, Any]) -> Path:
    from seglab.config import stage_configs, validate

    cfg = validate(copy.deepcopy(raw))
    stage = root / "config"
    for rel, content in stage_configs(cfg).items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(json.dumps(content, indent=2, sort_keys=True))
    return stage


def prepare(root: Path, raw: dict[str, Any] | None = None) -> dict[str, Path]:
    """Run the data stages of ``raw`` (default: TINY) under ``root`` through the ``seglab`` command line."""
    from seglab.cli import main

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


# ------------------------------------------------------------------ a finished study, copied

def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a finished study or project (results, mlflow.db, .snakemake, .git, .dvc) to ``dst``.

    ``copy2`` keeps every file's modification time, so Snakemake sees the copy up to date as it
    saw the original; links are copied as links. Far cheaper than running the study again.
    """
    shutil.copytree(src, dst, symlinks=True, copy_function=shutil.copy2)
    return dst


# ------------------------------------------------------------------ a git + DVC project

# What a project needs to run the study through DVC: the workflow, the code, the DVC pipeline.
PROJECT_FILES = ["Snakefile", "workflow", "src", "dvc.yaml", ".dvcignore", ".gitignore", "Makefile", ".dvc/config", ".dvc/.gitignore"]
GIT = ["git", "-c", "user.name=seglab-test", "-c", "user.email=test@seglab.invalid"]


def dvc_study() -> dict[str, Any]:
    """The tiny study as a project's config.yaml (dvc.yaml's `study` stage: its whole file is the
    params), with the sections users change through `dvc exp run -S` written out."""
    cfg = tiny_study()
    cfg["dataset"]["name"] = "builtin-lesions"  # the raw-data folder dvc.yaml's `study` stage declares
    cfg["verify"] = {"on_error": "fail"}
    cfg["evaluate"] = {"tta": False}
    # Batches of 2 take the tiny U-Net past predicting one class everywhere in 2-3 epochs, so
    # that flip TTA has probabilities near 0.5 to move.
    cfg["defaults"]["train"]["batch_size"] = 2
    return cfg


def project_env(root: Path) -> dict[str, str]:
    """The project's own code (not this checkout's), the venv's tools on PATH, the project's MLflow store."""
    return seglab_env(PYTHONPATH=str(root / "src"), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
                      DVC_NO_ANALYTICS="1")


def sh(root: Path, *cmd: str, ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the project ``root`` (with :func:`project_env`); ``ok``: it must succeed."""
    run = subprocess.run(list(cmd), cwd=root, env=project_env(root), capture_output=True, text=True, timeout=timeout)
    if ok:
        assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def commit(root: Path, message: str) -> None:
    sh(root, "git", "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", message)


def new_project(root: Path, cfg: dict[str, Any]) -> Path:
    """A fresh git + DVC project at ``root`` holding this tree's workflow and ``cfg`` as config.yaml, committed."""
    root.mkdir(parents=True)
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    write_yaml(root / "config.yaml", cfg)
    sh(root, "git", "init", "-q")
    commit(root, "the study")
    return root


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a server the test started with start_new_session, by its process group (what it
    spawned goes too): SIGTERM, then SIGKILL if it has not ended within ``timeout`` seconds."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

