"""The MLflow UI, as a user opens it: a real ``mlflow ui`` on 127.0.0.1 and headless Chromium.

The store is written through seglab's own tracking calls, as the train and evaluate stages
make them (the full workflow's records are checked in tests/test_dvc.py): a model-training
experiment with a parent run per variant, a child run per fold, each with its dataset input
and its stage as source. The test loads the study's link in Chromium and finds the runs
table with the variant runs, their dataset and their source in it, and leaves a screenshot
beside the test's files.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from seglab.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, Tracker, experiment_url, open_run
from tests.helpers import stop_process

CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
VARIANTS = ("unet-bce", "unet-dice")
DATASET = "ui-lesions"
DIGEST = "0123456789ab"


def record_study(store: str, raw: Path) -> str:
    """Runs as the train and evaluate stages record them; returns the experiment id."""
    tracking = {"enabled": True, "uri": store, "system_metrics": False}
    for variant in VARIANTS:
        for fold in (0, 1):
            run = open_run(tracking, "ui-study", f"ui-study/{variant}/fold{fold}", f"{variant}-fold{fold}",
                           parent_key=f"ui-study/{variant}", tags={"seglab.stage": "train"}, command="train")
            run.log_dataset(DATASET, DIGEST, str(raw), "training", {"num_images": 30})
            run.log_metrics({"val_dice": 0.5 + 0.1 * fold}, step=1)
            run.finish()
        parent = open_run(tracking, "ui-study", f"ui-study/{variant}", variant, tags={"seglab.stage": "variant"},
                          monitor=False, command="evaluate")
        parent.log_dataset(DATASET, DIGEST, str(raw), "training")
        parent.log_dataset(DATASET, DIGEST, str(raw), "training")  # a resumed job: logged once
        parent.log_metrics({"test_dice": 0.7 if variant == "unet-bce" else 0.8})
        parent.finish()
    return Tracker(store, "ui-study").experiment_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow ui exited with {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow ui did not answer on {url} within {timeout:.0f} s")




def chromium(tmp: Path, url: str, *action: str) -> subprocess.CompletedProcess:
    """One headless Chromium load of ``url``; the virtual time budget lets the app fetch and render."""
    profile = tmp / f"chromium-{time.monotonic_ns()}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1800,900", "--virtual-time-budget=25000", *action, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def visible_text(html: str) -> str:
    import re

    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


@pytest.mark.e2e  # a real server and a real browser: about a minute
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium); .ci/run installs it")
def test_mlflow_ui_opens_the_experiment_on_its_runs_table(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = tmp_path / "data" / "raw" / DATASET
    raw.mkdir(parents=True)
    experiment_id = record_study(store, raw)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    parent = next(r for r in client.search_runs([experiment_id]) if r.info.run_name == "unet-bce")
    (dataset_input,) = parent.inputs.dataset_inputs
    assert dataset_input.dataset.name == DATASET and dataset_input.dataset.digest == DIGEST
    assert json.loads(dataset_input.dataset.source)["uri"] == raw.as_uri()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        ui = f"http://127.0.0.1:{port}"
        wait_for(f"{ui}/health", server)
        url = experiment_url(ui, experiment_id)
        text = ""
        for _attempt in range(2):  # a slow first render on a busy machine gets one more load
            page = chromium(tmp_path, url, "--dump-dom")
            text = visible_text(page.stdout)
            if all(v in text for v in VARIANTS):
                break
        shot = chromium(tmp_path, url, f"--screenshot={tmp_path / 'runs-table.png'}")
    finally:
        stop_process(server)

    # The runs table, not the GenAI overview: its header, the variant runs, their dataset and source.
    assert "Run Name" in text and "Dataset" in text and "Source" in text, text[:2000]
    for variant in VARIANTS:
        assert variant in text, f"{variant} not in the runs table: {text[:2000]}"
    assert DATASET in text and "seglab evaluate" in text
    assert "Token Usage" not in text and "No data available for the selected time range" not in text
    assert shot.returncode == 0 and (tmp_path / "runs-table.png").stat().st_size > 10_000, shot.stderr[-2000:]
