"""Classification training throughput: the bare classifier versus the seglab training path.

(a) bare: the classifier, cross-entropy and Adam on a batch already on the device (the upper bound);
(b) seglab: the prepared cache, flip augmentation, DataLoader, loss, optimiser and per-epoch
    accuracy bookkeeping exactly as ``seglab train`` runs them for a classification study
    (ClassificationDataset, AccuracyAccumulator, engine.run_epoch).
Prints one JSON line per (model, size) with images/s (median of repeats) and (b)/(a).

    python benchmarks/classify_throughput.py --models vgg16w resnet18 --sizes 64 128
    python benchmarks/classify_throughput.py --quick        # the tiny run the test suite uses
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from common import print_path_comparison, sync, training_benchmark_setup
from seglab.classification.data import ClassificationDataset, PreparedImages, preprocess_images, verify_images
from seglab.classification.losses import AccuracyAccumulator
from seglab.classification.models import build_classifier, input_channels
from seglab.classification.sources import write_shapes
from seglab.data.loaders import make_loader
from seglab.data.transforms import build_augmentation
from seglab.engine import Execution, run_epoch

MODELS = {
    "vgg8": {"name": "vgg", "base": 8, "blocks": 3, "convs_per_block": 2, "batch_norm": True, "dropout": 0.3, "hidden": 64, "pool": "avg"},
    "vgg16w": {"name": "vgg", "base": 16, "blocks": 4, "convs_per_block": 2, "batch_norm": True, "dropout": 0.3, "hidden": 128, "pool": "avg"},
    "resnet18": {"name": "backbone", "arch": "resnet18"},
}


def shapes_cache(folder: Path, size: int, count: int) -> PreparedImages:
    write_shapes({"count": count, "size": size, "seed": 0}, folder / "raw")
    report = verify_images({"source": "shapes"}, folder / "raw", "fail")
    preprocess_images(report, size, "resize", folder / "prepared")
    return PreparedImages(folder / "prepared")


def bare(model, channels: int, batch: int, size: int, steps: int, execution: Execution) -> float:
    x = execution.inputs(torch.randn(batch, channels, size, size, device=execution.device))
    y = torch.randint(0, 3, (batch,), device=execution.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    run_epoch(model, [(x, y)], loss_fn, execution, opt)  # warm-up
    sync(execution.device)
    start = time.perf_counter()
    run_epoch(model, [(x, y)] * steps, loss_fn, execution, opt)
    sync(execution.device)
    return batch * steps / (time.perf_counter() - start)


def full(model, data: PreparedImages, channels: int, batch: int, steps: int, execution: Execution, workers: int) -> float:
    ids = list(data.manifest["id"])[: batch * steps]
    dataset = ClassificationDataset(data, ids, channels, build_augmentation({"preset": "flip"}, 0))
    loader = make_loader(dataset, batch, True, 0, workers, execution.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    metrics = AccuracyAccumulator(data.num_classes)
    run_epoch(model, [next(iter(loader))], loss_fn, execution, opt)  # warm-up
    sync(execution.device)
    start = time.perf_counter()
    run_epoch(model, loader, loss_fn, execution, opt, metrics)
    sync(execution.device)
    return len(loader) * batch / (time.perf_counter() - start)


def main() -> None:
    args, execution, workers = training_benchmark_setup(__doc__, ["vgg8", "vgg16w", "resnet18"], [64, 128], 32,
                                                         quick=(["vgg8"], [32], 8))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = shapes_cache(Path(tmp) / str(size), size, max(args.batch * args.steps, 12))
            for name in args.models:
                channels = input_channels(MODELS[name], data.channels)
                torch.manual_seed(0)
                model = execution.prepare(build_classifier(MODELS[name], channels, data.num_classes))
                print_path_comparison(name, size, args, execution, workers,
                                      lambda: bare(model, channels, args.batch, size, args.steps, execution),
                                      lambda: full(model, data, channels, args.batch, args.steps, execution, workers))

if __name__ == "__main__":
    main()
