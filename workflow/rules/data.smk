# download -> verify -> preprocess -> split


rule download:
    output:
        directory(RAW),
    input:
        config=f"{STAGE}/dataset.json",
    log:
        f"{LOGS}/download.log",
    benchmark:
        f"{L.benchmarks}/download.tsv"
    shell:
        "{SEGLAB} download --config {input.config} --out {output} > {log} 2>&1"


rule verify:
    output:
        report=L.verify_report,
    input:
        config=f"{STAGE}/prepare.json",
        raw=get_raw_dir(),
    log:
        f"{LOGS}/verify.log",
    benchmark:
        f"{L.benchmarks}/verify.tsv"
    shell:
        "{SEGLAB} verify --config {input.config} --raw {input.raw} --out {output.report} > {log} 2>&1"


rule preprocess:
    output:
        store=[L.prepared_file(name) for name in TASK.store_files(CFG["preprocess"])],
        manifest=L.prepared_file(layout.MANIFEST),
        fingerprint=L.prepared_file(layout.FINGERPRINT),
    input:
        config=f"{STAGE}/prepare.json",
        verify=rules.verify.output.report,
    log:
        f"{LOGS}/preprocess.log",
    benchmark:
        f"{L.benchmarks}/preprocess.tsv"
    shell:
        "{SEGLAB} preprocess --config {input.config} --verify {input.verify} --out {PREPARED} > {log} 2>&1"


rule split:
    # One file per repeat: the same test set, the repeat's own folds. Raising split.repeats
    # adds files; split.json leaves repeats out, so the existing ones stay untouched.
    output:
        splits=L.splits_file("{repeat}"),
    input:
        config=f"{STAGE}/split.json",
        manifest=rules.preprocess.output.manifest,
        verify=rules.verify.output.report,
    log:
        f"{LOGS}/split/r{{repeat}}.log",
    wildcard_constraints:
        repeat=r"\d+",
    shell:
        "{SEGLAB} split --config {input.config} --prepared {PREPARED} --verify {input.verify}"
        " --repeat {wildcards.repeat} --out {output.splits} > {log} 2>&1"
