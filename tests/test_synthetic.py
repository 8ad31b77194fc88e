"""Behaviour of the built-in synthetic dataset generator (seglab.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.synthetic import KINDS, generate_dataset, generate_pair


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# ---------------------------------------------------------------- layout / ids


@pytest.mark.parametrize("kind", KINDS)
def test_layout_and_classes_json(tmp_path: Path, kind: str) -> None:
    classes = generate_dataset(tmp_path, kind, count=6, size=32, seed=0, groups=4)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.json", "images", "masks"]
    on_disk = json.loads((tmp_path / "classes.json").read_text())
    assert on_disk == classes
    if kind == "lesions":
        assert classes == {"names": ["background", "lesion"], "mask_encoding": "binary", "ignore_index": None}
    else:
        assert classes == {"names": ["background", "shaft", "tip"], "mask_encoding": "labels", "ignore_index": None}

    images = sorted(p.name for p in (tmp_path / "images").iterdir())
    masks = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert images == masks  # every image has its mask and nothing else lies around (no temp files)
    assert images == [
        "p00_0000.png", "p00_0004.png", "p01_0001.png", "p01_0005.png", "p02_0002.png", "p03_0003.png",
    ]


def test_groups_round_robin(tmp_path: Path) -> None:
    generate_dataset(tmp_path, "lesions", count=7, size=16, seed=3, groups=3)
    stems = sorted(p.stem for p in (tmp_path / "images").iterdir())
    for stem in stems:
        group, index = stem.split("_")
        assert group == f"p{int(index) % 3:02d}"
    assert len(stems) == 7


def test_regenerating_smaller_drops_stale_pairs(tmp_path: Path) -> None:
    generate_dataset(tmp_path, "lesions", count=6, size=16, seed=0)
    keep = tmp_path / "images" / "notes.png"  # not one of ours: must survive
    Image.new("RGB", (4, 4)).save(keep)
    generate_dataset(tmp_path, "lesions", count=3, size=16, seed=0)
    assert len(list((tmp_path / "masks").iterdir())) == 3
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "notes.png", "p00_0000.png", "p01_0001.png", "p02_0002.png",
    ]


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_arguments_give_identical_files(tmp_path: Path, kind: str) -> None:
    generate_dataset(tmp_path / "a", kind, count=4, size=48, seed=7)
    generate_dataset(tmp_path / "b", kind, count=4, size=48, seed=7)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


@pytest.mark.parametrize("kind", KINDS)
def test_image_i_does_not_depend_on_count(tmp_path: Path, kind: str) -> None:
    generate_dataset(tmp_path / "five", kind, count=5, size=40, seed=11)
    generate_dataset(tmp_path / "ten", kind, count=10, size=40, seed=11)
    five, ten = _files(tmp_path / "five"), _files(tmp_path / "ten")
    assert five.keys() <= ten.keys()
    for name, data in five.items():
        assert ten[name] == data, name


@pytest.mark.parametrize("kind", KINDS)
def test_generate_pair_matches_files_and_depends_on_seed(tmp_path: Path, kind: str) -> None:
    generate_dataset(tmp_path, kind, count=2, size=32, seed=5)
    image, labels = generate_pair(kind, 1, 32, 5)
    np.testing.assert_array_equal(_read(tmp_path / "images" / "p01_0001.png"), image)
    disk_mask = _read(tmp_path / "masks" / "p01_0001.png")
    expected = labels * 255 if kind == "lesions" else labels
    np.testing.assert_array_equal(disk_mask, expected)

    other_seed, _ = generate_pair(kind, 1, 32, 6)
    other_index, _ = generate_pair(kind, 2, 32, 5)
    assert not np.array_equal(image, other_seed)
    assert not np.array_equal(image, other_index)


@pytest.mark.parametrize("kind", KINDS)
def test_layout_is_the_same_at_every_size(kind: str) -> None:
    # Geometry is drawn in normalised units before any size-dependent array, so a
    # pair rendered at two resolutions shows the same scene.
    _, small = generate_pair(kind, 4, 48, 2)
    _, large = generate_pair(kind, 4, 96, 2)
    down = large[::2, ::2]
    assert (down == small).mean() > 0.97


# ---------------------------------------------------------------- shapes / values


def test_lesion_files_shapes_and_values(tmp_path: Path) -> None:
    size = 64
    generate_dataset(tmp_path, "lesions", count=40, size=size, seed=1)
    fractions = []
    for mask_path in sorted((tmp_path / "masks").iterdir()):
        with Image.open(mask_path) as m:
            assert m.mode == "L"
            assert m.size == (size, size)
            mask = np.asarray(m)
        with Image.open(tmp_path / "images" / mask_path.name) as im:
            assert im.mode == "RGB"
            assert im.size == (size, size)
        assert set(np.unique(mask).tolist()) == {0, 255}  # every image has a lesion
        fractions.append((mask == 255).mean())
    fractions = np.array(fractions)
    assert fractions.min() > 0.003
    assert fractions.max() < 0.5
    # Most lesions cover roughly 5-35 % of the image (a few are deliberately tiny).
    assert ((fractions > 0.04) & (fractions < 0.4)).mean() >= 0.85


def test_every_lesion_image_has_a_lesion_even_when_small() -> None:
    # Tiny lesions (about 5 % of images) must still cover a pixel at the minimum size.
    for index in range(60):
        _, labels = generate_pair("lesions", index, 16, 0)
        assert labels.any(), index


def test_generate_pair_types() -> None:
    for kind, n_classes in (("lesions", 2), ("instruments", 3)):
        image, labels = generate_pair(kind, 0, 33, 0)  # odd sizes work too
        assert image.shape == (33, 33, 3) and image.dtype == np.uint8
        assert labels.shape == (33, 33) and labels.dtype == np.uint8
        assert labels.max() < n_classes


def test_instrument_files_shapes_and_values(tmp_path: Path) -> None:
    size = 64
    generate_dataset(tmp_path, "instruments", count=12, size=size, seed=0)
    seen: set[int] = set()
    for mask_path in sorted((tmp_path / "masks").iterdir()):
        with Image.open(mask_path) as m:
            assert m.mode == "L" and m.size == (size, size)
            mask = np.asarray(m)
        with Image.open(tmp_path / "images" / mask_path.name) as im:
            assert im.mode == "RGB" and im.size == (size, size)
        values = set(np.unique(mask).tolist())
        assert values <= {0, 1, 2}
        assert {1, 2} <= values, f"{mask_path.name}: every image shows a shaft and a tip"
        seen |= values
    assert seen == {0, 1, 2}


# ---------------------------------------------------------------- appearance


def test_lesion_colour_differs_from_skin() -> None:
    gaps = []
    for index in range(40):
        image, labels = generate_pair("lesions", index, 64, 0)
        inside = image[labels == 1].astype(float).mean(axis=0)
        outside = image[labels == 0].astype(float).mean(axis=0)
        assert inside.sum() < outside.sum(), "lesions are darker than the surrounding skin"
        gaps.append(np.abs(inside - outside).sum())  # summed RGB distance of the means
    gaps = np.array(gaps)
    # Some lesions are deliberately pale / fade out at the rim, but none vanishes ...
    assert gaps.min() > 15
    # ... and the typical lesion stands out clearly.
    assert np.median(gaps) > 100
    assert (gaps > 50).mean() >= 0.9


def test_lesion_hue_differs_from_skin() -> None:
    # A colorization task (grey in, colour out) needs hue to depend on what is seen,
    # not only brightness: pigment is browner (redder, less blue) than the skin.
    red = {0: [], 1: []}
    blue = {0: [], 1: []}
    for index in range(20):
        image, labels = generate_pair("lesions", index, 64, 1)
        rgb = image.astype(float) + 1
        chroma_r = rgb[..., 0] / rgb.sum(-1)
        chroma_b = rgb[..., 2] / rgb.sum(-1)
        for k in (0, 1):
            red[k].append(chroma_r[labels == k])
            blue[k].append(chroma_b[labels == k])
    red_gap = np.concatenate(red[1]).mean() - np.concatenate(red[0]).mean()
    blue_gap = np.concatenate(blue[1]).mean() - np.concatenate(blue[0]).mean()
    assert red_gap > 0.02
    assert blue_gap < -0.015


def test_instrument_colours() -> None:
    for index in range(30):
        image, labels = generate_pair("instruments", index, 64, 0)
        img = image.astype(float)
        tissue, shaft, tip = (img[labels == k].mean(axis=0) for k in range(3))
        # Tissue is red-dominant; the shaft is grey metal (only tinted by reflections),
        # and the tip is darker than the shaft.
        assert tissue[0] - tissue[1] > 40
        assert (tissue[0] - tissue[1]) - (shaft[0] - shaft[1]) > 20
        assert tip.mean() < shaft.mean() - 10


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "cells"}, "unknown kind 'cells'"),
        ({"count": 0}, "count must be >= 1"),
        ({"size": 15}, "size must be >= 16"),
        ({"groups": 0}, "groups must be >= 1"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"kind": "lesions", "count": 2, "size": 32, "seed": 0, "groups": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()  # validation happens before anything is written


def test_generate_pair_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        generate_pair("nope", 0, 32, 0)
    with pytest.raises(ValueError, match="size must be >= 16"):
        generate_pair("lesions", 0, 8, 0)
    with pytest.raises(ValueError, match="index must be >= 0"):
        generate_pair("lesions", -1, 32, 0)
