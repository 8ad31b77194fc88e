"""The task registry: what a study learns decides its data reader, models, losses, metrics,
evaluation and report; the stages do not.

``study.task`` names one module of this package (``segmentation``, ``classification``). Each
module offers the same functions, and every stage of :mod:`seglab.cli` looks its task up once
(:func:`get_task`) and calls them; a new task is a new module here, its schema branch and its
line in :data:`TASK_CHOICES`. The functions each task module provides:

* ``fetch(dataset, out)`` — download or generate the raw data (the download stage);
* ``verify(cfg, raw) -> report`` and ``verify_line(report)`` — decode and check every item;
* ``preprocess(cfg, verify_report, out) -> line`` and ``store_files(preprocess_cfg)`` — the cache;
* ``split_strata(manifest)`` — what the folds are balanced on (None: the segmentation default);
* ``train_fold(...)`` and ``record_fold(...)`` — one fold's training and its MLflow record;
* ``evaluate_variant(...)``, ``record_evaluation(...)``, ``evaluation_line(...)`` — test and OOF;
* ``study_metrics(...)``, ``aggregate_line(...)`` — the study table;
* ``COMPARE_SCORE`` — (per-image column, per-fold key, label) the significance tests compare;
* ``build_report(inputs, out)`` — the HTML and Markdown report;
* ``predict(...)`` — ``seglab predict`` on a folder of images.

This module imports nothing heavy: :mod:`seglab.config` reads :data:`TASK_CHOICES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# What a study of each task may name: dataset sources, model names, losses and inits.
TASK_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "segmentation": {
        "sources": ("builtin", "folder", "url", "public"),
        "models": ("unet", "smp", "plain_decoder"),
        "losses": ("bce", "ce", "dice", "weighted_dice", "focal", "tversky", "sum"),
        "inits": ("scratch", "colorization", "file", "imagenet"),
    },
    "classification": {
        "sources": ("class_folder", "class_table", "shapes", "digits", "torchvision"),
        "models": ("vgg", "resnet", "backbone"),
        "losses": ("ce", "focal"),
        "inits": ("scratch", "file", "imagenet"),
    },
}
# The task a dataset source belongs to: the data stages read only the dataset block.
SOURCE_TASK = {source: task for task, choices in TASK_CHOICES.items() for source in choices["sources"]}


def get_task(name: str) -> ModuleType:
    """The task module named by ``study.task``."""
    if name not in TASK_CHOICES:
        raise ValueError(f"study.task: unknown task {name!r}; use one of {', '.join(TASK_CHOICES)}")
    return importlib.import_module(f"{__name__}.{name}")


def task_of(cfg: dict) -> ModuleType:
    """The task of a stage config: ``study.task`` where the config has a study block, else the
    task of its ``dataset.source`` (the data stages' configs hold the dataset block only)."""
    if "study" in cfg and "task" in cfg["study"]:
        return get_task(cfg["study"]["task"])
    return get_task(SOURCE_TASK[cfg["dataset"]["source"]])
