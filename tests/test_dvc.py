"""DVC on a temporary clone of the project: repro, exp run, metrics/params/plots, push and pull.

The project is a copy of the session's finished study (tests/conftest.py: `dvc repro` in a
fresh git + DVC project, whose MLflow records tests/test_workflow.py checks); the tests run
in file order on that copy, and each leaves it in the state the next expects.
"""

from __future__ import annotations

import json
import shutil
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import (
    REPO, VENV_BIN, commit, copy_tree, job_counts, project_env, run_snakemake, sh, tiny_study, write_yaml,
)

pytestmark = pytest.mark.e2e

if shutil.which("git") is None:
    pytest.skip("git is not installed: DVC projects live in a git repository", allow_module_level=True)


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
def project(finished_study, tmp_path_factory) -> Path:
    """The finished study's git + DVC project, reproduced once, copied for this module to change."""
    return copy_tree(finished_study.root, tmp_path_factory.mktemp("dvc-project") / "project")


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


def test_exp_run_changes_one_key_and_reruns_only_what_depends_on_it(project):
    data_before = mtimes(project, "results/data/**/*") | mtimes(project, "results/pretrain/**/weights.pt")
    models_before = mtimes(project, "results/models/*/r*/fold*/best.pt")
    run = sh(project, "dvc", "exp", "run", "-n", "three-epochs", "-S", "config.yaml:defaults.train.epochs=3")
    # DVC re-ran its stage; Snakemake then re-ran the trainings and what reads them, nothing upstream.
    assert job_counts(run.stdout + run.stderr) == {"train": 4, "evaluate": 2, "aggregate": 1, "compare": 1, "report": 1, "all": 1, "total": 10}
    assert mtimes(project, "results/data/**/*") | mtimes(project, "results/pretrain/**/weights.pt") == data_before
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

    for pattern in ("data/raw/builtin-lesions/images/*", "results/models/*/r*/fold*/best.pt", "results/pretrain/**/weights.pt"):
        pulled = sorted(p.relative_to(clone) for p in clone.glob(pattern))
        assert pulled and pulled == sorted(p.relative_to(project) for p in project.glob(pattern)), pattern
        assert all((clone / p).read_bytes() == (project / p).read_bytes() for p in pulled)
    dry = run_snakemake(clone, None, "-n", env=project_env(clone), cores=1)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr
    assert sh(clone, "dvc", "status", "--quiet", ok=False).returncode == 0
    # The second study came back too, and Snakemake sees it up to date as well.
    assert sorted(p.relative_to(clone) for p in clone.glob("results/studies/second/models/*/r*/fold*/best.pt"))
    dry = run_snakemake(clone, clone / "configs" / "studies" / "second.yaml", "-n", env=project_env(clone), cores=1)
    assert dry.returncode == 0, dry.stderr[-2000:]
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
    dry = run_snakemake(clone, None, "-n", env=project_env(clone), cores=1)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert job_counts(dry.stdout + dry.stderr)["train"] >= 2  # Snakemake still sees work to do


def start_moto(root: Path) -> tuple[subprocess.Popen, str]:
    """An S3 endpoint on 127.0.0.1 (moto's server, in memory), in a session of its own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], cwd=root,
                              stdout=(root / "moto.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, (root / "moto.log").read_text()[-2000:]
        try:
            with urllib.request.urlopen(endpoint, timeout=2):
                return server, endpoint
        except OSError:
            time.sleep(0.3)
    os.killpg(server.pid, signal.SIGKILL)
    raise RuntimeError("moto_server did not answer in 60 s")


def add_s3_remote(root: Path, endpoint: str) -> None:
    """The remote as a user adds it: the address and credentials in .dvc/config.local only."""
    sh(root, "dvc", "remote", "add", "--local", "-d", "s3store", "s3://seglab-test/dvc")
    sh(root, "dvc", "remote", "modify", "--local", "s3store", "endpointurl", endpoint)
    sh(root, "dvc", "remote", "modify", "--local", "s3store", "region", "us-east-1")
    sh(root, "dvc", "remote", "modify", "--local", "s3store", "access_key_id", "seglab-test-key")
    sh(root, "dvc", "remote", "modify", "--local", "s3store", "secret_access_key", "seglab-test-secret")


def test_s3_remote_push_then_pull_on_a_fresh_clone(project, tmp_path):
    """`dvc push` to S3 (moto on 127.0.0.1), a fresh clone, `make pull`: nothing to re-run."""
    import boto3

    server, endpoint = start_moto(tmp_path)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="seglab-test-key", aws_secret_access_key="seglab-test-secret")
        s3.create_bucket(Bucket="seglab-test")
        add_s3_remote(project, endpoint)
        start = time.perf_counter()
        sh(project, "dvc", "push")
        push_s = time.perf_counter() - start
        objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket="seglab-test")
                   for o in page.get("Contents", [])]
        pushed = sum(o["Size"] for o in objects)
        assert objects and pushed > 0
        # Endpoint and credentials stay out of git: only the ignored .dvc/config.local has them.
        assert "s3store" not in (project / ".dvc" / "config").read_text()
        assert ".dvc/config.local" not in sh(project, "git", "ls-files").stdout.split()
        assert "config.local" not in sh(project, "git", "status", "--porcelain").stdout  # ignored, not just untracked

        clone = tmp_path / "clone"
        sh(tmp_path, "git", "clone", "-q", str(project), str(clone))
        assert not (clone / "results" / "models").exists()
        add_s3_remote(clone, endpoint)
        start = time.perf_counter()
        out = sh(clone, "make", "pull", f"VENV={VENV_BIN.parent}", "STAMP=").stdout
        pull_s = time.perf_counter() - start
        assert "pulled results marked up to date" in out
        pulled = sum(p.stat().st_size for p in (clone / ".dvc" / "cache").rglob("*") if p.is_file())
        print(f"\nS3 remote: pushed {len(objects)} objects, {pushed / 1e6:.2f} MB in {push_s:.1f}s; "
              f"make pull {pulled / 1e6:.2f} MB into the clone's cache in {pull_s:.1f}s")
        for pattern in ("results/models/*/r*/fold*/best.pt", "results/pretrain/**/weights.pt"):
            files = sorted(p.relative_to(clone) for p in clone.glob(pattern))
            assert files and all((clone / p).read_bytes() == (project / p).read_bytes() for p in files), pattern
        dry = sh(clone, sys.executable, "-m", "snakemake", "-n", "--cores", "1")
        assert "Nothing to be done" in dry.stdout + dry.stderr
        assert sh(clone, "dvc", "status", "--quiet", ok=False).returncode == 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
