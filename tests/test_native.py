"""Images at their own resolution on real data (DRIVE): native cache, ROI, patches, whole-image
validation, evaluation and prediction by sliding windows."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from seglab import layout
from seglab.config import ConfigError, validate
from seglab.data.prepared import PreparedData
from seglab.data.io import IGNORE
from seglab.data.patches import PatchDataset
from seglab.data.preprocess import fit_native, preprocess
from seglab.data.splits import make_splits
from seglab.data.verify import verify_dataset
from seglab.evaluate import evaluate_variant
from seglab.predict import predict_folder
from seglab.train import train_fold
from tests.helpers import SHARED_DATASETS

DRIVE = SHARED_DATASETS / "drive"
pytestmark = pytest.mark.skipif(not DRIVE.is_dir(), reason=f"{DRIVE} is absent (see the shared datasets README)")


def drive_study(**train) -> dict:
    return {
        "study": {"name": "drive-native", "seed": 3, "device": "cpu"},
        "dataset": {"name": "drive", "source": "folder", "classes": ["background", "vessel"], "mask_encoding": "binary",
                    "folder": {"root": str(DRIVE), "images": "training/images", "masks": "training/1st_manual",
                               "roi": "training/mask", "image_regex": r"^(?P<id>\d+)_training$",
                               "mask_regex": r"^(?P<id>\d+)_manual1$", "roi_regex": r"^(?P<id>\d+)_training_mask$"}},
        "preprocess": {"policy": "native"},
        "split": {"folds": 2, "test_fraction": 0.2},
        "defaults": {"model": {"base": 4, "depth": 2}, "augmentation": {"preset": "flip", "grid_samples": 0},
                     "inference": {"window": 96, "overlap": 0.25, "batch_size": 16},
                     "train": {"epochs": 1, "batch_size": 8, "patch_size": 64, **train}},
        "variants": {"patches": {}},
    }


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    root = tmp_path_factory.mktemp("native")
    cfg = validate(drive_study())
    report = verify_dataset(DRIVE, cfg["dataset"], "fail")
    preprocess(report, cfg["preprocess"]["size"], "native", root / "prepared", cfg["preprocess"]["max_side"])
    manifest = pd.read_csv(root / "prepared" / layout.MANIFEST, dtype={"id": str, "group": str})
    splits = make_splits(manifest, folds=2, test_fraction=0.2, seed=0)
    return cfg, root, report, splits


def test_native_cache_keeps_each_size_and_ignores_outside_the_roi(native):
    cfg, root, report, _ = native
    data = PreparedData(root / "prepared")
    assert not (root / "prepared" / layout.IMAGES).exists()  # one blob, not a square array
    sizes = {(p["height"], p["width"]) for p in report["pairs"]}
    assert sizes == {(584, 565)}
    assert (root / "prepared" / layout.IMAGE_BLOB).stat().st_size == 20 * 584 * 565 * 3
    for row, pair in enumerate(report["pairs"]):
        image, mask = data.images[row], data.masks[row]
        assert image.shape == (584, 565, 3) and mask.shape == (584, 565)
        np.testing.assert_array_equal(image, np.asarray(Image.open(pair["image"]).convert("RGB")))
        roi = np.asarray(Image.open(pair["roi"]).convert("L")) > 0
        assert (mask[~roi] == IGNORE).all() and set(np.unique(mask[roi]).tolist()) == {0, 1}
    assert data.fingerprint["roi"] is True and data.ignore_index == IGNORE


def test_max_side_scales_the_longest_side_only_when_larger():
    image, mask = np.zeros((584, 565, 3), np.uint8), np.zeros((584, 565), np.uint8)
    small_image, small_mask = fit_native(image, mask, 292)
    assert small_image.shape == (292, 282, 3) and small_mask.shape == (292, 282)
    assert fit_native(image, mask, 1000)[1].shape == (584, 565)


def test_patches_centre_on_foreground_at_the_requested_share(native):
    _, root, _, splits = native
    data = PreparedData(root / "prepared")
    ids = splits["folds"][0]

    def centre_share(fraction: float) -> float:
        patches = PatchDataset(data, ids, 64, fraction)
        hits = [int(patches[(seed, seed % len(ids))][1][32, 32] == 1) for seed in range(120)]
        return float(np.mean(hits))

    always, never = centre_share(1.0), centre_share(0.0)
    assert always > 0.9 and never < 0.3
    patches = PatchDataset(data, ids, 64, 0.33)
    first, again = patches[(7, 1)], patches[(7, 1)]
    torch.testing.assert_close(first[0], again[0])  # the seed fixes the crop
    assert first[0].shape == (3, 64, 64) and first[1].shape == (64, 64)


def test_native_policy_needs_patches():
    study = drive_study()
    study["defaults"]["train"].pop("patch_size")
    with pytest.raises(ConfigError, match="train.patch_size"):
        validate(study)
    study = drive_study(patch_size=48)
    study["defaults"]["model"]["depth"] = 5
    with pytest.raises(ConfigError, match="train.patch_size': 48 is not divisible by 32"):
        validate(study)


def test_patch_training_validates_evaluates_and_predicts_whole_images(native, tmp_path):
    cfg, root, report, splits = native
    variant = {"study": cfg["study"], "tracking": cfg["tracking"], "variant": "patches", **cfg["variants"]["patches"]}
    summary = train_fold(variant, root / "prepared", splits, 0, tmp_path / "models" / "patches" / "fold0")
    history = pd.read_csv(tmp_path / "models" / "patches" / "fold0" / layout.HISTORY)
    assert 0.0 <= summary["val_dice"] <= 1.0 and np.isfinite(history["val_loss"]).all()
    checkpoint = tmp_path / "models" / "patches" / "fold0" / layout.CHECKPOINT

    metrics = evaluate_variant(variant, root / "prepared", {**splits, "folds": splits["folds"]}, [checkpoint],
                               [summary], tmp_path / "eval")
    assert metrics["test_images"] == len(splits["test"]) and 0.0 <= metrics["test"]["ensemble"]["dice"] <= 1.0
    labels = np.load(tmp_path / "eval" / layout.ENSEMBLE_PREDICTIONS)
    assert labels.shape == (len(splits["test"]), 584, 565)
    data = PreparedData(root / "prepared")
    for i, row in enumerate(data.indices(splits["test"])):
        assert (labels[i][data.masks[row] == IGNORE] == 0).all()  # background outside the field of view

    pair = next(p for p in report["pairs"] if p["id"] == splits["test"][0])
    images, rois = tmp_path / "new" / "images", tmp_path / "new" / "rois"
    images.mkdir(parents=True)
    rois.mkdir()
    shutil.copy(pair["image"], images)
    shutil.copy(pair["roi"], rois)
    fingerprint = data.fingerprint
    predict_folder(variant, fingerprint, [checkpoint], images, tmp_path / "out", progress=False, roi=rois)
    mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{Path(pair['image']).stem}.png"))
    roi = np.asarray(Image.open(pair["roi"]).convert("L")) > 0
    assert mask.shape == (584, 565) and (mask[~roi] == 0).all()


KVASIR = SHARED_DATASETS / "kvasir-seg-sample"


@pytest.mark.skipif(not KVASIR.is_dir(), reason=f"{KVASIR} is absent")
@pytest.mark.parametrize("policy,max_side", [("pad", None), ("native", 256)])
def test_test_scores_are_at_each_images_original_size(tmp_path, policy, max_side):
    """Mixed sizes (one 1348x1070 frame among ~620x530 ones), prepared smaller: the test
    predictions come back at the original sizes, and the per-image Dice in per_image.csv is
    the Dice of those predictions against the original masks."""
    from seglab.data.io import decode_mask

    cfg = validate({
        "study": {"name": "kvasir", "seed": 0, "device": "cpu"},
        "dataset": {"name": "kvasir", "source": "folder", "folder": {"root": str(KVASIR)},
                    "classes": ["background", "polyp"], "mask_encoding": "binary"},
        "preprocess": {"size": 64, "policy": policy, "max_side": max_side},
        "split": {"folds": 2},
        "defaults": {"model": {"base": 4, "depth": 2}, "augmentation": {"preset": "none"},
                     "train": {"epochs": 1, "batch_size": 2, **({"patch_size": 64} if policy == "native" else {})}},
        "variants": {"v": {}},
    })
    report = verify_dataset(KVASIR, cfg["dataset"], "fail")
    preprocess(report, 64, policy, tmp_path / "prepared", max_side)
    data = PreparedData(tmp_path / "prepared")
    splits = {"repeat": 0, "test": [report["pairs"][0]["id"], report["pairs"][4]["id"]],
              "folds": [[p["id"] for p in report["pairs"][1:3]], [p["id"] for p in report["pairs"][3:4]]]}
    variant = {"study": cfg["study"], "tracking": cfg["tracking"], "variant": "v", **cfg["variants"]["v"]}
    summary = train_fold(variant, tmp_path / "prepared", splits, 0, tmp_path / "models" / "v" / "fold0")
    evaluate_variant(variant, tmp_path / "prepared", splits, [tmp_path / "models" / "v" / "fold0" / layout.CHECKPOINT],
                     [summary], tmp_path / "eval")
    labels = np.load(tmp_path / "eval" / layout.ENSEMBLE_PREDICTIONS)
    per_image = pd.read_csv(tmp_path / "eval" / layout.PER_IMAGE, dtype={"id": str})
    ensemble = per_image[per_image["model"] == "ensemble"].set_index("id")
    pairs = {p["id"]: p for p in report["pairs"]}
    for i, id_ in enumerate(splits["test"]):
        truth, _ = decode_mask(Path(pairs[id_]["mask"]), report["classes"])
        h, w = truth.shape
        assert (h, w) == (pairs[id_]["height"], pairs[id_]["width"]) and max(h, w) > 256
        np.testing.assert_array_equal(data.original_masks[data.indices([id_])[0]], truth)
        pred = labels[i][:h, :w] == 1
        tp, fp, fn = (pred & (truth == 1)).sum(), (pred & (truth == 0)).sum(), (~pred & (truth == 1)).sum()
        dice = 2 * tp / max(2 * tp + fp + fn, 1) if (tp + fp + fn) else 1.0
        assert ensemble.loc[id_, "dice"] == pytest.approx(dice, abs=1e-6)


def test_16_bit_images_share_one_scale_per_dataset(tmp_path):
    """A dim and a bright 16-bit scan stay dim and bright (per-image min-max would make both full range)."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, high in (("dim", 2000), ("bright", 60000)):
        values = rng.integers(1000, high, size=(40, 48)).astype(np.uint16)
        Image.fromarray(values).save(tmp_path / "images" / f"{name}.png")  # saved as 16-bit greyscale
        Image.fromarray(((values > (1000 + high) // 2) * 255).astype(np.uint8)).save(tmp_path / "masks" / f"{name}.png")
    assert Image.open(tmp_path / "images" / "dim.png").mode.startswith("I")
    cfg = validate({"dataset": {"name": "scans", "source": "folder", "folder": {"root": str(tmp_path)},
                                "classes": ["background", "cell"], "mask_encoding": "binary"},
                    "variants": {"v": {"train": {"patch_size": 32}}}, "preprocess": {"policy": "native"}})
    report = verify_dataset(tmp_path, cfg["dataset"], "fail")
    fingerprint = preprocess(report, 64, "native", tmp_path / "prepared")
    data = PreparedData(tmp_path / "prepared")
    brightest = {p["id"]: int(np.asarray(data.images[row]).max()) for row, p in enumerate(report["pairs"])}
    assert fingerprint["value_range"][0] >= 1000 and fingerprint["value_range"][1] < 60000
    assert brightest["bright"] == 255 and brightest["dim"] < 20
    # Grey stays one channel in the cache; readers get the three the models take.
    assert (tmp_path / "prepared" / layout.IMAGE_BLOB).stat().st_size == 2 * 40 * 48
    assert data.images.stored_channels(0) == 1 and data.images[0].shape == (40, 48, 3)
