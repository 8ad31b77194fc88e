"""class_weights: auto (median-frequency balancing, seglab.class_balance) on real CamVid counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seglab.class_balance import fold_class_weights, median_frequency_weights, resolve_auto_weights
from seglab.config import ConfigError, validate
from seglab.data.io import IGNORE, decode_mask
from seglab.data.verify import dataset_root, resolve_classes
from seglab.losses import build_loss
from tests.helpers import SHARED_DATASETS

CAMVID = SHARED_DATASETS / "camvid-subset"


def test_median_frequency_follows_the_segnet_definition():
    # Class 0 in both images (3 + 1 of 8 pixels), class 1 in the first (1 of 4), class 2 absent.
    pixels = np.array([[3, 1, 0], [4, 0, 0]])
    freq = np.array([7 / 8, 1 / 4])  # pixels of c over pixels of the images containing c
    median = float(np.median(freq))
    assert median_frequency_weights(pixels) == pytest.approx([median / freq[0], median / freq[1], 0.0])


@pytest.mark.skipif(not CAMVID.is_dir(), reason=f"{CAMVID} is absent")
def test_rare_camvid_classes_weigh_more_than_road_and_sky():
    cfg = validate({"dataset": {"name": "camvid", "source": "folder", "folder": {"root": str(CAMVID)},
                                "classes": None, "mask_encoding": "labels", "ignore_index": None},
                    "variants": {"v": {"loss": {"name": "ce", "class_weights": "auto"}}}})
    classes = resolve_classes(cfg["dataset"], dataset_root(cfg["dataset"], None))
    files = sorted((CAMVID / "masks").glob("*.png"))[:40]
    rows = []
    for path in files:
        mask, _ = decode_mask(path, classes)
        counts = np.bincount(mask[mask != IGNORE].ravel(), minlength=11)[:11]
        rows.append({"id": path.stem, **{f"pixels_{k}": int(c) for k, c in enumerate(counts)}})
    manifest = pd.DataFrame(rows)
    weights = fold_class_weights(manifest, list(manifest["id"][:30]), 11)
    names = classes["names"]
    road, sky, pole, sign = (weights[names.index(n)] for n in ("Road", "Sky", "Pole", "SignSymbol"))
    assert min(pole, sign) > 3 * max(road, sky)
    loss_cfg = resolve_auto_weights(cfg["variants"]["v"]["loss"], weights)
    assert loss_cfg["class_weights"] == weights and cfg["variants"]["v"]["loss"]["class_weights"] == "auto"
    build_loss(loss_cfg, 11, IGNORE)  # the resolved block is a valid loss


def test_auto_is_accepted_where_class_weights_are_and_refused_elsewhere():
    study = {"variants": {"v": {"loss": {"name": "sum", "terms": [{"name": "ce", "class_weights": "auto"}, {"name": "dice"}]}}}}
    assert validate(study)["variants"]["v"]["loss"]["terms"][0]["class_weights"] == "auto"
    with pytest.raises(ConfigError, match="class_weights"):
        validate({"variants": {"v": {"loss": {"name": "ce", "class_weights": "median"}}}})
