"""The four shared real datasets go through verify -> preprocess -> split with their own configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from seglab.config import load_config
from seglab.data.prepared import PreparedData
from seglab.data.io import IGNORE
from seglab.data.preprocess import preprocess
from seglab.data.splits import make_splits, read_test_list
from seglab.data.verify import dataset_root, verify_dataset

from tests.helpers import REPO, SHARED_DATASETS, run_snakemake, seglab_env

SHARED = SHARED_DATASETS
CONFIGS = REPO / "configs" / "datasets"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED} (see its README)")

CAMVID = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist"]

# name: (pairs, class names, label values expected in the prepared masks, folds)
EXPECTED = {
    "drive": (20, ["background", "vessel"], {0, 1, IGNORE}, 4),   # native size; outside the FOV ignored
    "isbi2012": (30, ["membrane", "cell"], {0, 1}, 3),
    "kvasir-seg-sample": (5, ["background", "polyp"], {0, 1, IGNORE}, 2),
    "camvid-subset": (160, CAMVID, set(range(11)) | {IGNORE}, 2),
}


def _run_stages(name: str, out: Path, size: int = 32) -> tuple[dict, dict, dict, pd.DataFrame]:
    cwd = os.getcwd()
    os.chdir(REPO)  # the configs name their data relative to the project root
    try:
        cfg = load_config(CONFIGS / f"{name}.yaml")
        root = dataset_root(cfg["dataset"], None)
        report = verify_dataset(root, cfg["dataset"], cfg["verify"]["on_error"])
        fingerprint = preprocess(report, size, cfg["preprocess"]["policy"], out, cfg["preprocess"]["max_side"])
        manifest = pd.read_csv(out / "manifest.csv", dtype={"id": str, "group": str})
        split = cfg["split"]
        test_ids = read_test_list(root / split["test_file"], split["test_key"]) if split["test_file"] else split["test_ids"]
        splits = make_splits(manifest, split["folds"], split["test_fraction"], split["seed"], test_ids)
    finally:
        os.chdir(cwd)
    return report, fingerprint, splits, manifest


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_dataset_pipeline(tmp_path: Path, name: str) -> None:
    pairs, names, values, folds = EXPECTED[name]
    report, fingerprint, splits, manifest = _run_stages(name, tmp_path)

    assert report["pairs_found"] == report["pairs_ok"] == pairs
    assert report["problems"] == [] and report["files_not_matched"] == []
    assert report["classes"]["names"] == names
    assert fingerprint["num_images"] == pairs and fingerprint["classes"] == names

    data = PreparedData(tmp_path)
    if fingerprint["policy"] == "native":  # every image at its own size, concatenated
        for row, (h, w) in enumerate(zip(manifest["orig_height"], manifest["orig_width"])):
            assert data.images[row].shape == (h, w, 3) and data.masks[row].shape == (h, w)
        masks = np.concatenate([np.asarray(data.masks[row]).ravel() for row in range(pairs)])
    else:
        masks, images = data.masks, data.images
        assert masks.shape == (pairs, 32, 32) and images.shape == (pairs, 32, 32, 3)
        assert masks.dtype == np.uint8 and images.dtype == np.uint8
    assert set(np.unique(masks).tolist()) <= values
    assert {0, 1} <= set(np.unique(masks).tolist())  # background and a foreground class really appear
    # Per-class pixel counts in the manifest are the counts in the cache.
    counts = np.bincount(masks[masks != IGNORE].ravel(), minlength=len(names))
    assert manifest[[f"pixels_{k}" for k in range(len(names))]].sum().tolist() == counts.tolist()
    assert np.isclose(sum(fingerprint["class_frequency"]), 1.0, atol=1e-4)

    everything = splits["test"] + [i for f in splits["folds"] for i in f]
    assert sorted(everything) == sorted(manifest["id"]) and len(set(everything)) == pairs
    assert len(splits["folds"]) == folds and all(splits["folds"])


def test_drive_pairs_by_number_and_camvid_uses_its_test_list(tmp_path: Path) -> None:
    report, *_ = _run_stages("drive", tmp_path / "drive")
    pair = next(p for p in report["pairs"] if p["id"] == "21")
    assert Path(pair["image"]).name == "21_training.tif" and Path(pair["mask"]).name == "21_manual1.gif"
    assert Path(pair["roi"]).name == "21_training_mask.gif"

    report, fingerprint, splits, manifest = _run_stages("camvid-subset", tmp_path / "camvid")
    val = json.loads((SHARED / "camvid-subset" / "splits.json").read_text())["val"]
    assert splits["test"] == sorted(val) and splits["test_source"] == "list"
    assert report["classes"]["ignore_index"] == 11 and fingerprint["ignore_index"] == IGNORE
    # Folds keep each video sequence (the id prefix) together.
    fold_of = {g: k for k, f in enumerate(splits["folds"]) for i in f for g in [i.split("_")[0]]}
    for k, fold in enumerate(splits["folds"]):
        assert all(fold_of[i.split("_")[0]] == k for i in fold)


def linked_project(tmp_path: Path) -> Path:
    """A project at tmp_path/project linking this tree's workflow and configs, with ../shared beside it
    (the dataset configs name their data there)."""
    project = tmp_path / "project"
    project.mkdir()
    for item in ("Snakefile", "workflow", "configs", "config.yaml"):
        (project / item).symlink_to(REPO / item)
    (tmp_path / "shared").symlink_to(SHARED.parent)
    return project


@pytest.mark.e2e  # the data stages run by real Snakemake: about 25 s
def test_kvasir_sample_through_snakemake(tmp_path: Path) -> None:
    """The data stages run from the study file under real Snakemake (the shared folder via ../shared)."""
    project = linked_project(tmp_path)
    # The study file as shipped, with run tracking off: these stages record nothing in MLflow.
    study = yaml.safe_load((CONFIGS / "kvasir-seg-sample.yaml").read_text())
    (project / "study.yaml").write_text(yaml.safe_dump({**study, "tracking": {"enabled": False}}))
    target = "results/kvasir-seg-sample/data/splits/r0.json"
    result = run_snakemake(project, project / "study.yaml", target, env=seglab_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    splits = json.loads((project / target).read_text())
    verify = json.loads((project / "results/kvasir-seg-sample/data/verify.json").read_text())
    assert verify["pairs_ok"] == 5 and splits["counts"]["test"] + sum(splits["counts"]["folds"]) == 5


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_dataset_config_is_a_study_snakemake_accepts(tmp_path: Path, config: str) -> None:
    project = linked_project(tmp_path)
    result = run_snakemake(project, project / "configs" / "datasets" / config, "-n", env=seglab_env(), timeout=300, cores=1)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "verify" in result.stdout and "split" in result.stdout
