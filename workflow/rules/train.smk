# Fine-tuning: one job per variant, repeat and fold (the repeat's splits carry its folds and seeds).
#
# Resume: every epoch the job saves its full state under <fold folder>/.resume/, which is
# not a declared output, so Snakemake does not delete it when the job fails or is killed.
# Started again (`snakemake --rerun-incomplete`, or `--retries N` for automatic restarts)
# the job continues from its last epoch and ends with the numbers of an uninterrupted run.
# .resume/ is removed once the checkpoint, history and summary are written.


rule train:
    output:
        checkpoint=L.fold_file("{variant}", "{fold}", layout.CHECKPOINT, "{repeat}"),
        history=L.fold_file("{variant}", "{fold}", layout.HISTORY, "{repeat}"),
        summary=L.fold_file("{variant}", "{fold}", layout.SUMMARY, "{repeat}"),
    input:
        config=f"{STAGE}/variants/{{variant}}.json",
        prepared=rules.preprocess.output,
        splits=L.splits_file("{repeat}"),
        init=get_init_weights,
    params:
        init=lambda wildcards, input: f"--init {input.init}" if input.init else "",
        out=lambda wildcards: L.fold_dir(wildcards.variant, wildcards.fold, wildcards.repeat),
    log:
        f"{LOGS}/train/{{variant}}/r{{repeat}}/fold{{fold}}.log",
    benchmark:
        f"{L.benchmarks}/train/{{variant}}/r{{repeat}}/fold{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
        repeat=r"\d+",
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{SEGLAB} train --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --fold {wildcards.fold} {params.init} --out {params.out}"
        " --threads {threads} --tag rule=train --tag variant={wildcards.variant} --tag repeat={wildcards.repeat}"
        " --tag fold={wildcards.fold}"
        " > {log} 2>&1"
