"""Two studies run at once on one project with real Snakemake: neither corrupts the other's
results nor the shared MLflow store, and both give the same numbers for the same data
and seed (CPU determinism). A second invocation of the same study is refused by
Snakemake's lock while the first runs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from seglab.tracking import Tracker

from tests.helpers import run_snakemake, seglab_env, snakemake_cmd, tiny_config

pytestmark = pytest.mark.e2e
TIMING = ("seconds", "per_s", "run_id")  # timings and run ids differ by nature


def study(name: str) -> dict[str, Any]:
    return tiny_config(
        study={"name": name, "output_dir": f"results-{name}", "seed": 3, "device": "cpu"},
        dataset={"name": f"data-{name}", "source": "builtin", "builtin": {"kind": "lesions", "count": 24, "size": 32, "groups": 6}},
        tracking={"enabled": True, "uri": None},  # the project's shared sqlite:///mlflow.db
        defaults={"model": {"name": "unet", "base": 4, "depth": 2}, "augmentation": {"preset": "flip"},
                  "train": {"epochs": 2, "batch_size": 4, "patience": 5}},
    )


def start_study(project: Path, name: str) -> subprocess.Popen:
    """Snakemake running study ``name`` in ``project``, in the background."""
    config = project / f"{name}.yaml"
    config.write_text(yaml.safe_dump(study(name)))
    return subprocess.Popen(snakemake_cmd(project, config, cores=1, gpus=0), cwd=project, env=seglab_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def without_timing(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: without_timing(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [without_timing(v) for v in obj]
    return obj


def test_two_studies_at_once_and_the_same_study_twice(tmp_path):
    first, second = start_study(tmp_path, "alpha"), start_study(tmp_path, "beta")

    # While alpha holds its lock, running alpha again is refused, and alpha is unharmed.
    locks = tmp_path / ".snakemake" / "locks"
    deadline = time.monotonic() + 120
    while first.poll() is None and not any(locks.glob("*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "alpha finished before a second invocation could be tried"
    again = run_snakemake(tmp_path, tmp_path / "alpha.yaml", env=seglab_env(), timeout=300, cores=1, gpus=0)
    assert again.returncode != 0
    assert "Directory cannot be locked" in again.stdout + again.stderr

    logs = {name: job.communicate(timeout=900)[0] for name, job in (("alpha", first), ("beta", second))}
    for name, job in (("alpha", first), ("beta", second)):
        assert job.returncode == 0, logs[name]
        out = tmp_path / f"results-{name}"
        assert (out / "report" / "index.html").is_file() and (out / "metrics.json").is_file()

    # Every expected run is in the one shared store, finished, in its own experiment.
    for name in ("alpha", "beta"):
        runs = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", name).runs()
        by_key = {r.data.tags.get("seglab.key"): r for r in runs}
        expected = {f"{name}/unet-bce", f"{name}/unet-bce/r0/fold0", f"{name}/unet-bce/r0/fold1"}
        assert expected <= set(by_key), sorted(by_key)
        assert all(by_key[k].info.status == "FINISHED" for k in expected)
        assert len(runs) == len(by_key), "no job added a duplicate run"
        for fold in (0, 1):
            assert by_key[f"{name}/unet-bce/r0/fold{fold}"].data.metrics["best_val_loss"] > 0

    # Same seed, same config, same data on the CPU: the same numbers (timings aside).
    alpha, beta = (json.loads((tmp_path / f"results-{n}" / "eval" / "unet-bce" / "r0" / "metrics.json").read_text())
                   for n in ("alpha", "beta"))
    assert without_timing(alpha) == without_timing(beta)
    alpha, beta = (json.loads((tmp_path / f"results-{n}" / "metrics.json").read_text()) for n in ("alpha", "beta"))
    assert without_timing(alpha["variants"]) == without_timing(beta["variants"])
