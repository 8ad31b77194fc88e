"""Verification: each bad input gets one clear message; skip lists, never drops silently;
mask encodings (binary 0/1, grey levels by mapping file, RGB colour table, labels)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.io import IGNORE, DataError
from seglab.data.preprocess import preprocess
from seglab.data.verify import verify_dataset

from tests.helpers import seglab_env


def _folder_dataset(root: Path, **overrides) -> dict:
    dataset = {
        "name": "mine", "source": "folder",
        "folder": {"root": str(root), "images": "images", "masks": "masks",
                   "image_regex": "^(?P<id>.+)$", "mask_regex": "^(?P<id>.+)$", "group_regex": None},
        "classes": None, "mask_encoding": "binary", "ignore_index": None,
        "grey_levels": None, "palette": None, "mask_mapping": None,
    }
    dataset.update(overrides)
    return dataset


def _write_pairs(root: Path, n: int = 4, size: int = 16, mask_values=(0, 255)) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
        mask = np.full((size, size), mask_values[0], np.uint8)
        mask[: 4 + i, :] = mask_values[1]
        Image.fromarray(mask).save(root / "masks" / f"im{i}.png")



def test_clean_folder_verifies(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    report = verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    assert report["pairs_ok"] == 4 and report["problems"] == []


def test_truncated_png(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    path = tmp_path / "images" / "im2.png"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError) as error:
        verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    message = str(error.value)
    assert "1 problem(s)" in message and f"{path}: " in message and "cannot be decoded" in message


def test_mask_of_wrong_size(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(tmp_path / "masks" / "im1.png")
    with pytest.raises(DataError) as error:
        verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    message = str(error.value)
    assert "1 problem(s)" in message and "im1.png" in message and "mask size 10x12 differs from image size 16x16" in message


def test_unknown_label_value(tmp_path: Path) -> None:
    _write_pairs(tmp_path, mask_values=(0, 1))
    bad = np.zeros((16, 16), np.uint8)
    bad[0, 0] = 7
    Image.fromarray(bad).save(tmp_path / "masks" / "im3.png")
    dataset = _folder_dataset(tmp_path, classes=["bg", "fg"], mask_encoding="labels")
    with pytest.raises(DataError) as error:
        verify_dataset(tmp_path, dataset, "fail")
    message = str(error.value)
    assert "1 problem(s)" in message and "im3.png" in message and "mask values 7 are not among the 2 declared classes" in message


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"images folder is empty"):
        verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")


def test_image_without_mask_and_skip_policy_lists_it(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    (tmp_path / "masks" / "im0.png").unlink()
    with pytest.raises(DataError) as error:
        verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    assert "im0.png: image without a mask" in str(error.value)

    report = verify_dataset(tmp_path, _folder_dataset(tmp_path), "skip")
    assert report["pairs_ok"] == 3
    assert [(p["id"], p["problem"]) for p in report["problems"]] == [("im0", "image without a mask")]


def test_every_bad_file_is_named_and_skip_keeps_the_rest(tmp_path: Path) -> None:
    _write_pairs(tmp_path, n=6)
    (tmp_path / "images" / "im0.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "im1.png")
    (tmp_path / "images" / "im5.png").write_bytes((tmp_path / "images" / "im4.png").read_bytes())  # duplicate
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "orphan.png")
    (tmp_path / "images" / "notes.txt").write_text("not an image")

    with pytest.raises(DataError) as error:
        verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    message = str(error.value)
    assert "4 problem(s)" in message
    for needle in ("im0.png", "im1.png", "duplicate (same sha256) of", "orphan.png: mask without an image"):
        assert needle in message

    report = verify_dataset(tmp_path, _folder_dataset(tmp_path), "skip")
    assert sorted(p["id"] for p in report["pairs"]) == ["im2", "im3", "im4"]
    assert sorted(p["id"] for p in report["problems"]) == ["im0", "im1", "im5", "orphan"]
    # found pairs = usable + the bad pairs; the orphan mask is a problem without a pair
    assert report["pairs_found"] == report["pairs_ok"] + 3


def test_cli_prints_one_clear_error(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    (tmp_path / "masks" / "im0.png").unlink()
    config = tmp_path / "prepare.json"
    config.write_text(json.dumps({"dataset": _folder_dataset(tmp_path), "verify": {"on_error": "fail"},
                                  "preprocess": {"size": 32, "policy": "resize"}}))
    result = subprocess.run([sys.executable, "-m", "seglab", "verify", "--config", str(config), "--out", str(tmp_path / "v.json")],
                            capture_output=True, text=True, env=seglab_env(PATH=""))
    assert result.returncode == 2
    assert result.stderr.startswith("seglab: error: verification found 1 problem(s)")
    assert "Traceback" not in result.stderr and not (tmp_path / "v.json").exists()


# ------------------------------------------------------------------ mask encodings


def test_binary_zero_one_masks(tmp_path: Path) -> None:
    _write_pairs(tmp_path, mask_values=(0, 1))
    report = verify_dataset(tmp_path, _folder_dataset(tmp_path), "fail")
    preprocess(report, 16, "resize", tmp_path / "out")
    masks = np.load(tmp_path / "out" / "masks.npy")
    assert set(np.unique(masks).tolist()) == {0, 1} and masks[0, :4].all() and not masks[0, 4:].any()


def test_grey_levels_from_endovis_style_mapping_file(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    grey = np.zeros((16, 16), np.uint8)
    grey[0:4], grey[4:8], grey[8:12] = 10, 20, 30  # shaft, wrist, claspers; 0 = background
    for i in range(4):
        Image.fromarray(grey).save(tmp_path / "masks" / f"im{i}.png")
    (tmp_path / "mapping.json").write_text(json.dumps({"Shaft": 10, "Wrist": 20, "Claspers": 30}))
    dataset = _folder_dataset(tmp_path, mask_encoding="grey_levels", mask_mapping="mapping.json")

    report = verify_dataset(tmp_path, dataset, "fail")
    assert report["classes"]["names"] == ["background", "Shaft", "Wrist", "Claspers"]
    preprocess(report, 16, "resize", tmp_path / "out")
    mask = np.load(tmp_path / "out" / "masks.npy")[0]
    assert mask[0, 0] == 1 and mask[5, 0] == 2 and mask[9, 0] == 3 and mask[13, 0] == 0

    grey[0, 0] = 40  # a grey level the mapping does not know
    Image.fromarray(grey).save(tmp_path / "masks" / "im2.png")
    with pytest.raises(DataError, match="im2.png: mask values 40 are not among the 4 declared classes"):
        verify_dataset(tmp_path, dataset, "fail")


def test_rgb_colour_table_with_ignored_colour(tmp_path: Path) -> None:
    _write_pairs(tmp_path)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[0:4] = (128, 64, 128)   # road
    rgb[4:8] = (64, 0, 128)     # car
    rgb[8:10] = (255, 255, 255)  # void: ignored
    for i in range(4):
        Image.fromarray(rgb).save(tmp_path / "masks" / f"im{i}.png")
    dataset = _folder_dataset(tmp_path, mask_encoding="rgb", classes=["background", "road", "car", "void"],
                              palette=[[0, 0, 0], [128, 64, 128], [64, 0, 128], [255, 255, 255]], ignore_index=3)

    report = verify_dataset(tmp_path, dataset, "fail")
    assert report["classes"]["names"] == ["background", "road", "car"]
    fingerprint = preprocess(report, 16, "resize", tmp_path / "out")
    mask = np.load(tmp_path / "out" / "masks.npy")[0]
    assert mask[0, 0] == 1 and mask[5, 0] == 2 and mask[9, 0] == IGNORE and mask[12, 0] == 0
    assert fingerprint["ignore_index"] == IGNORE

    rgb[15, 15] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "masks" / "im0.png")
    with pytest.raises(DataError, match=r"mask values \(1, 2, 3\) are not among"):
        verify_dataset(tmp_path, dataset, "fail")


def test_group_regex_and_pairing_regexes(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    for patient in ("p1", "p2"):
        for k in range(2):
            Image.fromarray(np.full((8, 8, 3), 10 * k + 100 * int(patient[1]), np.uint8)).save(tmp_path / "img" / f"{patient}-{k}_scan.png")
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gt" / f"{patient}-{k}_label.png")
    folder = {"root": str(tmp_path), "images": "img", "masks": "gt", "image_regex": r"^(?P<id>.+)_scan$",
              "mask_regex": r"^(?P<id>.+)_label$", "group_regex": r"^(?P<group>p\d+)-"}
    report = verify_dataset(tmp_path, _folder_dataset(tmp_path, folder=folder), "fail")
    assert {(p["id"], p["group"]) for p in report["pairs"]} == {("p1-0", "p1"), ("p1-1", "p1"), ("p2-0", "p2"), ("p2-1", "p2")}
