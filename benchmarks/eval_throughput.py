"""Evaluation throughput: the bare model's inference versus ``seglab evaluate``.

(a) bare: ``model(x)`` in eval mode, without gradients, on a batch already on the device,
    at the batch size evaluation uses (the upper bound);
(b) seglab: ``evaluate_variant`` exactly as the evaluate stage calls it: loading the k fold
    checkpoints, every fold model and the fold ensemble on the test set, every fold model
    on its out-of-fold images, optionally with flip TTA, the metrics (confusion counts,
    per-class tables, HD95 of the ensemble) and the files it writes.
Both are counted in forward passes of one image through one model per second, so that
(b)/(a) is the share of evaluation time spent in the model. Prints one JSON line per
(model, size, tta) with the median of repeats.

    python benchmarks/eval_throughput.py --models unet32 resnet34unet --sizes 128 --tta both
    python benchmarks/eval_throughput.py --quick        # the tiny run the test suite uses
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import MODEL_CONFIGS, add_execution_options, describe, execution_from, prepared_cache, resolved_variant, sync
from seglab import layout
from seglab.checkpoint import save_checkpoint
from seglab.data.splits import make_splits
from seglab.engine import Execution
from seglab.evaluate import EVAL_BATCH, evaluate_variant
from seglab.inference import TTA_PASSES
from seglab.models import MODELS, build_model, output_channels
from seglab.runtime import select_device


@torch.no_grad()
def bare(model: torch.nn.Module, batch: int, size: int, steps: int, device: torch.device, execution: Execution) -> float:
    """Forward passes per second of the model alone."""
    model.eval()
    x = execution.inputs(torch.randn(batch, 3, size, size, device=device))
    with execution.autocast():
        model(x)  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        with execution.autocast():
            model(x)
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def fold_checkpoints(variant: dict, folder: Path, folds: int, out_channels: int) -> list[Path]:
    """One checkpoint per fold in the format the train stage writes (untrained weights: speed only)."""
    paths = []
    for k in range(folds):
        torch.manual_seed(k)
        path = folder / layout.fold_name(k) / layout.CHECKPOINT
        save_checkpoint({"model": build_model(variant["model"], 3, out_channels).state_dict()}, path)
        paths.append(path)
    return paths


def seglab_eval(variant: dict, prepared: Path, splits: dict, checkpoints: list[Path], out: Path,
                tta: bool, device: torch.device) -> float:
    """Forward passes per second of the whole evaluate stage (minus process start-up)."""
    summaries = [{"val_dice": 0.5, "best_epoch": 1, "train_seconds": 0.0} for _ in checkpoints]
    n_test, n_oof = len(splits["test"]), sum(len(f) for f in splits["folds"])
    passes = (n_test * len(checkpoints) + n_oof) * (TTA_PASSES if tta else 1)
    sync(device)
    start = time.perf_counter()
    evaluate_variant(variant, prepared, splits, checkpoints, summaries, out, tta=tta)
    sync(device)
    return passes / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["unet32", "resnet34unet"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128])
    parser.add_argument("--images", type=int, default=96, help="images in the dataset (test + cross-validation)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--tta", choices=["on", "off", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3)
    add_execution_options(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args()
    if args.quick:
        args.models, args.sizes, args.images, args.folds, args.repeats = ["unet8"], [32], 16, 2, 1
    device = select_device("auto")
    execution = execution_from(args, device)
    tta_settings = {"on": [True], "off": [False], "both": [False, True]}[args.tta]
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = prepared_cache(Path(tmp) / str(size), size, args.images)
            splits = make_splits(data.manifest, args.folds, 0.25, seed=0)
            for name in args.models:
                variant = resolved_variant(MODEL_CONFIGS[name])
                variant["study"].update(device=device.type, precision=args.precision,
                                        channels_last={"auto": "auto", "true": True, "false": False}[args.channels_last])
                if variant["model"]["name"] not in MODELS:
                    print(json.dumps({"model": name, "skipped": f"model.name {variant['model']['name']!r} not in this build"}))
                    continue
                channels = output_channels(data.num_classes, variant["model"]["binary_head"])
                checkpoints = fold_checkpoints(variant, Path(tmp) / name / str(size), args.folds, channels)
                model = execution.prepare(build_model(variant["model"], 3, channels))
                batch = min(EVAL_BATCH, args.images)
                for tta in tta_settings:
                    # Interleaved, so that warm-up and clock drift fall on both alike.
                    rates = [(bare(model, batch, size, 3, device, execution),
                              seglab_eval(variant, data.folder, splits, checkpoints, Path(tmp) / "eval", tta, device))
                             for _ in range(args.repeats)]
                    a, b = (statistics.median(r) for r in zip(*rates))
                    print(json.dumps({
                        "model": name, "size": size, "batch": batch, "folds": args.folds, "tta": tta,
                        "test_images": len(splits["test"]), "oof_images": sum(len(f) for f in splits["folds"]),
                        **describe(execution), "bare_passes_s": round(a, 1),
                        "seglab_passes_s": round(b, 1), "ratio": round(b / a, 3),
                        "overhead_ms_per_pass": round(1000 * (1 / b - 1 / a), 3),
                    }), flush=True)


if __name__ == "__main__":
    main()
