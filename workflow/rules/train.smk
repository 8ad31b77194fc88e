# Fine-tuning: one job per variant and fold.
#
# Resume: every epoch the job saves its full state under <fold folder>/.resume/, which is
# not a declared output, so Snakemake does not delete it when the job fails or is killed.
# Started again (`snakemake --rerun-incomplete`, or `--retries N` for automatic restarts)
# the job continues from its last epoch and ends with the numbers of an uninterrupted run.
# .resume/ is removed once best.pt, history.csv and summary.json are written.


rule train:
    output:
        checkpoint=f"{OUT}/models/{{variant}}/fold{{fold}}/best.pt",
        history=f"{OUT}/models/{{variant}}/fold{{fold}}/history.csv",
        summary=f"{OUT}/models/{{variant}}/fold{{fold}}/summary.json",
    input:
        config=f"{STAGE}/variants/{{variant}}.json",
        prepared=rules.preprocess.output,
        splits=rules.split.output.splits,
        init=get_init_weights,
    params:
        init=lambda wildcards, input: f"--init {input.init}" if input.init else "",
    log:
        f"{LOGS}/train/{{variant}}/fold{{fold}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{variant}}/fold{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{SEGLAB} train --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --fold {wildcards.fold} {params.init} --out {OUT}/models/{wildcards.variant}/fold{wildcards.fold}"
        " --threads {threads} --tag rule=train --tag variant={wildcards.variant} --tag fold={wildcards.fold}"
        " > {log} 2>&1"
