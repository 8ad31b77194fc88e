"""A tiny classification study through the real workflow (Snakemake, MLflow in SQLite), run once
for the module and shared by every assertion: the same stages and rules as segmentation, with
the task's data, models, metrics, CAM overlays and report; then `seglab predict` (with --cam)
on the study's models.

Data: the built-in synthetic shapes (offline), 48 images at 32 px, 2 folds, two variants (a
VGG-style net and a small ResNet), 2 epochs each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import run_seglab, run_snakemake, tiny_study, write_yaml

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shapes_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("classification-study")
    cfg = tiny_study(
        "results/shapes",
        study={"name": "tiny-shapes", "output_dir": "results/shapes", "seed": 1, "device": "cpu", "task": "classification"},
        dataset={"name": "tiny-shapes", "source": "shapes", "shapes": {"count": 48, "size": 32, "seed": 0}},
        defaults={"loss": {"name": "ce"}, "augmentation": {"preset": "flip", "grid_samples": 4},
                  "train": {"epochs": 2, "batch_size": 8, "patience": 2, "monitor": "val_accuracy"}},
        variants={"vgg": {"model": {"name": "vgg", "base": 4, "blocks": 2, "hidden": 16}},
                  "resnet": {"model": {"name": "resnet", "depth": 2, "base": 4},
                             "loss": {"name": "focal", "gamma": 2.0, "class_weights": "auto"}}},
    )
    del cfg["pretrain"]
    config = write_yaml(root / "study.yaml", cfg)
    done = run_snakemake(root, config)
    out = root / "results" / "shapes"
    if done.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((out / "logs").rglob("*.log")) if "rror" in p.read_text())
        pytest.fail(f"snakemake failed ({done.returncode}):\n{done.stderr[-3000:]}\n{logs}")
    return root, out, cfg


def test_study_writes_the_classification_table_and_report(shapes_study) -> None:
    root, out, _ = shapes_study
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification" and sorted(metrics["variants"]) == ["resnet", "vgg"]
    for row in metrics["variants"].values():
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["cv_accuracy_mean"] <= 1
        assert len(row["cv_accuracy_per_fold"]) == 2 and len(row["test_confusion"]) == 3
    evaluation = json.loads((out / "eval" / "vgg" / "r0" / "metrics.json").read_text())
    per_image = pd.read_csv(out / "eval" / "vgg" / "r0" / "per_image.csv")
    ensemble = per_image[per_image["model"] == "ensemble"]
    assert ensemble["correct"].mean() == pytest.approx(evaluation["test"]["ensemble"]["accuracy"])
    probs = ensemble[[c for c in ensemble if c.startswith("prob_")]]
    assert list(probs) == ["prob_circle", "prob_square", "prob_triangle"] and (probs.sum(axis=1) - 1).abs().max() < 1e-5
    summary = json.loads((out / "models" / "resnet" / "r0" / "fold0" / "summary.json").read_text())
    assert summary["class_weights"] and "val_accuracy" in pd.read_csv(out / "models" / "resnet" / "r0" / "fold0" / "history.csv")
    comparisons = json.loads((out / "stats" / "comparisons.json").read_text())
    assert comparisons["metric"] == "accuracy" and "mean accuracy difference" in comparisons["comparisons"][0]["sentence"]
    page = (out / "report" / "index.html").read_text()
    for section in ("Variants", "Significance against the baseline", "Learning curves (loss and validation accuracy)",
                    "Per class and confusion matrices", "Augmentation", "Class activation maps", "MLflow runs"):
        assert f"{section}" in page, section
    figures = {p.name for p in (out / "report" / "figures").glob("*.png")}
    assert {"confusion_vgg.png", "confusion_resnet.png", "curves_vgg.png", "curves_resnet.png", "cams_vgg.png",
            "cams_resnet.png"} <= figures
    assert "test accuracy" in (out / "report" / "summary.md").read_text()


def test_study_is_recorded_in_mlflow(shapes_study) -> None:
    from mlflow.tracking import MlflowClient

    root, _, _ = shapes_study
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny-shapes").experiment_id], max_results=100)
    names = {r.info.run_name: r for r in runs}
    assert {"vgg", "resnet", "vgg-r0-fold0", "vgg-r0-fold1", "vgg-r0-evaluate", "resnet-r0-evaluate"} <= set(names)
    assert 0 <= names["vgg"].data.metrics["test_accuracy"] <= 1
    assert len(client.get_metric_history(names["vgg-r0-fold0"].info.run_id, "val_accuracy")) == 2
    artifacts = {a.path for a in client.list_artifacts(names["vgg-r0-evaluate"].info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/cam_overlays.png"} <= artifacts


def test_predict_writes_class_probabilities(shapes_study) -> None:
    root, out, _ = shapes_study
    images = sorted((root / "data" / "raw" / "tiny-shapes" / "images").rglob("*.png"))[:5]
    folder = root / "to-classify"
    folder.mkdir()
    for path in images:
        (folder / path.name).write_bytes(path.read_bytes())
    done = run_seglab(["predict", "--config", str(out / "config" / "variants" / "vgg.json"), "--prepared",
                       str(out / "data" / "prepared"), "--models", str(out / "models" / "vgg"), "--images", str(folder),
                       "--out", str(root / "predicted"), "--cam"], root)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(root / "predicted" / "predictions.csv")
    assert sorted(table["file"]) == sorted(p.name for p in images)
    assert set(table["predicted_class"]) <= {"circle", "square", "triangle"}
    probs = table[["prob_circle", "prob_square", "prob_triangle"]]
    assert (probs.sum(axis=1) - 1).abs().max() < 1e-5
    assert (table["probability"] == probs.max(axis=1)).all()
    cams = sorted(p.name for p in (root / "predicted" / "cams").glob("*.png"))
    assert cams == sorted(p.name for p in images)
