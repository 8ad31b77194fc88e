"""What colorization pretraining sees (pretrain.images): each fold's own training images, or an
unlabelled pool (a folder's, or the built-in generator's), never an image a model it initialises
is validated or tested on. The end-to-end check on a finished study's files is in test_workflow.py."""

from __future__ import annotations

import copy
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from seglab.cli import main
from seglab.config import ConfigError, validate
from seglab.data.splits import fold_ids, training_pool
from seglab.data.verify import verify_dataset
from seglab.pretrain import pretraining_ids, seen_counts
from tests.helpers import TINY, job_counts, prepare, snakemake_cmd, tiny_config, tiny_study, workflow_env, write_yaml


def _with_pool(cfg: dict, count: int) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["dataset"]["builtin"]["unlabelled"] = count
    return cfg


def test_auto_is_the_pool_when_the_dataset_has_one_else_each_folds_training_images():
    assert validate(tiny_study())["pretrain"]["images"] == "fold"
    assert validate(_with_pool(tiny_study(), 4))["pretrain"]["images"] == "unlabelled"
    assert validate(tiny_study(pretrain={"images": "fold"}, dataset=_with_pool(tiny_study(), 4)["dataset"]))["pretrain"]["images"] == "fold"
    with pytest.raises(ConfigError, match=r"key 'pretrain.images': unlabelled .* has none\. Give dataset.folder.unlabelled"):
        validate(tiny_study(pretrain={"images": "unlabelled"}))


def test_pretraining_ids_are_the_folds_training_images_or_the_pool():
    splits = {"repeat": 0, "test": ["t0", "t1"], "folds": [["a", "b"], ["c"], ["d", "e"]], "unlabelled": ["u0", "u1"]}
    assert pretraining_ids(splits, "fold", 1) == ["a", "b", "d", "e"] == fold_ids(splits, 1)[0]
    assert pretraining_ids(splits, "unlabelled", None) == ["u0", "u1"]
    assert seen_counts(["a", "b", "d", "e"], splits, 1) == {"validation": 0, "test": 0}
    # What the counts would catch: fold 1's validation image and a test image among the ids.
    assert seen_counts(["a", "c", "t1"], splits, 1) == {"validation": 1, "test": 1}
    assert seen_counts(["u0", "a"], splits, None) == {"validation": 1, "test": 0}  # on the pool every fold validates
    with pytest.raises(ConfigError, match="Pass its fold"):
        pretraining_ids(splits, "fold", None)
    with pytest.raises(ConfigError, match="no unlabelled image"):
        pretraining_ids({**splits, "unlabelled": []}, "unlabelled", None)


def test_the_builtin_pool_is_generated_apart_and_is_all_that_pretraining_sees(tmp_path):
    raw = _with_pool(tiny_config(pretrain={"epochs": 1}, variants={"colorized": {"init": "colorization"}}), 6)
    paths = prepare(tmp_path, raw)
    splits = json.loads(paths["splits"].read_text())
    pool = splits["unlabelled"]
    assert len(pool) == 6 and all(i.startswith("unlabelled/") for i in pool)
    labelled = set(training_pool(splits)) | set(splits["test"])
    assert len(labelled) == TINY["dataset"]["builtin"]["count"] and not labelled & set(pool)
    # Drawn from a stream of its own: no pool image has the bytes of a labelled one.
    manifest = pd.read_csv(paths["prepared"] / "manifest.csv", dtype={"id": str})
    sha = dict(zip(manifest["id"], manifest["sha256_image"]))
    assert not {sha[i] for i in pool} & {sha[i] for i in labelled}

    (config,) = (paths["stage"] / "pretrain").glob("*.json")
    out = tmp_path / "pretrain"
    assert main(["pretrain", "--config", str(config), "--prepared", str(paths["prepared"]), "--splits", str(paths["splits"]),
                 "--out", str(out), "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == "unlabelled" and summary["fold"] is None
    assert summary["ids"] == sorted(pool) and summary["train_images"] + summary["val_images"] == 6
    assert summary["seen"] == {"validation": 0, "test": 0}


def test_a_pool_image_that_copies_a_labelled_image_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("images", "masks", "pool"):
        (tmp_path / folder).mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        Image.fromarray(np.where(np.arange(256).reshape(16, 16) % 3 == i, 255, 0).astype(np.uint8)).save(tmp_path / "masks" / f"im{i}.png")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "pool" / "new.png")
    (tmp_path / "pool" / "copy.png").write_bytes((tmp_path / "images" / "im1.png").read_bytes())
    dataset = validate({"dataset": {"name": "mine", "source": "folder", "folder": {"root": str(tmp_path), "unlabelled": "pool"}},
                        "variants": {"a": {}}})["dataset"]
    report = verify_dataset(tmp_path, dataset, "skip")
    (problem,) = report["problems"]
    assert problem["id"] == "unlabelled/copy" and "duplicate (same sha256) of labelled image" in problem["problem"]
    assert "validated or tested on" in problem["problem"]
    assert sorted(p["id"] for p in report["pairs"]) == ["im0", "im1", "im2", "unlabelled/new"]


def test_snakemake_plans_one_pretraining_per_repeat_and_fold_or_one_on_the_pool(tmp_path):
    cfg = tiny_study(split={"folds": 2, "test_fraction": 0.2, "repeats": 2})
    plans = {}
    for name, study in (("fold", cfg), ("pool", _with_pool(cfg, 4))):
        folder = tmp_path / name
        folder.mkdir()
        dry = subprocess.run(snakemake_cmd(folder, write_yaml(folder / "study.yaml", study), "-n"), cwd=folder,
                             env=workflow_env(folder), capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        plans[name] = dry.stdout
    assert job_counts(plans["fold"])["pretrain"] == 4 and job_counts(plans["pool"])["pretrain"] == 1
    # Each training of the colorized variant starts from its own fold's pretraining.
    train = next(block for block in plans["fold"].split("\n\n") if "output: results/models/colorized/r1/fold1/best.pt" in block)
    assert "/r1/fold1/weights.pt" in train
    assert "results/pretrain/" in plans["pool"] and "/r0/fold0/weights.pt" not in plans["pool"]


def test_report_counts_the_unlabelled_pool_apart_from_the_labelled_images():
    """The prepared data holds the pool too; the report's dataset line says how many images are labelled."""
    from seglab.report.document import dataset_fact

    dataset = {"name": "builtin-lesions", "source": "builtin"}
    fingerprint = {"num_images": 432, "groups": 204, "classes": ["background", "lesion"]}
    with_pool = {"test": ["t"] * 60, "folds": [["f"] * 60] * 3, "unlabelled": [f"u{i}" for i in range(192)]}
    assert dataset_fact(dataset, fingerprint, with_pool) == (
        "builtin-lesions (builtin), 240 labelled images and 192 unlabelled (colorization pretraining only), "
        "204 groups, classes: background, lesion")
    assert dataset_fact(dataset, fingerprint, {"test": [], "folds": []}) == (
        "builtin-lesions (builtin), 432 images, 204 groups, classes: background, lesion")
