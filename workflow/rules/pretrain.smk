# Colorization pretraining: one per distinct architecture that a variant initialises from.
# Resumable like training (state in <out>/pretrain/<arch>/.resume/, see train.smk).


rule pretrain:
    output:
        weights=f"{L.pretrain_dir('{arch}')}/{layout.PRETRAINED}",
        history=f"{L.pretrain_dir('{arch}')}/{layout.HISTORY}",
        samples=f"{L.pretrain_dir('{arch}')}/{layout.COLORIZATION_SAMPLES}",
    input:
        config=f"{STAGE}/pretrain/{{arch}}.json",
        prepared=rules.preprocess.output,
        splits=L.splits,
    log:
        f"{LOGS}/pretrain/{{arch}}.log",
    benchmark:
        f"{L.benchmarks}/pretrain/{{arch}}.tsv"
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        out=lambda wildcards: L.pretrain_dir(wildcards.arch),
    shell:
        "{SEGLAB} pretrain --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --out {params.out} --threads {threads}"
        " --tag rule=pretrain --tag arch={wildcards.arch} > {log} 2>&1"
