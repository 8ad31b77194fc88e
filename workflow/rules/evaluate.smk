# Test-set evaluation of every fold model and the fold ensemble, then the study table.


rule evaluate:
    output:
        per_image=f"{OUT}/eval/{{variant}}/per_image.csv",
        metrics=f"{OUT}/eval/{{variant}}/metrics.json",
        predictions=f"{OUT}/eval/{{variant}}/ensemble_predictions.npy",
    input:
        config=f"{STAGE}/variants/{{variant}}.json",
        prepared=rules.preprocess.output,
        splits=rules.split.output.splits,
        checkpoints=lambda wildcards: [f"{d}/best.pt" for d in fold_dirs(wildcards.variant)],
        summaries=lambda wildcards: [f"{d}/summary.json" for d in fold_dirs(wildcards.variant)],
    params:
        fold_dirs=lambda wildcards: fold_dirs(wildcards.variant),
    log:
        f"{LOGS}/evaluate/{{variant}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{variant}}.tsv"
    threads: 1
    shell:
        "{SEGLAB} evaluate --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --fold-dirs {params.fold_dirs} --out {OUT}/eval/{wildcards.variant} --threads {threads}"
        " --tag rule=evaluate --tag variant={wildcards.variant} > {log} 2>&1"


rule aggregate:
    output:
        metrics=f"{OUT}/metrics.json",
        curves=f"{OUT}/curves.csv",
    input:
        config=f"{STAGE}/study.json",
        metrics=expand(f"{OUT}/eval/{{variant}}/metrics.json", variant=VARIANTS),
        histories=[f"{d}/history.csv" for v in VARIANTS for d in fold_dirs(v)],
    params:
        eval_dirs=[f"{OUT}/eval/{v}" for v in VARIANTS],
        fold_dirs=[d for v in VARIANTS for d in fold_dirs(v)],
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "{SEGLAB} aggregate --config {input.config} --eval-dirs {params.eval_dirs} --fold-dirs {params.fold_dirs}"
        " --metrics {output.metrics} --curves {output.curves} > {log} 2>&1"
