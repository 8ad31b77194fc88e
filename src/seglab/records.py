"""What each stage records in its MLflow run, read from the files the stage wrote.

The training and evaluation code only calls ``run.log_metrics`` per epoch; everything a
run is described by afterwards (tags, the resolved config, curves, overlays, the weights'
path and sha256) is added here from the stage's output files, so the record always
matches what is on disk. ``run`` is a ``tracking.Run`` or ``NullRun``: this module does
not import mlflow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import layout
from .config import config_hash, flatten, read_json


def device_tag(preference: str) -> str:
    """The device a job will use, as recorded on its run: ``cpu`` or ``cuda:<GPU name>``."""
    import torch

    from .runtime import select_device

    device = select_device(preference)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


def snakemake_tags(pairs: list[str] | None) -> dict[str, str]:
    """``--tag rule=train --tag fold=0`` from a Snakemake rule -> ``snakemake.rule``, ``snakemake.fold``."""
    tags = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        tags[f"snakemake.{key}"] = value
    return tags


def input_tags(cfg: dict[str, Any], prepared: Path | None = None, splits: dict[str, Any] | None = None) -> dict[str, str]:
    """Hashes that identify a run's inputs: its resolved config, the prepared data, the split."""
    tags = {"seglab.config_hash": config_hash(cfg), "seglab.device": device_tag(cfg["study"]["device"])}
    if prepared is not None:
        tags["seglab.data_hash"] = config_hash(read_json(prepared / layout.FINGERPRINT))
    if splits is not None:
        tags["seglab.splits_hash"] = config_hash(splits)
    return tags


def config_params(cfg: dict[str, Any], prepared: Path | None = None) -> dict[str, Any]:
    """The job's whole resolved config, flattened (``loss.name``, ``train.epochs`` ...), and
    the facts of the prepared data it trained on (``data.num_images`` ...)."""
    params = flatten({k: v for k, v in cfg.items() if k != "tracking"})
    if prepared is not None:
        fp = read_json(prepared / layout.FINGERPRINT)
        params.update({f"data.{k}": fp[k] for k in ("num_images", "size", "policy", "num_classes") if k in fp})
        params["data.classes"] = json.dumps(fp.get("classes"))
    return params


def record_dataset(run: Any, cfg: dict[str, Any], prepared: Path, context: str) -> None:
    """The run's dataset as an MLflow dataset input: its name, seglab's fingerprint hash as the
    digest (the same value as the ``seglab.data_hash`` tag) and the raw data as its source."""
    fp = read_json(prepared / layout.FINGERPRINT)
    profile = {k: fp[k] for k in ("num_images", "size", "policy", "num_classes", "classes") if k in fp}
    dataset = cfg["dataset"]
    run.log_dataset(dataset["name"], config_hash(fp), dataset["location"], context, profile)


def record_config(run: Any, cfg: dict[str, Any], name: str) -> None:
    """The resolved config the job read, as ``config/<name>.json``."""
    run.log_bytes((json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n").encode(), f"config/{name}.json")


def record_weights(run: Any, path: Path) -> None:
    """Weights stay in DVC; the run records where they are and their sha256 (from the sidecar)."""
    from .checkpoint import sidecar
    from .data.io import sha256_file

    side = sidecar(path)
    digest = side.read_text().split()[0] if side.is_file() else sha256_file(path)
    run.set_tags({"seglab.weights": str(path), "seglab.weights_sha256": digest})


def record_fold(run: Any, cfg: dict[str, Any], out_dir: Path, fold: int, prepared: Path,
                load_model: Callable[[dict[str, Any], Path, dict[str, Any]], tuple[Any, Any]] | None = None) -> None:
    """A finished fold (any task): learning-curve PNG, resolved config, weights path/sha256, and the
    model itself when ``tracking.log_model`` asks for it.

    ``load_model(cfg, checkpoint, fingerprint)`` gives the task's model and an example input (which
    lets MLflow record the model's signature); the default is segmentation's.
    """
    from .report import figures

    history = pd.read_csv(out_dir / layout.HISTORY)
    history.insert(0, "fold", fold)
    history.insert(0, "variant", cfg["variant"])
    run.log_bytes(figures.learning_curves(history, cfg["variant"]), "plots/learning_curves.png")
    record_config(run, cfg, "variant")
    record_weights(run, out_dir / layout.CHECKPOINT)
    if cfg["tracking"]["log_model"]:
        fp = read_json(prepared / layout.FINGERPRINT)
        model, example = (load_model or segmentation_model_and_example)(cfg, out_dir / layout.CHECKPOINT, fp)
        run.log_pytorch_model(model, "model", _pip_requirements(), example)


def segmentation_model_and_example(cfg: dict[str, Any], checkpoint: Path, fingerprint: dict[str, Any]) -> tuple[Any, Any]:
    import numpy as np

    model = load_fold_model(cfg, checkpoint, fingerprint["num_classes"])
    return model, np.zeros((1, 3, fingerprint["size"], fingerprint["size"]), dtype=np.float32)


def load_fold_model(cfg: dict[str, Any], checkpoint: Path, num_classes: int) -> Any:
    from .checkpoint import load_checkpoint
    from .models import build_model, output_channels

    model = build_model(cfg["model"], 3, output_channels(num_classes, cfg["model"]["binary_head"]))
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model.eval()


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("torch", "seglab"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # seglab run from a source tree, not installed
            pass
    return pins


def record_pretraining(run: Any, cfg: dict[str, Any], out_dir: Path) -> None:
    from .report import figures

    run.log_bytes(figures.pretrain_curve(pd.read_csv(out_dir / layout.HISTORY)), "plots/learning_curve.png")
    record_config(run, cfg, "pretrain")
    record_weights(run, out_dir / layout.PRETRAINED)


def evaluation_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Every test score of every model (``test_<metric>`` for the fold ensemble, per class
    included; ``test_fold<k>_<metric>`` per fold model) and the CV summary (``cv_*``)."""
    out: dict[str, float] = {}
    for model, scores in metrics["test"].items():
        prefix = "test_" if model == "ensemble" else f"test_{model}_"
        out.update({prefix + k: v for k, v in scores.items() if isinstance(v, (int, float))})
    out.update({f"cv_{k}": v for k, v in metrics["cv"].items() if isinstance(v, (int, float))})
    return out


def record_evaluation(run: Any, cfg: dict[str, Any], eval_dir: Path, prepared: Path, splits: dict[str, Any]) -> None:
    """The evaluation run: per-image CSV, metrics JSON, sample overlays, resolved config."""
    from .data.prepared import PreparedData
    from .report import figures
    from .report.document import sample_rows

    run.log_artifact(eval_dir / layout.PER_IMAGE)
    run.log_artifact(eval_dir / layout.EVAL_METRICS)
    data = PreparedData(prepared)
    rows = sample_rows(data, splits["test"], eval_dir)
    run.log_bytes(figures.sample_grid(rows, data.num_classes), "plots/sample_overlays.png")
    record_config(run, cfg, "variant")


def record_variant_curves(run: Any, variant: str, histories: list[Path]) -> None:
    """Every fold's learning curve of one variant in one PNG, on the variant's parent run."""
    from .report import figures

    frames = []
    for path in histories:
        frame = pd.read_csv(path)
        frame.insert(0, "fold", layout.fold_of(path)[1])
        frame.insert(0, "variant", variant)
        frames.append(frame)
    run.log_bytes(figures.learning_curves(pd.concat(frames, ignore_index=True), variant), "plots/learning_curves.png")
