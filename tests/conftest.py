"""Shared fixtures: the finished tiny study. The harness itself lives in tests/helpers.py."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Re-exported: tests import these from tests.conftest or tests.helpers alike.
from tests.helpers import (  # noqa: F401
    REPO, commit, dvc_study, new_project, sh, snakemake_cmd, tiny_study, workflow_env, write_yaml,
)


@dataclass(frozen=True)
class FinishedStudy:
    """The tiny study, run once for the whole session; read it, never change it (copy it first)."""

    root: Path  # a git + DVC project: config.yaml, results/, mlflow.db, dvc.lock
    configfile: Path
    cfg: dict[str, Any]
    commit: str  # the commit the study ran from

    def env(self) -> dict[str, str]:
        return workflow_env(self.root)


@dataclass(frozen=True)
class TinyData:
    """The tiny study's data stages, run in-process: read it, never change it."""

    cfg: dict[str, Any]  # the validated tiny study
    root: Path  # raw/ and prepared/
    report: dict[str, Any]  # what verification found
    data: Any  # seglab.data.prepared.PreparedData of root/prepared
    splits: dict[str, Any]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """Generate -> verify -> preprocess -> split the tiny study, once for the session."""
    import pandas as pd

    from seglab.config import validate
    from seglab.data.prepared import PreparedData
    from seglab.data.preprocess import preprocess
    from seglab.data.sources import fetch_dataset
    from seglab.data.splits import make_splits
    from seglab.data.verify import verify_dataset

    root = tmp_path_factory.mktemp("tiny-data")
    cfg = validate(tiny_study())
    fetch_dataset(cfg["dataset"], root / "raw")
    report = verify_dataset(root / "raw", cfg["dataset"], "fail")
    preprocess(report, 32, "resize", root / "prepared")
    manifest = pd.read_csv(root / "prepared" / "manifest.csv", dtype={"id": str, "group": str})
    splits = make_splits(manifest, folds=2, test_fraction=0.2, seed=0)
    return TinyData(cfg, root, report, PreparedData(root / "prepared"), splits)


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    """The tiny study as a user runs it: `dvc repro` in a fresh git + DVC project, which runs
    Snakemake; its dvc.lock and small metrics committed. Shared by the workflow, MLflow,
    report and DVC tests instead of each running its own.

    Under pytest-xdist it is built once for all workers (xdist's recipe for a session fixture
    that must run once): the first worker to ask builds it in the temporary folder the workers
    share, under a file lock; the others wait for it and read the same study. A failed build
    leaves its error beside the lock, and every other worker fails at once with it.
    """
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the finished study is a DVC project, which lives in a git repository")
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "finished-study"
    shared.mkdir(parents=True, exist_ok=True)
    cfg = dvc_study()
    root, done, failed = shared / "project", shared / "commit.txt", shared / "failed.txt"
    with FileLock(str(shared.with_suffix(".lock"))):
        if failed.is_file():  # another worker's build failed: the same study would fail here too, slowly
            pytest.fail(f"building the finished study failed on another worker:\n{failed.read_text()}")
        if not done.is_file():
            try:
                new_project(root, cfg)
                repro = sh(root, "dvc", "repro")
                assert "Job stats" in repro.stdout + repro.stderr  # DVC's stage ran Snakemake
                study_commit = sh(root, "git", "rev-parse", "HEAD").stdout.strip()
                commit(root, "results")  # dvc.lock, and the small metrics/curves that .gitignore lets through
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {str(error)[-4000:]}")
                raise
            done.write_text(study_commit)
    return FinishedStudy(root, root / "config.yaml", cfg, done.read_text())


# ------------------------------------------------------------------ running in parallel
# `make test` runs the suite on pytest-xdist workers (TEST_WORKERS): most of its time is
# Snakemake workflows whose job chains keep one core busy (one Python process importing torch
# at a time) or wait on a service (SLURM's status checks, a server starting), so workflows
# side by side use the machine better. Scheduling units:
# - a module with a module-scoped fixture (its own study, server or project copy) runs whole
#   on one worker, so that fixture is built once;
# - any other test is a unit of its own, so long parametrized tests spread over the workers
#   (the finished study is built once for all workers: see `finished_study`).
# Units are handed out longest first: the modules that wait for the finished study least
# (the one that builds it, test_dvc), then the other end-to-end modules, end-to-end tests
# and the rest, so the last minutes are not one worker finishing a whole workflow alone.
# (xdist's own `--dist loadgroup` marks do not reach its scheduler under pytest 9, which
# keeps node ids elsewhere: the units are drawn here instead.)
FIRST = "test_dvc.py"  # the longest chain: the finished study, then its DVC experiments and remotes
MODULE_FIXTURE = re.compile(r"""@pytest\.fixture\(\s*scope=["'](module|package|class)["']""")


def scheduling_facts() -> dict[str, set[str]]:
    """Per test file, what the scheduler must know (it sees node ids, not fixtures or marks)."""
    sources = {path.name: path.read_text() for path in Path(__file__).parent.glob("test_*.py")}
    return {
        "whole": {name for name, text in sources.items() if MODULE_FIXTURE.search(text)},
        "slow": {name for name, text in sources.items() if "pytest.mark.e2e" in text},
    }


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    facts = scheduling_facts()

    def rank(scope: str) -> int:
        """0 first: test_dvc, then whole end-to-end modules, end-to-end tests, the rest."""
        module = Path(scope.split("::", 1)[0]).name
        if module == FIRST:
            return 0
        if module in facts["slow"]:
            return 1 if "::" not in scope else 2
        return 3

    class StudyScheduling(LoadScopeScheduling):
        ordered = False

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if Path(module).name in facts["whole"] else nodeid

        def _assign_work_unit(self, node: Any) -> None:
            if not self.ordered:  # once, before the first unit leaves: longest first, file order within
                units = sorted(self.workqueue.items(), key=lambda unit: rank(unit[0]))
                self.workqueue.clear()
                self.workqueue.update(units)
                self.ordered = True
            super()._assign_work_unit(node)

    return StudyScheduling(config, log)
