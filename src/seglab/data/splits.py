"""Held-out test set and k cross-validation folds, written once and shared by every variant.

Groups (patients, videos) never straddle two folds or the test set, and folds are
balanced on the foreground fraction (stratified group k-fold), so that every variant
is compared on the same, paired images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..seeds import derived_seed
from .io import DataError


def _foreground(manifest: pd.DataFrame) -> pd.Series:
    """Fraction of labelled pixels that are not class 0 (background), per image."""
    pixel_cols = [c for c in manifest.columns if c.startswith("pixels_")]
    total = manifest[pixel_cols].sum(axis=1).clip(lower=1)
    return manifest[pixel_cols[1:]].sum(axis=1) / total


def _strata(manifest: pd.DataFrame, bins: int) -> np.ndarray:
    """Quantile bins of the foreground fraction: what the folds are balanced on."""
    foreground = _foreground(manifest)
    ranks = foreground.rank(method="first").to_numpy()
    return np.minimum((ranks - 1) * bins // len(manifest), bins - 1).astype(int)


def _group_folds(ids: np.ndarray, strata: np.ndarray, groups: np.ndarray, k: int, seed: int) -> list[list[str]]:
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"only {n_groups} groups for {k} folds. Lower split.folds or add images.")
    bins = min(len(np.unique(strata)), max(1, n_groups // k))
    strata = np.minimum(strata * bins // max(strata.max() + 1, 1), bins - 1)
    # Imported here: scikit-learn takes ~1 s to import and only the split stage needs it.
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small datasets have strata with fewer members than folds; the split is still valid.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [sorted(ids[held].tolist()) for _, held in splitter.split(ids, strata, groups)]


def read_test_list(path: Path, key: str | None) -> list[str]:
    """Test ids a dataset ships: a JSON list (or ``key`` of a JSON object), or a text
    file whose lines start with the id (Oxford-IIIT Pet's ``test.txt``)."""
    if not path.is_file():
        raise DataError(f"{path}: test list not found. Check split.test_file (relative to the dataset root).")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if key is not None:
            if not isinstance(data, dict) or key not in data:
                raise DataError(f"{path}: has no key {key!r}. Set split.test_key to one of {sorted(data) if isinstance(data, dict) else []}.")
            data = data[key]
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of ids{' under ' + repr(key) if key else ''}; set split.test_key.")
        return [str(x) for x in data]
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def make_splits(manifest: pd.DataFrame, folds: int, test_fraction: float, seed: int,
                test_ids: list[str] | None = None, repeat: int = 0, strata: np.ndarray | None = None) -> dict[str, Any]:
    """Return ``{"test": [ids], "folds": [[ids], ...], ...}``; deterministic for a seed.

    The test set is ``test_ids`` when given (the dataset's own test list; ids not in
    the manifest are listed under ``test_ids_missing``), else a grouped, stratified
    ``test_fraction`` of the images drawn with ``seed``. The folds of repeat ``repeat`` are
    drawn with its own seed (:func:`seglab.seeds.derived_seed`; repeat 0 uses ``seed``):
    repeats of a study share the test set and differ in their folds. ``strata`` (one integer
    per manifest row, e.g. the class of a classification image) replaces the foreground-fraction
    bins the folds and the test set are balanced on.
    """
    fold_seed = derived_seed(seed, repeat)
    ids = manifest["id"].astype(str).to_numpy()
    groups = manifest["group"].astype(str).to_numpy()
    strata = _strata(manifest, bins=4) if strata is None else np.asarray(strata, dtype=int)
    missing: list[str] = []
    if test_ids is not None:
        known = set(ids.tolist())
        wanted = set(map(str, test_ids))
        missing = sorted(wanted - known)
        test = sorted(wanted & known)
        if not test:
            raise DataError(f"none of the {len(wanted)} test ids is an image of the dataset (e.g. {sorted(wanted)[:3]}). "
                            "Check split.test_file / split.test_ids against the image ids.")
        source = "list"
    else:
        # One fold of a ceil(1/fraction)-fold split: grouped and stratified like the folds.
        n_test_folds = max(2, int(round(1 / test_fraction)))
        test = _group_folds(ids, strata, groups, n_test_folds, seed)[0]
        source = "fraction"
    rest = ~np.isin(ids, test)
    if rest.sum() < folds:
        raise DataError(f"only {int(rest.sum())} images are left for {folds} folds after the test set. Lower split.folds.")
    cv = _group_folds(ids[rest], strata[rest], groups[rest], folds, fold_seed)
    if any(len(f) == 0 for f in cv):
        raise DataError("a cross-validation fold came out empty. Lower split.folds or add images.")
    fg = _foreground(manifest).to_numpy()
    return {
        "seed": seed,
        "repeat": repeat,
        "fold_seed": fold_seed,
        "test_source": source,
        "test_fraction": test_fraction if source == "fraction" else round(len(test) / len(ids), 6),
        "test": test,
        "folds": cv,
        "counts": {"test": len(test), "folds": [len(f) for f in cv]},
        "foreground_fraction": {"test": _mean(fg, ids, test), "folds": [_mean(fg, ids, f) for f in cv]},
        "test_ids_missing": missing,
    }


def make_presplit_splits(manifest: pd.DataFrame, validation: str, folds: int, test_fraction: float,
                         seed: int, repeat: int = 0) -> dict[str, Any]:
    """Splits of a pre-split dataset, from the manifest's ``role`` column, used as given.

    The test set is the test folder (else a grouped ``test_fraction`` of train + val). With
    ``validation: fixed`` the val folder is the one fold and the train folder is always trained
    on (``train``); with ``folds``, train and val together are cut into ``folds`` folds.
    Unlabelled images are listed apart (``unlabelled``) for colorization pretraining only.
    """
    roles = manifest["role"].fillna("").astype(str)
    ids_of = {role: sorted(manifest.loc[roles == role, "id"].astype(str)) for role in ("train", "val", "test", "unlabelled")}
    labelled = manifest[roles.isin(["train", "val", "test"])].reset_index(drop=True)
    if validation == "fixed":
        if not ids_of["val"]:
            raise DataError("split.validation is fixed but no image of dataset.folder.val passed verification. Check the folder.")
        pool = labelled[labelled["role"] != "val"]
        test = ids_of["test"] or make_splits(pool, 2, test_fraction, seed)["test"]
        train = sorted(set(ids_of["train"]) - set(test))
        out = {"seed": seed, "repeat": repeat, "fold_seed": seed, "test_source": "folder" if ids_of["test"] else "fraction",
               "test_fraction": round(len(test) / max(len(labelled), 1), 6), "test": test,
               "folds": [ids_of["val"]], "train": train,
               "counts": {"test": len(test), "folds": [len(ids_of["val"])], "train": len(train)},
               "test_ids_missing": []}
        fg = _foreground(labelled).to_numpy()
        ids = labelled["id"].astype(str).to_numpy()
        out["foreground_fraction"] = {"test": _mean(fg, ids, test), "folds": [_mean(fg, ids, ids_of["val"])]}
    else:
        out = make_splits(labelled, folds, test_fraction, seed, ids_of["test"] or None, repeat)
        if ids_of["test"]:
            out["test_source"] = "folder"
    out["validation"] = validation
    out["unlabelled"] = ids_of["unlabelled"]
    return out


def _mean(values: np.ndarray, ids: np.ndarray, subset: list[str]) -> float:
    return round(float(values[np.isin(ids, subset)].mean()), 6)


def fold_ids(splits: dict[str, Any], fold: int) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of one fold: validate on fold k, train on the others (and on
    the images every fold trains on, ``train``, when a fixed validation folder is the fold)."""
    if not 0 <= fold < len(splits["folds"]):
        raise ValueError(f"fold {fold} does not exist; the splits have {len(splits['folds'])} folds")
    val = splits["folds"][fold]
    train = sorted([i for k, f in enumerate(splits["folds"]) if k != fold for i in f] + list(splits.get("train", [])))
    return train, val


def training_pool(splits: dict[str, Any]) -> list[str]:
    """Every image that some fold trains or validates on (never a test image)."""
    return sorted({i for fold in splits["folds"] for i in fold} | set(splits.get("train", [])))
