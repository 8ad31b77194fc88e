# Colorization pretraining: one per distinct architecture that a variant initialises from,
# on images none of its models is validated or tested on. pretrain.images fold: one job per
# architecture, repeat and fold, on that fold's training images (<out>/pretrain/<arch>/r<r>/fold<k>/,
# with the repeat's splits); unlabelled: one job per architecture on the dataset's unlabelled
# pool (<out>/pretrain/<arch>/). Resumable like training (state in .resume/, see train.smk).

PRETRAIN_RUN = L.pretrain_dir("{arch}", "{repeat}", "{fold}") if PRETRAIN_PER_FOLD else L.pretrain_dir("{arch}")
PRETRAIN_KEY = "{arch}/r{repeat}/fold{fold}" if PRETRAIN_PER_FOLD else "{arch}"


rule pretrain:
    output:
        weights=f"{PRETRAIN_RUN}/{layout.PRETRAINED}",
        history=f"{PRETRAIN_RUN}/{layout.HISTORY}",
        samples=f"{PRETRAIN_RUN}/{layout.COLORIZATION_SAMPLES}",
        summary=f"{PRETRAIN_RUN}/{layout.SUMMARY}",
    input:
        config=f"{STAGE}/pretrain/{{arch}}.json",
        prepared=rules.preprocess.output,
        # Per fold, the repeat's folds; the pool is listed alike in every repeat's splits.
        splits=L.splits_file("{repeat}") if PRETRAIN_PER_FOLD else L.splits,
    log:
        f"{LOGS}/pretrain/{PRETRAIN_KEY}.log",
    benchmark:
        f"{L.benchmarks}/pretrain/{PRETRAIN_KEY}.tsv"
    wildcard_constraints:
        repeat=r"\d+",
        fold=r"\d+",
    threads: TRAIN_THREADS
    resources:
        gpu=GPU,
    params:
        out=lambda wildcards: L.pretrain_dir(wildcards.arch, wildcards.repeat, wildcards.fold)
        if PRETRAIN_PER_FOLD else L.pretrain_dir(wildcards.arch),
        fold=lambda wildcards: f"--fold {wildcards.fold} --tag repeat={wildcards.repeat} --tag fold={wildcards.fold}"
        if PRETRAIN_PER_FOLD else "",
    shell:
        "{SEGLAB} pretrain --config {input.config} --prepared {PREPARED} --splits {input.splits}"
        " --out {params.out} {params.fold} --threads {threads}"
        " --tag rule=pretrain --tag arch={wildcards.arch} > {log} 2>&1"
