"""Where each stage's files live: the one place their names are spelled.

The Snakemake rules (``workflow/rules/common.smk``) build their inputs and outputs from
``StudyLayout``, and the library names the files it writes with the constants below, so
a rule and the code behind it cannot disagree on a name. Paths are strings because
Snakemake patterns are strings: ``StudyLayout("results").fold_dir("{variant}", "{fold}", "{repeat}")``
is the wildcard pattern ``results/models/{variant}/r{repeat}/fold{fold}``. Every training run
lives under its variant, repeat and fold (``r0`` when a study has one repeat), and its
evaluation under its variant and repeat. See docs/contracts.md for what each file holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Prepared data (<out>/data/prepared/): the cache every training and evaluation job reads.
IMAGES = "images.npy"
MASKS = "masks.npy"
MANIFEST = "manifest.csv"
# The native-size cache (preprocess.policy native): images and masks of any size, each
# image's bytes back to back in one blob, found through the offsets index.
IMAGE_BLOB = "images.blob"
MASK_BLOB = "masks.blob"
BLOB_INDEX = "blob_index.csv"
# Every mask at its original size (offsets in the manifest's original_offset), whenever the
# prepared masks are not: test scores are computed at the size a user measures.
ORIGINAL_MASKS = "original_masks.blob"


def keeps_original_size(policy: str, max_side: int | None) -> bool:
    """Whether the prepared masks are the original ones (native, uncapped)."""
    return policy == "native" and max_side is None


def store_files(policy: str, max_side: int | None = None) -> tuple[str, ...]:
    """The pixel files preprocess writes for ``preprocess.policy`` (besides manifest and fingerprint)."""
    files = (IMAGE_BLOB, MASK_BLOB, BLOB_INDEX) if policy == "native" else (IMAGES, MASKS)
    return files if keeps_original_size(policy, max_side) else (*files, ORIGINAL_MASKS)
FINGERPRINT = "fingerprint.json"

# A trained fold (<out>/models/<variant>/r<repeat>/fold<k>/) and a colorization pretraining
# (<out>/pretrain/<arch>/ on an unlabelled pool, <out>/pretrain/<arch>/r<repeat>/fold<k>/ on one
# fold's training images). Both keep a training history and a summary.
CHECKPOINT = "best.pt"
PRETRAINED = "weights.pt"
HISTORY = "history.csv"
SUMMARY = "summary.json"
AUGMENTATION_PREVIEW = "augmentation.png"
COLORIZATION_SAMPLES = "samples.png"

# A variant's evaluation, one per repeat (<out>/eval/<variant>/r<repeat>/).
PER_IMAGE = "per_image.csv"
OOF_PER_IMAGE = "oof_per_image.csv"
PER_CLASS = "per_class.csv"
EVAL_METRICS = "metrics.json"
ENSEMBLE_PREDICTIONS = "ensemble_predictions.npy"
EVAL_FILES = (PER_IMAGE, OOF_PER_IMAGE, PER_CLASS, EVAL_METRICS, ENSEMBLE_PREDICTIONS)
# Classification only, beside them (not a declared output): Grad-CAMs of sample test images.
CAM_OVERLAYS = "cam_overlays.png"

# Raw data (data/raw/<dataset name>, beside every study's output_dir): generated or downloaded
# once per dataset name and shared by the studies that name it.
RAW_ROOT = "data/raw"


def raw_dir(dataset_name: str) -> str:
    """The raw data folder of a generated or downloaded dataset."""
    return f"{RAW_ROOT}/{dataset_name}"


_FOLD_DIR = re.compile(r"^fold(\d+)$")
_REPEAT_DIR = re.compile(r"^r(\d+)$")


def fold_name(fold: int | str) -> str:
    """The folder name of fold ``fold`` (``fold0``, ...; ``fold{fold}`` as a wildcard)."""
    return f"fold{fold}"


def repeat_name(repeat: int | str) -> str:
    """The folder name of repeat ``repeat`` (``r0``, ...; ``r{repeat}`` as a wildcard)."""
    return f"r{repeat}"


def run_of(path: str | Path) -> tuple[str, int, int]:
    """(variant, repeat, fold) of a fold folder or a file in one: ``.../<variant>/r<repeat>/fold<k>[/file]``."""
    path = Path(path)
    folder = path if _FOLD_DIR.match(path.name) else path.parent
    fold, repeat = _FOLD_DIR.match(folder.name), _REPEAT_DIR.match(folder.parent.name)
    if fold is None or repeat is None:
        raise ValueError(f"{path}: not in a fold folder (<variant>/r<repeat>/fold<k>/)")
    return folder.parent.parent.name, int(repeat.group(1)), int(fold.group(1))


def fold_of(path: str | Path) -> tuple[str, int]:
    """(variant, fold) of a fold folder or of a file in one: ``.../<variant>/r<repeat>/fold<k>[/file]``
    (see :func:`run_of` for the repeat); a fold folder outside a repeat folder names its parent."""
    path = Path(path)
    folder = path if _FOLD_DIR.match(path.name) else path.parent
    match = _FOLD_DIR.match(folder.name)
    if match is None:
        raise ValueError(f"{path}: not in a fold folder (<variant>/r<repeat>/fold<k>/)")
    parent = folder.parent
    variant = parent.parent.name if _REPEAT_DIR.match(parent.name) else parent.name
    return variant, int(match.group(1))


def eval_of(path: str | Path) -> tuple[str, int]:
    """(variant, repeat) of a file of ``<out>/eval/<variant>/r<repeat>/``."""
    folder = Path(path).parent
    match = _REPEAT_DIR.match(folder.name)
    if match is None:
        raise ValueError(f"{path}: not in an evaluation folder (eval/<variant>/r<repeat>/)")
    return folder.parent.name, int(match.group(1))


def variant_of_eval(path: str | Path) -> str:
    """The variant a file of ``<out>/eval/<variant>/r<repeat>/`` belongs to."""
    return eval_of(path)[0]


def eval_file(metrics_file: str | Path, name: str) -> Path:
    """Another file of the same evaluation as ``metrics_file`` (``eval/<variant>/r<repeat>/metrics.json``)."""
    return Path(metrics_file).parent / name


@dataclass(frozen=True)
class StudyLayout:
    """The folders and files of one study under its ``output_dir``."""

    root: str

    # The folders dvc.yaml versions for every study (one stage template fits all studies).
    VERSIONED = ("data", "pretrain", "models", "eval", "stats", "report")

    @property
    def versioned_dirs(self) -> list[str]:
        return [f"{self.root}/{name}" for name in self.VERSIONED]

    @property
    def stage_configs(self) -> str:
        return f"{self.root}/config"

    @property
    def logs(self) -> str:
        return f"{self.root}/logs"

    @property
    def benchmarks(self) -> str:
        return f"{self.root}/benchmarks"

    @property
    def prepared(self) -> str:
        return f"{self.root}/data/prepared"

    def prepared_file(self, name: str) -> str:
        return f"{self.prepared}/{name}"

    @property
    def verify_report(self) -> str:
        return f"{self.root}/data/verify.json"

    def splits_file(self, repeat: int | str) -> str:
        """Test set (the same for every repeat) and the folds of repeat ``repeat``."""
        return f"{self.root}/data/splits/{repeat_name(repeat)}.json"

    @property
    def splits(self) -> str:
        """Repeat 0's splits: the test set and training pool every stage shares."""
        return self.splits_file(0)

    def pretrain_dir(self, arch: str, repeat: int | str | None = None, fold: int | str | None = None) -> str:
        """One architecture's colorization pretraining: ``pretrain/<arch>`` on the unlabelled pool, or
        ``pretrain/<arch>/r<repeat>/fold<k>`` on one fold's training images (pretrain.images fold)."""
        if fold is None:
            return f"{self.root}/pretrain/{arch}"
        return f"{self.root}/pretrain/{arch}/{repeat_name(repeat if repeat is not None else 0)}/{fold_name(fold)}"

    def pretrain_file(self, arch: str, name: str, repeat: int | str | None = None, fold: int | str | None = None) -> str:
        return f"{self.pretrain_dir(arch, repeat, fold)}/{name}"

    def fold_dir(self, variant: str, fold: int | str, repeat: int | str = 0) -> str:
        return f"{self.root}/models/{variant}/{repeat_name(repeat)}/{fold_name(fold)}"

    def fold_file(self, variant: str, fold: int | str, name: str, repeat: int | str = 0) -> str:
        return f"{self.fold_dir(variant, fold, repeat)}/{name}"

    def eval_dir(self, variant: str, repeat: int | str = 0) -> str:
        return f"{self.root}/eval/{variant}/{repeat_name(repeat)}"

    def eval_file(self, variant: str, name: str, repeat: int | str = 0) -> str:
        return f"{self.eval_dir(variant, repeat)}/{name}"

    @property
    def metrics(self) -> str:
        return f"{self.root}/metrics.json"

    @property
    def curves(self) -> str:
        return f"{self.root}/curves.csv"

    @property
    def comparisons(self) -> str:
        return f"{self.root}/stats/comparisons.json"

    @property
    def comparisons_table(self) -> str:
        return f"{self.root}/stats/comparisons.csv"

    @property
    def report_dir(self) -> str:
        return f"{self.root}/report"
