# Fine-tuning: one job per variant and fold.


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
    threads: 1
    resources:
        gpu=GPU,
    shell:
        "{SEGLAB} train --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --fold {wildcards.fold} {params.init} --out {OUT}/models/{wildcards.variant}/fold{wildcards.fold}"
        " --threads {threads} --tag rule=train --tag variant={wildcards.variant} --tag fold={wildcards.fold}"
        " > {log} 2>&1"
