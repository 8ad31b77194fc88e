"""Pure pieces of the evaluate and report stages, on fixed numbers."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion

from seglab.evaluate import confusion_matrix, per_class_table
from seglab.metrics import confusion_counts
from seglab.report import figures
from seglab.report.document import stage_wall_times


def test_confusion_matrix_matches_sklearn_and_skips_ignored_pixels():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(2, 8, 8))
    target[0, 0, :4] = 255
    pred = rng.integers(0, 3, size=(2, 8, 8))
    ours = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 3, 255)
    keep = target.reshape(-1) != 255
    assert ours.tolist() == sk_confusion(target.reshape(-1)[keep], pred.reshape(-1)[keep], labels=[0, 1, 2]).tolist()
    png = figures.confusion(ours, ["bg", "shaft", "tip"], "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_class_table_means_over_images():
    target = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [1, 1]]])
    pred = torch.tensor([[[0, 1], [2, 0]], [[0, 0], [1, 0]]])
    table = per_class_table(confusion_counts(pred, target, 3, None), ["bg", "a", "b"], "test", "ensemble")
    # class b: image 1 Dice 2*1/(2+0+1) = 2/3; image 2 absent from both -> 1.
    assert table.loc[2, "dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert table.loc[2, "images_with_class"] == 1


def test_stage_wall_times_sums_benchmarks_per_stage(tmp_path):
    for name, s in (("train/v/r0/fold0.tsv", 2.5), ("train/v/r1/fold0.tsv", 1.5), ("verify.tsv", 0.25)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"s": [s], "h:m:s": ["0:00:02"]}).to_csv(tmp_path / name, sep="\t", index=False)
    (tmp_path / "broken.tsv").write_text("")
    assert stage_wall_times(tmp_path) == {"train": 4.0, "verify": 0.25}
