"""End to end: what the tiny study's real Snakemake run wrote, and what MLflow recorded of it.

The study is the session's finished study (tests/conftest.py), run once through `dvc repro`
in a temporary project and shared with the DVC tests; these tests only read it.
"""

import copy
import json
import subprocess

import pandas as pd
import pytest

from tests.helpers import copy_tree, job_counts, snakemake_cmd, workflow_env, write_yaml

pytestmark = pytest.mark.e2e


def test_report_and_metrics_are_written(finished_study):
    tmp = finished_study.root
    metrics = json.loads((tmp / "results" / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"scratch", "colorized"}
    for row in metrics["variants"].values():
        assert 0.0 <= row["test_dice"] <= 1.0 and len(row["test_dice_folds"]) == 2
        assert row["cv_dice_sd"] >= 0.0
        # Beside it, each fold at the epoch chosen on the other fold (evaluate.cv_epoch_from_other_folds).
        assert len(row["xfold_epochs"]) == 2 and 0.0 <= row["cv_dice_xfold_epoch_mean"] <= 1.0
    html = (tmp / "results" / "report" / "index.html").read_text()
    assert "scratch" in html and "colorized" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained: no network to view it
    assert "| variant |" in (tmp / "results" / "report" / "summary.md").read_text()
    curves = pd.read_csv(tmp / "results" / "curves.csv")
    assert set(curves["variant"]) == {"scratch", "colorized"} and set(curves["fold"]) == {0, 1}
    assert curves[["train_dice", "val_dice", "train_iou", "val_iou"]].notna().all().all()
    per_image = pd.read_csv(tmp / "results" / "eval" / "scratch" / "r0" / "per_image.csv")
    assert set(per_image["model"]) == {"fold0", "fold1", "ensemble"}
    # The tiny study has no unlabelled pool: one pretraining per repeat and fold (pretrain.images auto -> fold).
    assert len(list((tmp / "results" / "pretrain").glob("*/r0/fold*/samples.png"))) == 2


def test_no_pretraining_saw_an_image_its_models_are_validated_or_tested_on(finished_study):
    """The no-leak property, read from the study's own files: the ids each pretraining recorded are
    exactly its fold's training images (not even a copy of a validation or test image among them),
    the fold's training started from that pretraining, and report and MLflow say which images it was."""
    from mlflow.tracking import MlflowClient

    from seglab import layout

    root = finished_study.root
    out = root / "results"
    manifest = pd.read_csv(out / "data" / "prepared" / "manifest.csv", dtype={"id": str})
    sha = dict(zip(manifest["id"], manifest["sha256_image"]))
    summaries = sorted((out / "pretrain").glob("*/r*/fold*/summary.json"))
    assert len(summaries) == 2
    for path in summaries:
        _, repeat, fold = layout.run_of(path)
        splits = json.loads((out / "data" / "splits" / f"r{repeat}.json").read_text())
        summary = json.loads(path.read_text())
        seen, validated, tested = set(summary["ids"]), set(splits["folds"][fold]), set(splits["test"])
        assert (summary["images"], summary["repeat"], summary["fold"]) == ("fold", repeat, fold)
        assert seen == {i for k, ids in enumerate(splits["folds"]) if k != fold for i in ids}
        assert not seen & validated and not seen & tested
        assert not {sha[i] for i in seen} & {sha[i] for i in validated | tested}
        assert summary["seen"] == {"validation": 0, "test": 0}
        trained = json.loads((out / "models" / "colorized" / f"r{repeat}" / f"fold{fold}" / "summary.json").read_text())
        assert trained["init_weights"] == str((path.parent / "weights.pt").relative_to(root))

    summary_md = (out / "report" / "summary.md").read_text()
    assert "**colorization pretraining images**: each fold's own training images" in summary_md
    assert "(2 in all" in summary_md and "0 validation and 0 test image(s) among them" in summary_md
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "tags.`seglab.stage` = 'pretrain'")
    arch = layout.run_of(summaries[0])[0]
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == [f"pretrain-{arch}-r0-fold{k}" for k in (0, 1)]
    for run in runs:
        assert run.data.tags["seglab.pretrain_images"] == "fold" and run.data.params["seen_test_images"] == "0"
        assert run.data.params["seen_validation_images"] == "0"
        assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_mlflow_holds_parent_child_and_pretrain_runs(finished_study):
    """Every run of the study, as the real train/evaluate/pretrain stages recorded them."""
    from mlflow.tracking import MlflowClient

    project = finished_study.root
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_name = {r.data.tags["mlflow.runName"]: r for r in runs}
    assert len(by_name) == len(runs), "a run was recorded twice"
    assert any(name.startswith("pretrain-") for name in by_name)
    for variant in ("scratch", "colorized"):
        parent = by_name[variant].info.run_id
        children = {f"{variant}-r0-fold0", f"{variant}-r0-fold1", f"{variant}-r0-evaluate"}
        assert children <= set(by_name)
        assert all(by_name[c].data.tags["mlflow.parentRunId"] == parent for c in children)
        assert by_name[variant].info.status == "FINISHED" and "test_dice" in by_name[variant].data.metrics

    fold = by_name["scratch-r0-fold1"]
    tags, params = fold.data.tags, fold.data.params
    assert fold.info.status == "FINISHED"
    assert tags["seglab.commit"] == finished_study.commit and tags["seglab.device"] == "cpu"
    assert {"seglab.config_hash", "seglab.data_hash", "seglab.splits_hash"} <= set(tags)
    assert tags["snakemake.rule"] == "train" and tags["snakemake.variant"] == "scratch" and tags["snakemake.fold"] == "1"
    weights = project / tags["seglab.weights"]
    assert tags["seglab.weights_sha256"] == (weights.parent / "best.pt.sha256").read_text().split()[0]
    assert params["loss.name"] == "bce" and params["train.epochs"] == "2" and params["data.num_images"] == "30"
    for metric in ("train_loss", "val_loss", "val_dice", "train_dice", "train_iou", "lr", "train_images_per_s"):
        assert [m.step for m in client.get_metric_history(fold.info.run_id, metric)] == [1, 2], metric
    artifacts = {a.path for folder in ("", "plots", "config") for a in client.list_artifacts(fold.info.run_id, folder or None)}
    assert {"history.csv", "plots/learning_curves.png", "config/variant.json"} <= artifacts

    evaluation = by_name["scratch-r0-evaluate"]
    assert evaluation.data.tags["snakemake.rule"] == "evaluate"
    assert {"test_dice", "test_dice_1", "test_iou_1", "test_fold0_dice", "cv_val_dice_mean"} <= set(evaluation.data.metrics)
    artifacts = {a.path for folder in ("", "plots") for a in client.list_artifacts(evaluation.info.run_id, folder or None)}
    assert {"per_image.csv", "metrics.json", "plots/sample_overlays.png"} <= artifacts

    pretrain = next(r for name, r in by_name.items() if name.startswith("pretrain-"))
    assert pretrain.data.tags["snakemake.rule"] == "pretrain" and len(pretrain.data.tags["seglab.weights_sha256"]) == 64
    assert "plots/learning_curve.png" in {a.path for a in client.list_artifacts(pretrain.info.run_id, "plots")}

    # What the MLflow UI shows: a model-training experiment, each run's dataset and its stage.
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"
    raw = (project / "data" / "raw" / "builtin-lesions").as_uri()
    for name, stage, context in (("scratch-r0-fold1", "train", "training"), ("scratch-r0-evaluate", "evaluate", "testing"),
                                 ("scratch", "evaluate", "training"), (pretrain.info.run_name, "pretrain", "training")):
        run = by_name[name]
        assert run.data.tags["mlflow.source.name"] == f"seglab {stage}", name
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "builtin-lesions" and json.loads(dataset.dataset.source)["uri"] == raw, name
        assert dataset.dataset.digest == fold.data.tags["seglab.data_hash"]  # seglab's data fingerprint
        assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == context, name


def test_second_run_has_nothing_to_do(finished_study):
    tmp = finished_study.root
    dry = subprocess.run(snakemake_cmd(tmp, finished_study.configfile, "-n"), cwd=tmp, env=finished_study.env(),
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_a_copy_of_the_study_is_up_to_date(finished_study, tmp_path):
    """What tests that change a study rely on: copy_tree keeps file times, so Snakemake sees
    the copy as up to date as the original, and nothing is rerun."""
    copy = copy_tree(finished_study.root, tmp_path / "copy")
    dry = subprocess.run(snakemake_cmd(copy, copy / "config.yaml", "-n"), cwd=copy, env=workflow_env(copy),
                         capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_changing_one_variant_reruns_only_its_jobs(finished_study, tmp_path):
    # On a copy: even a dry run rewrites the changed variant's stage config (results/config/),
    # and the shared study must stay as other tests (on other workers) read it.
    tmp = copy_tree(finished_study.root, tmp_path / "copy")
    cfg = copy.deepcopy(finished_study.cfg)
    cfg["variants"]["scratch"] = {"loss": {"name": "dice"}}
    changed = write_yaml(tmp_path / "changed.yaml", cfg)
    dry = subprocess.run(snakemake_cmd(tmp, changed, "-n"), cwd=tmp, env=workflow_env(tmp),
                         capture_output=True, text=True, timeout=300)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-2000:]
    jobs = job_counts(out)
    # Only the changed variant's two folds, its evaluation and the study-level steps (aggregate,
    # compare, report) re-run.
    assert jobs == {"train": 2, "evaluate": 1, "aggregate": 1, "compare": 1, "report": 1, "all": 1, "total": 7}, jobs
    assert "results/models/scratch/r0/fold0/best.pt" in out and "results/models/colorized/r0/fold0/best.pt" not in out.split("rule aggregate")[0]
