"""Colorization pretraining: the variant's architecture learns colour from grey (MSE).

Self-supervised, on images no model it initialises is validated or tested on
(``pretrain.images``): one fold's training images, or the dataset's unlabelled pool. The
weights then initialise the variants with ``init: colorization``. The ids it saw go into
its summary, checked against the validation and test ids there. Resumable like training
(:mod:`seglab.resumable`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import layout
from .checkpoint import load_checkpoint
from .config import ConfigError
from .data.colour import ab_to_unit, colorization_refusal, lab_to_rgb, rgb_to_lab, unit_to_ab
from .data.dataset import ColorizationDataset
from .data.prepared import PreparedData
from .data.loaders import loader_workers, make_loader
from .data.splits import fold_ids, training_pool
from .data.transforms import build_augmentation
from .engine import Execution
from .models import build_model
from .resumable import RESUME_DIR, fit_resumable, resume_key
from .resume import ResumeStore
from .runtime import seed_everything
from .seeds import derived_seed
from .tracking import NullRun, Run


def pretraining_ids(splits: dict[str, Any], images: str, fold: int | None) -> list[str]:
    """The images a pretraining learns from: fold ``fold``'s training images (``images`` fold) or
    the splits' unlabelled pool (``images`` unlabelled); never a test image."""
    if images == "fold":
        if fold is None:
            raise ConfigError("pretrain.images is fold: each fold has its own pretraining. Pass its fold (seglab pretrain --fold K).")
        return fold_ids(splits, fold)[0]
    if fold is not None:
        raise ConfigError("pretrain.images is unlabelled: one pretraining on the pool serves every fold. Drop --fold.")
    if not splits.get("unlabelled"):
        raise ConfigError("pretrain.images is unlabelled but the splits list no unlabelled image (none passed "
                          "verification?). Check dataset.folder.unlabelled / dataset.builtin.unlabelled, or use "
                          "pretrain.images: fold.")
    return list(splits["unlabelled"])


def seen_counts(ids: list[str], splits: dict[str, Any], fold: int | None) -> dict[str, int]:
    """How many of ``ids`` a model it initialises is validated on (its fold's validation images; on
    the pool, any fold's) or tested on: 0 and 0 by construction, recorded so that it is checked."""
    validated = set(splits["folds"][fold]) if fold is not None else set(training_pool(splits))
    return {"validation": len(validated.intersection(ids)), "test": len(set(splits["test"]).intersection(ids))}


def pretrain_colorization(
    cfg: dict[str, Any],
    prepared: Path,
    splits: dict[str, Any],
    out_dir: Path,
    run: Run | None = None,
    fold: int | None = None,
) -> dict[str, Any]:
    """Colorization pretraining: the variant's architecture learns colour from grey (MSE), on
    ``pretraining_ids`` (fold ``fold``'s training images, or the unlabelled pool). ``pretrain.target``
    rgb predicts RGB in [0, 1] with a 3-channel head; lab predicts CIELAB a, b (scaled to [0, 1])
    with a 2-channel head. A grey dataset is refused with a ConfigError: there is no colour to learn."""
    run = run or NullRun()
    study, pre = cfg["study"], cfg["pretrain"]
    target = pre["target"]
    refusal = colorization_refusal(Path(prepared) / layout.IMAGES)
    if refusal:
        raise ConfigError(refusal)
    ids = pretraining_ids(splits, pre["images"], fold)
    seen = seen_counts(ids, splits, fold)
    if seen["validation"] or seen["test"]:  # cannot happen by construction; never pretrain on a leak
        raise ValueError(f"pretraining images include {seen['validation']} validation and {seen['test']} test image(s)")
    # Per fold, each repeat and fold its own seed (as training); on the pool, the study's.
    seed = study["seed"] if fold is None else derived_seed(study["seed"], splits["repeat"]) + fold
    seed_everything(seed, study["deterministic"])
    execution = Execution.for_study(study)
    device = execution.device
    data = PreparedData(prepared)
    n_val = max(1, int(round(len(ids) * pre["val_fraction"])))
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    val_ids = [ids[i] for i in order[:n_val]]
    train_ids = [ids[i] for i in order[n_val:]]
    flips = build_augmentation({"preset": "flip"}, seed)
    workers = loader_workers("auto", device)
    train_loader = make_loader(ColorizationDataset(data, train_ids, flips), pre["batch_size"], True, seed, workers, device)
    val_set = ColorizationDataset(data, val_ids)
    val_loader = make_loader(val_set, pre["batch_size"], False, seed, workers, device)

    model = execution.prepare(build_model(cfg["model"], 3, 3 if target == "rgb" else 2))
    mse = nn.MSELoss()

    def loss_fn(output: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        wanted = rgb if target == "rgb" else ab_to_unit(rgb_to_lab(rgb))
        return mse(torch.sigmoid(output), wanted)

    optimizer = torch.optim.Adam(model.parameters(), lr=pre["lr"])
    where = {"images": pre["images"], "repeat": splits["repeat"] if fold is not None else None, "fold": fold}
    run.log_params({"train_images": len(train_ids), "val_images": len(val_ids), "seed": seed, **{f"pretrain.{k}": v for k, v in pre.items()},
                    **{f"model.{k}": v for k, v in cfg["model"].items()},
                    "seen_validation_images": seen["validation"], "seen_test_images": seen["test"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / layout.PRETRAINED
    key = resume_key(cfg["pretrain"], cfg["model"], seed, data.fingerprint, train_ids, val_ids)
    store = ResumeStore(out_dir / RESUME_DIR, key)
    stopper, history = fit_resumable(
        model, train_loader, val_loader, loss_fn, optimizer, execution,
        pre["epochs"], pre["epochs"], store, run, f"[colorization {target}]", augment=flips,
    )
    store.publish_best(stopper.best_epoch, weights)
    pd.DataFrame(history).to_csv(out_dir / layout.HISTORY, index=False)

    model.load_state_dict(load_checkpoint(weights, device)["model"])
    samples = colorization_samples(model, val_set, device, n=min(6, len(val_set)), target=target)
    from .report import figures  # matplotlib (~0.5 s) only for the pretraining job's figure

    (out_dir / layout.COLORIZATION_SAMPLES).write_bytes(figures.colorization_grid(samples))
    # What the pretraining saw, by id: the report states it and the tests check it against the splits.
    summary = {"best_epoch": stopper.best_epoch, "best_val_mse": stopper.best, "target": target, **where, "seed": seed,
               "train_images": len(train_ids), "val_images": len(val_ids), "seen": seen, "ids": sorted(ids),
               "run_id": run.run_id}
    (out_dir / layout.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    run.log_metrics({"best_val_mse": stopper.best})
    run.log_artifact(out_dir / layout.SUMMARY)
    run.log_artifact(out_dir / layout.COLORIZATION_SAMPLES)
    run.log_artifact(out_dir / layout.HISTORY)
    store.clear()
    return summary


@torch.no_grad()
def colorization_samples(model: nn.Module, dataset: ColorizationDataset, device: torch.device, n: int,
                         target: str = "rgb") -> dict[str, np.ndarray]:
    """Grey input, recoloured output and true colour of ``n`` validation images, as uint8 (n,H,W,3).

    With the lab target the recoloured image is the true lightness with the predicted a, b.
    """
    model.eval()
    greys, preds, trues = [], [], []
    for i in range(n):
        grey, rgb = dataset[i]
        out = torch.sigmoid(model(grey[None].to(device))).cpu()[0]
        if target == "lab":
            lightness = rgb_to_lab(rgb)[:1]
            out = lab_to_rgb(torch.cat([lightness, unit_to_ab(out)]))
        grey01 = (grey[0] * dataset.grey_std + dataset.grey_mean).clamp(0, 1)
        greys.append(grey01[None].expand(3, -1, -1))
        preds.append(out)
        trues.append(rgb)

    def as_uint8(items: list[torch.Tensor]) -> torch.Tensor:
        return (torch.stack(items).permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8)

    return {"grey": as_uint8(greys).numpy(), "predicted": as_uint8(preds).numpy(), "true": as_uint8(trues).numpy()}
