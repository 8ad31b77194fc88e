# Out-of-fold and test-set evaluation of every fold model and the fold ensemble,
# then the study table and the significance tests.


rule evaluate:
    output:
        per_image=f"{OUT}/eval/{{variant}}/per_image.csv",
        oof=f"{OUT}/eval/{{variant}}/oof_per_image.csv",
        per_class=f"{OUT}/eval/{{variant}}/per_class.csv",
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
        # A param, not part of the variant's config file: switching TTA re-runs evaluation only.
        tta="--tta" if CFG["evaluate"]["tta"] else "",
    log:
        f"{LOGS}/evaluate/{{variant}}.log",
    benchmark:
        f"{OUT}/benchmarks/evaluate/{{variant}}.tsv"
    threads: 1
    shell:
        "{SEGLAB} evaluate --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --fold-dirs {params.fold_dirs} --out {OUT}/eval/{wildcards.variant} {params.tta} --threads {threads}"
        " --tag rule=evaluate --tag variant={wildcards.variant} > {log} 2>&1"


rule aggregate:
    output:
        metrics=report(f"{OUT}/metrics.json", caption="../report/metrics.rst", category="Tables"),
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
    benchmark:
        f"{OUT}/benchmarks/aggregate.tsv"
    shell:
        "{SEGLAB} aggregate --config {input.config} --eval-dirs {params.eval_dirs} --fold-dirs {params.fold_dirs}"
        " --metrics {output.metrics} --curves {output.curves} > {log} 2>&1"


rule compare:
    output:
        json=f"{OUT}/stats/comparisons.json",
        csv=report(f"{OUT}/stats/comparisons.csv", caption="../report/comparisons.rst", category="Tables"),
    input:
        config=f"{STAGE}/study.json",
        per_image=expand(f"{OUT}/eval/{{variant}}/per_image.csv", variant=VARIANTS),
        metrics=expand(f"{OUT}/eval/{{variant}}/metrics.json", variant=VARIANTS),
        manifest=rules.preprocess.output.manifest,
        splits=rules.split.output.splits,
    params:
        eval_dirs=[f"{OUT}/eval/{v}" for v in VARIANTS],
    log:
        f"{LOGS}/compare.log",
    benchmark:
        f"{OUT}/benchmarks/compare.tsv"
    shell:
        "{SEGLAB} compare --config {input.config} --eval-dirs {params.eval_dirs} --prepared {PREPARED}"
        " --splits {input.splits} --out {output.json} --csv {output.csv} > {log} 2>&1"
