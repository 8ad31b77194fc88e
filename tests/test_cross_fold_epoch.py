"""The CV score at the epoch chosen without the fold's own labels (evaluate.cv_epoch_from_other_folds),
beside the optimistic one at each fold's own best epoch; from hand-built training histories."""

from __future__ import annotations

import pandas as pd
import pytest

from seglab.aggregate import cross_fold_scores, epoch_from_other_folds, study_metrics

# One repeat, three folds, checkpoints picked on val_loss (min). Fold 2 stopped after 2 epochs.
HISTORIES = {
    0: pd.DataFrame({"epoch": [1, 2, 3], "val_loss": [0.50, 0.30, 0.40], "val_dice": [0.60, 0.70, 0.90], "val_iou": [0.4, 0.5, 0.8]}),
    1: pd.DataFrame({"epoch": [1, 2, 3], "val_loss": [0.50, 0.40, 0.20], "val_dice": [0.50, 0.65, 0.80], "val_iou": [0.3, 0.5, 0.7]}),
    2: pd.DataFrame({"epoch": [1, 2], "val_loss": [0.60, 0.50], "val_dice": [0.55, 0.75], "val_iou": [0.4, 0.6]}),
}
TRAIN = {"monitor": "val_loss", "mode": "auto", "checkpoint_metric": None, "checkpoint_mode": "auto"}


def curves(histories: dict[int, pd.DataFrame], variant: str = "v", repeat: int = 0) -> pd.DataFrame:
    return pd.concat([h.assign(variant=variant, repeat=repeat, fold=k) for k, h in histories.items()], ignore_index=True)


def test_the_epoch_is_chosen_on_the_other_folds_of_the_repeat():
    # Fold 0's own best val_loss is epoch 2 (Dice 0.70); the other folds' mean loss is lowest at
    # epoch 3 (fold 1 alone there: 0.20 against 0.45 and 0.55), where fold 0 scores 0.90.
    assert epoch_from_other_folds(HISTORIES, 0, "val_loss", "min") == 3
    # Fold 1 (own best: epoch 3): the others average 0.55, 0.40, 0.40 -> the earliest of the tie.
    assert epoch_from_other_folds(HISTORIES, 1, "val_loss", "min") == 2
    # Fold 2 ran 2 epochs only: chosen among them (0.50, 0.35 over folds 0 and 1).
    assert epoch_from_other_folds(HISTORIES, 2, "val_loss", "min") == 2
    assert epoch_from_other_folds(HISTORIES, 0, "val_dice", "max") == 3
    assert epoch_from_other_folds({0: HISTORIES[0]}, 0, "val_loss", "min") is None  # one fold: nothing to choose on


def test_the_study_table_gives_both_scores_and_they_differ():
    row = cross_fold_scores(curves(HISTORIES), {"v": {"train": TRAIN}})["v"]
    assert row["xfold_epochs"] == [3, 2, 2]
    assert row["cv_dice_xfold_epoch_per_fold"] == [0.90, 0.65, 0.75]
    assert row["cv_iou_xfold_epoch_per_fold"] == [0.8, 0.5, 0.6]
    assert row["cv_dice_xfold_epoch_mean"] == pytest.approx((0.90 + 0.65 + 0.75) / 3)
    # The optimistic score, at each fold's own best val_loss epoch (2, 3, 2): 0.70, 0.80, 0.75.
    own = [h.loc[h["val_loss"].idxmin(), "val_dice"] for h in HISTORIES.values()]
    assert own == [0.70, 0.80, 0.75] and row["cv_dice_xfold_epoch_mean"] != pytest.approx(sum(own) / 3)

    # Repeats are chosen apart: a second repeat's folds never vote for the first's.
    second = {k: h.assign(val_loss=h["val_loss"][::-1].to_numpy()) for k, h in HISTORIES.items() if k < 2}
    both = cross_fold_scores(pd.concat([curves(HISTORIES), curves(second, repeat=1)]), {"v": {"train": TRAIN}})["v"]
    assert both["xfold_epochs"][:3] == [3, 2, 2] and both["xfold_epochs"][3:] == [1, 2]

    evaluation = {"cv": {"val_dice_per_fold": own, "val_iou_per_fold": [0.5, 0.7, 0.6]},
                  "test": {"ensemble": {"dice": 0.8, "iou": 0.7}, "fold0": {"dice": 0.8}, "fold1": {"dice": 0.7}}}
    table = study_metrics({"name": "s", "baseline": "v"}, {"v": [evaluation]}, None, {"v": row})["variants"]["v"]
    assert table["cv_dice_mean"] == pytest.approx(0.75) and table["cv_dice_xfold_epoch_mean"] == pytest.approx(0.7666667)


def test_a_checkpoint_metric_picks_its_own_direction():
    train = {**TRAIN, "checkpoint_metric": "val_dice"}
    row = cross_fold_scores(curves(HISTORIES), {"v": {"train": train}})["v"]
    # Highest mean val_dice of the other folds: epoch 3 for folds 0 and 1; fold 2 ran 2 epochs.
    assert row["xfold_epochs"] == [3, 3, 2]
