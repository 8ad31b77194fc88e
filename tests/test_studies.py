"""Every shipped study (configs/studies/*.yaml) runs through the real Snakemake workflow.

Each study is copied into a temporary project with only its sizes shrunk (images, epochs,
folds), then run exactly as a user would: ``snakemake --configfile <study> --cores 2
--resources gpu=1``, with MLflow recording into a SQLite file in the same folder.

A training job costs seconds of imports and tracking whatever its size, so by default each
study runs its baseline and the variant that makes it that study (:data:`CORE`); set
``SEGLAB_E2E_ALL_VARIANTS=1`` to run every variant. Every variant of every study is still
resolved, built and run for one batch in ``test_every_variant_of_every_study_builds``.

To keep the default suite within its time budget, two studies run end to end by default
(:data:`DEFAULT_RUN`: multi-class with colorization pretraining and offline augmentation;
an smp ResNet34-UNet with a separate checkpoint metric) and every study is planned by a
Snakemake dry run; ``SEGLAB_E2E_STUDIES=all`` runs all five end to end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, run_snakemake

STUDIES = sorted((REPO / "configs" / "studies").glob("*.yaml"))
ALL_VARIANTS = os.environ.get("SEGLAB_E2E_ALL_VARIANTS") == "1"
DEFAULT_RUN = ("multiclass-colorization", "unet-vs-resnet34")
RUN_ALL_STUDIES = os.environ.get("SEGLAB_E2E_STUDIES") == "all"
# Beside each study's baseline, the variant that exercises what the study is about.
CORE = {
    "unet-ablation": ["unet-dice-dropout-bn-aug"],
    "mobilenet-frozen": ["mobilenet-frozen-then-finetuned", "mobilenet-finetuned"],
    "augmentation-grid": ["vflip-0.5-blur-0.5"],
    "multiclass-colorization": ["colorization-augmented"],
    "unet-vs-resnet34": ["resnet34-unet-bce-combine1"],
    "sweep-lr-augmentation": [],       # the sweep's grid points are variants of their own, always run
    "digits-cnn": ["cnn-label-smoothing"],
    "shapes-vgg-resnet": ["resnet-depth3"],
    "fashion-mnist-vgg16": ["vgg16-imagenet-last-layer"],
    "lab4-classification": ["vgg16-imagenet-transfer"],
}


def shrink(study: Path, folder: Path, keep: list[str] | None = None) -> Path:
    """Write a copy of ``study`` into ``folder`` at test size; only sizes change, never the design.

    ``keep`` limits the variants to the baseline and those named (None keeps all).
    """
    cfg = yaml.safe_load(study.read_text())
    if keep is not None:
        wanted = {cfg["study"]["baseline"], *keep}
        cfg["variants"] = {k: v for k, v in cfg["variants"].items() if k in wanted}
    dataset = cfg["dataset"]
    if dataset["source"] == "builtin":
        dataset["builtin"].update(count=16, size=32, groups=8)
    elif dataset["source"] == "shapes":
        dataset["shapes"].update(count=24, size=32)
    elif dataset["source"] == "torchvision":
        dataset["torchvision"].update(train_count=24, test_count=12)
    cfg["preprocess"]["size"] = 32
    cfg["split"]["folds"] = 2
    cfg["study"]["device"] = "cpu"
    if "pretrain" in cfg:
        cfg["pretrain"].update(epochs=1, batch_size=8)
    defaults = cfg["defaults"]
    defaults.setdefault("train", {}).update(epochs=2, batch_size=4)
    if defaults.get("schedule", {}).get("warmup_epochs"):
        defaults["schedule"]["warmup_epochs"] = 1
    for variant in (cfg["variants"] or {}).values():
        train = (variant or {}).get("train", {})
        if train.get("epochs"):
            train["epochs"] = 2
        if train.get("unfreeze_at_epoch"):
            train["unfreeze_at_epoch"] = 1
    path = folder / study.name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_study(study: Path, folder: Path, keep: list[str] | None = None) -> tuple[dict, Path]:
    config = shrink(study, folder, keep)
    done = run_snakemake(folder, config)
    cfg = yaml.safe_load(config.read_text())
    out = folder / cfg["study"]["output_dir"]
    if done.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((out / "logs").rglob("*.log")) if "rror" in p.read_text())
        pytest.fail(f"snakemake failed ({done.returncode}):\n{done.stderr[-3000:]}\n{logs}")
    return cfg, out


def summaries(out: Path, variant: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "models" / variant).glob("r*/fold*/summary.json"))]


@pytest.mark.e2e
@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_runs_end_to_end_at_test_size(study: Path, tmp_path: Path) -> None:
    if study.stem not in DEFAULT_RUN and not RUN_ALL_STUDIES:
        pytest.skip("planned by test_every_study_plans_its_whole_workflow; SEGLAB_E2E_STUDIES=all runs it")
    cfg, out = run_study(study, tmp_path, None if ALL_VARIANTS else CORE[study.stem])

    assert cfg["study"]["output_dir"] == f"results/studies/{study.stem}" and cfg["study"]["name"] == study.stem
    from seglab.config import validate

    metrics = json.loads((out / "metrics.json").read_text())
    variants = validate(cfg)["variants"]  # listed and sweep-made variants
    assert sorted(metrics["variants"]) == sorted(variants)
    assert (out / "report" / "index.html").stat().st_size > 0
    for name in variants:
        folds = summaries(out, name)
        assert len(folds) == 2 * cfg["split"].get("repeats", 1)
        for summary in folds:
            assert summary["params_trainable"] > 0 and summary["params_frozen"] >= 0
            assert 1 <= summary["best_epoch"] <= summary["epochs_run"] <= 2
    assert (tmp_path / "mlflow.db").is_file()

    # What makes each study the study it is, checked on its outputs.
    if study.stem == "mobilenet-frozen":
        frozen, tuned = summaries(out, "mobilenet-frozen")[0], summaries(out, "mobilenet-finetuned")[0]
        assert frozen["encoder_frozen"] and not tuned["encoder_frozen"]
        assert frozen["params_frozen"] > 0 and tuned["params_frozen"] == 0
        assert frozen["params_frozen"] + frozen["params_trainable"] == tuned["params_trainable"]
        assert summaries(out, "mobilenet-frozen-then-finetuned")[0]["encoder_unfrozen_at_epoch"] == 1
        assert list((out / "pretrain").rglob("weights.pt"))
    if study.stem == "augmentation-grid":
        assert not (out / "models" / "no-augmentation" / "r0" / "fold0" / "augmentation.png").exists()
        assert (out / "models" / "vflip-0.5-blur-0.5" / "r0" / "fold0" / "augmentation.png").stat().st_size > 0
    if study.stem == "multiclass-colorization":
        # HW6 augments online (a new draw every epoch): as many samples per epoch as without it.
        augmented, scratch = summaries(out, "colorization-augmented")[0], summaries(out, "scratch")[0]
        assert augmented["train_samples_per_epoch"] == scratch["train_samples_per_epoch"]
        assert (out / "models" / "colorization-augmented" / "r0" / "fold0" / "augmentation.png").stat().st_size > 0
        assert augmented["init_tensors_loaded"] > 0
    if study.stem == "sweep-lr-augmentation":
        # Every grid point ran as a variant, with its repeats, and the report draws the grid.
        assert set(metrics["sweep"]) == {"lr0.001_multiplier2", "lr0.001_multiplier3", "lr0.0001_multiplier2",
                                         "lr0.0001_multiplier3"} <= set(metrics["variants"])
        assert metrics["sweep"]["lr0.0001_multiplier3"] == {"optimizer.lr": 0.0001, "augmentation.multiplier": 3}
        tripled, reference = summaries(out, "lr0.0001_multiplier3")[0], summaries(out, "reference")[0]
        assert tripled["train_samples_per_epoch"] == 3 * reference["train_samples_per_epoch"]
        assert all(metrics["variants"][v]["repeats"] == 2 for v in metrics["sweep"])
        assert (out / "report" / "figures" / "sweep_heatmap.png").stat().st_size > 0
        assert "<h2>Sweep</h2>" in (out / "report" / "index.html").read_text()
    if study.stem == "unet-vs-resnet34":
        summary, baseline = summaries(out, "resnet34-unet-bce-combine1")[0], summaries(out, "unet-ce")[0]
        # The report keeps the weights with the lowest validation loss and stops on it.
        assert summary["checkpoint_metric"] == "val_loss" and summary["monitor"] == "val_loss"
        assert summary["params_trainable"] > 20_000_000  # a ResNet34 encoder, not the small U-Net
        # "combine" with n_aug 1: one augmented copy of each training image, added offline.
        assert summary["train_samples_per_epoch"] == 2 * baseline["train_samples_per_epoch"]
    if study.stem == "unet-ablation":
        assert (out / "models" / "unet-dice-dropout-bn-aug" / "r0" / "fold0" / "augmentation.png").is_file()


@pytest.mark.e2e  # Snakemake plans each whole study: 5-12 s a study
@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_plans_its_whole_workflow(study: Path, tmp_path: Path) -> None:
    """The full study (every variant) validates and Snakemake plans every job of it."""
    done = run_snakemake(tmp_path, shrink(study, tmp_path), "-n")
    assert done.returncode == 0, done.stderr[-3000:]
    plan = done.stdout + done.stderr
    folds = 2
    from seglab.config import load_config

    for variant in load_config(study)["variants"]:  # listed and sweep-made variants
        for fold in range(folds):
            assert f"models/{variant}/r0/fold{fold}/best.pt" in plan, f"no training job planned for {variant} fold {fold}"
    assert "report/index.html" in plan


@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_variant_of_every_study_builds(study: Path) -> None:
    """Each variant resolves, and its model, loss and augmentation build and run on one batch."""
    import torch

    from seglab.config import load_config
    from seglab.data.transforms import build_augmentation
    from seglab.losses import build_loss
    from seglab.models import build_model, output_channels

    cfg = load_config(study)
    assert set(CORE[study.stem]) <= set(cfg["variants"])
    if cfg["study"]["task"] == "classification":
        from seglab.classification.losses import build_classification_loss
        from seglab.classification.models import build_classifier, input_channels

        built = set()  # a grid of optimiser settings shares one model: build each architecture once
        for name, variant in cfg["variants"].items():
            if json.dumps(variant["model"], sort_keys=True) in built:
                continue
            built.add(json.dumps(variant["model"], sort_keys=True))
            model = build_classifier(variant["model"], input_channels(variant["model"], 1), 10).train()
            logits = model(torch.randn(2, input_channels(variant["model"], 1), 32, 32))
            loss = build_classification_loss(variant["loss"], 10)(logits, torch.randint(0, 10, (2,)))
            assert logits.shape == (2, 10) and torch.isfinite(loss), name
            build_augmentation(variant["augmentation"], 0)
        return
    num_classes = 3 if cfg["dataset"]["builtin"]["kind"] == "instruments" else 2
    for name, variant in cfg["variants"].items():
        channels = output_channels(num_classes, variant["model"]["binary_head"])
        model = build_model(variant["model"], 3, channels).train()
        logits = model(torch.randn(2, 3, 32, 32))
        loss = build_loss(variant["loss"], num_classes, None)(logits, torch.randint(0, num_classes, (2, 32, 32)))
        assert logits.shape == (2, channels, 32, 32) and torch.isfinite(loss), name
        build_augmentation(variant["augmentation"], 0)
