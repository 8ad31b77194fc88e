"""``seglab`` command line: one subcommand per workflow stage (the only argument parser).

Snakemake rules call these with named inputs and outputs; each subcommand reads its
stage config (written by the Snakefile under ``<output_dir>/config/``) and its input
files, and writes its output files. Any error a user can cause ends in one
``seglab: error: ...`` line naming the file or key, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import layout
from .config import ConfigError, config_hash, read_json
from .tasks import get_task, task_of


def cmd_download(args: argparse.Namespace) -> None:
    cfg = read_json(args.config)
    task_of(cfg).fetch(cfg["dataset"], Path(args.out))


def cmd_verify(args: argparse.Namespace) -> None:
    cfg = read_json(args.config)
    task = task_of(cfg)
    report = task.verify(cfg, Path(args.raw) if args.raw else None)
    _write_json(Path(args.out), report)
    print(task.verify_line(report))


def cmd_preprocess(args: argparse.Namespace) -> None:
    cfg = read_json(args.config)
    start = time.perf_counter()
    line = task_of(cfg).preprocess(cfg, read_json(args.verify), Path(args.out))
    print(f"{line} in {time.perf_counter() - start:.1f}s")


def cmd_split(args: argparse.Namespace) -> None:
    import pandas as pd

    from .data.splits import make_presplit_splits, make_splits, read_test_list

    split = read_json(args.config)["split"]
    # The verification report says which task read the data (reports without one are segmentation's).
    verified = read_json(args.verify)
    manifest = pd.read_csv(Path(args.prepared) / layout.MANIFEST, dtype={"id": str, "group": str})
    test_ids = split["test_ids"]
    if split["test_file"]:
        # The dataset's own test list, relative to the dataset root recorded by verify.
        test_file = Path(split["test_file"])
        if not test_file.is_absolute():
            test_file = Path(verified["root"]) / test_file
        test_ids = read_test_list(test_file, split["test_key"])
    # An all-empty role column reads as float NaN: fill it as strings.
    roles = manifest["role"].astype("string").fillna("") if "role" in manifest else pd.Series("", index=manifest.index)
    if roles.isin(["train", "val", "test"]).any():
        # A pre-split dataset (dataset.folder.train/val/test): its folders are the split.
        splits = make_presplit_splits(manifest, split["validation"], split["folds"], split["test_fraction"], split["seed"],
                                      args.repeat)
    else:
        pool = roles == "unlabelled"  # images without masks (a folder's or the generator's pool): never split
        labelled = manifest[~pool].reset_index(drop=True)
        strata = get_task(verified.get("task", "segmentation")).split_strata(labelled)
        splits = make_splits(labelled, split["folds"], split["test_fraction"], split["seed"], test_ids, args.repeat,
                             strata=strata)
        if pool.any():
            splits["unlabelled"] = sorted(manifest.loc[pool, "id"].astype(str))
    _write_json(Path(args.out), splits)
    print(f"split (repeat {args.repeat}): test {splits['counts']['test']} images ({splits['test_source']}), folds {splits['counts']['folds']}"
          + (f", always trained on {splits['counts']['train']}" if "train" in splits else "")
          + (f", {len(splits['unlabelled'])} unlabelled for colorization" if splits.get("unlabelled") else ""))
    if splits["test_ids_missing"]:
        print(f"split: {len(splits['test_ids_missing'])} listed test id(s) are not in the prepared data "
              f"(left out by verification or absent): {splits['test_ids_missing'][:10]}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    from .gpu_slots import pin_visible_gpu
    from .records import config_params, input_tags, record_dataset, record_pretraining, snakemake_tags
    from .runtime import set_threads
    from .tracking import open_run
    from .pretrain import pretrain_colorization

    slot = pin_visible_gpu()  # noqa: F841 (held until the process exits)
    set_threads(args.threads)
    cfg = read_json(args.config)
    out, prepared, splits = Path(args.out), Path(args.prepared), read_json(args.splits)
    study = cfg["study"]["name"]
    tags = {"seglab.stage": "pretrain", "seglab.pretrain_images": cfg["pretrain"]["images"],
            **input_tags(cfg, prepared, splits), **snakemake_tags(args.tag)}
    # pretrain/<arch> on the unlabelled pool; pretrain/<arch>/r<repeat>/fold<k> on one fold's training images.
    run_key = out.name
    if args.fold is not None:
        arch, repeat, _ = layout.run_of(out)
        run_key = f"{arch}/{layout.repeat_name(repeat)}/{layout.fold_name(args.fold)}"
        tags.update({"seglab.repeat": repeat, "seglab.fold": args.fold})
    run = open_run(cfg["tracking"], study, f"{study}/pretrain/{run_key}", f"pretrain-{run_key.replace('/', '-')}", tags=tags,
                   command="pretrain")
    run.log_params(config_params(cfg, prepared))
    record_dataset(run, cfg, prepared, "training")

    def work() -> None:
        pretrain_colorization(cfg, prepared, splits, out, run, args.fold)
        record_pretraining(run, cfg, out)

    _finish(run, work)


def cmd_train(args: argparse.Namespace) -> None:
    from .gpu_slots import pin_visible_gpu
    from .records import config_params, input_tags, record_dataset, snakemake_tags
    from .runtime import set_threads
    from .tracking import open_run

    slot = pin_visible_gpu()  # noqa: F841 (held until the process exits)
    set_threads(args.threads)
    cfg = read_json(args.config)
    study, variant = cfg["study"]["name"], cfg["variant"]
    out, prepared, splits = Path(args.out), Path(args.prepared), read_json(args.splits)
    repeat = splits["repeat"]
    tags = {"seglab.stage": "train", "seglab.variant": variant, "seglab.repeat": repeat, "seglab.fold": args.fold,
            **input_tags(cfg, prepared, splits), **snakemake_tags(args.tag)}
    # One child run per repeat and fold under the variant's parent run.
    run_key = f"{layout.repeat_name(repeat)}/{layout.fold_name(args.fold)}"
    run = open_run(cfg["tracking"], study, f"{study}/{variant}/{run_key}", f"{variant}-{run_key.replace('/', '-')}",
                   parent_key=f"{study}/{variant}", tags=tags, command="train")
    run.log_params(config_params(cfg, prepared))
    record_dataset(run, cfg, prepared, "training")
    init = Path(args.init) if args.init else None
    task = task_of(cfg)

    def work() -> None:
        task.train_fold(cfg, prepared, splits, args.fold, out, init, run)
        task.record_fold(run, cfg, out, args.fold, prepared)

    _finish(run, work)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .records import config_params, evaluation_metrics, input_tags, record_dataset, record_variant_curves, snakemake_tags
    from .runtime import set_threads
    from .tracking import open_run

    set_threads(args.threads)
    cfg = read_json(args.config)
    study, variant = cfg["study"]["name"], cfg["variant"]
    out, prepared, splits = Path(args.out), Path(args.prepared), read_json(args.splits)
    checkpoints = [Path(c) for c in args.checkpoints]
    summaries = [read_json(s) for s in args.summaries]
    repeat = splits["repeat"]
    tags = {"seglab.variant": variant, "seglab.repeat": repeat, **input_tags(cfg, prepared, splits)}
    # The variant's parent run keeps the headline numbers for comparing variants, and its id
    # goes into metrics.json so the report links every number to its run.
    parent = open_run(cfg["tracking"], study, f"{study}/{variant}", variant,
                      tags={"seglab.stage": "variant", **tags}, monitor=False, command="evaluate")
    # Evaluation is its own child run, so re-evaluating (e.g. with --tta) is one record with its
    # own tags, beside the folds it evaluates.
    repeat_key = layout.repeat_name(repeat)
    run = open_run(cfg["tracking"], study, f"{study}/{variant}/{repeat_key}/evaluate", f"{variant}-{repeat_key}-evaluate",
                   parent_key=f"{study}/{variant}", tags={"seglab.stage": "evaluate", **tags, **snakemake_tags(args.tag)},
                   command="evaluate")
    run.log_params({**config_params(cfg, prepared), "tta": args.tta})
    record_dataset(run, cfg, prepared, "testing")
    record_dataset(parent, cfg, prepared, "training")

    task = task_of(cfg)

    def work() -> dict:
        metrics = task.evaluate_variant(cfg, prepared, splits, checkpoints, summaries, out, tta=args.tta, run_id=parent.run_id)
        run.log_metrics(evaluation_metrics(metrics))
        run.log_metrics({f"oof_{k}": v for k, v in metrics["oof"]["pooled"].items() if isinstance(v, (int, float))})
        task.record_evaluation(run, cfg, out, prepared, splits)
        return metrics

    metrics = _finish(run, work)
    parent.log_params(config_params(cfg, prepared))
    # One step per repeat on the parent: MLflow then plots the headline numbers across repeats.
    parent.log_metrics({k: v for k, v in evaluation_metrics(metrics).items() if not k.startswith("test_fold")}, step=repeat)
    parent.log_metrics({f"oof_{k}": v for k, v in metrics["oof"]["pooled"].items() if isinstance(v, (int, float))},
                       step=repeat)
    record_variant_curves(parent, variant, [Path(h) for h in args.histories])
    print(task.evaluation_line(metrics, len(checkpoints)))


def cmd_aggregate(args: argparse.Namespace) -> None:
    from .aggregate import learning_curves
    from .tracking import open_tracker

    cfg = read_json(args.config)
    task = task_of(cfg)
    per_variant: dict[str, dict[int, Any]] = {}
    for path in args.evaluations:
        variant, repeat = layout.eval_of(path)
        per_variant.setdefault(variant, {})[repeat] = read_json(path)
    curves = learning_curves({layout.run_of(path): Path(path) for path in args.histories})
    metrics = task.study_metrics(cfg, {v: [by[r] for r in sorted(by)] for v, by in per_variant.items()}, curves)
    _write_json(Path(args.metrics), metrics)
    Path(args.curves).parent.mkdir(parents=True, exist_ok=True)
    curves.to_csv(args.curves, index=False)
    tracker = open_tracker(cfg["tracking"], cfg["study"]["name"])
    if tracker is not None:
        tracker.finish_parents()
    for name, row in metrics["variants"].items():
        print(task.aggregate_line(name, row))


def cmd_compare(args: argparse.Namespace) -> None:
    import pandas as pd

    from .compare import run_compare

    cfg = read_json(args.config)
    manifest = pd.read_csv(Path(args.prepared) / layout.MANIFEST, dtype={"id": str, "group": str})
    result = run_compare(cfg, _eval_dirs_by_repeat(args.evaluations), manifest, read_json(args.splits),
                         Path(args.out), Path(args.csv), score=task_of(cfg).COMPARE_SCORE)
    for row in result["comparisons"]:
        print(row["sentence"])
    if not result["comparisons"]:
        print("one variant only: nothing to compare")


def cmd_report(args: argparse.Namespace) -> None:
    import pandas as pd

    from .report.document import ReportInputs, package_versions, stage_wall_times
    from .tracking import git_commit

    study = read_json(args.config)
    inputs = ReportInputs(
        study=study, metrics=read_json(args.metrics), curves=pd.read_csv(args.curves),
        prepared=Path(args.prepared), splits=read_json(args.splits), verify=read_json(args.verify),
        eval_dirs=_eval_dirs(args.evaluations),
        pretrain_dirs=[Path(f).parent for f in args.pretrain_samples or []],
        augmentation_previews={layout.fold_of(f)[0]: Path(f) for f in args.augmentation_previews or []},
        comparisons=read_json(args.comparisons) if args.comparisons else None,
        stage_seconds=stage_wall_times(Path(args.benchmarks)) if args.benchmarks else {},
        versions=package_versions(), git_commit=git_commit(), config_hash=config_hash(study),
    )
    task_of(study).build_report(inputs, Path(args.out))
    print(f"report written to {Path(args.out) / 'index.html'}")


def cmd_predict(args: argparse.Namespace) -> None:
    from .checkpoint import CheckpointError

    cfg = read_json(args.config)
    models = Path(args.models)
    # A variant's folder holds every repeat's folds (all of them form the ensemble); a repeat's folder, its own.
    pattern = f"{layout.fold_name('*')}/{layout.CHECKPOINT}"
    found = list(models.glob(pattern)) or list(models.glob(f"{layout.repeat_name('*')}/{pattern}"))
    folds = sorted(found, key=lambda p: layout.run_of(p)[1:])
    if args.fold is not None:
        folds = [p for p in folds if layout.fold_of(p)[1] == args.fold]
    if not folds:
        which = f"{layout.fold_name(args.fold if args.fold is not None else '<k>')}/{layout.CHECKPOINT}"
        raise CheckpointError(f"{models}: no {which}. Pass --models the variant's folder under <output_dir>/models "
                              "after its training has finished.")
    line = task_of(cfg).predict(cfg, Path(args.prepared), folds, Path(args.images), Path(args.out), args.tta,
                                Path(args.roi) if args.roi else None, args.cam)
    what = f"fold {args.fold}" if args.fold is not None else f"ensemble of {len(folds)} folds"
    print(f"{cfg['variant']} ({what}): {line}")


def cmd_track_init(args: argparse.Namespace) -> None:
    """Create the store and the experiment once, before parallel jobs start writing to it."""
    from .tracking import experiment_url, open_tracker

    cfg = read_json(args.config)
    tracker = open_tracker(cfg["tracking"], cfg["study"]["name"])
    if tracker is not None:
        print(f"MLflow: experiment '{tracker.experiment}' ({tracker.experiment_id}) in {tracker.uri}; with `make ui`, "
              f"its runs table is {experiment_url('http://127.0.0.1:5000', tracker.experiment_id)}")


def _finish(run: Any, work: Callable[[], Any]) -> Any:
    """Run the stage's work and close its MLflow run as FINISHED or FAILED."""
    try:
        result = work()
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")
    return result


def _eval_dirs(metrics_files: list[str]) -> dict[str, Path]:
    """Each variant's evaluation folder, from the metrics files the rule passes (one repeat's)."""
    return {layout.variant_of_eval(path): Path(path).parent for path in metrics_files}


def _eval_dirs_by_repeat(metrics_files: list[str]) -> dict[str, list[Path]]:
    """Each variant's evaluation folders, in repeat order."""
    found: dict[str, dict[int, Path]] = {}
    for path in metrics_files:
        variant, repeat = layout.eval_of(path)
        found.setdefault(variant, {})[repeat] = Path(path).parent
    return {variant: [by[r] for r in sorted(by)] for variant, by in found.items()}


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def _is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, or the RuntimeError older kernels raise with the same words."""
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _out_of_memory_message(args: argparse.Namespace, exc: BaseException) -> str:
    """Name the batch-size key of the stage that ran out, with its current value."""
    section = {"train": "train", "pretrain": "pretrain"}.get(args.command)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    advice = "close other jobs using the GPU, or set study.device: cpu"
    if section is not None:
        try:
            size = read_json(args.config)[section]["batch_size"]
            advice = (f"lower {section}.batch_size (now {size}) in the study config, or set study.device: cpu; "
                      "the job resumes from its last completed epoch")
        except (ConfigError, KeyError, TypeError, ValueError):
            advice = f"lower {section}.batch_size in the study config, or set study.device: cpu"
    return f"out of memory in `seglab {args.command}` ({first_line}): {advice}."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seglab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.add_argument("--config", required=True, help="stage config JSON written by the workflow")
        p.set_defaults(func=func)
        return p

    p = command("download", cmd_download, "fetch or generate the raw dataset")
    p.add_argument("--out", required=True)
    p = command("verify", cmd_verify, "decode and check every image/mask pair")
    p.add_argument("--raw", help="raw data folder (not needed for source: folder)")
    p.add_argument("--out", required=True)
    p = command("preprocess", cmd_preprocess, "resize/pad and cache the verified pairs")
    p.add_argument("--verify", required=True)
    p.add_argument("--out", required=True)
    p = command("split", cmd_split, "held-out test set and k folds")
    p.add_argument("--prepared", required=True)
    p.add_argument("--verify", required=True, help="verification report (gives the dataset root for split.test_file)")
    p.add_argument("--repeat", type=int, default=0, help="which repeat's folds (repeat 0 uses split.seed)")
    p.add_argument("--out", required=True)
    for name, func, help in (("pretrain", cmd_pretrain, "colorization pretraining"),
                             ("train", cmd_train, "train one variant on one fold")):
        p = command(name, func, help)
        p.add_argument("--prepared", required=True)
        p.add_argument("--splits", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--tag", action="append", help="key=value recorded on the MLflow run")
        if name == "train":
            p.add_argument("--fold", type=int, required=True)
            p.add_argument("--init", help="colorization weights for init: colorization")
        else:
            p.add_argument("--fold", type=int, help="pretrain.images fold: pretrain on this fold's training images "
                           "(of the repeat --splits holds); without it, on the unlabelled pool")
    p = command("evaluate", cmd_evaluate, "evaluate the fold models and their ensemble on the test set")
    p.add_argument("--prepared", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--checkpoints", nargs="+", required=True, help="the variant's fold checkpoints")
    p.add_argument("--summaries", nargs="+", required=True, help="their training summaries, in the same order")
    p.add_argument("--histories", nargs="+", required=True, help="their training histories, in the same order")
    p.add_argument("--out", required=True, help="the variant's evaluation folder")
    p.add_argument("--tta", action="store_true", help="average over flips at test time")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tag", action="append", help="key=value recorded on the MLflow run")
    p = command("aggregate", cmd_aggregate, "study metrics and learning curves")
    p.add_argument("--evaluations", nargs="+", required=True, help="every variant's evaluation metrics.json")
    p.add_argument("--histories", nargs="+", required=True, help="every fold's history.csv")
    p.add_argument("--metrics", required=True)
    p.add_argument("--curves", required=True)
    p = command("compare", cmd_compare, "significance tests of the variants against the baseline")
    for flag in ("--prepared", "--splits", "--out", "--csv"):
        p.add_argument(flag, required=True)
    p.add_argument("--evaluations", nargs="+", required=True, help="every variant's evaluation metrics.json")
    p = command("report", cmd_report, "write the HTML and Markdown report")
    for flag in ("--metrics", "--curves", "--prepared", "--splits", "--verify", "--out"):
        p.add_argument(flag, required=True)
    p.add_argument("--evaluations", nargs="+", required=True, help="every variant's evaluation metrics.json")
    p.add_argument("--pretrain-samples", nargs="*", help="every colorization pretraining's samples.png")
    p.add_argument("--augmentation-previews", nargs="*",
                   help="fold 0's augmentation.png of each variant (those absent are variants without augmentation)")
    p.add_argument("--comparisons", help="comparisons.json of the compare stage")
    p.add_argument("--benchmarks", help="folder of Snakemake benchmark TSVs (wall time per stage)")
    p = command("predict", cmd_predict, "apply a finished variant (fold ensemble or one fold) to a folder of images")
    p.add_argument("--prepared", required=True, help="the study's prepared data folder (size, policy, normalisation)")
    p.add_argument("--models", required=True, help="the variant's folder, <output_dir>/models/<variant> (every repeat's "
                   "folds), or one repeat's, <output_dir>/models/<variant>/r<repeat>")
    p.add_argument("--images", required=True, help="folder of images to segment or classify")
    p.add_argument("--out", required=True, help="folder for predictions.csv (and masks/, overlays/ or cams/)")
    p.add_argument("--fold", type=int, help="use this fold's model only (default: the fold ensemble)")
    p.add_argument("--tta", action="store_true", help="average over flips")
    p.add_argument("--roi", help="folder of region-of-interest masks (same stem as the image, or stem_<suffix>; "
                                 "non-zero = inside); pixels outside are predicted as background")
    p.add_argument("--cam", action="store_true", help="classification: also write class activation map overlays to cams/")
    command("track-init", cmd_track_init, "create the MLflow experiment before jobs start")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .checkpoint import CheckpointError
    from .data.io import DataError
    from .tracking import TrackingError

    try:
        args.func(args)
    except (ConfigError, DataError, CheckpointError, TrackingError) as exc:
        print(f"seglab: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if not _is_out_of_memory(exc):
            raise
        print(f"seglab: error: {_out_of_memory_message(args, exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
