"""Where each stage's files live: the one place their names are spelled.

The Snakemake rules (``workflow/rules/common.smk``) build their inputs and outputs from
``StudyLayout``, and the library names the files it writes with the constants below, so
a rule and the code behind it cannot disagree on a name. Paths are strings because
Snakemake patterns are strings: ``StudyLayout("results").fold_dir("{variant}", "{fold}")``
is the wildcard pattern ``results/models/{variant}/fold{fold}``. See docs/contracts.md
for what each file holds.
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

# A trained fold (<out>/models/<variant>/fold<k>/) and a colorization pretraining
# (<out>/pretrain/<arch>/). Both keep a training history and a summary.
CHECKPOINT = "best.pt"
PRETRAINED = "weights.pt"
HISTORY = "history.csv"
SUMMARY = "summary.json"
AUGMENTATION_PREVIEW = "augmentation.png"
COLORIZATION_SAMPLES = "samples.png"

# A variant's evaluation (<out>/eval/<variant>/).
PER_IMAGE = "per_image.csv"
OOF_PER_IMAGE = "oof_per_image.csv"
PER_CLASS = "per_class.csv"
EVAL_METRICS = "metrics.json"
ENSEMBLE_PREDICTIONS = "ensemble_predictions.npy"
EVAL_FILES = (PER_IMAGE, OOF_PER_IMAGE, PER_CLASS, EVAL_METRICS, ENSEMBLE_PREDICTIONS)

# Raw data (data/raw/<dataset name>, beside every study's output_dir): generated or downloaded
# once per dataset name and shared by the studies that name it.
RAW_ROOT = "data/raw"


def raw_dir(dataset_name: str) -> str:
    """The raw data folder of a generated or downloaded dataset."""
    return f"{RAW_ROOT}/{dataset_name}"


_FOLD_DIR = re.compile(r"^fold(\d+)$")


def fold_name(fold: int | str) -> str:
    """The folder name of fold ``fold`` (``fold0``, ...; ``fold{fold}`` as a wildcard)."""
    return f"fold{fold}"


def fold_of(path: str | Path) -> tuple[str, int]:
    """(variant, fold) of a fold folder or of a file in one: ``.../<variant>/fold<k>[/file]``."""
    path = Path(path)
    folder = path if _FOLD_DIR.match(path.name) else path.parent
    match = _FOLD_DIR.match(folder.name)
    if match is None:
        raise ValueError(f"{path}: not in a fold folder (<variant>/fold<k>/)")
    return folder.parent.name, int(match.group(1))


def variant_of_eval(path: str | Path) -> str:
    """The variant a file of ``<out>/eval/<variant>/`` belongs to."""
    return Path(path).parent.name


def eval_file(metrics_file: str | Path, name: str) -> Path:
    """Another file of the same evaluation as ``metrics_file`` (``eval/<variant>/metrics.json``)."""
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

    @property
    def splits(self) -> str:
        return f"{self.root}/data/splits.json"

    def pretrain_dir(self, arch: str) -> str:
        return f"{self.root}/pretrain/{arch}"

    def fold_dir(self, variant: str, fold: int | str) -> str:
        return f"{self.root}/models/{variant}/{fold_name(fold)}"

    def fold_file(self, variant: str, fold: int | str, name: str) -> str:
        return f"{self.fold_dir(variant, fold)}/{name}"

    def eval_dir(self, variant: str) -> str:
        return f"{self.root}/eval/{variant}"

    def eval_file(self, variant: str, name: str) -> str:
        return f"{self.eval_dir(variant)}/{name}"

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
