"""The study table of a classification study: one row per variant (``metrics.json``), as
:mod:`seglab.aggregate` writes for segmentation, on accuracy and its companions.

Per variant: CV accuracy (and balanced accuracy, macro F1) mean ± sd and t-based 95% CI over
every repeat's folds; pooled out-of-fold scores; the fold ensemble's test scores (mean over
repeats, with the run-to-run sd); the fold models' test accuracies; rank stability.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..aggregate import _run_sd, _spread, rank_first
from .evaluate import HEADLINE


def _mean(values: list[Any]) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def variant_row(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    first = repeats[0]
    row: dict[str, Any] = {"repeats": len(repeats)}
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        per_repeat = [m["cv"][f"val_{name}_per_fold"] for m in repeats]
        row.update({f"cv_{name}_{k}": v for k, v in _spread([v for r in per_repeat for v in r]).items()})
        row[f"cv_{name}_per_fold"] = [v for r in per_repeat for v in r]
    row["cv_accuracy_repeat_sd"] = _run_sd([statistics.fmean(m["cv"]["val_accuracy_per_fold"]) for m in repeats])
    ensembles = [m["test"]["ensemble"] for m in repeats]
    test_folds = [m["test"][k]["accuracy"] for m in repeats for k in sorted(m["test"]) if k.startswith("fold")]
    row.update({
        **{f"oof_{k}": _mean([m["oof"]["pooled"][k] for m in repeats]) for k in HEADLINE},
        "oof_images": first["oof"]["images"],
        "oof_accuracy_per_fold": [f["accuracy"] for m in repeats for f in m["oof"]["per_fold"]],
        **{f"test_{k}": _mean([e[k] for e in ensembles]) for k in HEADLINE},
        "test_accuracy_repeat_sd": _run_sd([e["accuracy"] for e in ensembles]),
        "test_accuracy_per_repeat": [e["accuracy"] for e in ensembles],
        "test_accuracy_folds": test_folds,
        **{f"test_accuracy_folds_{k}": v for k, v in _spread(test_folds).items()},
        "test_confusion": first["test_confusion"],
        "test_tta": first["tta"],
        "params_trainable": first["params_trainable"],
        "params_frozen": first["params_frozen"],
        "train_seconds": round(sum(m["train_seconds"] for m in repeats), 1),
        "best_epochs": [e for m in repeats for e in m["best_epochs"]],
        "device": first["device"],
        "run_ids": {"variant": first["variant_run_id"], "folds": [i for m in repeats for i in m["run_ids"]]},
    })
    return row


def study_metrics(study: dict[str, Any], per_variant: dict[str, list[dict[str, Any]]],
                  sweep: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The study table; the best variant has the highest test accuracy of its fold ensemble."""
    rows = {name: variant_row(m) for name, m in per_variant.items()}
    best = max(rows, key=lambda n: rows[n]["test_accuracy"])
    for name, share in rank_first({n: r["test_accuracy_per_repeat"] for n, r in rows.items()}).items():
        rows[name]["ranked_first"] = share
    return {"study": study["name"], "task": "classification", "baseline": study["baseline"], "best_variant": best,
            "repeats": min(r["repeats"] for r in rows.values()), "sweep": sweep or {}, "variants": rows}


def aggregate_line(name: str, row: dict[str, Any]) -> str:
    run_sd = row["test_accuracy_repeat_sd"]
    spread = f" ± {run_sd:.4f} run-to-run over {row['repeats']} repeats" if run_sd is not None else \
        " (one repeat: run-to-run sd not measured)"
    return (f"{name:>28s}: CV accuracy {row['cv_accuracy_mean']:.4f} ± {row['cv_accuracy_sd']:.4f}   "
            f"test accuracy {row['test_accuracy']:.4f}{spread}")
