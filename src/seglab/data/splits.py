"""Held-out test set and k cross-validation folds, written once and shared by every variant.

Groups (patients, videos) never straddle two folds or the test set, and folds are
balanced on the foreground fraction (stratified group k-fold), so that every variant
is compared on the same, paired images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .io import DataError


def _strata(manifest: pd.DataFrame, bins: int) -> np.ndarray:
    """Quantile bins of the foreground fraction: what the folds are balanced on."""
    pixel_cols = [c for c in manifest.columns if c.startswith("pixels_")]
    total = manifest[pixel_cols].sum(axis=1).clip(lower=1)
    foreground = manifest[pixel_cols[1:]].sum(axis=1) / total
    ranks = foreground.rank(method="first").to_numpy()
    return np.minimum((ranks - 1) * bins // len(manifest), bins - 1).astype(int)


def _group_folds(ids: np.ndarray, strata: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[list[str]]:
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"only {n_groups} groups for {k} folds. Lower split.folds or add images.")
    bins = min(len(np.unique(strata)), max(1, n_groups // k))
    strata = np.minimum(strata * bins // max(strata.max() + 1, 1), bins - 1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [sorted(ids[held].tolist()) for _, held in splitter.split(ids, strata, groups)]


def make_splits(manifest: pd.DataFrame, folds: int, test_fraction: float, seed: int) -> dict[str, Any]:
    """Return ``{"test": [ids], "folds": [[ids], ...], ...}``; deterministic for a seed."""
    ids = manifest["id"].astype(str).to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    strata = _strata(manifest, bins=4)
    # The test set is one fold of a ceil(1/fraction)-fold split: grouped and stratified alike.
    n_test_folds = max(2, int(round(1 / test_fraction)))
    test = _group_folds(ids, strata, groups, n_test_folds, seed)[0]
    rest = ~np.isin(ids, test)
    cv = _group_folds(ids[rest], strata[rest], groups[rest], folds, seed)
    if any(len(f) == 0 for f in cv):
        raise DataError("a cross-validation fold came out empty. Lower split.folds or add images.")
    return {
        "seed": seed,
        "test_fraction": test_fraction,
        "test": test,
        "folds": cv,
        "counts": {"test": len(test), "folds": [len(f) for f in cv]},
    }


def fold_ids(splits: dict[str, Any], fold: int) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of one fold: validate on fold k, train on the others."""
    if not 0 <= fold < len(splits["folds"]):
        raise ValueError(f"fold {fold} does not exist; the splits have {len(splits['folds'])} folds")
    val = splits["folds"][fold]
    train = sorted(i for k, f in enumerate(splits["folds"]) if k != fold for i in f)
    return train, val
