"""Classification parts in-process: image-level readers and verification, preparation, stratified
(and grouped) splits, classifiers, losses and per-epoch scores, and torchvision's download served
from a local HTTP server the test builds (nothing downloads from the internet).

Real images: scikit-learn's bundled 8x8 digits, and a three-class set cut honestly from the
shared segmentation datasets by where each image comes from (CamVid street scenes, Kvasir-SEG
endoscopy, ISBI 2012 electron microscopy), listed in a CSV with CamVid's sequence as the group.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from seglab.class_scores import classification_scores
from seglab.classification.data import preprocess_images, verify_images
from seglab.classification.losses import AccuracyAccumulator, auto_class_weights, build_classification_loss
from seglab.classification.models import (TORCHVISION_NAMES, build_classifier, initialise_classifier, last_layer,
                                          set_trainable)
from seglab.classification.sources import write_digits, write_torchvision
from seglab.data.io import DataError
from seglab.data.splits import make_splits
from seglab.checkpoint import CheckpointError
from seglab.models.freeze import set_encoder_trainable
from tests.helpers import SHARED_DATASETS, stop_process


def folder_dataset(source: str = "class_folder", root: Path | None = None, table: str | None = None) -> dict:
    return {"source": source, "folder": {"root": str(root) if root else ""}, "labels": {"table": table}}


def write_png(path: Path, value: int, mode: str = "L", size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value, 0, 0)).save(path)


def test_class_folder_verification_reports_unreadable_files_empty_classes_and_counts(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / "cat" / f"c{i}.png", 40 * i)
    for i in range(2):
        write_png(tmp_path / "dog" / f"d{i}.png", 50 + i)
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "fish").mkdir()
    report = verify_images(folder_dataset(root=tmp_path), None, "skip")
    assert report["classes"] == ["cat", "dog", "fish"]
    assert report["class_counts"] == {"cat": 3, "dog": 2, "fish": 0}
    assert report["empty_classes"] == ["fish"]
    problems = {Path(p["file"]).name: p["problem"] for p in report["problems"]}
    assert "cannot be decoded" in problems["broken.png"] and "empty class" in problems["fish"]
    assert report["pairs_found"] == 6 and report["pairs_ok"] == 5
    with pytest.raises(DataError, match="broken.png"):
        verify_images(folder_dataset(root=tmp_path), None, "fail")
    # The empty class is left out of the prepared classes; grey images stay one channel.
    fp = preprocess_images(report, 32, "resize", tmp_path / "prepared")
    assert fp["classes"] == ["cat", "dog"] and fp["channels"] == 1
    assert np.load(tmp_path / "prepared" / "images.npy").shape == (5, 32, 32, 1)


def real_image_table(tmp_path: Path) -> Path:
    """Three real sources as three classes, six images each at most; CamVid's sequence is the group."""
    camvid = sorted((SHARED_DATASETS / "camvid-subset" / "images").glob("*.png"))
    by_sequence = {}
    for path in camvid:
        by_sequence.setdefault(path.name.split("_")[0], []).append(path)
    street = [p for paths in by_sequence.values() for p in paths[:2]][:8]
    endoscopy = sorted((SHARED_DATASETS / "kvasir-seg-sample" / "images").iterdir())[:6]
    microscopy = sorted((SHARED_DATASETS / "isbi2012" / "image").glob("*.png"))[:6]
    rows = [(p, "street", p.name.split("_")[0]) for p in street]
    rows += [(p, "endoscopy", p.stem) for p in endoscopy] + [(p, "microscopy", p.stem) for p in microscopy]
    table = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label", "group"]).to_csv(table, index=False)
    return table


def test_class_table_of_real_images_prepares_rgb_and_splits_stratified_and_grouped(tmp_path: Path) -> None:
    if not (SHARED_DATASETS / "camvid-subset").is_dir():
        pytest.skip("the shared datasets are not on this machine")
    table = real_image_table(tmp_path)
    report = verify_images(folder_dataset("class_table", tmp_path, table.name), None, "fail")
    assert report["classes"] == ["endoscopy", "microscopy", "street"] and not report["problems"]
    fp = preprocess_images(report, 32, "pad", tmp_path / "prepared")
    assert fp["channels"] == 3  # RGB scenes beside grey micrographs: every image becomes RGB
    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv", dtype={"id": str, "group": str})
    splits = make_splits(manifest, 2, 0.25, 0, strata=manifest["label"].to_numpy())
    group_of = dict(zip(manifest["id"], manifest["group"]))
    test_groups = {group_of[i] for i in splits["test"]}
    fold_groups = [{group_of[i] for i in fold} for fold in splits["folds"]]
    assert not test_groups & set().union(*fold_groups) and not fold_groups[0] & fold_groups[1]
    label_of = dict(zip(manifest["id"], manifest["label"]))
    assert {label_of[i] for i in splits["test"]} == {0, 1, 2}  # every class in the test set


def test_class_table_errors_name_the_file_and_the_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="labels.csv not found"):
        verify_images(folder_dataset("class_table", tmp_path, "labels.csv"), None, "fail")
    (tmp_path / "labels.tsv").write_text("file\tclass\nx.png\ta\n")
    with pytest.raises(DataError, match="no column path or label"):
        verify_images(folder_dataset("class_table", tmp_path, "labels.tsv"), None, "fail")


def test_digits_are_real_grey_and_split_stratified_by_class(tmp_path: Path) -> None:
    count = write_digits(tmp_path / "raw")
    report = verify_images({"source": "digits"}, tmp_path / "raw", "fail")
    assert count == report["pairs_ok"] == 1797 and report["classes"] == [str(d) for d in range(10)]
    fp = preprocess_images(report, 32, "resize", tmp_path / "prepared")
    assert fp["channels"] == 1 and fp["num_classes"] == 10
    manifest = pd.read_csv(tmp_path / "prepared" / "manifest.csv", dtype={"id": str, "group": str})
    splits = make_splits(manifest, 3, 0.2, 0, strata=manifest["label"].to_numpy())
    labels = dict(zip(manifest["id"], manifest["label"]))
    overall = manifest["label"].value_counts(normalize=True).sort_index()
    for part in [splits["test"], *splits["folds"]]:
        shares = pd.Series([labels[i] for i in part]).value_counts(normalize=True).sort_index()
        assert np.abs(shares - overall).max() < 0.02  # each class's share kept in every part


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_backbones_get_a_new_head_and_freeze_as_asked(name: str) -> None:
    model = build_classifier({"name": "backbone", "arch": name}, 3, 4)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert last_layer(model).out_features == 4
    set_encoder_trainable(model, False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and any(p.requires_grad for p in last_layer(model).parameters())
    assert len(model.state_dict()) == len(model.net.state_dict())  # the encoder view registers nothing twice


def test_small_networks_are_parametric_and_last_layer_only_trains_one_layer() -> None:
    vgg = build_classifier({"name": "vgg", "base": 4, "blocks": 3, "convs_per_block": 2, "batch_norm": True,
                            "dropout": 0.1, "hidden": 16, "pool": "avg"}, 1, 3)
    deeper = build_classifier({"name": "resnet", "depth": 5, "base": 4, "pool": "max"}, 1, 3)
    shallow = build_classifier({"name": "resnet", "depth": 2, "base": 4, "pool": "avg"}, 1, 3)
    for model in (vgg, deeper, shallow):
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert sum(p.numel() for p in deeper.parameters()) > sum(p.numel() for p in shallow.parameters())
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.encoder) == 6
    set_trainable(vgg, last_only=True)
    trainable = [n for n, p in vgg.named_parameters() if p.requires_grad]
    assert trainable == ["head.6.weight", "head.6.bias"]


def test_imagenet_init_without_cached_weights_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    model = build_classifier({"name": "backbone", "arch": "resnet18"}, 3, 2)
    with pytest.raises(CheckpointError, match=r"not in the local cache .*torch.*seglab never downloads"):
        initialise_classifier(model, {"init": "imagenet", "model": {"arch": "resnet18"}, "variant": "v"}, None)


def test_losses_match_their_definitions_and_validation_scores_match_class_scores() -> None:
    torch.manual_seed(0)
    logits, target = torch.randn(64, 4), torch.randint(0, 4, (64,))
    ce = build_classification_loss({"name": "ce", "class_weights": None, "label_smoothing": 0.1}, 4)
    assert torch.isclose(ce(logits, target), torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1))
    focal0 = build_classification_loss({"name": "focal", "gamma": 0.0, "alpha": None, "class_weights": None}, 4)
    assert torch.isclose(focal0(logits, target), torch.nn.functional.cross_entropy(logits, target))
    focal2 = build_classification_loss({"name": "focal", "gamma": 2.0, "alpha": None, "class_weights": None}, 4)
    assert focal2(logits, target) < focal0(logits, target)  # confident examples weigh less
    with pytest.raises(ValueError, match="3 weights for 4 classes"):
        build_classification_loss({"name": "ce", "class_weights": [1, 1, 1], "label_smoothing": 0.0}, 4)
    assert auto_class_weights(np.array([0, 0, 0, 0, 1, 1, 2]), 4) == [0.5, 1.0, 2.0, 0.0]
    scores = AccuracyAccumulator(4)
    scores.update(logits[:30], target[:30])
    scores.update(logits[30:], target[30:])
    reference = classification_scores(target.numpy(), logits.softmax(1).numpy(), list("abcd"))
    for key, value in scores.compute().items():
        assert value == pytest.approx(reference[key])


# ------------------------------------------------------------ torchvision through a local mirror

def idx_file(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's format: magic 0x08 ubyte, the number of dims, big-endian sizes), gzipped."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tiny MNIST (IDX files made here) served by `python -m http.server` on 127.0.0.1; torchvision
    is told these files' MD5s, so its own download-and-verify code checks what it fetches."""
    import torchvision.datasets as tvd

    served = tmp_path / "mirror"
    served.mkdir()
    rng = np.random.default_rng(0)
    parts = {"train": 30, "t10k": 12}
    resources = []
    for part, n in parts.items():
        idx_file(served / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        idx_file(served / f"{part}-labels-idx1-ubyte.gz", np.arange(n) % 10)
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{part}-{kind}-ubyte.gz"
            resources.append((name, hashlib.md5((served / name).read_bytes()).hexdigest()))
    monkeypatch.setattr(tvd.MNIST, "resources", resources)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(served)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", served
    finally:
        stop_process(server)


def test_torchvision_dataset_downloads_checks_and_writes_a_class_folder(tmp_path: Path, mnist_mirror) -> None:
    mirror, _ = mnist_mirror
    out = tmp_path / "raw" / "mnist"
    count = write_torchvision({"name": "MNIST", "mirror": mirror, "train_count": 20, "test_count": None}, out)
    assert count == 20 + 12
    report = verify_images({"source": "torchvision"}, out, "fail")
    assert report["pairs_ok"] == 32 and len(report["classes"]) == 10
    test_ids = (out / "images" / "test.txt").read_text().split()
    assert len(test_ids) == 12 and all(i.startswith("test_") for i in test_ids)


def test_torchvision_checksum_mismatch_and_offline_are_one_clear_error(tmp_path: Path, mnist_mirror,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    mirror, served = mnist_mirror
    cfg = {"name": "MNIST", "mirror": mirror, "train_count": None, "test_count": None}
    monkeypatch.setattr(tvd.MNIST, "resources", [(name, "0" * 32) for name, _ in tvd.MNIST.resources])
    with pytest.raises(DataError, match=r"dataset.torchvision: downloading MNIST from http://127.0.0.1:\d+/ failed"):
        write_torchvision(cfg, tmp_path / "bad" / "mnist")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    offline = {**cfg, "mirror": f"http://127.0.0.1:{closed}/"}
    with pytest.raises(DataError, match="may be offline") as error:
        write_torchvision(offline, tmp_path / "offline" / "mnist")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("change, key", [
    ({"dataset": {"source": "builtin"}}, "dataset.source"),
    ({"defaults": {"model": {"name": "unet"}, "loss": {"name": "ce"}}}, "variants.a.model.name"),
    ({"defaults": {"model": {"name": "vgg"}, "loss": {"name": "dice"}}}, "variants.a.loss.name"),
    ({"defaults": {"model": {"name": "vgg"}, "loss": {"name": "ce"}, "init": "colorization"}}, "variants.a.init"),
    ({"defaults": {"model": {"name": "backbone", "arch": "no_such_net"}, "loss": {"name": "ce"}}}, "variants.a.model.arch"),
    ({"dataset": {"source": "class_table", "folder": {"root": "x"}}}, "dataset.labels.table"),
])
def test_config_keeps_sources_models_losses_and_inits_to_their_task(change: dict, key: str) -> None:
    from seglab.config import ConfigError, deep_merge, validate

    base = {"study": {"task": "classification"}, "dataset": {"source": "digits"},
            "defaults": {"model": {"name": "vgg"}, "loss": {"name": "ce"}}, "variants": {"a": {}}}
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        validate(deep_merge(base, change))


def test_classification_keys_are_refused_in_a_segmentation_study() -> None:
    from seglab.config import ConfigError, validate

    with pytest.raises(ConfigError, match="key .variants.a.train.last_layer_only.: classification only"):
        validate({"defaults": {"train": {"last_layer_only": True}}, "variants": {"a": {}}})
