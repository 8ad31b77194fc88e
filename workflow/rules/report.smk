# The study report: self-contained HTML and a Markdown summary, plus the figures as PNG
# files so that `snakemake --report results/snakemake-report.html` carries them too.


rule report:
    output:
        html=report(f"{OUT}/report/index.html", caption="../report/index.rst", category="Report"),
        summary=f"{OUT}/report/summary.md",
        figures=report(
            directory(f"{OUT}/report/figures"),
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
        splits=rules.split.output.splits,
        verify=rules.verify.output.report,
        evaluations=expand(f"{OUT}/eval/{{variant}}/per_image.csv", variant=VARIANTS),
        pretrain=[f"{d}/samples.png" for d in pretrain_dirs()],
    params:
        eval_dirs=[f"{OUT}/eval/{v}" for v in VARIANTS],
        pretrain_dirs=pretrain_dirs(),
    log:
        f"{LOGS}/report.log",
    shell:
        "{SEGLAB} report --config {input.config} --metrics {input.metrics} --curves {input.curves}"
        " --comparisons {input.comparisons} --benchmarks {OUT}/benchmarks"
        " --prepared {PREPARED} --splits {input.splits} --verify {input.verify}"
        " --eval-dirs {params.eval_dirs} --pretrain-dirs {params.pretrain_dirs} --out {OUT}/report > {log} 2>&1"
