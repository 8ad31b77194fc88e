"""Crash safety: a training job killed at any point resumes and ends bit for bit where an
uninterrupted run ends (CPU), damaged checkpoints are reported and never used, and a
full disk or an out-of-memory error ends in one clear message."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import seglab.checkpoint
import seglab.pretrain
import seglab.resumable
import seglab.train
from seglab.checkpoint import load_checkpoint, sidecar
from seglab.cli import main
from seglab.tracking import Tracker

from tests.helpers import prepare, run_seglab, seglab_process, tiny_config, train_args, write_stage_configs

EPOCHS = 5
CFG = tiny_config(
    dataset={"name": "tiny", "source": "builtin", "builtin": {"kind": "lesions", "count": 48, "size": 32, "groups": 6}},
    defaults={"model": {"name": "unet", "base": 4, "depth": 2, "dropout": 0.1}, "augmentation": {"preset": "light"},
              "train": {"epochs": EPOCHS, "batch_size": 4, "patience": 10}},
)
TIMING = ("seconds", "train_images_per_s")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return prepare(tmp_path_factory.mktemp("tiny"), CFG)


@pytest.fixture(scope="module")
def reference(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run everything else must equal."""
    out = tmp_path_factory.mktemp("reference") / "fold0"
    assert main(train_args(data, out)) == 0
    return out


def assert_same_training(out: Path, reference: Path) -> None:
    """Same best weights (bitwise), same validation metrics, same per-epoch history."""
    got, want = load_checkpoint(out / "best.pt")["model"], load_checkpoint(reference / "best.pt")["model"]
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    summary, ref_summary = (json.loads((d / "summary.json").read_text()) for d in (out, reference))
    for key in ("best_epoch", "epochs_run", *[k for k in ref_summary if k.startswith("val_")]):
        assert summary[key] == ref_summary[key], key
    history, ref_history = (pd.read_csv(d / "history.csv").drop(columns=list(TIMING)) for d in (out, reference))
    pd.testing.assert_frame_equal(history, ref_history, check_exact=True)
    assert not (out / ".resume").exists(), "the resume state is removed once the outputs are written"


class Interrupt(Exception):
    """Stands for a crash right after an epoch's checkpoint was written."""


def interrupted_run(data: dict[str, Path], out: Path, monkeypatch: pytest.MonkeyPatch, after_epoch: int) -> None:
    """Train in-process and stop right after epoch ``after_epoch`` was saved and logged."""
    real = seglab.resumable._epoch_line

    def crash(prefix, record, is_best):
        line = real(prefix, record, is_best)
        if record["epoch"] == after_epoch:
            raise Interrupt
        return line

    with monkeypatch.context() as patch:
        patch.setattr(seglab.resumable, "_epoch_line", crash)
        with pytest.raises(Interrupt):
            main(train_args(data, out))
    assert not (out / "summary.json").exists()


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(data, reference, tmp_path):
    """SIGKILL once the epoch-1 checkpoint exists, start again: same run, same numbers."""
    tracked = tiny_config(**{k: CFG[k] for k in ("dataset", "defaults")},
                          tracking={"enabled": True, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    paths = {**data, "stage": write_stage_configs(tmp_path / "tracked", tracked)}
    out = tmp_path / "models" / "fold0"
    first_checkpoint = sidecar(out / ".resume" / "last-0001.pt")  # the sidecar is written last

    job = seglab_process(train_args(paths, out), cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(job.pid, signal.SIGKILL)
    _, stderr = job.communicate(timeout=60)
    assert job.returncode == -signal.SIGKILL, f"the job ended on its own before it could be killed:\n{stderr}"
    assert first_checkpoint.exists() and not (out / "summary.json").exists()
    assert not (out / ".resume" / f"last-{EPOCHS:04d}.pt").exists(), "killed before the last epoch"

    resumed = run_seglab(train_args(paths, out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "seglab: resuming from" in resumed.stderr
    assert_same_training(out, reference)

    # The same MLflow run continued: one run for the job, every epoch logged exactly once.
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tiny")
    runs = [r for r in tracker.runs() if r.data.tags.get("seglab.key") == "tiny/unet-bce/r0/fold0"]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    logged = tracker.client.get_metric_history(runs[0].info.run_id, "val_loss")
    ref_history = pd.read_csv(reference / "history.csv")
    assert sorted(m.step for m in logged) == list(ref_history["epoch"])
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == list(ref_history["val_loss"])


def test_corrupt_newest_checkpoint_is_reported_and_the_previous_one_used(data, reference, tmp_path, monkeypatch, capfd):
    out = tmp_path / "fold0"
    interrupted_run(data, out, monkeypatch, after_epoch=3)
    newest = out / ".resume" / "last-0003.pt"
    assert sorted(p.name for p in (out / ".resume").glob("last-*.pt")) == ["last-0002.pt", "last-0003.pt"]
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    capfd.readouterr()

    assert main(train_args(data, out)) == 0
    err = capfd.readouterr().err
    assert f"{newest}: sha256" in err and "does not match its sidecar" in err
    assert "resuming from" in err and "last-0002.pt (epoch 2 done)" in err
    assert_same_training(out, reference)


def test_no_intact_checkpoint_restarts_from_scratch(data, reference, tmp_path, monkeypatch, capfd):
    out = tmp_path / "fold0"
    interrupted_run(data, out, monkeypatch, after_epoch=2)
    for path in (out / ".resume").glob("last-*.pt"):
        path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash of the disk
    capfd.readouterr()

    assert main(train_args(data, out)) == 0
    err = capfd.readouterr().err
    assert "no intact checkpoint" in err and "starting afresh" in err
    assert_same_training(out, reference)


def test_state_of_another_configuration_is_not_resumed(data, reference, tmp_path, monkeypatch, capfd):
    """Changing the config between attempts must start afresh, not mix two trainings."""
    out = tmp_path / "fold0"
    other = tiny_config(**{k: CFG[k] for k in ("dataset",)},
                        defaults={**CFG["defaults"], "optimizer": {"lr": 0.01}})
    other_paths = {**data, "stage": write_stage_configs(tmp_path / "other", other)}
    with monkeypatch.context() as patch:
        patch.setattr(seglab.resumable, "_epoch_line", lambda *a: (_ for _ in ()).throw(Interrupt()))
        with pytest.raises(Interrupt):
            main(train_args(other_paths, out))
    capfd.readouterr()
    assert main(train_args(data, out)) == 0
    assert "written for another configuration" in capfd.readouterr().err
    assert_same_training(out, reference)


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(data, tmp_path, monkeypatch, capfd):
    out = tmp_path / "fold0"
    interrupted_run(data, out, monkeypatch, after_epoch=2)
    kept = {p: p.read_bytes() for p in (out / ".resume").iterdir()}

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(seglab.checkpoint.os, "fsync", no_space)
    capfd.readouterr()
    assert main(train_args(data, out)) == 2
    err = capfd.readouterr().err
    assert err.count("seglab: error:") == 1
    assert re.search(r"\.resume/(best|last)-0003\.pt: could not write the checkpoint", err) and "No space left on device" in err
    assert "Free disk space" in err
    assert {p: p.read_bytes() for p in (out / ".resume").iterdir()} == kept, "earlier checkpoints intact, no temp files"
    monkeypatch.undo()
    assert load_checkpoint(out / ".resume" / "last-0002.pt")["epoch"] == 2


@pytest.mark.parametrize("stage", ["train", "pretrain"])
def test_out_of_memory_suggests_a_smaller_batch(data, tmp_path, monkeypatch, capfd, stage):
    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)")

    # Each training stage calls the shared resumable loop under its own module's name.
    monkeypatch.setattr(seglab.train if stage == "train" else seglab.pretrain, "fit_resumable", oom)
    if stage == "train":
        args, key = train_args(data, tmp_path / "fold0"), "train.batch_size"
    else:
        stage_cfg = tiny_config(**{k: CFG[k] for k in ("dataset",)}, variants={"c": {"init": "colorization"}})
        stage_dir = write_stage_configs(tmp_path / "pre", stage_cfg)
        (config,) = (stage_dir / "pretrain").iterdir()
        args = ["pretrain", "--config", str(config), "--prepared", str(data["prepared"]), "--splits", str(data["splits"]),
                "--fold", "0", "--out", str(tmp_path / "pretrain" / "r0" / "fold0")]
        key = "pretrain.batch_size"
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.startswith("seglab: error: out of memory") and err.count("\n") == 1
    assert f"lower {key} (now 4)" in err


def test_worker_processes_change_nothing_even_across_a_resume(data, reference, tmp_path, monkeypatch):
    """Two loader workers, interrupted after epoch 2 and resumed: the numbers of the
    uninterrupted in-process run, because every augmentation draw is seeded per item."""
    train = {**CFG["defaults"]["train"], "num_workers": 2}
    workers = tiny_config(dataset=CFG["dataset"], defaults={**CFG["defaults"], "train": train})
    paths = {**data, "stage": write_stage_configs(tmp_path / "workers", workers)}
    out = tmp_path / "fold0"
    interrupted_run(paths, out, monkeypatch, after_epoch=2)
    assert main(train_args(paths, out)) == 0
    assert_same_training(out, reference)
