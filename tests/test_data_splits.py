"""Splits: grouped, stratified, deterministic; a test set from a fraction, a list or a file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seglab.data.io import DataError
from seglab.data.splits import make_splits, read_test_list


def _manifest(n_groups: int = 30, per_group: int = 4, seed: int = 0) -> pd.DataFrame:
    """Images of patients whose foreground fraction varies a lot between patients."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        level = rng.uniform(0.01, 0.6)  # patients differ: the stratification has work to do
        for k in range(per_group):
            fg = int(4096 * np.clip(level + rng.normal(0, 0.02), 0, 1))
            rows.append({"id": f"g{g:02d}_{k}", "group": f"g{g:02d}", "pixels_0": 4096 - fg, "pixels_1": fg})
    return pd.DataFrame(rows)


def _fg(manifest: pd.DataFrame, ids: list[str]) -> float:
    sub = manifest.set_index("id").loc[ids]
    return float((sub["pixels_1"] / (sub["pixels_0"] + sub["pixels_1"])).mean())


def test_groups_never_straddle_and_folds_are_balanced() -> None:
    manifest = _manifest()
    splits = make_splits(manifest, folds=5, test_fraction=0.2, seed=3)
    group_of = dict(zip(manifest["id"], manifest["group"]))
    parts = [splits["test"], *splits["folds"]]
    owners: dict[str, int] = {}
    for k, part in enumerate(parts):
        for i in part:
            assert owners.setdefault(group_of[i], k) == k, f"group {group_of[i]} is in two parts"
    assert sorted(i for p in parts for i in p) == sorted(manifest["id"])

    sizes = [len(f) for f in splits["folds"]]
    assert max(sizes) - min(sizes) <= 4  # at most one group (4 images) apart
    fractions = [_fg(manifest, f) for f in splits["folds"]]
    overall = _fg(manifest, [i for f in splits["folds"] for i in f])
    # Balanced: every fold's foreground fraction is close to the pooled one; a split that
    # ignored the strata would typically be off by several times this much.
    assert max(abs(f - overall) for f in fractions) < 0.06
    assert splits["foreground_fraction"]["folds"] == [round(f, 6) for f in fractions]


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    manifest = _manifest()
    a = make_splits(manifest, 3, 0.2, seed=7)
    c = make_splits(manifest, 3, 0.2, seed=8)
    assert a["test"] == make_splits(manifest, 3, 0.2, seed=7)["test"]
    assert a["folds"] == make_splits(manifest, 3, 0.2, seed=7)["folds"]
    assert (a["test"], a["folds"]) != (c["test"], c["folds"])


def test_test_list_ids_and_missing_ids_are_reported() -> None:
    manifest = _manifest(n_groups=10)
    wanted = ["g00_0", "g00_1", "g01_0", "nope"]
    splits = make_splits(manifest, 3, 0.2, seed=0, test_ids=wanted)
    assert splits["test"] == ["g00_0", "g00_1", "g01_0"] and splits["test_source"] == "list"
    assert splits["test_ids_missing"] == ["nope"]
    assert not set(splits["test"]) & {i for f in splits["folds"] for i in f}

    with pytest.raises(DataError, match="none of the 2 test ids"):
        make_splits(manifest, 3, 0.2, seed=0, test_ids=["x", "y"])


def test_read_test_list_formats(tmp_path: Path) -> None:
    (tmp_path / "test.txt").write_text("# id class species breed\nAbyssinian_201 1 1 1\nbeagle_3 2 2 1\n")
    assert read_test_list(tmp_path / "test.txt", None) == ["Abyssinian_201", "beagle_3"]
    (tmp_path / "splits.json").write_text(json.dumps({"train": ["a"], "val": ["b", "c"]}))
    assert read_test_list(tmp_path / "splits.json", "val") == ["b", "c"]
    with pytest.raises(DataError, match="split.test_key"):
        read_test_list(tmp_path / "splits.json", None)
    with pytest.raises(DataError, match="test list not found"):
        read_test_list(tmp_path / "absent.txt", None)


def test_too_few_groups_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="groups for 5 folds"):
        make_splits(_manifest(n_groups=4, per_group=3), folds=5, test_fraction=0.25, seed=0)
