"""End to end: the real Snakemake workflow on a tiny study in a temporary directory."""

import json
import subprocess

import pandas as pd
import pytest

from tests.conftest import snakemake_cmd, tiny_study, workflow_env, write_yaml

pytestmark = pytest.mark.e2e


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run, as {rule: count}."""
    table = output[output.index("Job stats"):].splitlines()[3:]
    counts = {}
    for line in table:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    configfile = write_yaml(tmp / "study.yaml", tiny_study())
    env = workflow_env(tmp)
    run = subprocess.run(snakemake_cmd(tmp, configfile), cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return tmp, configfile, env


def test_report_and_metrics_are_written(finished_study):
    tmp, _, _ = finished_study
    metrics = json.loads((tmp / "results" / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"scratch", "colorized"}
    for row in metrics["variants"].values():
        assert 0.0 <= row["test_dice"] <= 1.0 and len(row["test_dice_folds"]) == 2
        assert row["cv_dice_sd"] >= 0.0
    html = (tmp / "results" / "report" / "index.html").read_text()
    assert "scratch" in html and "colorized" in html and "data:image/png;base64," in html
    assert "http://" not in html and "https://" not in html  # self-contained: no network to view it
    assert "| variant |" in (tmp / "results" / "report" / "summary.md").read_text()
    curves = pd.read_csv(tmp / "results" / "curves.csv")
    assert set(curves["variant"]) == {"scratch", "colorized"} and set(curves["fold"]) == {0, 1}
    per_image = pd.read_csv(tmp / "results" / "eval" / "scratch" / "r0" / "per_image.csv")
    assert set(per_image["model"]) == {"fold0", "fold1", "ensemble"}
    assert (tmp / "results" / "pretrain").is_dir() and list((tmp / "results" / "pretrain").glob("*/samples.png"))


def test_mlflow_holds_parent_child_and_pretrain_runs(finished_study):
    tmp, _, _ = finished_study
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    by_name = {r.data.tags["mlflow.runName"]: r for r in runs}
    assert {"scratch", "colorized", "scratch-r0-fold0", "scratch-r0-fold1", "colorized-r0-fold0", "colorized-r0-fold1"} <= set(by_name)
    assert any(name.startswith("pretrain-") for name in by_name)
    assert len(runs) == len(by_name), "a run was recorded twice"
    fold = by_name["scratch-r0-fold1"]
    assert fold.data.tags["mlflow.parentRunId"] == by_name["scratch"].info.run_id
    assert fold.data.tags["seglab.commit"] and fold.data.tags["seglab.config_hash"]
    assert fold.data.params["loss.name"] == "bce" and fold.info.status == "FINISHED"
    history = client.get_metric_history(fold.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert "test_dice" in by_name["scratch"].data.metrics


def test_second_run_has_nothing_to_do(finished_study):
    tmp, configfile, env = finished_study
    dry = subprocess.run(snakemake_cmd(tmp, configfile, "-n"), cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_changing_one_variant_reruns_only_its_jobs(finished_study, tmp_path):
    tmp, configfile, env = finished_study
    cfg = tiny_study()
    cfg["variants"]["scratch"] = {"loss": {"name": "dice"}}
    changed = write_yaml(tmp_path / "changed.yaml", cfg)
    dry = subprocess.run(snakemake_cmd(tmp, changed, "-n"), cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-2000:]
    jobs = job_counts(out)
    # Only the changed variant's two folds, its evaluation and the study-level steps (aggregate,
    # compare, report) re-run.
    assert jobs == {"train": 2, "evaluate": 1, "aggregate": 1, "compare": 1, "report": 1, "all": 1, "total": 7}, jobs
    assert "results/models/scratch/r0/fold0/best.pt" in out and "results/models/colorized/r0/fold0/best.pt" not in out.split("rule aggregate")[0]
    # Leave the study as the module fixture wrote it.
    write_yaml(configfile, tiny_study())
