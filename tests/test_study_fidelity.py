"""Each shipped study follows its lab report where the report fixes a setting.

One table per study, written from the report (the file named with it; the reports live in
the project's user research, /work/shared/user-research/). Every row is a variant's resolved
setting that the report states; settings the report leaves open are not in the tables (the
study file's header comment names them and the CPU-sized choice made instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from seglab.config import load_config

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
ALL = "*"  # a row that holds for every variant of the study


def policy(*steps: tuple[str, dict]) -> list[dict]:
    return [{"name": name, "params": params} for name, params in steps]


def names(steps: list[dict]) -> list[str]:
    return [s.get("name", "one_of") for s in steps]


COMBINE = policy(("Affine", {"translate_percent": [0.03, 0.03], "rotate": [-10, 10], "p": 1.0}),
                 ("HorizontalFlip", {"p": 0.5}), ("RandomBrightnessContrast", {"p": 0.5}))
FLIP_ONE_OF = [{"one_of": policy(("HorizontalFlip", {"p": 1.0}), ("VerticalFlip", {"p": 1.0})), "p": 1.0}]
LAB4_AUGMENTATION = policy(("Affine", {"rotate": [-10, 10], "translate_percent": [-0.1, 0.1], "scale": [0.8, 1.2], "p": 1.0}),
                           ("HorizontalFlip", {"p": 0.5}))
HW6_AUGMENTATION = policy(("HorizontalFlip", {"p": 0.25}), ("Rotate", {"limit": [-15, 15], "p": 1.0}))

# study -> (report, {variant or ALL: {dotted key: expected value or predicate}})
FIDELITY: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "unet-ablation": ("lab4-transfer-learning-unet-ablation.md", {
        ALL: {"model.name": "unet", "split.folds": 3},
        "unet-bce": {"loss.name": "bce", "model.dropout": 0.0},                                       # 4A
        "unet-dice": {"loss.name": "dice", "model.dropout": 0.0},                                     # 4B
        "unet-bce-dropout": {"loss.name": "bce", "model.dropout": 0.2},                               # 4C
        "unet-dice-dropout": {"loss.name": "dice", "model.dropout": 0.2},                             # 4C
        "unet-dice-dropout-base32": {"loss.name": "dice", "model.dropout": 0.2, "model.base": 32},    # 4D
        "unet-dice-dropout-bn-aug": {"loss.name": "dice", "model.dropout": 0.2, "model.base": 16,     # 4E
                                     "model.batch_norm": True, "augmentation.policy": LAB4_AUGMENTATION},
    }),
    "mobilenet-frozen": ("isic-mobilenetv2-frozen-vs-finetuned.md", {
        ALL: {"model.name": "plain_decoder", "model.encoder": "mobilenet_v2", "model.encoder_depth": 5,
              "model.decoder_widths": [512, 256, 64, 32, 16], "model.decoder_dropout": lambda p: p > 0,
              "model.binary_head": "sigmoid", "loss.name": "bce", "optimizer.name": "adam", "train.batch_size": 16,
              "augmentation.policy": lambda steps: names(steps) == ["HorizontalFlip", "Rotate"]
              and steps[0]["params"] == {"p": 0.5}},
        "mobilenet-frozen": {"train.freeze_encoder": True, "train.unfreeze_at_epoch": None},
        "mobilenet-finetuned": {"train.freeze_encoder": False},
    }),
    "augmentation-grid": ("segmentation-metrics-losses-augmentation.md", {
        ALL: {"loss.name": "dice", "model.name": "unet", "model.depth": 3, "train.patience": None,
              "train.epochs": lambda e: e in (15, 30)},
        "no-augmentation": {"model.base": 16, "model.kernel_size": 3, "augmentation.policy": [], "train.epochs": 15},
        "modified-architecture": {"model.base": 32, "model.kernel_size": [7, 3, 3, 3], "augmentation.policy": []},
        "vflip-0.3": {"augmentation.policy": policy(("VerticalFlip", {"p": 0.3}))},
        "vflip-0.5": {"augmentation.policy": policy(("VerticalFlip", {"p": 0.5})), "train.epochs": 15},
        "vflip-0.8": {"augmentation.policy": policy(("VerticalFlip", {"p": 0.8}))},
        "vflip-0.5-30-epochs": {"augmentation.policy": policy(("VerticalFlip", {"p": 0.5})), "train.epochs": 30},
        "blur-0.3": {"augmentation.policy": policy(("GaussianBlur", {"blur_limit": [5, 5], "sigma_limit": [0.1, 5.0], "p": 0.3}))},
        "blur-0.5": {"augmentation.policy": policy(("GaussianBlur", {"blur_limit": [5, 5], "sigma_limit": [0.01, 1.0], "p": 0.5}))},
        "blur-0.8": {"augmentation.policy": policy(("GaussianBlur", {"blur_limit": [5, 5], "sigma_limit": [0.5, 0.5], "p": 0.8}))},
        "vflip-0.5-blur-0.5": {"augmentation.policy": policy(
            ("VerticalFlip", {"p": 0.5}), ("GaussianBlur", {"blur_limit": [3, 3], "sigma_limit": [0.1, 5.0], "p": 0.5}))},
        "vflip-0.5-blur-0.3": {"augmentation.policy": policy(
            ("VerticalFlip", {"p": 0.5}), ("GaussianBlur", {"blur_limit": [3, 3], "sigma_limit": [0.01, 1.0], "p": 0.3}))},
        "vflip-0.5-blur-0.8": {"augmentation.policy": policy(
            ("VerticalFlip", {"p": 0.5}), ("GaussianBlur", {"blur_limit": [3, 3], "sigma_limit": [0.5, 0.5], "p": 0.8}))},
    }),
    "multiclass-colorization": ("endovis-colorization-pretraining-hw.md", {
        ALL: {"loss.name": "dice", "loss.include_background": True, "model.name": "unet", "model.batch_norm": True},
        "scratch": {"init": "scratch", "augmentation.policy": []},                                     # 1a
        "scratch-augmented": {"init": "scratch", "augmentation.mode": "online", "augmentation.multiplier": 1,  # 1b
                              "augmentation.policy": HW6_AUGMENTATION},
        "colorization-augmented": {"init": "colorization", "augmentation.mode": "online",             # 1d
                                   "augmentation.multiplier": 1, "augmentation.policy": HW6_AUGMENTATION},
    }),
    "unet-vs-resnet34": ("oxford-pet-unet-vs-resnet34unet.md", {
        ALL: {"init": "scratch", "optimizer.name": "adamw", "schedule.name": "none", "train.epochs": 60,
              "train.batch_size": 15, "train.patience": 7, "train.monitor": "val_loss",
              "train.checkpoint_metric": lambda m: m in (None, "val_loss"),
              "optimizer.lr": lambda lr: lr in (1e-3, 1e-4)},
        **{v: {"model.name": "unet", "model.base": 64, "model.depth": 4, "model.batch_norm": False,
               "model.binary_head": "softmax", "loss.name": "ce"}
           for v in ("unet-ce", "unet-ce-combine1", "unet-ce-flip1", "unet-ce-combine2", "unet-ce-combine1-lr1e-4",
                     "unet-ce-combine2-lr1e-4")},
        **{v: {"model.name": "smp", "model.arch": "Unet", "model.encoder": "resnet34",
               "model.decoder_widths": [32, 32, 32, 32, 32], "model.binary_head": "sigmoid", "loss.name": "bce"}
           for v in ("resnet34-unet-bce", "resnet34-unet-bce-relu-output", "resnet34-unet-bce-combine1",
                     "resnet34-unet-bce-flip1", "resnet34-unet-bce-combine2", "resnet34-unet-bce-combine1-lr1e-4")},
    }),
    # The same report's grid as a sweep: lr 1e-3/1e-4 x "combine" copies (n_aug 1 or 2), from lr 1e-3 without copies.
    "sweep-lr-augmentation": ("oxford-pet-unet-vs-resnet34unet.md", {
        ALL: {"init": "scratch", "optimizer.name": "adamw", "schedule.name": "none", "augmentation.mode": "offline",
              "augmentation.policy": COMBINE, "train.batch_size": 15, "optimizer.lr": lambda lr: lr in (1e-3, 1e-4)},
        "reference": {"optimizer.lr": 1e-3, "augmentation.multiplier": 1},
        **{f"lr{lr}_multiplier{m}": {"optimizer.lr": lr, "augmentation.multiplier": m}
           for lr in (0.001, 0.0001) for m in (2, 3)},
    }),
    # Classification (issue #13). HW6 part 2: VGG16 random init vs. ImageNet VGG16 with the last layer trained.
    "fashion-mnist-vgg16": ("endovis-colorization-pretraining-hw.md", {
        ALL: {"study.task": "classification", "dataset.source": "torchvision", "dataset.torchvision.name": "FashionMNIST",
              "model.name": "backbone", "model.arch": "vgg16", "optimizer.name": "adam", "optimizer.lr": 0.001,
              "train.epochs": 5, "loss.name": "ce", "split.test_file": "test.txt"},
        "vgg16-random-init": {"init": "scratch", "train.last_layer_only": False},
        "vgg16-imagenet-last-layer": {"init": "imagenet", "train.last_layer_only": True},
    }),
    # Lab 4: scratch vs. transfer, the VGG-style net of Task 3, the Bonus ResNet grid with 3-fold CV.
    "lab4-classification": ("lab4-transfer-learning-unet-ablation.md", {
        ALL: {"study.task": "classification", "split.folds": 3, "loss.name": "ce"},
        "vgg-scratch": {"init": "scratch", "model.name": "vgg", "model.base": 8, "train.batch_size": 8,
                        "optimizer.lr": 1e-5, "preprocess.size": 128, "train.epochs": 80,
                        "augmentation.policy": LAB4_AUGMENTATION},
        "vgg16-imagenet-transfer": {"init": "imagenet", "model.name": "backbone", "model.arch": "vgg16"},
        "resnet-depth10_lr0.001_batch_size8": {"model.name": "resnet", "model.depth": 10, "optimizer.lr": 0.001,
                                               "train.batch_size": 8, "augmentation.policy": []},
    }),
    # No report: the digits study shows a small CNN reaching >= 0.95 test accuracy on real digits offline.
    "digits-cnn": ("issue 13 (scikit-learn digits)", {
        ALL: {"study.task": "classification", "dataset.source": "digits", "model.name": "vgg", "loss.name": "ce",
              "augmentation.preset": "none"},
        "cnn-label-smoothing": {"loss.label_smoothing": 0.1},
    }),
    # No report: the built-in shapes, whose evidence masks make the CAM overlays checkable.
    "shapes-vgg-resnet": ("issue 13 (built-in shapes)", {
        ALL: {"study.task": "classification", "dataset.source": "shapes", "init": "scratch"},
        "vgg-scratch": {"model.name": "vgg"},
        "resnet-depth3": {"model.name": "resnet", "model.depth": 3},
    }),
}
# The augmentation and learning-rate grid of the Oxford-Pet report, and its ReLU output layer.
GRID = FIDELITY["unet-vs-resnet34"][1]
for _v in GRID:
    if _v == ALL:
        continue
    aug = ({"augmentation.mode": "offline", "augmentation.multiplier": 2, "augmentation.policy": COMBINE} if "combine1" in _v
           else {"augmentation.mode": "offline", "augmentation.multiplier": 3, "augmentation.policy": COMBINE} if "combine2" in _v
           else {"augmentation.mode": "offline", "augmentation.multiplier": 2, "augmentation.policy": FLIP_ONE_OF} if "flip1" in _v
           else {"augmentation.policy": [], "augmentation.multiplier": 1})
    GRID[_v] = {**GRID[_v], **aug, "optimizer.lr": 1e-4 if _v.endswith("lr1e-4") else 1e-3,
                "model.output_activation": "relu" if _v.endswith("relu-output") else "none"}


def setting(variant: dict[str, Any], cfg: dict[str, Any], key: str) -> Any:
    """A dotted key of a resolved variant, or of the study (split.folds ...) when not a variant key."""
    tree = variant if key.split(".")[0] in variant else cfg
    for part in key.split("."):
        tree = tree[part]
    return tree


def test_every_study_has_a_fidelity_table():
    assert sorted(FIDELITY) == sorted(p.stem for p in STUDIES.glob("*.yaml"))


@pytest.mark.parametrize("study", sorted(FIDELITY))
def test_study_follows_its_report(study):
    report, table = FIDELITY[study]
    cfg = load_config(STUDIES / f"{study}.yaml")
    listed = set(table) - {ALL}
    assert listed <= set(cfg["variants"]), f"variants from {report} missing: {sorted(listed - set(cfg['variants']))}"
    wrong = []
    for name, variant in cfg["variants"].items():
        rows = {**table.get(ALL, {}), **table.get(name, {})}
        for key, expected in rows.items():
            value = setting(variant, cfg, key)
            ok = expected(value) if isinstance(expected, Callable) else value == expected
            if not ok:
                wrong.append(f"{name}: {key} is {value!r}, {report} has {getattr(expected, '__name__', expected)!r}")
    assert not wrong, "\n".join(wrong)


def test_study_headers_make_no_claim_the_reports_contradict():
    """Claims once made in these files that the reports contradict (see each header instead)."""
    texts = {p.stem: p.read_text() for p in STUDIES.glob("*.yaml")}
    assert "as the reports did" not in texts["multiclass-colorization"]
    assert "reports start ResNet34 from ImageNet" not in texts["unet-vs-resnet34"]
    assert "from scratch" in texts["unet-vs-resnet34"] and "cosine" not in texts["unet-vs-resnet34"]
