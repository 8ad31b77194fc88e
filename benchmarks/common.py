"""What the benchmark scripts share: the models they time and the data they time them on.

The scripts run as ``python benchmarks/<script>.py``, so Python puts this folder on the
path and ``from common import ...`` works without making ``benchmarks`` a package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from seglab.config import validate
from seglab.data.prepared import PreparedData
from seglab.data.preprocess import preprocess
from seglab.data.sources import fetch_dataset
from seglab.data.verify import verify_dataset

MODEL_CONFIGS = {
    "unet32": {"name": "unet", "base": 32, "depth": 4, "batch_norm": True, "dropout": 0.0, "upsample": "transpose"},
    "unet64": {"name": "unet", "base": 64, "depth": 4, "batch_norm": True, "dropout": 0.0, "upsample": "transpose"},
    "unet8": {"name": "unet", "base": 8, "depth": 3, "batch_norm": True, "dropout": 0.0, "upsample": "transpose"},
    "resnet34unet": {"name": "smp", "arch": "Unet", "encoder": "resnet34"},
}


def resolved_variant(model: dict, **blocks: dict) -> dict:
    """A variant with every schema default filled, as a study would run it."""
    cfg = validate({"variants": {"v": {"model": model, **blocks}}})
    return {"study": cfg["study"], "tracking": cfg["tracking"], "variant": "v", **cfg["variants"]["v"]}


def resolved_model(cfg: dict) -> dict:
    """The model block with every schema default filled."""
    return resolved_variant(cfg)["model"]


def resolved_loss(cfg: dict) -> dict:
    """The loss block with every schema default filled (build_loss reads resolved configs only)."""
    return resolved_variant(MODEL_CONFIGS["unet8"], loss=cfg)["loss"]


def prepared_cache(folder: Path, size: int, count: int) -> PreparedData:
    """The built-in data through the real download -> verify -> preprocess stages."""
    cfg = validate({"dataset": {"builtin": {"count": count, "size": size}}, "variants": {"v": {}}})
    fetch_dataset(cfg["dataset"], folder / "raw")
    report = verify_dataset(folder / "raw", cfg["dataset"], "fail")
    preprocess(report, size, "resize", folder / "prepared")
    return PreparedData(folder / "prepared")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def add_execution_options(parser) -> None:
    """The study's execution keys as benchmark options, with the study's defaults."""
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto")
    parser.add_argument("--channels-last", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")


def training_benchmark_setup(doc: str, models: list[str], sizes: list[int], batch: int,
                             quick: tuple[list[str], list[int], int]):
    """The command line both training-throughput benchmarks share, parsed, and what it asks for.

    ``quick`` is (models, sizes, batch) for ``--quick`` (the test suite's tiny run, 2 steps, 1 repeat).
    Returns (args, execution, loader workers) on the auto-selected device.
    """
    import argparse

    from seglab.data.loaders import loader_workers
    from seglab.runtime import select_device

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=models)
    parser.add_argument("--sizes", nargs="+", type=int, default=sizes)
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="auto", help="loader workers: a number or auto (as train.num_workers)")
    add_execution_options(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the test suite")
    args = parser.parse_args()
    if args.quick:
        (args.models, args.sizes, args.batch), args.steps, args.repeats = quick, 2, 1
    device = select_device("auto")
    return args, execution_from(args, device), loader_workers(args.workers, device)


def print_path_comparison(name: str, size: int, args, execution, workers: int,
                          bare_rate: Callable[[], float], seglab_rate: Callable[[], float]) -> None:
    """One JSON line: the bare model's and seglab's training rate (img/s), median of ``args.repeats``.

    The two are measured interleaved, so that warm-up, allocator growth and clock drift fall on both alike.
    """
    import json
    import statistics

    rates = [(bare_rate(), seglab_rate()) for _ in range(args.repeats)]
    a, b = (statistics.median(r) for r in zip(*rates))
    print(json.dumps({
        "model": name, "size": size, "batch": args.batch, **describe(execution), "workers": workers,
        "bare_img_s": round(a, 1), "seglab_img_s": round(b, 1), "ratio": round(b / a, 3),
        # Time per image the seglab path adds to the model's: what stays on the CPU
        # when a GPU makes the model itself much faster.
        "overhead_ms_per_img": round(1000 * (1 / b - 1 / a), 3),
    }), flush=True)


def execution_from(args, device: torch.device):
    from seglab.engine import Execution

    if args.threads:
        torch.set_num_threads(args.threads)
    layout = {"auto": "auto", "true": True, "false": False}[args.channels_last]
    return Execution.for_device(device, args.precision, layout)


def describe(execution) -> dict:
    """Device, precision, memory format and threads, for every result line."""
    return {"device": str(execution.device), "precision": str(execution.dtype or torch.float32).removeprefix("torch."),
            "channels_last": execution.channels_last, "threads": torch.get_num_threads()}
