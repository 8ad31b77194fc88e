"""Every failure a user can cause ends in one clear message naming the file or key and the
fix, a non-zero exit, and earlier results left as they were (docs/errors.md lists them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from seglab.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seglab.cli import main
from seglab.models.weights import imagenet_cache_file

from tests.helpers import SHARED_DATASETS, TINY, prepare, run_snakemake, tiny_config, train_args, write_stage_configs, write_yaml

ISBI = SHARED_DATASETS / "isbi2012"
needs_isbi = pytest.mark.skipif(not ISBI.is_dir(), reason=f"real test data not found at {ISBI} (../shared is absent)")


def one_error(capfd: pytest.CaptureFixture) -> str:
    """The single `seglab: error:` message the command printed."""
    err = capfd.readouterr().err
    assert err.count("seglab: error:") == 1, err
    return err[err.index("seglab: error:"):]


# ------------------------------------------------------------------ config (real snakemake)

@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"split": {"folds": 3, "fold": 2}}, "unknown key 'split.fold'. Known keys here: folds, repeats, seed"),
        ({"split": {"folds": 1}}, "key 'split.folds': 1 is less than the minimum of 2"),
        ({"defaults": {**TINY["defaults"], "optimizer": {"lr": -0.1}}}, "key 'defaults.optimizer.lr': -0.1 is less than or equal to the minimum of 0"),
        ({"defaults": {**TINY["defaults"], "train": {"epochs": "ten"}}}, "key 'defaults.train.epochs': 'ten' is not of type 'integer'"),
    ],
    ids=["unknown-key", "folds-1", "negative-lr", "wrong-type"],
)
def test_bad_config_is_refused_by_the_workflow(tmp_path, change, expected):
    earlier = tmp_path / "results" / "metrics.json"
    earlier.parent.mkdir()
    earlier.write_text('{"earlier": true}\n')
    cfg = tiny_config(**change)
    done = run_snakemake(tmp_path, write_yaml(tmp_path / "study.yaml", cfg), "-n", timeout=300, cores=1)
    assert done.returncode != 0
    said = done.stdout + done.stderr  # snakemake prints its errors on stdout
    assert expected in said, said
    assert f"{tmp_path / 'study.yaml'}: key" in said or f"{tmp_path / 'study.yaml'}: unknown key" in said, "names the file"
    assert earlier.read_text() == '{"earlier": true}\n'


# ------------------------------------------------------------------ data (seglab verify)

@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three real ISBI 2012 pairs (512x512 grey PNG, 0/255 masks) in a user folder."""
    if not ISBI.is_dir():
        pytest.skip(f"real test data not found at {ISBI} (../shared is absent)")
    root = tmp_path / "data"
    for sub in ("image", "label"):
        (root / sub).mkdir(parents=True)
        for name in ("0.png", "1.png", "2.png"):
            shutil.copy(ISBI / sub / name, root / sub / name)
    return root


def _verify(tmp_path: Path, root: Path, capfd, **dataset) -> tuple[int, str, Path]:
    cfg = tiny_config(dataset={"name": "mine", "source": "folder",
                               "folder": {"root": str(root), "images": "image", "masks": "label"}, **dataset})
    stage = write_stage_configs(tmp_path / "stage", cfg)
    out = tmp_path / "results" / "data" / "verify.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('{"earlier": true}\n')
    capfd.readouterr()
    code = main(["verify", "--config", str(stage / "prepare.json"), "--out", str(out)])
    return code, one_error(capfd) if code else "", out


def _assert_refused(code: int, message: str, out: Path, *needles: str) -> None:
    assert code == 2
    for needle in needles:
        assert needle in message, message
    assert out.read_text() == '{"earlier": true}\n', "the earlier result is intact"


@needs_isbi
def test_missing_dataset_folder(tmp_path, capfd):
    code, message, out = _verify(tmp_path, tmp_path / "nowhere", capfd)
    _assert_refused(code, message, out, f"dataset.folder.root: {tmp_path / 'nowhere'} is not a folder",
                    "Check the path")


@needs_isbi
def test_truncated_image(tmp_path, folder, capfd):
    image = folder / "image" / "1.png"
    image.write_bytes(image.read_bytes()[:2000])
    code, message, out = _verify(tmp_path, folder, capfd)
    _assert_refused(code, message, out, f"{image}: cannot be decoded as an image", "Replace or remove the file",
                    "verify.on_error: skip")


@needs_isbi
def test_non_image_file(tmp_path, folder, capfd):
    mask = folder / "label" / "2.png"
    mask.write_text("this is a text file with an image suffix\n")
    code, message, out = _verify(tmp_path, folder, capfd)
    _assert_refused(code, message, out, f"{mask}: cannot be decoded as an image")


@needs_isbi
def test_mask_of_a_different_size(tmp_path, folder, capfd):
    mask = folder / "label" / "0.png"
    with Image.open(mask) as img:
        img.resize((256, 256), Image.NEAREST).save(mask)
    code, message, out = _verify(tmp_path, folder, capfd)
    _assert_refused(code, message, out, f"{mask}: mask size 256x256 differs from image size 512x512")


@needs_isbi
def test_label_value_outside_the_classes(tmp_path, folder, capfd):
    code, message, out = _verify(tmp_path, folder, capfd, mask_encoding="labels", classes=["membrane", "cell"])
    _assert_refused(code, message, out, str(folder / "label" / "0.png"), "mask values 255 are not among the 2 declared classes",
                    "dataset.ignore_index")


@needs_isbi
def test_empty_dataset_after_filtering(tmp_path, folder, capfd):
    for mask in (folder / "label").iterdir():
        with Image.open(mask) as img:
            img.resize((64, 64), Image.NEAREST).save(mask)
    cfg = tiny_config(dataset={"name": "mine", "source": "folder",
                               "folder": {"root": str(folder), "images": "image", "masks": "label"}},
                      verify={"on_error": "skip"})
    stage = write_stage_configs(tmp_path / "stage", cfg)
    out = tmp_path / "verify.json"
    out.write_text('{"earlier": true}\n')
    capfd.readouterr()
    code = main(["verify", "--config", str(stage / "prepare.json"), "--out", str(out)])
    _assert_refused(code, one_error(capfd), out, f"{folder}: no usable image/mask pair left after verification")


# ------------------------------------------------------------------ checkpoints and weights

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cfg = tiny_config(variants={"col": {"init": "colorization"}})
    return prepare(tmp_path_factory.mktemp("tiny"), cfg)


def _pretrained(path: Path) -> Path:
    from seglab.models import build_model

    model = build_model(validated_model(), 3, 3)
    save_checkpoint({"model": model.state_dict(), "epoch": 1}, path)
    return path


def validated_model() -> dict:
    from seglab.config import validate

    return validate(tiny_config())["variants"]["unet-bce"]["model"]


def test_checkpoint_checksum_mismatch(data, tmp_path, capfd):
    weights = _pretrained(tmp_path / "pretrain" / "weights.pt")
    raw = bytearray(weights.read_bytes())
    raw[-50] ^= 0x01
    weights.write_bytes(bytes(raw))
    out = tmp_path / "fold0"
    capfd.readouterr()
    code = main([*train_args(data, out, variant="col"), "--init", str(weights)])
    message = one_error(capfd)
    assert code == 2
    assert f"{weights}: sha256" in message and "does not match its sidecar" in message and "the file is corrupt" in message
    assert not out.exists() or not any(out.iterdir()), "nothing trained on corrupt weights"


class Payload:
    """A pickle that runs a command when unpickled: what a hostile weights file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(data, tmp_path, capfd):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    save_checkpoint({"model": Payload(marker)}, evil)  # with a valid sidecar: the digest is no defence
    # The payload is live: an unrestricted unpickler would run it.
    with open(evil, "rb") as handle:
        torch.load(handle, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        load_checkpoint(evil)
    capfd.readouterr()
    code = main([*train_args(data, tmp_path / "fold0", variant="col"), "--init", str(evil)])
    assert code == 2 and f"{evil}: not a loadable weights-only checkpoint" in one_error(capfd)
    assert not marker.exists(), "the pickle's code never ran"


def test_weights_request_offline(tmp_path, monkeypatch):
    """Published weights missing from the cache stop at once, naming the repo, the cache and the way out."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    repo = smp.encoders.encoders["resnet18"]["pretrained_settings"]["imagenet"]["repo_id"]
    with pytest.raises(CheckpointError) as caught:
        imagenet_cache_file("resnet18")
    message = str(caught.value)
    assert f"repo {repo}" in message and "'resnet18'" in message
    assert "never downloads during a run" in message and str(tmp_path / "hf" / "hub") in message
    assert "init: scratch" in message
    assert os.environ["HF_HUB_OFFLINE"] == "1", "nothing below the lookup may reach the network"
