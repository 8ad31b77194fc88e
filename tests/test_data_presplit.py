"""Pre-split datasets (HW6's layout): train/, val/ and test/ folders used as given, with
cross-validation over train + val or the val folder as the one fold, and an unlabelled folder
that only the colorization pretraining reads. Runs the real data stages through the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from seglab.cli import main
from seglab.config import ConfigError, fold_count, stage_configs, validate
from seglab.data.splits import fold_ids, training_pool
from tests.helpers import snakemake_cmd, workflow_env

# HW6: segmentation/{train,validation,test} with grey-level masks (mapping.json), colorization/train_cor.
GREY = {"background": 0, "shaft": 10, "tip": 20}


def write_hw6(root: Path, counts=(("train", 8), ("validation", 4), ("test", 3)), unlabelled: int = 5) -> None:
    rng = np.random.default_rng(0)
    for part, n in counts:
        for sub in ("images", "labels"):
            (root / "segmentation" / part / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            # Frames are numbered per folder, as exported videos are: the same name in train and test.
            image = rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)
            mask = np.zeros((16, 20), np.uint8)
            mask[2:6 + i % 5, 3:9] = GREY["shaft"]
            mask[10:12, 4:4 + i % 7 + 1] = GREY["tip"]
            Image.fromarray(image).save(root / "segmentation" / part / "images" / f"frame{i:03d}.png")
            Image.fromarray(mask).save(root / "segmentation" / part / "labels" / f"frame{i:03d}.png")
    (root / "colorization" / "train_cor").mkdir(parents=True)
    for i in range(unlabelled):
        Image.fromarray(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)).save(root / "colorization" / "train_cor" / f"c{i}.png")
    (root / "mapping.json").write_text(json.dumps({"Shaft": GREY["shaft"], "Tip": GREY["tip"]}))


def study(root: Path, validation: str = "folds") -> dict:
    return {
        "study": {"name": "hw6", "output_dir": "results", "device": "cpu"},
        "dataset": {
            "name": "hw6", "source": "folder", "mask_encoding": "grey_levels", "mask_mapping": "mapping.json",
            "folder": {"root": str(root),
                       "train": {"images": "segmentation/train/images", "masks": "segmentation/train/labels"},
                       "val": {"images": "segmentation/validation/images", "masks": "segmentation/validation/labels"},
                       "test": {"images": "segmentation/test/images", "masks": "segmentation/test/labels"},
                       "unlabelled": "colorization/train_cor"},
        },
        "preprocess": {"size": 32},
        "split": {"folds": 3, "validation": validation},
        "pretrain": {"epochs": 1, "batch_size": 4},
        "tracking": {"enabled": False},
        "defaults": {"model": {"base": 4, "depth": 2}, "train": {"epochs": 1, "batch_size": 4}},
        "variants": {"scratch": {}, "colorized": {"init": "colorization"}},
    }


def run_data_stages(tmp: Path, raw: dict) -> dict[str, Path]:
    cfg = validate(raw)
    stage = tmp / "config"
    for rel, content in stage_configs(cfg).items():
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text(json.dumps(content))
    paths = {"verify": tmp / "verify.json", "prepared": tmp / "prepared", "splits": tmp / "splits.json", "stage": stage}
    assert main(["verify", "--config", str(stage / "prepare.json"), "--raw", raw["dataset"]["folder"]["root"],
                 "--out", str(paths["verify"])]) == 0
    assert main(["preprocess", "--config", str(stage / "prepare.json"), "--verify", str(paths["verify"]),
                 "--out", str(paths["prepared"])]) == 0
    assert main(["split", "--config", str(stage / "split.json"), "--prepared", str(paths["prepared"]),
                 "--verify", str(paths["verify"]), "--out", str(paths["splits"])]) == 0
    return paths


@pytest.fixture
def hw6(tmp_path: Path) -> Path:
    root = tmp_path / "hw6-data"
    write_hw6(root)
    return root


def test_cross_validation_over_train_and_val_with_the_test_folder_as_given(hw6, tmp_path):
    paths = run_data_stages(tmp_path / "cv", study(hw6))
    splits = json.loads(paths["splits"].read_text())
    assert splits["test"] == [f"test/frame{i:03d}" for i in range(3)] and splits["test_source"] == "folder"
    pool = training_pool(splits)
    # Ids are <part>/<file id>: frame000 of train/ and of test/ stay two images.
    assert pool == sorted([f"train/frame{i:03d}" for i in range(8)] + [f"val/frame{i:03d}" for i in range(4)])
    assert len(splits["folds"]) == 3 and "train" not in splits
    assert splits["unlabelled"] == [f"unlabelled/c{i}" for i in range(5)]
    manifest = pd.read_csv(paths["prepared"] / "manifest.csv", dtype={"id": str})
    assert manifest.groupby("role").size().to_dict() == {"train": 8, "val": 4, "test": 3, "unlabelled": 5}
    masks = np.load(paths["prepared"] / "masks.npy")
    unlabelled = manifest.index[manifest["role"] == "unlabelled"]
    assert (masks[unlabelled] == 255).all()  # never a label, never scored
    assert not set(splits["unlabelled"]) & (set(pool) | set(splits["test"]))


def test_fixed_validation_folder_is_the_one_fold(hw6, tmp_path):
    raw = study(hw6, "fixed")
    assert fold_count(validate(raw)) == 1
    paths = run_data_stages(tmp_path / "fixed", raw)
    splits = json.loads(paths["splits"].read_text())
    train, val = fold_ids(splits, 0)
    assert val == [f"val/frame{i:03d}" for i in range(4)]
    assert train == [f"train/frame{i:03d}" for i in range(8)]
    assert splits["test"] == [f"test/frame{i:03d}" for i in range(3)]


def test_colorization_pretrains_on_the_unlabelled_folder(hw6, tmp_path):
    paths = run_data_stages(tmp_path / "pre", study(hw6, "fixed"))
    config = next((paths["stage"] / "pretrain").glob("*.json"))
    out = tmp_path / "pre" / "pretrain"
    assert main(["pretrain", "--config", str(config), "--prepared", str(paths["prepared"]),
                 "--splits", str(paths["splits"]), "--out", str(out), "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    # 5 unlabelled images: 1 drawn for the validation curve, 4 trained on; no labelled image.
    assert summary["train_images"] + summary["val_images"] == 5
    assert summary["images"] == "unlabelled" and summary["ids"] == [f"unlabelled/c{i}" for i in range(5)]
    assert summary["seen"] == {"validation": 0, "test": 0}


def test_snakemake_plans_one_training_per_variant_with_a_fixed_validation_folder(hw6, tmp_path):
    configfile = tmp_path / "hw6.yaml"
    configfile.write_text(yaml.safe_dump(study(hw6, "fixed")))
    done = subprocess.run(snakemake_cmd(tmp_path, configfile, "-n"), cwd=tmp_path, env=workflow_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    plan = done.stdout + done.stderr
    assert done.returncode == 0, plan[-3000:]
    assert "models/scratch/r0/fold0/best.pt" in plan and "models/scratch/r0/fold1/" not in plan


@pytest.mark.parametrize(("change", "says"), [
    (lambda c: c["dataset"]["folder"].pop("train"), "dataset.folder.val': a pre-split dataset needs dataset.folder.train"),
    (lambda c: c["dataset"]["folder"].update(images="imgs"), "dataset.folder.images': give either images/masks"),
    (lambda c: c["split"].update(test_ids=["x"]), "split.test_ids': dataset.folder.test already gives the test images"),
    (lambda c: (c["dataset"]["folder"].pop("val"), c["split"].update(validation="fixed")),
     "split.validation': fixed validates on dataset.folder.val, which is not given"),
])
def test_presplit_mistakes_name_the_key(tmp_path, change, says):
    raw = study(tmp_path)
    change(raw)
    with pytest.raises(ConfigError, match=says.replace(".", r"\.").replace("(", r"\(")):
        validate(raw, source="hw6.yaml")
