# Shared by every rule: the validated config, stage config files, paths and resources.
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from seglab.config import ConfigError, pretrain_key, stage_configs, validate, write_if_changed


def _raw_config():
    # A study given with --configfile replaces config.yaml instead of merging into it,
    # so variants of the default study never leak into another study.
    if workflow.overwrite_configfiles:
        return workflow.config_settings.overwrite_config, ", ".join(map(str, workflow.overwrite_configfiles))
    return config, "config.yaml"


try:
    CFG = validate(*_raw_config())
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# The interpreter running Snakemake has seglab installed: call it directly, whatever PATH says.
SEGLAB = f"{sys.executable} -m seglab"
OUT = CFG["study"]["output_dir"]
STAGE = f"{OUT}/config"
LOGS = f"{OUT}/logs"
VARIANTS = list(CFG["variants"])
FOLDS = list(range(CFG["split"]["folds"]))
RAW = f"data/raw/{CFG['dataset']['name']}"
PREPARED = f"{OUT}/data/prepared"

# Stage configs are written only when their content changes: a job re-runs when the
# part of config.yaml it depends on changes, not when any key does.
Path(LOGS).mkdir(parents=True, exist_ok=True)
for _relpath, _content in stage_configs(CFG).items():
    write_if_changed(Path(STAGE) / _relpath, _content)


def _uses_gpu():
    """A training job takes one `gpu` slot only where a GPU will be used, so CPU-only
    machines run several trainings side by side and GPU machines never share one."""
    if CFG["study"]["device"] == "cpu":
        return 0
    if shutil.which("nvidia-smi") is None:
        return 0
    return int(subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0)


GPU = _uses_gpu()
# A GPU training job gets cores for its data-loader workers (train.num_workers: auto uses
# all but one), so the GPU never waits for batches; on the CPU one core per job, so that
# --cores N runs N trainings side by side. Snakemake lowers it to --cores where fewer.
TRAIN_THREADS = 4 if GPU else 1


def pretrain_dir(variant):
    return f"{OUT}/pretrain/{pretrain_key(CFG['variants'][variant])}"


def get_raw_dir(wildcards=None):
    """The raw data folder: downloaded/generated, or the user's own folder."""
    if CFG["dataset"]["source"] == "folder":
        return CFG["dataset"]["folder"]["root"]
    return RAW


def get_init_weights(wildcards):
    """The weights a variant starts from: its colorization pretraining or its init_file."""
    variant = CFG["variants"][wildcards.variant]
    if variant["init"] == "colorization":
        return f"{pretrain_dir(wildcards.variant)}/weights.pt"
    if variant["init"] == "file":
        return variant["init_file"]
    return []


def _refuse_colorization_on_grey():
    """Once the prepared images exist, a grey dataset refuses init: colorization before any job runs
    (on the first run the pretrain job itself refuses, with the same message)."""
    users = [v for v in VARIANTS if CFG["variants"][v]["init"] == "colorization"]
    images = Path(PREPARED) / "images.npy"
    if users and images.is_file():
        from seglab.data.colour import colorization_refusal

        refusal = colorization_refusal(images, users)
        if refusal:
            raise WorkflowError(refusal)


_refuse_colorization_on_grey()


def pretrain_dirs():
    return sorted({pretrain_dir(v) for v in VARIANTS if CFG["variants"][v]["init"] == "colorization"})


def fold_dirs(variant):
    return [f"{OUT}/models/{variant}/fold{k}" for k in FOLDS]


def final_outputs():
    return [f"{OUT}/report/index.html", f"{OUT}/metrics.json"]
