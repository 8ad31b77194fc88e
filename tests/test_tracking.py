"""MLflow run records through the real Tracker/Run API on a SQLite store in a temporary directory."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pandas as pd
import pytest

from seglab.config import stage_configs, validate
from seglab.records import evaluation_metrics, record_fold
from seglab.tracking import NullRun, Tracker, open_run
from tests.helpers import tiny_study

WORKERS = 4
EPOCHS = 12
METRICS = [f"metric_{i}" for i in range(8)]


def _worker(uri: str, index: int, barrier) -> None:
    """One 'Snakemake job': opens its fold run under a shared parent and logs epoch by epoch."""
    tracker = Tracker(uri, "concurrency")
    barrier.wait()  # every process hits the store at the same moment
    run = tracker.open(f"concurrency/variant/fold{index}", f"fold{index}", parent_key="concurrency/variant",
                       tags={"seglab.fold": index})
    barrier.wait()  # and log the study's dataset at the same moment, as a study's first trainings do
    run.log_dataset("lesions", "d1g3st", str(Path(uri[len("sqlite:///"):]).parent / "raw"), "training", {"num_images": 30})
    run.log_params({"fold": index, **{f"p{i}": i for i in range(30)}})
    for epoch in range(1, EPOCHS + 1):
        run.log_metrics({name: index * 1000 + epoch + i / 10 for i, name in enumerate(METRICS)}, step=epoch)
    run.finish()


def test_parallel_processes_lose_no_run_and_no_metric(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "concurrency")  # the workflow's `track-init`: create the store before jobs start
    ctx = mp.get_context("spawn")  # fresh interpreters, like separate Snakemake jobs
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(uri, i, barrier)) for i in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * WORKERS

    tracker = Tracker(uri, "concurrency")
    runs = {r.data.tags["mlflow.runName"]: r for r in tracker.runs()}
    # One parent (created once, although every worker asked for it) and one run per worker.
    assert set(runs) == {"variant"} | {f"fold{i}" for i in range(WORKERS)}
    parent_id = runs["variant"].info.run_id
    for i in range(WORKERS):
        run = runs[f"fold{i}"]
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert run.info.status == "FINISHED" and run.data.params["fold"] == str(i) and len(run.data.params) == 31
        assert [(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs] == [("lesions", "d1g3st")]
        for j, name in enumerate(METRICS):
            history = tracker.client.get_metric_history(run.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), (i, name)
            assert {m.value for m in history} == {i * 1000 + e + j / 10 for e in range(1, EPOCHS + 1)}


def test_rerun_continues_the_same_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "study")
    first = tracker.open("study/v/fold0", "v-fold0", parent_key="study/v")
    first.log_params({"a": 1})
    first.log_metrics({"loss": 1.0}, step=1)
    first.finish()  # the job finished; now it is re-run (or resumed after a crash)

    again = Tracker(uri, "study").open("study/v/fold0", "v-fold0", parent_key="study/v")
    assert again.run_id == first.run_id
    assert tracker.client.get_run(again.run_id).info.status == "RUNNING"
    again.log_params({"a": 1, "b": 2})  # an already logged param is kept, a new one added
    again.log_metrics({"loss": 0.5}, step=2)
    again.finish()

    runs = tracker.runs()
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == ["v", "v-fold0"]
    history = tracker.client.get_metric_history(first.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5)]
    assert tracker.client.get_run(first.run_id).data.params == {"a": "1", "b": "2"}


def test_disabled_tracking_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = open_run({"enabled": False}, "study", "study/x", "x")
    assert isinstance(run, NullRun)
    run.log_metrics({"loss": 1.0}, step=1)
    run.finish()
    assert list(tmp_path.iterdir()) == []


def test_open_run_tags_commit_and_samples_system_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = {"uri": uri, "enabled": True, "system_metrics": True, "system_metrics_interval": 0.2}
    run = open_run(cfg, "study", "study/sys", "sys", tags={"snakemake.rule": "train"})
    import time

    time.sleep(1.5)  # a few samples
    run.finish()
    record = Tracker(uri, "study").client.get_run(run.run_id)
    assert record.data.tags["snakemake.rule"] == "train"
    assert len(record.data.tags["seglab.commit"]) == 40  # the tests run inside the repository's git tree
    assert record.data.tags["mlflow.source.git.commit"] == record.data.tags["seglab.commit"]
    assert record.data.tags["seglab.git_dirty"] in {"true", "false"}
    assert any(k.startswith("system/cpu_utilization") for k in record.data.metrics), sorted(record.data.metrics)


def test_fold_record_has_curves_config_weights_and_model_when_asked(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    from seglab.checkpoint import save_checkpoint
    from seglab.models import build_model, output_channels

    study = validate(tiny_study())
    cfg = stage_configs(study)["variants/scratch.json"]
    cfg["tracking"] = {**cfg["tracking"], "log_model": True}
    out, prepared = tmp_path / "fold0", tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "fingerprint.json").write_text('{"num_classes": 2, "size": 32}')
    model = build_model(cfg["model"], 3, output_channels(2, cfg["model"]["binary_head"]))
    digest = save_checkpoint({"model": model.state_dict(), "epoch": 1}, out / "best.pt")
    pd.DataFrame({"epoch": [1, 2], "train_loss": [0.9, 0.7], "val_loss": [1.0, 0.8]}).to_csv(out / "history.csv", index=False)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "tiny")
    run = tracker.open("tiny/scratch/fold0", "scratch-fold0", parent_key="tiny/scratch")
    record_fold(run, cfg, out, 0, prepared)
    run.finish()
    # Logging the model went through MLflow's fluent API, which exports its tracking URI to
    # every later subprocess unless it is put back.
    assert "MLFLOW_TRACKING_URI" not in os.environ

    record = tracker.client.get_run(run.run_id)
    assert record.data.tags["seglab.weights_sha256"] == digest
    assert record.data.tags["seglab.weights"] == str(out / "best.pt")
    files = {a.path for folder in ("plots", "config") for a in tracker.client.list_artifacts(run.run_id, folder)}
    assert files == {"plots/learning_curves.png", "config/variant.json"}
    png = Path(tracker.client.download_artifacts(run.run_id, "plots/learning_curves.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import mlflow

    logged = mlflow.MlflowClient(uri).search_logged_models(experiment_ids=[tracker.experiment_id])
    assert [m.source_run_id for m in logged] == [run.run_id]
    reloaded = mlflow.pytorch.load_model(logged[0].model_uri)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(reloaded.eval()(x), model.eval()(x))


def test_evaluation_metrics_cover_every_model_and_class():
    metrics = {"test": {"fold0": {"dice": 0.5, "dice_1": 0.5}, "ensemble": {"dice": 0.7, "dice_1": 0.7, "dice_2": 0.6}},
               "cv": {"val_dice_mean": 0.6, "val_dice_per_fold": [0.5, 0.7]}}
    assert evaluation_metrics(metrics) == {"test_fold0_dice": 0.5, "test_fold0_dice_1": 0.5, "test_dice": 0.7,
                                           "test_dice_1": 0.7, "test_dice_2": 0.6, "cv_val_dice_mean": 0.6}


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
