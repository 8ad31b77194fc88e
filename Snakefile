# seglab: one segmentation study, from raw data to report.
#   snakemake --cores 8 --resources gpu=1                  # config.yaml, the default study
#   snakemake --configfile configs/studies/NAME.yaml ...   # another study (replaces config.yaml)
# Rules are thin shells over the `seglab` command line; see workflow/rules/*.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    # Create the MLflow store and experiment once, before parallel jobs write to it; an
    # unreachable tracking server stops the study here, before any job starts.
    track_init()


rule all:
    input:
        final_outputs(),
    default_target: True
