"""Training throughput: the bare model versus the full seglab training path.

(a) bare: the model, loss and optimiser on tensors already on the device (the upper bound);
(b) seglab: the cached dataset, augmentation, DataLoader, loss, optimiser and per-epoch
    bookkeeping exactly as ``seglab train`` runs them (engine.run_epoch).
Prints one JSON line per (model, size) with images/s (median of repeats) and (b)/(a).

    python benchmarks/train_throughput.py --models unet32 unet64 --sizes 128 256
    python benchmarks/train_throughput.py --quick        # the tiny run the test suite uses
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from common import MODEL_CONFIGS, prepared_cache, print_path_comparison, resolved_loss, resolved_model, sync, training_benchmark_setup
from seglab.data.dataset import SegmentationDataset
from seglab.data.prepared import PreparedData
from seglab.data.transforms import build_augmentation
from seglab.engine import Execution, run_epoch
from seglab.losses import build_loss
from seglab.models import MODELS, build_model
from seglab.data.loaders import make_loader


def bare(model, batch: int, size: int, steps: int, device, execution: Execution) -> float:
    x = execution.inputs(torch.randn(batch, 3, size, size, device=device))
    y = (torch.rand(batch, size, size, device=device) > 0.5).long()
    loss_fn = build_loss(resolved_loss({"name": "bce"}), 2, None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_epoch(model, [(x, y)], loss_fn, execution, opt)  # warm-up
    sync(device)
    start = time.perf_counter()
    run_epoch(model, [(x, y)] * steps, loss_fn, execution, opt)
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def full(model, data: PreparedData, batch: int, steps: int, device, execution: Execution, workers: int) -> float:
    ids = list(data.manifest["id"])[: batch * steps]
    dataset = SegmentationDataset(data, ids, build_augmentation({"preset": "flip"}, 0))
    loader = make_loader(dataset, batch, True, 0, workers, device)
    loss_fn = build_loss(resolved_loss({"name": "bce"}), 2, None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    run_epoch(model, [next(iter(loader))], loss_fn, execution, opt)  # warm-up
    sync(device)
    start = time.perf_counter()
    result = run_epoch(model, loader, loss_fn, execution, opt)
    sync(device)
    return len(loader) * batch / (time.perf_counter() - start) if result else 0.0


def main() -> None:
    args, execution, workers = training_benchmark_setup(__doc__, ["unet32", "unet64", "resnet34unet"], [128, 256], 16,
                                                         quick=(["unet8"], [32], 4))
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            data = prepared_cache(Path(tmp) / str(size), size, args.batch * args.steps)
            for name in args.models:
                cfg = resolved_model(MODEL_CONFIGS[name])
                if cfg["name"] not in MODELS:
                    print(json.dumps({"model": name, "skipped": f"model.name {cfg['name']!r} not in this build"}))
                    continue
                torch.manual_seed(0)
                model = execution.prepare(build_model(cfg, 3, 1))
                print_path_comparison(name, size, args, execution, workers,
                                      lambda: bare(model, args.batch, size, args.steps, execution.device, execution),
                                      lambda: full(model, data, args.batch, args.steps, execution.device, execution, workers))

if __name__ == "__main__":
    main()
