"""Beyond one machine, on real engines, as docs/cluster.md sets them up: a study whose jobs run
through SLURM (Snakemake's executor plugin, workflow/profiles/slurm) on a one-node cluster
started by the test, every job recording into a real MLflow server. One run of the tiny study
with one variant serves both checks: every run, metric and artifact arrives on the server once,
and the metrics equal those of the same study run locally (the session's finished study,
whose `scratch` variant has the same config, data and seeds).

Without SLURM (a developer's machine) the study runs locally against the server, so the server
checks still run; CI must run the SLURM one. Services listen on 127.0.0.1 only and are stopped
by the process ids the tests started.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (REPO, dvc_study, run_seglab, snakemake_cmd, stop_process, tiny_config, workflow_env,
                           write_stage_configs, write_yaml)
from tests.slurm_cluster import missing_reason, start_cluster

pytestmark = pytest.mark.e2e

RULES = ["download", "verify", "preprocess", "split", "train", "evaluate", "aggregate", "compare", "report"]


def cluster_study() -> dict:
    """The finished study's config with its `scratch` variant only: 2 folds train side by side,
    the fewest jobs that cover every stage, and the finished study's `scratch` metrics to match."""
    cfg = dvc_study()
    cfg["variants"] = {"scratch": cfg["variants"]["scratch"]}
    return cfg


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mlflow_server(root: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on 127.0.0.1 with its SQLite store and artifact folder in ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--workers", "1", *extra]
    # Its own session: the server's worker processes are stopped with it, by its process id.
    server = subprocess.Popen(cmd, cwd=root, env=env or dict(os.environ), stdout=(root / "server.log").open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{(root / 'server.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return server, uri
        except OSError:
            time.sleep(0.5)
    stop_process(server)
    raise RuntimeError(f"mlflow server did not answer in 120 s:\n{(root / 'server.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield uri
    stop_process(process)


@dataclass(frozen=True)
class ClusterRun:
    """The study run once for this module, its jobs recording into the module's MLflow server."""

    work: Path  # the project folder: study.yaml, results/
    output: str  # Snakemake's stdout and stderr
    seconds: float
    without_slurm: str | None  # why it ran on this machine instead, or None (it ran through SLURM)
    controller_log: str = ""  # slurmctld's log
    daemons_stopped: bool = False


@pytest.fixture(scope="module")
def cluster_run(server, tmp_path_factory) -> ClusterRun:
    """The study through the SLURM profile on a one-node cluster (daemons stopped by their pids
    afterwards), each job recording into the server; on this machine with two jobs at a time
    where SLURM cannot run."""
    work = tmp_path_factory.mktemp("cluster-study")
    config = write_yaml(work / "study.yaml", cluster_study())
    env = {**workflow_env(work), "MLFLOW_TRACKING_URI": server}
    reason = missing_reason()
    start = time.perf_counter()
    if reason:
        done = subprocess.run(snakemake_cmd(work, config), cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return ClusterRun(work, done.stdout + done.stderr, time.perf_counter() - start, reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        env = {**env, "SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": f"{cluster.root / 'bin'}{os.pathsep}{env['PATH']}"}
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
               "--configfile", str(config), "--profile", str(REPO / "workflow" / "profiles" / "slurm"),
               "--slurm-init-seconds-before-status-checks", "1"]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-4000:] + cluster.log("slurmctld")[-2000:]
    finally:
        cluster.stop()
    return ClusterRun(work, output, time.perf_counter() - start, None, cluster.log("slurmctld"),
                      all(p.returncode is not None for p in cluster.processes))


def comparable(metrics: dict, variants: list[str]) -> dict:
    """metrics.json's rows of ``variants`` without what differs between two runs of the same
    study (times, run ids) or depends on the study's other variants (the share of first places)."""
    return {variant: {k: v for k, v in metrics["variants"][variant].items() if k not in ("train_seconds", "run_ids", "ranked_first")}
            for variant in variants}


def test_a_parallel_study_records_every_run_metric_and_artifact_once_on_the_server(server, cluster_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    names = sorted(r.info.run_name for r in runs)
    expected = ["scratch", "scratch-r0-evaluate", "scratch-r0-fold0", "scratch-r0-fold1"]
    print(f"server: {len(runs)} runs ({names}), expected {expected}")
    assert names == expected  # every run, none twice
    assert all(r.info.status == "FINISHED" for r in runs)
    by_name = {r.info.run_name: r for r in runs}
    epochs = cluster_study()["defaults"]["train"]["epochs"]
    history_points = 0
    for fold in ("scratch-r0-fold0", "scratch-r0-fold1"):
        run = by_name[fold]
        assert run.data.tags["mlflow.parentRunId"] == by_name["scratch"].info.run_id
        for key in ("train_loss", "val_loss", "val_dice", "lr"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(1, epochs + 1)), (fold, key, steps)  # each epoch once
            history_points += len(steps)
        # Artifacts went through the server into its --artifacts-destination.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        listed = {a.path for folder in (None, "plots", "config") for a in client.list_artifacts(run.info.run_id, folder)}
        assert {"history.csv", "plots/learning_curves.png", "config/variant.json"} <= listed
        local = client.download_artifacts(run.info.run_id, "history.csv", str(cluster_run.work / f"{fold}-download"))
        fold_dir = cluster_run.work / "results" / "models" / "scratch" / "r0" / fold.split("-")[-1]
        assert Path(local).read_bytes() == (fold_dir / "history.csv").read_bytes()
    evaluation = by_name["scratch-r0-evaluate"]
    metrics = json.loads((cluster_run.work / "results" / "metrics.json").read_text())
    assert evaluation.data.metrics["test_dice"] == pytest.approx(metrics["variants"]["scratch"]["test_dice"])
    listed = {a.path for folder in (None, "plots") for a in client.list_artifacts(evaluation.info.run_id, folder)}
    assert {"per_image.csv", "metrics.json", "plots/sample_overlays.png"} <= listed
    print(f"server: {history_points} per-epoch metric points on the folds' 4 curves, expected {2 * 4 * epochs}")


def test_server_credentials_come_from_the_environment(tmp_path):
    """MLflow's basic-auth app: MLflow and the probe read MLFLOW_TRACKING_USERNAME/PASSWORD."""
    auth_config = tmp_path / "basic_auth.ini"
    auth_config.write_text("[mlflow]\ndefault_permission = READ\n"
                           f"database_uri = sqlite:///{tmp_path / 'basic_auth.db'}\n"
                           "admin_username = admin\nadmin_password = seglab-test-password\n"
                           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    process, uri = start_mlflow_server(tmp_path / "server", "--app-name", "basic-auth",
                                       env={**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_config),
                                            "MLFLOW_FLASK_SERVER_SECRET_KEY": "seglab-test-csrf-key"})
    try:
        stage = write_stage_configs(tmp_path, tiny_config(tracking={"enabled": True}))
        args = ["track-init", "--config", str(stage / "study.json")]
        refused = run_seglab(args, cwd=tmp_path, MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_USERNAME="admin",
                             MLFLOW_TRACKING_PASSWORD="wrong")
        assert refused.returncode == 2 and "refused the credentials (HTTP 401)" in refused.stderr, refused.stderr[-2000:]
        assert uri in refused.stderr and "Traceback" not in refused.stderr
        accepted = run_seglab(args, cwd=tmp_path, MLFLOW_TRACKING_URI=uri, MLFLOW_TRACKING_USERNAME="admin",
                              MLFLOW_TRACKING_PASSWORD="seglab-test-password")
        assert accepted.returncode == 0, accepted.stderr[-2000:]
        assert "MLflow: experiment 'tiny'" in accepted.stdout
    finally:
        stop_process(process)


def submitted_jobs(output: str) -> dict[str, Path]:
    """SLURM job id -> its log, from Snakemake's 'submitted with SLURM jobid N (log: ...)' lines."""
    return {m.group(1): Path(m.group(2)) for m in re.finditer(r"submitted with SLURM jobid (\d+) \(log: ([^)]+)\)", output)}


def test_the_study_runs_through_slurm_with_the_local_metrics(cluster_run, server, request):
    if cluster_run.without_slurm:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM test: {cluster_run.without_slurm}")
        pytest.skip(cluster_run.without_slurm)
    assert cluster_run.daemons_stopped  # the daemons are gone

    jobs = submitted_jobs(cluster_run.output)
    print(f"tiny cluster study through SLURM: {cluster_run.seconds:.1f}s; SLURM job ids {sorted(jobs, key=int)}")
    # Every stage ran inside a SLURM job that the controller saw finish with exit status 0...
    stages_in_jobs = set()
    for job_id, log in jobs.items():
        assert log.is_relative_to(cluster_run.work / "results" / "logs" / "slurm") and log.is_file(), log
        assert re.search(rf"_job_complete: JobId={job_id} WEXITSTATUS 0", cluster_run.controller_log), job_id
        stages_in_jobs |= {rule for rule in RULES if re.search(rf"^rule {rule}:", log.read_text(), re.M)}
    assert stages_in_jobs == set(RULES)
    # ... and every MLflow run records its SLURM job.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    stage_runs = [r for r in runs if "seglab.stage" in r.data.tags]
    assert stage_runs and all(r.data.tags.get("slurm.job_id") in jobs for r in stage_runs)

    # The same numbers as the same study run on one machine.
    remote = json.loads((cluster_run.work / "results" / "metrics.json").read_text())
    finished_study = request.getfixturevalue("finished_study")  # built only where SLURM ran: the skip needs none
    local = json.loads((finished_study.root / "results" / "metrics.json").read_text())
    assert list(remote["variants"]) == ["scratch"]
    assert comparable(remote, ["scratch"]) == comparable(local, ["scratch"])
