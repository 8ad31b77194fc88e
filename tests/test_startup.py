"""Stages that never touch weights start without torch or MLflow.

A small study's time is mostly its jobs starting up (on this 2-core machine torch's import
alone is ~1.3 s of every job, MLflow's ~1.9 s), so the data stages (download, verify,
preprocess, split) and the modules behind compare and report must not import them by
accident, e.g. through an exception class that ``seglab``'s error handler catches.
"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import REPO, seglab_env

HEAVY = ("torch", "mlflow", "albumentations")

# Runs the tiny study's data stages through `seglab.cli.main` (as the rules do), then imports
# what compare and report run on; prints the heavy libraries that got imported on the way.
SCRIPT = """
import sys
from pathlib import Path

from tests.helpers import prepare

paths = prepare(Path(sys.argv[1]))
assert (paths["splits"]).is_file()
import seglab.compare, seglab.report.document, seglab.stopping, seglab.tasks.classification, seglab.tasks.segmentation
print(" ".join(sorted(name for name in {heavy!r} if name in sys.modules)) or "none")
"""


def test_data_stages_and_summaries_start_without_torch_or_mlflow(tmp_path):
    env = seglab_env(PYTHONPATH=f"{REPO}:{REPO / 'src'}")
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY), str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "none", done.stdout[-2000:]
