"""The benchmark scripts run (at a tiny size) and print what they promise."""

import json
import subprocess
import sys

import pytest

from tests.helpers import REPO, workflow_env

# Each runs a benchmark script end to end (at its quick size): about 13 s each.
pytestmark = pytest.mark.e2e


def quick_run(script: str, tmp_path) -> subprocess.CompletedProcess:
    """``benchmarks/SCRIPT --quick``, with this tree's seglab and a private MLflow store."""
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--quick"],
                          capture_output=True, text=True, env=workflow_env(tmp_path), timeout=300)


def test_train_throughput_quick_run(tmp_path):
    out = quick_run("train_throughput.py", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["model"] == "unet8" and row["device"] == "cpu"
    assert row["bare_img_s"] > 0 and row["seglab_img_s"] > 0 and row["workers"] == 0
    # Both rates are rounded to 0.1 img/s in the output, the ratio from the unrounded ones.
    assert row["ratio"] == pytest.approx(row["seglab_img_s"] / row["bare_img_s"], rel=0.05)


def test_eval_throughput_quick_run(tmp_path):
    out = quick_run("eval_throughput.py", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [r["tta"] for r in rows] == [False, True]
    for row in rows:
        assert row["model"] == "unet8" and row["device"] == "cpu" and row["folds"] == 2
        assert row["bare_passes_s"] > 0 and row["seglab_passes_s"] > 0
        assert row["ratio"] == pytest.approx(row["seglab_passes_s"] / row["bare_passes_s"], rel=0.05)
        assert row["test_images"] + row["oof_images"] == 16


def test_sliding_window_benchmark_quick_run(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sliding_window.py"), "--quick"],
                         capture_output=True, text=True, env=workflow_env(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["model"] == "unet8" and (row["height"], row["width"], row["window"]) == (150, 200, 64)
    assert row["windows"] == 4 * 6  # starts 0, 29, 57, 86 down and six across at overlap 0.5
    assert row["sliding_s"] > 0 and row["blend_ratio"] > 0 and row["pixel_ratio"] > 0
    assert row["output_mb"] == pytest.approx(150 * 200 * 4 / 2**20, abs=0.05) and row["peak_extra_mb"] >= 0


def test_classify_throughput_quick_run(tmp_path):
    out = quick_run("classify_throughput.py", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["model"] == "vgg8" and row["device"] == "cpu" and row["bare_img_s"] > 0 and row["seglab_img_s"] > 0
    assert row["ratio"] == pytest.approx(row["seglab_img_s"] / row["bare_img_s"], rel=0.05)
