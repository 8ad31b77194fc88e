"""The compare stage: gather the paired numbers from the evaluation files and run seglab.stats.

Inputs: per variant and repeat, ``per_image.csv`` (test Dice of that repeat's fold ensemble
per image) and ``metrics.json`` (per-fold out-of-fold Dice); the manifest (groups) and the
splits (fold sizes, the same in every repeat). Output: ``comparisons.json`` (everything, with a sentence per comparison) and
``comparisons.csv`` (one flat row per comparison, for people and spreadsheets).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from . import layout
from .stats import compare


def test_train_ratio(splits: dict[str, Any]) -> float:
    """Mean over folds of n_validation / n_training: the Nadeau-Bengio correction term."""
    sizes = [len(f) for f in splits["folds"]]
    total = sum(sizes) + len(splits.get("train", []))  # images every fold trains on (fixed validation)
    return statistics.fmean(n / (total - n) for n in sizes)


def real_groups(manifest: pd.DataFrame) -> dict[str, str] | None:
    """id -> group when groups are real (some group holds several images), else None."""
    if manifest["group"].nunique() >= len(manifest):
        return None
    return dict(zip(manifest["id"].astype(str), manifest["group"].astype(str)))


def gather(eval_dirs: dict[str, list[Path]], column: str = "dice",
           fold_key: str = "dice") -> tuple[dict[str, list[dict[str, float]]], dict[str, list[list[float]]]]:
    """Per variant, one entry per repeat (in repeat order): {image id: ensemble test score} and the
    fold scores; the score is per_image.csv's ``column`` and each OOF fold's ``fold_key`` (the task's)."""
    per_image: dict[str, list[dict[str, float]]] = {}
    folds: dict[str, list[list[float]]] = {}
    for variant, folders in eval_dirs.items():
        for folder in folders:
            table = pd.read_csv(folder / layout.PER_IMAGE, dtype={"id": str})
            ensemble = table[table["model"] == "ensemble"]
            per_image.setdefault(variant, []).append(dict(zip(ensemble["id"], ensemble[column].astype(float))))
            metrics = json.loads((folder / layout.EVAL_METRICS).read_text())
            folds.setdefault(variant, []).append([float(f[fold_key]) for f in metrics["oof"]["per_fold"]])
    return per_image, folds


def flat_rows(result: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for r in result["comparisons"]:
        boot, cv = r["bootstrap"], r["cv_ttest"]
        rows.append({
            "variant": r["variant"], "reference": r["reference"], "repeats": r["repeats"], "folds": r["folds"],
            "images": r["images"], "mean_dice_variant": r["mean_a"], "mean_dice_reference": r["mean_b"],
            "test_diff_mean": boot["mean"], "test_diff_ci95_low": boot["low"], "test_diff_ci95_high": boot["high"],
            "test_bootstrap_unit": boot["unit"], "test_df": boot["df"], "test_p": boot["p"], "test_p_holm": r["test_p_holm"],
            "cv_diff_mean": cv["mean"], "cv_t": cv["t"], "cv_df": cv["df"], "cv_p": cv["p"], "cv_p_holm": r["cv_p_holm"],
            "test_significant": r["test_significant"], "cv_significant": r["cv_significant"],
            "significant": r["significant"], "run_variance_measured": r["run_variance_measured"],
            "secondary_wilcoxon_repeat0_p": r["wilcoxon"]["p"], "secondary_wilcoxon_repeat0_p_holm": r["wilcoxon_p_holm"],
            "warnings": " | ".join(r["warnings"]),
        })
    return pd.DataFrame(rows)


def run_compare(study: dict[str, Any], eval_dirs: dict[str, list[Path]], manifest: pd.DataFrame, splits: dict[str, Any],
                out_json: Path, out_csv: Path, score: tuple[str, str, str] = ("dice", "dice", "Dice")) -> dict[str, Any]:
    """``score``: (per-image column, per-fold OOF key, name in the sentences) of the study's task."""
    per_image, folds = gather(eval_dirs, score[0], score[1])
    cfg = study["stats"]
    result = compare(per_image, folds, study["study"]["baseline"], groups=real_groups(manifest),
                     test_train_ratio=test_train_ratio(splits), all_pairs=cfg["all_pairs"], alpha=cfg["alpha"],
                     n_boot=cfg["bootstrap"], seed=cfg["seed"], metric=score[1], label=score[2])
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    flat_rows(result).to_csv(out_csv, index=False)
    return result
