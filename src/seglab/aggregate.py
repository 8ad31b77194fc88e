"""Study-level tables: one row per variant, CV mean ± sd and 95% CI, pooled OOF and test scores,
and the run-to-run sd over repeats.

Writes ``metrics.json`` (what ``dvc metrics show`` displays) and ``curves.csv``
(every fold's learning curve, what ``dvc plots show`` draws).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from .stats import t_interval

HEADLINE = ("dice", "iou", "pixel_accuracy", "precision", "recall")


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean, sd and t-based 95% CI (sd 0 and CI NaN for a single value)."""
    low, high = t_interval(values)
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "ci95_low": low, "ci95_high": high}


def _run_sd(values: list[float]) -> float | None:
    """Run-to-run sd over repeats; None with one repeat (not measured, which is not zero)."""
    return statistics.stdev(values) if len(values) > 1 else None


def variant_row(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One variant's row from its evaluations, one per repeat (in repeat order).

    CV scores pool every repeat's folds; the test scores are the mean over repeats of each
    repeat's fold ensemble, with the run-to-run sd across repeats and the per-repeat values.
    """
    first = repeats[0]
    row: dict[str, Any] = {"repeats": len(repeats)}
    for name in ("dice", "iou"):
        key = f"val_{name}_per_fold"
        per_repeat = [m["cv"][key] for m in repeats if key in m["cv"]]
        if per_repeat:
            row.update({f"cv_{name}_{k}": v for k, v in _spread([v for r in per_repeat for v in r]).items()})
            row[f"cv_{name}_repeat_sd"] = _run_sd([statistics.fmean(r) for r in per_repeat])
        row[f"cv_{name}_per_fold"] = [v for r in per_repeat for v in r] if per_repeat else None
    # Per-class CV IoU and Dice (mean over repeats and folds of each fold's best-epoch validation
    # score): what shows a class the variant never learns (0 IoU on poles and signs) behind a good mean.
    classes = first.get("classes") or []
    for name in ("iou", "dice"):
        row[f"cv_{name}_per_class"] = {}
        for k, label in enumerate(classes):
            means = [m["cv"][f"val_{name}_{k}_mean"] for m in repeats if f"val_{name}_{k}_mean" in m["cv"]]
            if means:
                row[f"cv_{name}_per_class"][label] = statistics.fmean(means)
    oofs = [m.get("oof", {}) for m in repeats]
    oof_dice = [o["pooled"]["dice"] for o in oofs if "pooled" in o]
    ensembles = [m["test"]["ensemble"] for m in repeats]
    test_folds = [m["test"][k]["dice"] for m in repeats for k in sorted(m["test"]) if k.startswith("fold")]

    def mean_of(key: str, scores: list[dict[str, Any]]) -> float | None:
        values = [s[key] for s in scores if s.get(key) is not None and not math.isnan(s[key])]
        return statistics.fmean(values) if values else None

    row.update({
        "oof_dice": statistics.fmean(oof_dice) if oof_dice else None,
        "oof_iou": mean_of("iou", [o["pooled"] for o in oofs if "pooled" in o]),
        "oof_dice_dataset": mean_of("dice_dataset", [o["pooled"] for o in oofs if "pooled" in o]),
        "oof_images": oofs[0].get("images"),
        "oof_dice_per_fold": [f["dice"] for o in oofs for f in o.get("per_fold", [])],
        **{f"test_{k}": mean_of(k, ensembles) for k in HEADLINE},
        "test_dice_repeat_sd": _run_sd([e["dice"] for e in ensembles]),
        "test_dice_per_repeat": [e["dice"] for e in ensembles],
        "test_hd95": mean_of("hd95", ensembles),
        "test_dice_dataset": mean_of("dice_dataset", ensembles),
        "test_dice_folds": test_folds,
        **{f"test_dice_folds_{k}": v for k, v in _spread(test_folds).items()},
        "test_tta": first.get("tta", False),
        "params_trainable": first.get("params_trainable"),
        "params_frozen": first.get("params_frozen"),
        "train_seconds": round(sum(m.get("train_seconds", 0.0) for m in repeats), 1),
        "best_epochs": [e for m in repeats for e in m.get("best_epochs") or []],
        "device": first.get("device"),
        "run_ids": {"variant": first.get("variant_run_id"), "folds": [i for m in repeats for i in m.get("run_ids") or []]},
    })
    return row


def selection_rule(cfg_train: dict[str, Any]) -> tuple[str, str]:
    """The epoch value that picks a fold's kept checkpoint, and its direction (as train.build_stoppers)."""
    from .stopping import monitor_mode

    metric = cfg_train["checkpoint_metric"] or cfg_train["monitor"]
    return metric, monitor_mode(metric, cfg_train["checkpoint_mode"] if cfg_train["checkpoint_metric"] else cfg_train["mode"])


def epoch_from_other_folds(histories: dict[int, pd.DataFrame], fold: int, metric: str, mode: str) -> int | None:
    """The epoch at which fold ``fold`` is scored without its own labels: among the epochs it ran, the
    one whose ``metric`` averaged over the other folds (those that ran that epoch) is best (``mode``
    min or max; the earliest of ties). None without another fold. Fold ``fold``'s early stopping
    still read its own validation loss; with ``train.patience: null`` nothing of it does."""
    others = [h.set_index("epoch")[metric] for k, h in histories.items() if k != fold]
    if not others:
        return None
    mean = pd.concat(others, axis=1).mean(axis=1, skipna=True).reindex(histories[fold]["epoch"]).dropna()
    if mean.empty:
        return None
    return int(mean.idxmin() if mode == "min" else mean.idxmax())


def cross_fold_scores(curves: pd.DataFrame, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: each fold's validation Dice and IoU at :func:`epoch_from_other_folds` (every repeat's
    folds, in order), their mean and sd, and the epochs chosen; None where a repeat has one fold."""
    out: dict[str, dict[str, Any]] = {}
    for variant, runs in curves.groupby("variant", sort=False):
        metric, mode = selection_rule(variants[variant]["train"])
        scores: dict[str, list[float]] = {"dice": [], "iou": []}
        epochs: list[int] = []
        for _, repeat in runs.groupby("repeat", sort=True):
            histories = {int(k): h.sort_values("epoch") for k, h in repeat.groupby("fold", sort=True)}
            for fold, history in histories.items():
                epoch = epoch_from_other_folds(histories, fold, metric, mode)
                if epoch is None:
                    continue
                at = history.set_index("epoch").loc[epoch]
                epochs.append(epoch)
                for name in scores:
                    if f"val_{name}" in at:
                        scores[name].append(float(at[f"val_{name}"]))
        row: dict[str, Any] = {"xfold_epochs": epochs or None}
        for name, values in scores.items():
            row[f"cv_{name}_xfold_epoch_per_fold"] = values or None
            row[f"cv_{name}_xfold_epoch_mean"] = statistics.fmean(values) if values else None
            row[f"cv_{name}_xfold_epoch_sd"] = statistics.stdev(values) if len(values) > 1 else None
        out[str(variant)] = row
    return out


def rank_first(per_repeat: dict[str, list[float]]) -> dict[str, float]:
    """Rank stability: the share of repeats in which each variant has the best test score
    (ties share the repeat). With one repeat it is 1 for the winner and says little."""
    repeats = min(len(v) for v in per_repeat.values())
    wins = dict.fromkeys(per_repeat, 0.0)
    for r in range(repeats):
        top = max(v[r] for v in per_repeat.values())
        winners = [n for n, v in per_repeat.items() if v[r] == top]
        for n in winners:
            wins[n] += 1 / len(winners)
    return {n: w / repeats for n, w in wins.items()}


def study_metrics(study: dict[str, Any], per_variant: dict[str, list[dict[str, Any]]],
                  sweep: dict[str, dict[str, Any]] | None = None,
                  cross_fold: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The study table: ``per_variant`` maps each variant to its evaluations, one per repeat;
    ``sweep`` the grid point of each sweep variant (:func:`seglab.config.sweep_points`);
    ``cross_fold`` each variant's CV at the epoch chosen on the other folds (:func:`cross_fold_scores`)."""
    rows = {name: {**variant_row(m), **(cross_fold or {}).get(name, {})} for name, m in per_variant.items()}
    best = max(rows, key=lambda n: rows[n]["test_dice"] if rows[n]["test_dice"] is not None else float("-inf"))
    for name, share in rank_first({n: r["test_dice_per_repeat"] for n, r in rows.items()}).items():
        rows[name]["ranked_first"] = share
    return {"study": study["name"], "baseline": study["baseline"], "best_variant": best,
            "repeats": min(r["repeats"] for r in rows.values()), "sweep": sweep or {}, "variants": rows}


def learning_curves(histories: dict[tuple[str, int, int], Path]) -> pd.DataFrame:
    """Every training run's history, keyed (variant, repeat, fold)."""
    frames = []
    for (variant, repeat, fold), path in sorted(histories.items()):
        frame = pd.read_csv(path)
        frame.insert(0, "fold", fold)
        frame.insert(0, "repeat", repeat)
        frame.insert(0, "variant", variant)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
