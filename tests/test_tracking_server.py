"""MLflow tracking servers: an unreachable one stops a study at once; a real one receives every record.

The server tests start `mlflow server` on 127.0.0.1 (SQLite backend and artifact folder in a
temporary directory) and stop it by its process id.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.helpers import snakemake_cmd, tiny_study, workflow_env, write_yaml
from tests.helpers import prepare, run_seglab, tiny_config, train_args


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound once by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_job_stops_at_once_when_the_server_is_unreachable(tmp_path):
    """Every job probes the server before it trains: one message, no MLflow retries, nothing written."""
    paths = prepare(tmp_path, tiny_config(tracking={"enabled": True}))
    uri = f"http://127.0.0.1:{closed_port()}"
    out = tmp_path / "fold0"
    start = time.perf_counter()
    done = run_seglab(train_args(paths, out), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    seconds = time.perf_counter() - start
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("seglab: error:")]
    assert len(errors) == 1 and uri in errors[0] and "unset" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert seconds < 20, seconds  # the interpreter and torch imports; the probe itself fails in milliseconds
    assert not (out / "best.pt").exists()


@pytest.mark.e2e
def test_an_unreachable_server_ends_the_study_before_any_job_and_keeps_what_was_computed(tmp_path):
    config = write_yaml(tmp_path / "study.yaml", tiny_study())
    env = workflow_env(tmp_path)
    # The data stages, recorded in the local store: files a later failure must not touch.
    done = subprocess.run(snakemake_cmd(tmp_path, config, "--until", "split"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    computed = {p: p.stat().st_mtime_ns for p in (tmp_path / "results" / "data").rglob("*") if p.is_file()}
    assert computed

    uri = f"http://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    done = subprocess.run(snakemake_cmd(tmp_path, config), env={**env, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - start
    print(f"unreachable tracking server: the study ended after {seconds:.1f}s")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert output.count(f"MLflow tracking server {uri} (MLFLOW_TRACKING_URI) is not reachable") == 1, output[-3000:]
    assert "Traceback" not in output and "seglab track-init failed" in output
    assert seconds < 30, seconds  # Snakemake's start; MLflow alone retried for minutes
    assert {p: p.stat().st_mtime_ns for p in computed} == computed
    assert not list((tmp_path / "results").rglob("best.pt")) and not list((tmp_path / "results").rglob("*.pt"))
