"""DVC on a temporary clone of the project: repro, exp run, metrics/params/plots, push and pull.

One tiny DVC project is shared by the whole module (the study is the slow part); the
tests run in file order and each leaves the project in the state the next expects.
The same study run also checks what MLflow recorded through the real workflow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, tiny_study, write_yaml
from tests.test_workflow import job_counts

pytestmark = pytest.mark.e2e

VENV_BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "workflow", "src", "dvc.yaml", ".dvcignore", ".gitignore", "Makefile", ".dvc/config", ".dvc/.gitignore"]
GIT = ["git", "-c", "user.name=seglab-test", "-c", "user.email=test@seglab.invalid"]

if shutil.which("git") is None:
    pytest.skip("git is not installed: DVC projects live in a git repository", allow_module_level=True)


def dvc_study_config() -> dict:
    """The tiny study as config.yaml (dvc.yaml's `study` stage: its whole file is the params),
    with the sections users change through `dvc exp run -S` written out."""
    cfg = tiny_study()
    cfg["dataset"]["name"] = "builtin-lesions"
    cfg["verify"] = {"on_error": "fail"}
    cfg["evaluate"] = {"tta": False}
    # Batches of 2 take the tiny U-Net past predicting one class everywhere in 2-3 epochs, so
    # that flip TTA has probabilities near 0.5 to move.
    cfg["defaults"]["train"]["batch_size"] = 2
    return cfg


def second_study_config() -> dict:
    """Another study beside the default one: its own output_dir, dataset name and variant."""
    cfg = tiny_study("results/studies/second")
    cfg["study"]["name"] = "second"
    cfg["dataset"]["name"] = "second-lesions"
    cfg["dataset"]["builtin"]["seed"] = 5
    cfg["variants"] = {"dice": {"loss": {"name": "dice"}}}
    return cfg


def documented_stage(study: str) -> str:
    """The stage dvc.yaml's header comment tells users to add for another study, for ``study``."""
    lines = (REPO / "dvc.yaml").read_text().splitlines()
    start = lines.index("#   unet-ablation:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#  "):
            break
        block.append(line[2:].replace("unet-ablation", study))  # "# " off: stages are indented 2
    assert block[-1].strip() == "plots: *plots", block
    return "\n".join(block) + "\n"


def project_env(root: Path) -> dict[str, str]:
    """The project's own code (not this checkout's), the venv's tools on PATH, a private MLflow store."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root / "src")
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env.pop("DVC_NO_ANALYTICS", None)
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def sh(root: Path, *cmd: str, ok: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run(list(cmd), cwd=root, env=project_env(root), capture_output=True, text=True, timeout=timeout)
    if ok:
        assert run.returncode == 0, f"{' '.join(cmd)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def commit(root: Path, message: str) -> None:
    sh(root, "git", "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", message)


def read_metrics(root: Path) -> dict:
    return json.loads((root / "results" / "metrics.json").read_text())


def numbers(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of a metrics file: what DVC shows of it (lists and strings are left out)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = value
    return out


def mtimes(root: Path, pattern: str) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.glob(pattern))}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A fresh git + DVC project holding the seglab workflow and a tiny config.yaml, reproduced once."""
    root = tmp_path_factory.mktemp("dvc-project") / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        src, dst = REPO / name, root / name
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    write_yaml(root / "config.yaml", dvc_study_config())
    sh(root, "git", "init", "-q")
    commit(root, "the study")
    repro = sh(root, "dvc", "repro")
    assert "Job stats" in repro.stdout + repro.stderr  # DVC's stage ran Snakemake
    commit(root, "results")  # dvc.lock, and the small metrics/curves that .gitignore lets through
    return root


def test_repro_runs_the_study_and_locks_its_outputs(project):
    metrics = json.loads((project / "results" / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"scratch", "colorized"}
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = {o["path"] for o in lock["stages"]["study"]["outs"]}
    assert {"data/raw/builtin-lesions", "results/models", "results/pretrain", "results/metrics.json"} <= outs
    tracked = sh(project, "git", "ls-files").stdout.split()
    # Small metrics go to git with the lock; data and weights never do.
    assert {"dvc.lock", "results/metrics.json", "results/curves.csv"} <= set(tracked)
    assert not any(p.startswith(("results/models", "results/data", "data/raw")) for p in tracked)


def test_second_repro_is_up_to_date(project):
    before = mtimes(project, "results/models/*/r*/fold*/best.pt")
    out = sh(project, "dvc", "repro").stdout
    assert "didn't change, skipping" in out and "up to date" in out
    assert mtimes(project, "results/models/*/r*/fold*/best.pt") == before
    assert sh(project, "dvc", "status", "--quiet", ok=False).returncode == 0


def test_metrics_and_plots_read_the_pipeline_files(project):
    shown = json.loads(sh(project, "dvc", "metrics", "show", "--json").stdout)
    assert numbers(next(iter(shown.values()))["data"]["results/metrics.json"]["data"]) == numbers(read_metrics(project))
    sh(project, "dvc", "plots", "show", "--out", "dvc_plots")
    html = (project / "dvc_plots" / "index.html").read_text()
    # dvc.yaml's plot of results/curves.csv: its title and one of its y columns.
    assert "Learning curves (every variant and fold)" in html and "val_loss" in html


def test_mlflow_records_every_run_of_the_study(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    by_name = {r.data.tags["mlflow.runName"]: r for r in runs}
    assert len(by_name) == len(runs), "a run was recorded twice"
    for variant in ("scratch", "colorized"):
        parent = by_name[variant].info.run_id
        children = {f"{variant}-r0-fold0", f"{variant}-r0-fold1", f"{variant}-r0-evaluate"}
        assert children <= set(by_name)
        assert all(by_name[c].data.tags["mlflow.parentRunId"] == parent for c in children)
        assert by_name[variant].info.status == "FINISHED" and "test_dice" in by_name[variant].data.metrics

    commit = sh(project, "git", "rev-parse", "HEAD~1").stdout.strip()  # the commit the study ran from
    fold = by_name["scratch-r0-fold1"]
    tags, params = fold.data.tags, fold.data.params
    assert tags["seglab.commit"] == commit and tags["seglab.device"] == "cpu"
    assert {"seglab.config_hash", "seglab.data_hash", "seglab.splits_hash"} <= set(tags)
    assert tags["snakemake.rule"] == "train" and tags["snakemake.variant"] == "scratch" and tags["snakemake.fold"] == "1"
    weights = project / tags["seglab.weights"]
    assert tags["seglab.weights_sha256"] == (weights.parent / "best.pt.sha256").read_text().split()[0]
    assert params["loss.name"] == "bce" and params["train.epochs"] == "2" and params["data.num_images"] == "30"
    for metric in ("train_loss", "val_loss", "val_dice", "lr", "train_images_per_s"):
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


def test_exp_run_changes_one_key_and_reruns_only_what_depends_on_it(project):
    data_before = mtimes(project, "results/data/**/*") | mtimes(project, "results/pretrain/*/weights.pt")
    models_before = mtimes(project, "results/models/*/r*/fold*/best.pt")
    run = sh(project, "dvc", "exp", "run", "-n", "three-epochs", "-S", "config.yaml:defaults.train.epochs=3")
    # DVC re-ran its stage; Snakemake then re-ran the trainings and what reads them, nothing upstream.
    assert job_counts(run.stdout + run.stderr) == {"train": 4, "evaluate": 2, "aggregate": 1, "compare": 1, "report": 1, "all": 1, "total": 10}
    assert mtimes(project, "results/data/**/*") | mtimes(project, "results/pretrain/*/weights.pt") == data_before
    models_after = mtimes(project, "results/models/*/r*/fold*/best.pt")
    assert models_after.keys() == models_before.keys() and all(models_after[k] != models_before[k] for k in models_before)
    history = pd.read_csv(project / "results" / "models" / "scratch" / "r0" / "fold0" / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]

    diff = json.loads(sh(project, "dvc", "params", "diff", "--json").stdout)
    assert diff["config.yaml"]["defaults.train.epochs"]["old"] == 2 and diff["config.yaml"]["defaults.train.epochs"]["new"] == 3
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json").stdout)
    exp = next(r["data"] for c in shown for e in (c.get("experiments") or []) for r in e["revs"] if r.get("name") == "three-epochs")
    assert exp["params"]["config.yaml"]["data"]["defaults"]["train"]["epochs"] == 3
    assert numbers(exp["metrics"]["results/metrics.json"]["data"]) == numbers(read_metrics(project))
    table = sh(project, "dvc", "exp", "show", "--csv").stdout
    assert "three-epochs" in table and "variants.scratch.test_dice" in table.splitlines()[0]
    commit(project, "three epochs")  # keep the experiment's results as the branch head


def test_exp_run_with_tta_reruns_only_the_evaluation_and_changes_the_metrics(project):
    """evaluate.tta is a key like any other: DVC sees the params change and runs its stage;
    Snakemake re-evaluates (the flag is a rule param) and trains nothing."""
    before = read_metrics(project)
    models_before = mtimes(project, "results/models/*/r*/fold*/best.pt")
    run = sh(project, "dvc", "exp", "run", "-n", "tta", "-S", "config.yaml:evaluate.tta=true")
    assert job_counts(run.stdout + run.stderr) == {"evaluate": 2, "aggregate": 1, "compare": 1, "report": 1, "all": 1, "total": 6}
    assert mtimes(project, "results/models/*/r*/fold*/best.pt") == models_before
    after = read_metrics(project)
    changed = {}
    for variant in ("scratch", "colorized"):
        assert not before["variants"][variant]["test_tta"] and after["variants"][variant]["test_tta"]
        old, new = numbers(before["variants"][variant]), numbers(after["variants"][variant])
        changed[variant] = {k for k in new if new[k] != old.get(k) and k != "test_tta" and "seconds" not in k}
        # Out-of-fold and per-fold test scores move with TTA (the ensemble's labels may not, at 3 epochs).
        assert changed[variant] & {"oof_dice", "test_dice", "test_dice_folds_mean"}, (variant, changed[variant])
    diff = json.loads(sh(project, "dvc", "params", "diff", "--json").stdout)
    assert (diff["config.yaml"]["evaluate.tta"]["old"], diff["config.yaml"]["evaluate.tta"]["new"]) == (False, True)
    shown = json.loads(sh(project, "dvc", "metrics", "diff", "--json").stdout)
    listed = set(shown["results/metrics.json"])
    assert {f"variants.scratch.{k}" for k in changed["scratch"]} <= listed
    commit(project, "tta")


def test_a_second_study_reproduces_through_dvc_next_to_the_default_one(project):
    """The stage dvc.yaml documents for another study, added as a user would: its outs follow its
    own output_dir and dataset name, and the default study is left as it was."""
    default_models = mtimes(project, "results/models/*/r*/fold*/best.pt")
    default_lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["study"]
    (project / "configs" / "studies").mkdir(parents=True)
    write_yaml(project / "configs" / "studies" / "second.yaml", second_study_config())
    with (project / "dvc.yaml").open("a") as dvc_yaml:
        dvc_yaml.write(documented_stage("second"))

    run = sh(project, "dvc", "repro", "second")
    assert "Job stats" in run.stdout + run.stderr
    out = project / "results" / "studies" / "second"
    assert set(json.loads((out / "metrics.json").read_text())["variants"]) == {"dice"}
    assert mtimes(project, "results/models/*/r*/fold*/best.pt") == default_models

    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert lock["study"] == default_lock
    outs = {o["path"] for o in lock["second"]["outs"]}
    assert {"data/raw/second-lesions", "results/studies/second/models", "results/studies/second/data",
            "results/studies/second/metrics.json", "results/studies/second/curves.csv"} <= outs
    assert lock["second"]["params"]["configs/studies/second.yaml"]["variants"] == {"dice": {"loss": {"name": "dice"}}}
    assert sh(project, "dvc", "status", "--quiet", ok=False).returncode == 0
    assert "up to date" in sh(project, "dvc", "repro").stdout
    shown = json.loads(sh(project, "dvc", "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"results/metrics.json", "results/studies/second/metrics.json"} <= set(files)

    commit(project, "a second study")
    tracked = set(sh(project, "git", "ls-files").stdout.split())
    assert {"results/studies/second/metrics.json", "results/studies/second/curves.csv"} <= tracked
    assert not any(p.startswith(("results/studies/second/models", "results/studies/second/data")) for p in tracked)


def test_push_then_pull_on_a_fresh_clone_needs_no_rerun(project, tmp_path):
    remote = tmp_path / "remote"
    # A user's remote goes in .dvc/config.local (never committed): the project ships without one.
    sh(project, "dvc", "remote", "add", "--local", "-d", "store", str(remote))
    sh(project, "dvc", "push")
    assert "remote" not in (project / ".dvc" / "config").read_text()

    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "results" / "models").exists()
    sh(clone, "dvc", "remote", "add", "--local", "-d", "store", str(remote))
    # `make pull`: dvc pull, then mark the pulled results up to date for Snakemake.
    # STAMP= drops the target's "install the venv" prerequisite: the test's venv is already there.
    out = sh(clone, "make", "pull", f"VENV={VENV_BIN.parent}", "STAMP=").stdout
    assert "pulled results marked up to date" in out

    for pattern in ("data/raw/builtin-lesions/images/*", "results/models/*/r*/fold*/best.pt", "results/pretrain/*/weights.pt"):
        pulled = sorted(p.relative_to(clone) for p in clone.glob(pattern))
        assert pulled and pulled == sorted(p.relative_to(project) for p in project.glob(pattern)), pattern
        assert all((clone / p).read_bytes() == (project / p).read_bytes() for p in pulled)
    dry = sh(clone, sys.executable, "-m", "snakemake", "-n", "--cores", "1")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert sh(clone, "dvc", "status", "--quiet", ok=False).returncode == 0
    # The second study came back too, and Snakemake sees it up to date as well.
    assert sorted(p.relative_to(clone) for p in clone.glob("results/studies/second/models/*/r*/fold*/best.pt"))
    dry = sh(clone, sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "configs/studies/second.yaml")
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_pull_does_not_hide_a_changed_config(project, tmp_path):
    """`make pull` marks results up to date only when they match config.yaml and the code."""
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
    remote = next(Path(line.split("=", 1)[1].strip()) for line in (project / ".dvc" / "config.local").read_text().splitlines()
                  if line.strip().startswith("url"))
    sh(clone, "dvc", "remote", "add", "--local", "-d", "store", str(remote))
    cfg = yaml.safe_load((clone / "config.yaml").read_text())
    cfg["variants"]["scratch"] = {"loss": {"name": "dice"}}
    write_yaml(clone / "config.yaml", cfg)
    out = sh(clone, "make", "pull", f"VENV={VENV_BIN.parent}", "STAMP=").stdout
    assert "differ from dvc.lock" in out and "pulled results marked up to date" not in out
    dry = sh(clone, sys.executable, "-m", "snakemake", "-n", "--cores", "1")
    assert job_counts(dry.stdout + dry.stderr)["train"] >= 2  # Snakemake still sees work to do
