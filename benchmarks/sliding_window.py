"""Sliding-window inference on a large image: speed against the bare model, and peak memory.

For one (H, W) image and each overlap, three timings (median of ``--repeats``, interleaved):

(a) ``windows``: the bare model's forward passes over exactly the windows the sliding
    window runs (same batches, no blending): the cost of the pixels it processes;
(b) ``sliding``: :func:`seglab.sliding_window.sliding_window_inference` end to end
    (window extraction, forward, sigmoid, Gaussian blending, normalisation);
(c) ``tiles``: the bare model over non-overlapping tiles covering the image once: the
    bare forward speed on the image's own pixels.

``blend_ratio`` = (a)/(b) is the share of sliding-window time spent in the model (the
blending overhead is 1 - ratio); ``pixel_ratio`` = (c)/(b) compares output pixels per
second with one bare pass (it falls with overlap, as every pixel is predicted ~1/(1-o)^2 times).
Peak memory is measured in a fresh process per overlap: the peak resident set during the
call (Linux VmHWM, reset just before it) minus the resident set before it, so the image,
the model and the libraries are not counted and one measurement cannot hide another's.

    python benchmarks/sliding_window.py --height 3000 --width 4000 --window 256 --overlaps 0 0.25 0.5
    python benchmarks/sliding_window.py --quick      # the tiny run the test suite uses
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import MODEL_CONFIGS, resolved_model
from seglab.models import build_model
from seglab.sliding_window import sliding_window_inference, window_starts


def model_for(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(resolved_model(MODEL_CONFIGS[name]), 3, 1).eval()


@torch.no_grad()
def windows_only(model, image: torch.Tensor, window: int, overlap: float, batch: int) -> None:
    """The forward passes of the sliding window without any blending."""
    rows = window_starts(image.shape[1], window, overlap)
    cols = window_starts(image.shape[2], window, overlap)
    starts = [(t, s) for t in rows for s in cols]
    for first in range(0, len(starts), batch):
        chunk = starts[first:first + batch]
        torch.sigmoid(model(torch.stack([image[:, t:t + window, s:s + window] for t, s in chunk])))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def memory_probe(args: argparse.Namespace, overlap: float) -> dict:
    """Run one sliding-window prediction in a fresh process; return its extra peak memory."""
    out = subprocess.run([sys.executable, __file__, "--probe", str(overlap), "--height", str(args.height),
                          "--width", str(args.width), "--window", str(args.window), "--batch", str(args.batch),
                          "--model", args.model, "--threads", str(args.threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_kb(field: str) -> int:
    """A memory figure of this process from /proc/self/status (kB): VmRSS now, VmHWM its peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    model = model_for(args.model)
    image = torch.randn(3, args.height, args.width)
    windows_only(model, image[:, :args.window, :args.window], args.window, 0.0, 1)  # warm-up allocations
    # Reset the peak (VmHWM) to the current RSS, so the peak read afterwards is this call's.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    out = sliding_window_inference(image, lambda b: torch.sigmoid(model(b)), (args.window, args.window),
                                   args.probe, args.batch)
    peak = _status_kb("VmHWM")
    print(json.dumps({"peak_extra_mb": round((peak - before) / 1024, 1), "output_mb": round(out.numel() * 4 / 2**20, 1),
                      "image_mb": round(image.numel() * 4 / 2**20, 1), "rss_before_mb": round(before / 1024, 1),
                      "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet8", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.0, 0.25, 0.5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--quick", action="store_true", help="a tiny image, one repeat (for the test suite)")
    parser.add_argument("--probe", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.height, args.width, args.window, args.repeats, args.overlaps = 150, 200, 64, 1, [0.5]
    if args.probe is not None:
        return probe(args)
    torch.set_num_threads(args.threads)
    model = model_for(args.model)
    image = torch.randn(3, args.height, args.width)
    predict = lambda b: torch.sigmoid(model(b))  # noqa: E731
    windows_only(model, image[:, :args.window, :args.window], args.window, 0.0, 1)  # warm-up
    pixels = args.height * args.width
    for overlap in args.overlaps:
        times: dict[str, list[float]] = {"windows": [], "sliding": [], "tiles": []}
        for _ in range(args.repeats):  # interleaved, so a busy machine slows all three alike
            times["windows"].append(timed(lambda: windows_only(model, image, args.window, overlap, args.batch)))
            times["sliding"].append(timed(lambda: sliding_window_inference(image, predict, (args.window, args.window),
                                                                           overlap, args.batch)))
            times["tiles"].append(timed(lambda: windows_only(model, image, args.window, 0.0, args.batch)))
        med = {k: statistics.median(v) for k, v in times.items()}
        count = len(window_starts(args.height, args.window, overlap)) * len(window_starts(args.width, args.window, overlap))
        print(json.dumps({
            "model": args.model, "height": args.height, "width": args.width, "window": args.window, "overlap": overlap,
            "batch": args.batch, "threads": args.threads, "windows": count, "repeats": args.repeats,
            "sliding_s": round(med["sliding"], 3), "windows_only_s": round(med["windows"], 3),
            "tiles_s": round(med["tiles"], 3), "sliding_mpx_per_s": round(pixels / med["sliding"] / 1e6, 3),
            "blend_ratio": round(med["windows"] / med["sliding"], 3), "pixel_ratio": round(med["tiles"] / med["sliding"], 3),
            **memory_probe(args, overlap),
        }), flush=True)


if __name__ == "__main__":
    main()
