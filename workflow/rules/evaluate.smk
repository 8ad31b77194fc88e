# Out-of-fold and test-set evaluation of every fold model and the fold ensemble, per
# variant and repeat; then the study table and the significance tests over all repeats.


rule evaluate:
    output:
        per_image=L.eval_file("{variant}", layout.PER_IMAGE, "{repeat}"),
        oof=L.eval_file("{variant}", layout.OOF_PER_IMAGE, "{repeat}"),
        per_class=L.eval_file("{variant}", layout.PER_CLASS, "{repeat}"),
        metrics=L.eval_file("{variant}", layout.EVAL_METRICS, "{repeat}"),
        predictions=L.eval_file("{variant}", layout.ENSEMBLE_PREDICTIONS, "{repeat}"),
    input:
        config=f"{STAGE}/variants/{{variant}}.json",
        prepared=rules.preprocess.output,
        splits=L.splits_file("{repeat}"),
        checkpoints=get_fold_files(layout.CHECKPOINT),
        summaries=get_fold_files(layout.SUMMARY),
        histories=get_fold_files(layout.HISTORY),
    params:
        out=lambda wildcards: L.eval_dir(wildcards.variant, wildcards.repeat),
        # A param, not part of the variant's config file: switching TTA re-runs evaluation only.
        tta="--tta" if CFG["evaluate"]["tta"] else "",
    log:
        f"{LOGS}/evaluate/{{variant}}/r{{repeat}}.log",
    benchmark:
        f"{L.benchmarks}/evaluate/{{variant}}/r{{repeat}}.tsv"
    wildcard_constraints:
        repeat=r"\d+",
    threads: 1
    shell:
        "{SEGLAB} evaluate --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --checkpoints {input.checkpoints} --summaries {input.summaries} --histories {input.histories}"
        " --out {params.out} {params.tta} --threads {threads}"
        " --tag rule=evaluate --tag variant={wildcards.variant} --tag repeat={wildcards.repeat} > {log} 2>&1"


rule aggregate:
    output:
        metrics=report(L.metrics, caption="../report/metrics.rst", category="Tables"),
        curves=L.curves,
    input:
        config=f"{STAGE}/study.json",
        evaluations=eval_files(layout.EVAL_METRICS),
        histories=[f for v in VARIANTS for r in REPEATS for f in fold_files(v, layout.HISTORY, r)],
    log:
        f"{LOGS}/aggregate.log",
    benchmark:
        f"{L.benchmarks}/aggregate.tsv"
    shell:
        "{SEGLAB} aggregate --config {input.config} --evaluations {input.evaluations} --histories {input.histories}"
        " --metrics {output.metrics} --curves {output.curves} > {log} 2>&1"


rule compare:
    output:
        json=L.comparisons,
        csv=report(L.comparisons_table, caption="../report/comparisons.rst", category="Tables"),
    input:
        config=f"{STAGE}/study.json",
        per_image=eval_files(layout.PER_IMAGE),
        evaluations=eval_files(layout.EVAL_METRICS),
        manifest=rules.preprocess.output.manifest,
        splits=L.splits,
    log:
        f"{LOGS}/compare.log",
    benchmark:
        f"{L.benchmarks}/compare.tsv"
    shell:
        "{SEGLAB} compare --config {input.config} --evaluations {input.evaluations} --prepared {PREPARED}"
        " --splits {input.splits} --out {output.json} --csv {output.csv} > {log} 2>&1"
