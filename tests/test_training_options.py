"""Schedules, monitors, augmentation policies, colour handling and config rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seglab.config import ConfigError, deep_merge, validate
from seglab.data.colour import ab_to_unit, colorization_refusal, is_grayscale, lab_to_rgb, rgb_to_lab, unit_to_ab
from seglab.data.io import IGNORE
from seglab.data.transforms import build_augmentation, parse_policy
from seglab.stopping import EarlyStopping, monitor_mode
from seglab.schedule import EpochSchedule


def variant(overrides: dict, defaults: dict | None = None) -> dict:
    return validate({"defaults": defaults or {}, "variants": {"v": overrides}})["variants"]["v"]


def refused(overrides: dict, match: str, defaults: dict | None = None) -> None:
    with pytest.raises(ConfigError, match=match):
        variant(overrides, defaults)


# ---------------------------------------------------------------- schedules


def test_cosine_with_warmup_by_hand():
    s = EpochSchedule("cosine", base_lr=1.0, epochs=6, warmup_epochs=2, min_lr=0.0)
    lrs = [s.lr_at(e) for e in range(6)]
    # warm-up 1/3, 2/3; then cosine over epochs 2..5 (t = 0, 1/3, 2/3, 1)
    expected = [1 / 3, 2 / 3, 1.0, (1 + math.cos(math.pi / 3)) / 2, (1 + math.cos(2 * math.pi / 3)) / 2, 0.0]
    assert lrs == pytest.approx(expected)


def test_poly_and_none():
    poly = EpochSchedule("poly", base_lr=0.1, epochs=5, power=2.0, min_lr=0.01)
    assert [poly.lr_at(e) for e in range(5)] == pytest.approx([0.01 + 0.09 * (1 - e / 4) ** 2 for e in range(5)])
    assert {EpochSchedule("none", base_lr=0.3, epochs=5).lr_at(e) for e in range(5)} == {0.3}


def test_plateau_reduces_after_patience_in_the_monitor_direction():
    s = EpochSchedule("plateau", base_lr=1.0, epochs=20, factor=0.5, patience=2, mode="max")
    seen = []
    for epoch, value in enumerate([0.5, 0.6, 0.6, 0.55, 0.7, 0.7, 0.7]):
        seen.append(s.lr_at(epoch))
        s.observe(epoch, value)
    # no improvement at epochs 2 and 3 -> halved from epoch 4; 5 and 6 flat -> halved again after 6
    assert seen == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    assert s.lr_at(7) == 0.25


def test_schedule_sets_the_optimizer_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=5.0)
    EpochSchedule("cosine", base_lr=1.0, epochs=3).apply(opt, 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_the_schedule_peaks_at_the_rate_the_optimizer_was_built_with():
    from seglab.schedule import build_schedule
    from seglab.train import build_optimizer

    v = variant({"optimizer": {"name": "sgd", "lr": 0.5}, "schedule": {"name": "cosine", "warmup_epochs": 1}})
    opt = build_optimizer(v["optimizer"], [torch.nn.Parameter(torch.zeros(1))])
    schedule = build_schedule(v["schedule"], opt, v["train"]["epochs"], "min")
    assert schedule.base_lr == opt.param_groups[0]["lr"] == 0.5
    assert [schedule.apply(opt, e) for e in (0, 1)] == [0.25, 0.5]


# ---------------------------------------------------------------- early stopping / best checkpoint


def test_early_stopping_max_mode_with_min_delta():
    stop = EarlyStopping(patience=2, monitor="val_dice", mode="max", min_delta=0.01)
    flags = [stop.update({"epoch": e + 1, "val_dice": v}) for e, v in enumerate([0.5, 0.505, 0.52, 0.52, float("nan")])]
    assert flags == [True, False, True, False, False]
    assert stop.best_epoch == 3 and stop.should_stop


def test_selector_never_stops_and_missing_monitor_is_clear():
    assert not EarlyStopping(None).should_stop
    with pytest.raises(ValueError, match="monitor 'val_hd95' is not in the epoch record"):
        EarlyStopping(3, monitor="val_hd95").update({"epoch": 1, "val_loss": 1.0, "val_dice": 0.3})
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_dice") == "max" and monitor_mode("val_dice", "min") == "min"


# ---------------------------------------------------------------- augmentation policy


def test_policy_applies_to_image_and_mask_together():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    mask = np.array([[1, 0, 0, 0]] * 4, dtype=np.uint8).T  # first row foreground
    aug = build_augmentation({"preset": "none", "policy": [{"name": "VerticalFlip", "params": {"p": 1.0}}]}, seed=0)
    out = aug(image=image, mask=mask)
    assert np.array_equal(out["image"], image[::-1]) and np.array_equal(out["mask"], mask[::-1])


def test_policy_fills_invented_mask_pixels_with_ignore_and_turns_lists_into_ranges():
    (affine,) = parse_policy([{"name": "Affine", "params": {"translate_percent": [0.4, 0.4], "p": 1.0}}])
    assert affine.fill_mask == IGNORE
    out = affine(image=np.full((16, 16, 3), 9, np.uint8), mask=np.ones((16, 16), np.uint8))
    assert (out["mask"] == IGNORE).any() and set(np.unique(out["mask"])) <= {1, IGNORE}


@pytest.mark.parametrize("item, match", [
    ({"name": "VertFlip"}, r"policy\[0\].name: 'VertFlip' is not an albumentations .*VerticalFlip"),
    ({"name": "Affine", "params": {"rotat": 10}}, r"policy\[0\].params: Affine has no parameter 'rotat'"),
    ({"name": "GaussianBlur", "params": {"blur_limit": "x"}}, r"policy\[0\].params: GaussianBlur refuses"),
])
def test_policy_errors_name_the_item_and_are_config_errors(item, match):
    with pytest.raises(ValueError, match=match):
        parse_policy([item])
    refused({"augmentation": {"policy": [item]}}, r"key 'variants.v.augmentation.policy\[0\]\.(name|params)': " + match.split(": ", 1)[1])


def test_preset_then_policy():
    aug = build_augmentation({"preset": "flip", "policy": [{"name": "GaussianBlur"}]}, seed=0)
    assert [type(t).__name__ for t in aug.transforms] == ["HorizontalFlip", "VerticalFlip", "GaussianBlur"]
    assert build_augmentation({"preset": "none", "policy": []}, seed=0) is None


# ---------------------------------------------------------------- colour


def test_lab_round_trip_and_known_values():
    rgb = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)
    red = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0])[:, None, None]).flatten()
    assert red.tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.05)  # the textbook sRGB red
    lab = rgb_to_lab(rgb)
    assert torch.allclose(unit_to_ab(ab_to_unit(lab)), lab[:, 1:], atol=1e-4)


def test_grayscale_is_detected_and_refused(tmp_path):
    grey = np.repeat(np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1), dtype=np.uint8), 3, axis=-1)
    colour = grey.copy()
    colour[4, 0, 0, 1] += 1
    assert is_grayscale(grey) and not is_grayscale(colour)
    np.save(tmp_path / "images.npy", grey)
    message = colorization_refusal(tmp_path / "images.npy", ["a", "b"])
    assert "grayscale" in message and "a, b" in message and "init to scratch" in message
    assert colorization_refusal(tmp_path / "images.npy", []) is None
    np.save(tmp_path / "images.npy", colour)
    assert colorization_refusal(tmp_path / "images.npy", ["a"]) is None


# ---------------------------------------------------------------- config rules


def test_a_new_name_replaces_the_block_instead_of_merging():
    base = {"model": {"name": "unet", "base": 8}, "loss": {"name": "focal", "gamma": 3}}
    merged = deep_merge(base, {"model": {"name": "smp", "encoder": "resnet34"}, "loss": {"gamma": 1}})
    assert merged["model"] == {"name": "smp", "encoder": "resnet34"}
    assert merged["loss"] == {"name": "focal", "gamma": 1}
    v = variant({"model": {"name": "plain_decoder"}}, {"model": {"name": "unet", "base": 8}})
    assert v["model"]["encoder"] == "mobilenet_v2" and "base" not in v["model"]


def test_loss_options_are_validated_per_name():
    assert variant({"loss": {"name": "tversky"}})["loss"] == {"name": "tversky", "alpha": 0.3, "beta": 0.7, "smooth": 1.0, "include_background": False}
    refused({"loss": {"name": "dice", "gamma": 2}}, r"unknown key 'variants.v.loss.gamma' for name 'dice'.*smooth")
    refused({"loss": {"name": "sum", "terms": [{"name": "bce", "gama": 1}]}}, r"loss.terms.0.gama' for name 'bce'")
    refused({"loss": {"name": "sum"}}, "'terms' is a required property")
    refused({"loss": {"name": "focal", "alpha": 2}}, r"loss.alpha': 2 is greater than the maximum of 1")
    terms = variant({"loss": {"name": "sum", "terms": [{"name": "bce", "weight": 0.5}, {"name": "dice"}]}})["loss"]["terms"]
    assert terms[1]["smooth"] == 1.0 and terms[0]["weight"] == 0.5


def test_model_options_are_validated_per_name():
    refused({"model": {"name": "smp", "base": 8}}, r"unknown key 'variants.v.model.base' for name 'smp'.*arch, binary_head")
    refused({"model": {"name": "smp", "encoder": "resnet35"}}, r"model.encoder': smp has no encoder 'resnet35'")
    refused({"model": {"name": "smp", "arch": "SegFormerX"}}, r"model.arch'")


@pytest.mark.parametrize("overrides, match", [
    ({"init": "imagenet"}, r"init': ImageNet weights exist only for smp encoders"),
    ({"init": "imagenet", "model": {"name": "smp", "encoder": "tu-resnet18"}}, "init: imagenet supports smp's own encoders"),
    ({"init": "file"}, r"init_file': init is 'file' but no init_file"),
    ({"init_file": "w.pt"}, "only read with init: file"),
    ({"train": {"unfreeze_at_epoch": 2}}, "set only with train.freeze_encoder: true"),
    ({"train": {"freeze_encoder": True, "unfreeze_at_epoch": 12, "epochs": 12}}, "not before the last epoch"),
    ({"schedule": {"name": "cosine", "warmup_epochs": 12}, "train": {"epochs": 12}}, "warmup_epochs"),
    ({"train": {"monitor": "val_dic"}}, r"train.monitor': 'val_dic' does not match"),
    ({"augmentation": {"mode": "offline", "multiplier": 3, "preset": "none"}}, "offline copies need a preset or a policy"),
])
def test_cross_key_rules_are_clear_config_errors(overrides, match):
    refused(overrides, match)


def test_pretraining_refuses_a_grayscale_dataset_before_training(tmp_path):
    from seglab.pretrain import pretrain_colorization

    grey = np.repeat(np.random.default_rng(1).integers(0, 255, (4, 16, 16, 1), dtype=np.uint8), 3, axis=-1)
    np.save(tmp_path / "images.npy", grey)
    cfg = {"study": {"seed": 0, "device": "cpu", "deterministic": False}, "pretrain": {"target": "rgb"}, "model": {}}
    with pytest.raises(ConfigError, match="grayscale.*colorization pretraining has no colour to learn and is skipped"):
        pretrain_colorization(cfg, tmp_path, {"folds": []}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stoppers_follow_monitor_and_checkpoint_metric():
    from seglab.train import build_stoppers

    train = variant({"train": {"monitor": "val_loss", "checkpoint_metric": "val_dice", "patience": 7}})["train"]
    stopper, selector = build_stoppers(train)
    assert (stopper.monitor, stopper.mode, stopper.patience) == ("val_loss", "min", 7)
    assert (selector.monitor, selector.mode, selector.patience) == ("val_dice", "max", None)
    same = build_stoppers(variant({})["train"])
    assert same[0] is same[1]
