# Shared by every rule: the validated config, stage config files, paths and resources.
import shutil
import subprocess
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from seglab import layout
from seglab.config import (ConfigError, dataset_location, fold_count, pretrain_key, pretrains_per_fold, read_yaml,
                           stage_configs, validate, write_if_changed)
from seglab.tasks import get_task


def _raw_config():
    # A study given with --configfile replaces config.yaml instead of merging into it,
    # so variants of the default study never leak into another study.
    # Snakemake parsed the files with plain YAML, which keeps the last of two equal keys;
    # reading them again strictly turns a duplicated `variants:` into an error.
    if workflow.overwrite_configfiles:
        for path in workflow.overwrite_configfiles:
            read_yaml(path)
        return workflow.config_settings.overwrite_config, ", ".join(map(str, workflow.overwrite_configfiles))
    read_yaml("config.yaml")
    return config, "config.yaml"


try:
    CFG = validate(*_raw_config())
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# The study's task (seglab.tasks) names the prepared files; the rules are the same for every task.
TASK = get_task(CFG["study"]["task"])
# The interpreter running Snakemake has seglab installed: call it directly, whatever PATH says.
SEGLAB = f"{sys.executable} -m seglab"
OUT = CFG["study"]["output_dir"]
# Every path below output_dir comes from the layout module the library names its files with.
L = layout.StudyLayout(OUT)
STAGE = L.stage_configs
LOGS = L.logs
VARIANTS = list(CFG["variants"])
# One fold per split.folds, or the one fixed validation folder of a pre-split dataset.
FOLDS = list(range(fold_count(CFG)))
# Repeated cross-validation: every repeat has its own folds and training seeds (r0 with one).
REPEATS = list(range(CFG["split"]["repeats"]))
RAW = layout.raw_dir(CFG["dataset"]["name"])
PREPARED = L.prepared

# Stage configs are written only when their content changes: a job re-runs when the
# part of config.yaml it depends on changes, not when any key does.
Path(LOGS).mkdir(parents=True, exist_ok=True)
# dvc.yaml's one stage template lists every study folder as an out, and DVC refuses a
# missing out: a study without colorization pretraining keeps an empty pretrain/.
for _folder in L.versioned_dirs:
    Path(_folder).mkdir(parents=True, exist_ok=True)
for _relpath, _content in stage_configs(CFG).items():
    write_if_changed(Path(STAGE) / _relpath, _content)


def _uses_gpu():
    """A training job takes one `gpu` slot only where a GPU will be used, so CPU-only
    machines run several trainings side by side and GPU machines never share one.
    `study.device: cuda` always asks for one: on a cluster Snakemake runs on a login node
    with no GPU to detect, and the SLURM executor turns `gpu` into `sbatch --gpus`."""
    if CFG["study"]["device"] == "cpu":
        return 0
    if CFG["study"]["device"] == "cuda":
        return 1
    if shutil.which("nvidia-smi") is None:
        return 0
    return int(subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0)


GPU = _uses_gpu()
# A GPU training job gets cores for its data-loader workers (train.num_workers: auto uses
# all but one), so the GPU never waits for batches; on the CPU one core per job, so that
# --cores N runs N trainings side by side. Snakemake lowers it to --cores where fewer.
TRAIN_THREADS = 4 if GPU else 1


# Colorization pretraining never sees what its models are validated or tested on: one per
# repeat and fold on that fold's training images (pretrain.images: fold), or one on the
# dataset's unlabelled pool (pretrain.images: unlabelled; `auto` was resolved by validate).
PRETRAIN_PER_FOLD = pretrains_per_fold(CFG)


def pretrain_dir(variant, repeat=None, fold=None):
    """The pretraining a variant of ``repeat`` and ``fold`` starts from (the pool's: the same for all)."""
    arch = pretrain_key(CFG["variants"][variant])
    return L.pretrain_dir(arch, repeat, fold) if PRETRAIN_PER_FOLD else L.pretrain_dir(arch)


def get_raw_dir(wildcards=None):
    """The raw data folder: downloaded/generated (RAW), or the user's own folder."""
    return dataset_location(CFG["dataset"])


def get_init_weights(wildcards):
    """The weights a variant starts from: its colorization pretraining or its init_file."""
    variant = CFG["variants"][wildcards.variant]
    if variant["init"] == "colorization":
        return f"{pretrain_dir(wildcards.variant, wildcards.repeat, wildcards.fold)}/{layout.PRETRAINED}"
    if variant["init"] == "file":
        return variant["init_file"]
    return []


def _refuse_colorization_on_grey():
    """Once the prepared images exist, a grey dataset refuses init: colorization before any job runs
    (on the first run the pretrain job itself refuses, with the same message)."""
    users = [v for v in VARIANTS if CFG["variants"][v]["init"] == "colorization"]
    images = Path(L.prepared_file(layout.IMAGES))
    if users and images.is_file():
        from seglab.data.colour import colorization_refusal

        refusal = colorization_refusal(images, users)
        if refusal:
            raise WorkflowError(refusal)


_refuse_colorization_on_grey()


def pretrain_files(name):
    """File ``name`` of every colorization pretraining the study runs (per fold: every repeat's folds)."""
    users = [v for v in VARIANTS if CFG["variants"][v]["init"] == "colorization"]
    dirs = sorted({pretrain_dir(v, r, k) for v in users for r in REPEATS for k in FOLDS})
    return [f"{d}/{name}" for d in dirs]


def fold_files(variant, name, repeat):
    """File ``name`` of every fold of ``variant`` in ``repeat`` (wildcards or names), in fold order."""
    return [L.fold_file(variant, k, name, repeat) for k in FOLDS]


def get_fold_files(name):
    """Input function: file ``name`` of every fold of the job's variant and repeat."""
    return lambda wildcards: fold_files(wildcards.variant, name, wildcards.repeat)


def eval_files(name, repeats=None):
    """File ``name`` of every variant's evaluation, for every repeat (or those given)."""
    return [L.eval_file(v, name, r) for v in VARIANTS for r in (REPEATS if repeats is None else repeats)]


def final_outputs():
    return [f"{L.report_dir}/index.html", L.metrics]


def track_init():
    """`seglab track-init` (the onstart hook), logged to <output_dir>/logs/track-init.log. Its
    failure (a tracking server that does not answer or refuses the credentials) ends the study
    before any job, with seglab's one-line message: Snakemake stops on an onstart exception."""
    log = Path(LOGS) / "track-init.log"
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "seglab", "track-init", "--config", f"{STAGE}/study.json"],
                              stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        message = log.read_text().strip().splitlines() or [f"exit status {done.returncode}"]
        raise WorkflowError(f"{message[-1]}\n(seglab track-init failed, see {log}; no job was started.)")
