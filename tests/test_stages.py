"""The data stages and one training fold on the built-in generator, as the workflow runs them."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from seglab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seglab.data.dataset import SegmentationDataset
from seglab.data.prepared import PreparedData
from seglab.data.io import DataError
from seglab.data.splits import fold_ids, make_splits
from seglab.data.verify import verify_dataset
from seglab.engine import Execution, run_epoch
from seglab.stopping import EarlyStopping
from seglab.losses import build_loss
from seglab.models import build_model
from seglab.train import train_fold


def test_verify_and_preprocess_write_the_documented_files(tiny_data):
    root, report = tiny_data.root, tiny_data.report
    assert report["pairs_found"] == report["pairs_ok"] == 30 and report["problems"] == []
    data = PreparedData(root / "prepared")
    assert data.images.shape == (30, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.masks.shape == (30, 32, 32) and set(np.unique(data.masks)) <= {0, 1}
    fp = data.fingerprint
    assert fp["classes"] == ["background", "lesion"] and fp["num_classes"] == 2 and fp["ignore_index"] is None
    assert 0.0 < fp["class_frequency"][1] < 0.6 and len(fp["mean"]) == 3
    # The per-class pixel counts in the manifest add up to every pixel.
    assert int(data.manifest[["pixels_0", "pixels_1"]].to_numpy().sum()) == 30 * 32 * 32


def test_splits_are_disjoint_grouped_and_deterministic(tiny_data):
    root, splits = tiny_data.root, tiny_data.splits
    manifest = pd.read_csv(root / "prepared" / "manifest.csv", dtype={"id": str, "group": str})
    parts = [set(splits["test"])] + [set(f) for f in splits["folds"]]
    assert sum(len(p) for p in parts) == 30 and set().union(*parts) == set(manifest["id"])
    group_of = dict(zip(manifest["id"], manifest["group"]))
    groups = [{group_of[i] for i in p} for p in parts]
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            assert not groups[i] & groups[j], "a patient straddles two parts of the split"
    assert make_splits(manifest, 2, 0.2, 0) == splits
    train, val = fold_ids(splits, 1)
    assert set(val) == set(splits["folds"][1]) and not set(train) & set(val)


def test_verify_refuses_a_corrupt_image_naming_it(tiny_data, tmp_path):
    cfg, root = tiny_data.cfg, tiny_data.root
    import shutil

    shutil.copytree(root / "raw", tmp_path / "raw")
    victim = sorted((tmp_path / "raw" / "images").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataError, match=victim.name):
        verify_dataset(tmp_path / "raw", cfg["dataset"], "fail")
    report = verify_dataset(tmp_path / "raw", cfg["dataset"], "skip")
    assert report["pairs_ok"] == 29 and report["problems"][0]["file"].endswith(victim.name)


def test_one_training_step_lowers_the_loss(tiny_data):
    cfg, root, splits = tiny_data.cfg, tiny_data.root, tiny_data.splits
    torch.manual_seed(0)
    data = PreparedData(root / "prepared")
    images, masks = zip(*(SegmentationDataset(data, splits["folds"][0])[i] for i in range(8)))
    batch = [(torch.stack(images), torch.stack(masks))]
    variant = cfg["variants"]["scratch"]  # unet base 4, depth 2, loss bce
    model = build_model(variant["model"], 3, 1)
    loss_fn = build_loss(variant["loss"], 2, None)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    execution = Execution.for_device(torch.device("cpu"))
    losses = [run_epoch(model, batch, loss_fn, execution, optimizer)["loss"] for _ in range(5)]
    assert losses[-1] < losses[0]


def test_training_scores_are_those_of_the_predictions_made_on_the_training_batches(tiny_data):
    """With a learning rate of 0 and no batch norm, training predicts as validation does: on the
    same batches, train_dice/train_iou/train_loss equal the validation values."""
    from seglab.engine import fit
    from seglab.metrics import MetricAccumulator

    cfg, root, splits = tiny_data.cfg, tiny_data.root, tiny_data.splits
    torch.manual_seed(0)
    data = PreparedData(root / "prepared")
    images, masks = zip(*(SegmentationDataset(data, splits["folds"][0])[i] for i in range(8)))
    batches = [(torch.stack(images[:4]), torch.stack(masks[:4])), (torch.stack(images[4:]), torch.stack(masks[4:]))]
    model = build_model({**cfg["variants"]["scratch"]["model"], "batch_norm": False}, 3, 1)
    records = []
    fit(model, batches, batches, build_loss(cfg["variants"]["scratch"]["loss"], 2, None),
        torch.optim.SGD(model.parameters(), lr=0.0), Execution.for_device(torch.device("cpu")), 1, None,
        lambda record, best: records.append(record), metrics=MetricAccumulator(2, None, [1]),
        train_metrics=MetricAccumulator(2, None, [1]))
    (record,) = records
    for name in ("dice", "iou", "loss"):
        assert record[f"train_{name}"] == pytest.approx(record[f"val_{name}"], rel=1e-6), name
    # A model that is learning is scored as it goes: the scores differ once it moves.
    records.clear()
    fit(model, batches, batches, build_loss(cfg["variants"]["scratch"]["loss"], 2, None),
        torch.optim.Adam(model.parameters(), lr=0.05), Execution.for_device(torch.device("cpu")), 1, None,
        lambda record, best: records.append(record), metrics=MetricAccumulator(2, None, [1]),
        train_metrics=MetricAccumulator(2, None, [1]))
    assert records[0]["train_loss"] != pytest.approx(records[0]["val_loss"], rel=1e-6)


def test_early_stopping_counts_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    assert stopper.step(1.0, 1) and not stopper.step(1.5, 2) and not stopper.should_stop
    assert not stopper.step(1.2, 3) and stopper.should_stop and stopper.best_epoch == 1


def test_train_fold_writes_checkpoint_history_and_summary(tiny_data, tmp_path):
    cfg, root, splits = tiny_data.cfg, tiny_data.root, tiny_data.splits
    variant = {"study": cfg["study"], "tracking": cfg["tracking"], "variant": "scratch", **cfg["variants"]["scratch"]}
    summary = train_fold(variant, root / "prepared", splits, 0, tmp_path / "fold0")
    history = pd.read_csv(tmp_path / "fold0" / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "val_dice", "val_iou", "train_dice", "train_iou", "lr"} <= set(history.columns)
    assert history[["train_dice", "train_iou"]].stack().between(0, 1).all()
    assert summary["best_epoch"] in (1, 2) and 0.0 <= summary["val_dice"] <= 1.0
    assert json.loads((tmp_path / "fold0" / "summary.json").read_text())["params_trainable"] > 0
    state = load_checkpoint(tmp_path / "fold0" / "best.pt")
    assert state["epoch"] == summary["best_epoch"]


def test_checkpoint_digest_mismatch_is_detected(tmp_path):
    path = tmp_path / "w.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load_checkpoint(path)
