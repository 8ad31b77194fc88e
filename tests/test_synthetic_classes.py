"""The built-in synthetic classification set (seglab.data.synthetic_classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from seglab.data.synthetic_classes import CLASS_NAMES, make_shapes, write_evidence, write_image_folder


def test_same_seed_same_bytes_other_seed_differs() -> None:
    a, b = make_shapes(12, 32, seed=5), make_shapes(12, 32, seed=5)
    for field in ("images", "labels", "evidence"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes()
    other = make_shapes(12, 32, seed=6)
    assert other.images.tobytes() != a.images.tobytes()
    assert other.evidence.tobytes() != a.evidence.tobytes()
    # Image i does not depend on how many are generated.
    assert make_shapes(5, 32, seed=5).images.tobytes() == a.images[:5].tobytes()


def test_shapes_dtypes_and_balance() -> None:
    s = make_shapes(11, 32, seed=0)
    assert s.images.shape == (11, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.labels.dtype == np.int64 and s.evidence.dtype == bool and s.evidence.shape == (11, 32, 32)
    assert s.class_names == CLASS_NAMES
    assert np.bincount(s.labels).tolist() == [4, 4, 3]  # 11 // 3 each, remainder to the first
    two = make_shapes(6, 32, seed=0, class_names=("triangle", "circle"))
    assert two.class_names == ("triangle", "circle") and np.bincount(two.labels).tolist() == [3, 3]


def test_evidence_is_the_visible_object_inside_the_image() -> None:
    s = make_shapes(60, 48, seed=1)
    areas = s.evidence.sum(axis=(1, 2))
    assert areas.min() >= 0.02 * 48 * 48  # the deciding object is never a speck
    # Never cut by the border: no evidence pixel on the outermost row/column.
    border = s.evidence[:, [0, -1], :].any() or s.evidence[:, :, [0, -1]].any()
    assert not border
    for image, mask in zip(s.images.astype(float), s.evidence):
        # The object is one flat colour (plus sensor noise) that stands out from the rest.
        inside, outside = image[mask], image[~mask]
        assert inside.std(axis=0).max() < 12
        assert abs(inside.mean() - outside.mean()) > 20
    # Size is no cue: the three equal-area shapes have the same mean area within a few %.
    means = [areas[s.labels == k].mean() for k in range(3)]
    assert max(means) / min(means) < 1.1


def test_clutter_is_present_and_not_the_object() -> None:
    # Thin lines in shape-like colours cross the background: outside the evidence the
    # image is far from a flat field.
    s = make_shapes(9, 48, seed=2)
    for image, mask in zip(s.images.astype(float), s.evidence):
        assert image[~mask].std(axis=0).max() > 15


def test_image_folder_layout_reads_with_torchvision(tmp_path: Path) -> None:
    s = make_shapes(7, 32, seed=3)
    write_image_folder(s, tmp_path / "images")
    write_evidence(s, tmp_path / "evidence")

    folder = ImageFolder(str(tmp_path / "images"))
    assert tuple(folder.classes) == tuple(sorted(CLASS_NAMES))
    assert len(folder) == 7
    by_id = {Path(path).stem: folder.classes[label] for path, label in folder.samples}
    assert by_id == {f"shape_{i:05d}": s.class_names[int(s.labels[i])] for i in range(7)}
    image, _ = folder[0]
    first = Path(folder.samples[0][0]).stem
    assert np.array_equal(np.asarray(image), s.images[int(first.split("_")[1])])

    masks = sorted((tmp_path / "evidence").iterdir())
    assert [p.name for p in masks] == [f"shape_{i:05d}.png" for i in range(7)]
    for i, path in enumerate(masks):
        with Image.open(path) as img:
            stored = np.asarray(img)
        assert set(np.unique(stored)) <= {0, 255}
        assert np.array_equal(stored == 255, s.evidence[i])


@pytest.mark.parametrize("kwargs, match", [
    ({"count": 0}, "count"),
    ({"size": 16}, "size"),
    ({"seed": -1}, "seed"),
    ({"class_names": ("circle", "hexagon")}, "class_names"),
    ({"class_names": ("circle", "circle")}, "class_names"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    args = {"count": 3, "size": 32, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        make_shapes(**args)
