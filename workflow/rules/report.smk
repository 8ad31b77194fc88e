# The study report: self-contained HTML and a Markdown summary, plus the figures as PNG
# files so that `snakemake --report results/snakemake-report.html` carries them too.


rule report:
    output:
        html=report(f"{L.report_dir}/index.html", caption="../report/index.rst", category="Report"),
        summary=f"{L.report_dir}/summary.md",
        figures=report(
            directory(f"{L.report_dir}/figures"),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
    input:
        config=f"{STAGE}/study.json",
        metrics=rules.aggregate.output.metrics,
        curves=rules.aggregate.output.curves,
        comparisons=rules.compare.output.json,
        prepared=rules.preprocess.output,
        splits=L.splits,
        verify=rules.verify.output.report,
        # Figures of test images show repeat 0's ensembles; the tables cover every repeat (metrics).
        evaluations=eval_files(layout.EVAL_METRICS, [0]),
        per_image=eval_files(layout.PER_IMAGE, [0]),
        per_class=eval_files(layout.PER_CLASS, [0]),
        predictions=eval_files(layout.ENSEMBLE_PREDICTIONS, [0]),
        pretrain_samples=pretrain_files(layout.COLORIZATION_SAMPLES),
        pretrain_summaries=pretrain_files(layout.SUMMARY),
    params:
        # Not inputs: train writes augmentation.png only for variants that augment, as an extra
        # beside its declared outputs, before the checkpoint every evaluation (an input) needs.
        previews=[L.fold_file(v, 0, layout.AUGMENTATION_PREVIEW) for v in VARIANTS],
    log:
        f"{LOGS}/report.log",
    shell:
        "{SEGLAB} report --config {input.config} --metrics {input.metrics} --curves {input.curves}"
        " --comparisons {input.comparisons} --benchmarks {L.benchmarks}"
        " --prepared {PREPARED} --splits {input.splits} --verify {input.verify}"
        " --evaluations {input.evaluations} --pretrain-samples {input.pretrain_samples}"
        " --augmentation-previews {params.previews} --out {L.report_dir} > {log} 2>&1"
