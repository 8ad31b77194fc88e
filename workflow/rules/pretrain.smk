# Colorization pretraining: one per distinct architecture that a variant initialises from.
# Resumable like training (state in <out>/pretrain/<arch>/.resume/, see train.smk).


rule pretrain:
    output:
        weights=f"{OUT}/pretrain/{{arch}}/weights.pt",
        history=f"{OUT}/pretrain/{{arch}}/history.csv",
        samples=f"{OUT}/pretrain/{{arch}}/samples.png",
    input:
        config=f"{STAGE}/pretrain/{{arch}}.json",
        prepared=rules.preprocess.output,
        splits=rules.split.output.splits,
    log:
        f"{LOGS}/pretrain/{{arch}}.log",
    benchmark:
        f"{OUT}/benchmarks/pretrain/{{arch}}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    shell:
        "{SEGLAB} pretrain --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --out {OUT}/pretrain/{wildcards.arch} --threads {threads}"
        " --tag rule=pretrain --tag arch={wildcards.arch} > {log} 2>&1"
