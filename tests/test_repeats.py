"""Repeated cross-validation: the repeat is one more key of every training run's path, its
folds and seeds are its own, and the workflow treats it like any wildcard.

The end-to-end test runs a tiny study whose two variants differ only in their training seed
(identical recipes): the report must not call them different, a dry run after the run must
have nothing to do, and raising split.repeats from 2 to 3 must plan only the new repeat.
"""

from __future__ import annotations

import json
import re
import subprocess

import pandas as pd
import pytest

from tests.conftest import snakemake_cmd, tiny_study, workflow_env, write_yaml
from seglab import layout
from seglab.data.splits import make_splits
from seglab.seeds import derived_seed, training_seed
from seglab.tracking import Tracker


def _manifest(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"g{i // 2:02d}_{i % 2}" for i in range(n)], "group": [f"g{i // 2:02d}" for i in range(n)],
                         "pixels_0": [100 + (i * 37) % 50 for i in range(n)], "pixels_1": [(i * 53) % 40 for i in range(n)]})


def test_repeats_share_the_test_set_and_differ_in_their_folds():
    manifest = _manifest()
    r0, r1 = (make_splits(manifest, 3, 0.2, 5, repeat=r) for r in (0, 1))
    assert r0 == make_splits(manifest, 3, 0.2, 5), "repeat 0 is the split a study with one repeat always had"
    assert r0["test"] == r1["test"] and (r0["repeat"], r1["repeat"]) == (0, 1)
    assert r0["folds"] != r1["folds"]
    assert sorted(i for f in r0["folds"] for i in f) == sorted(i for f in r1["folds"] for i in f)
    assert r1["fold_seed"] == derived_seed(5, 1) != 5


def test_training_seeds_differ_per_repeat_and_follow_the_variant_seed():
    variant = {"seed": None, "study": {"seed": 42}}
    assert training_seed(variant, 0, 1) == 43, "repeat 0 keeps study.seed + fold"
    seeds = {training_seed(variant, r, k) for r in range(3) for k in range(3)}
    assert len(seeds) == 9
    assert training_seed({"seed": 7, "study": {"seed": 42}}, 0, 0) == 7


def test_layout_names_every_run_by_variant_repeat_and_fold():
    lay = layout.StudyLayout("results")
    path = lay.fold_file("unet", 2, layout.CHECKPOINT, 1)
    assert path == "results/models/unet/r1/fold2/best.pt"
    assert layout.run_of(path) == ("unet", 1, 2) and layout.fold_of(path) == ("unet", 2)
    assert layout.eval_of(lay.eval_file("unet", layout.EVAL_METRICS, 3)) == ("unet", 3)
    assert lay.splits == "results/data/splits/r0.json"
    with pytest.raises(ValueError, match="r<repeat>"):
        layout.run_of("results/models/unet/fold0/best.pt")


def _jobs(dry_run: str) -> dict[str, int]:
    table = dry_run.split("Job stats:")[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.e2e
def test_identical_recipes_with_other_seeds_are_not_significant_and_repeats_add_only_their_jobs(tmp_path):
    cfg = tiny_study(
        split={"folds": 2, "test_fraction": 0.25, "repeats": 2},
        defaults={"model": {"base": 4, "depth": 2}, "train": {"epochs": 2, "batch_size": 8, "patience": 2}},
        variants={"seed-a": {}, "seed-b": {"seed": 2}},
    )
    config = write_yaml(tmp_path / "study.yaml", cfg)
    env = workflow_env(tmp_path)
    done = subprocess.run(snakemake_cmd(tmp_path, config), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads((tmp_path / "results/stats/comparisons.json").read_text())
    (row,) = result["comparisons"]
    print(f"\nidentical recipes, other seeds: test p {row['bootstrap']['p']:.4g} (Holm {row['test_p_holm']:.4g}), "
          f"CV p {row['cv_ttest']['p']:.4g} (Holm {row['cv_p_holm']:.4g}), secondary Wilcoxon p {row['wilcoxon']['p']:.4g}")
    assert row["repeats"] == 2 and row["folds"] == 2 and row["run_variance_measured"]
    assert not row["significant"] and "no evidence that the recipes differ" in row["sentence"]
    summary = (tmp_path / "results/report/summary.md").read_text()
    assert "seed-b vs seed-a: no evidence" in summary and "run-to-run sd" in summary

    metrics = json.loads((tmp_path / "results/metrics.json").read_text())
    for name, variant_row in metrics["variants"].items():
        assert variant_row["repeats"] == 2 and len(variant_row["test_dice_per_repeat"]) == 2
        assert variant_row["test_dice_repeat_sd"] is not None and len(variant_row["cv_dice_per_fold"]) == 4
    a0 = json.loads((tmp_path / "results/models/seed-a/r0/fold0/summary.json").read_text())
    a1 = json.loads((tmp_path / "results/models/seed-a/r1/fold0/summary.json").read_text())
    b0 = json.loads((tmp_path / "results/models/seed-b/r0/fold0/summary.json").read_text())
    assert len({a0["seed"], a1["seed"], b0["seed"]}) == 3

    # MLflow: the variant's parent run and one child run per repeat and fold.
    runs = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tiny").runs()
    keys = {r.data.tags.get("seglab.key") for r in runs}
    assert {f"tiny/seed-a/r{r}/fold{k}" for r in (0, 1) for k in (0, 1)} <= keys
    parent = next(r for r in runs if r.data.tags.get("seglab.key") == "tiny/seed-a")
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
               for r in runs if (r.data.tags.get("seglab.key") or "").startswith("tiny/seed-a/r"))

    again = subprocess.run(snakemake_cmd(tmp_path, config, "-n"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    cfg["split"]["repeats"] = 3
    write_yaml(config, cfg)
    plan = subprocess.run(snakemake_cmd(tmp_path, config, "-n"), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-2000:]
    jobs = _jobs(plan.stdout)
    assert jobs["split"] == 1 and jobs["train"] == 2 * 2 and jobs["evaluate"] == 2, jobs
    assert {"preprocess", "pretrain"}.isdisjoint(jobs)
    planned = re.findall(r"output: (\S+)", plan.stdout)
    assert not [p for p in planned if re.search(r"/r[01]/", p)], "no job of an existing repeat re-runs"


def test_rank_stability_counts_first_places_over_repeats():
    from seglab.aggregate import rank_first

    shares = rank_first({"a": [0.90, 0.80, 0.70, 0.60], "b": [0.85, 0.85, 0.70, 0.50], "c": [0.1, 0.2, 0.3, 0.4]})
    # a wins repeats 0 and 3, b repeat 1, a and b tie in repeat 2 and share it.
    assert shares == pytest.approx({"a": 2.5 / 4, "b": 1.5 / 4, "c": 0.0})
