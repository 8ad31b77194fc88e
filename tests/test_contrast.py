"""preprocess.clahe: contrast equalisation of the prepared images, the same in training and in
`seglab predict`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from seglab.config import ConfigError, validate
from seglab.data.contrast import equalise_contrast
from seglab.data.io import read_image
from seglab.data.preprocess import preprocess
from seglab.predict import prepared_image
from tests.helpers import tiny_study

CLAHE = {"clip_limit": 2.0, "tiles": 4}


def faint_line(channels: int) -> np.ndarray:
    """A dim field (values 100-109) crossed by a line 4 grey levels brighter than its row."""
    rng = np.random.default_rng(0)
    grey = (100 + np.arange(64)[None, :] // 8 + rng.integers(0, 2, (64, 64))).astype(np.uint8)
    grey[30:32, :] += 4
    return grey if channels == 1 else np.stack([grey, (grey * 0.8).astype(np.uint8), (grey * 0.6).astype(np.uint8)], -1)


def line_contrast(image: np.ndarray) -> float:
    grey = image if image.ndim == 2 else image[..., 0]
    return float(grey[30:32].astype(float).mean() - np.r_[grey[20:28], grey[34:42]].astype(float).mean())


def test_no_clahe_leaves_the_image_as_it_is():
    image = faint_line(3)
    assert equalise_contrast(image, None) is image


@pytest.mark.parametrize("shape", ["grey", "grey-1", "rgb"])
def test_clahe_raises_a_faint_structures_contrast_and_keeps_shape_and_type(shape):
    image = faint_line(1 if shape.startswith("grey") else 3)
    if shape == "grey-1":
        image = image[..., None]
    out = equalise_contrast(image, CLAHE)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert line_contrast(out.reshape(out.shape[:2]) if shape == "grey-1" else out) > 1.5 * line_contrast(
        image.reshape(image.shape[:2]) if shape == "grey-1" else image)


def test_clahe_changes_only_the_luminance_of_colour_images():
    image = faint_line(3)
    before, after = (cv2.cvtColor(x, cv2.COLOR_RGB2LAB).astype(int) for x in (image, equalise_contrast(image, CLAHE)))
    assert np.abs(after[..., 0] - before[..., 0]).max() > 10  # the luminance was equalised...
    assert np.abs(after[..., 1:] - before[..., 1:]).max() <= 3  # ...the chroma only moved by rounding


def test_prepared_images_and_predict_see_the_same_equalised_pixels(tiny_data, tmp_path):
    fingerprint = preprocess(tiny_data.report, 32, "resize", tmp_path, clahe=CLAHE)
    assert fingerprint["clahe"] == CLAHE
    cached = np.load(tmp_path / "images.npy", mmap_mode="r")
    plain = np.load(tiny_data.root / "prepared" / "images.npy", mmap_mode="r")
    assert not np.array_equal(cached, plain)
    for i, pair in enumerate(tiny_data.report["pairs"][:3]):
        np.testing.assert_array_equal(prepared_image(read_image(pair["image"]), fingerprint), cached[i])


def test_clahe_keys_are_validated_with_their_defaults():
    cfg = tiny_study(preprocess={"size": 32, "clahe": {}})
    assert validate(cfg)["preprocess"]["clahe"] == {"clip_limit": 2.0, "tiles": 8}
    assert validate(tiny_study())["preprocess"]["clahe"] is None
    with pytest.raises(ConfigError, match=r"preprocess\.clahe\.clip_limit"):
        validate(tiny_study(preprocess={"size": 32, "clahe": {"clip_limit": 0}}))
