"""``seglab predict`` for a classification study: class probabilities of every image in a folder.

Each image is prepared as the training images were (grey or RGB, resized or padded to the
prepared size, standardised with the training statistics) and classified by the fold ensemble
(or one fold), optionally with flip TTA. Writes ``predictions.csv`` (file, predicted class,
its probability, ``prob_<class>`` per class) and, with ``--cam``, ``cams/<stem>.png``: the
image with the Grad-CAM of the predicted class overlaid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import read_json
from ..engine import Execution
from .. import layout
from ..predict import list_images
from .data import fit_image, to_tensor
from .models import input_channels
from .train import load_classifiers


def predict_images(variant: dict[str, Any], prepared: Path, checkpoints: list[Path], images: Path, out: Path,
                   tta: bool, cams: bool) -> str:
    fingerprint = read_json(prepared / layout.FINGERPRINT)
    classes = list(fingerprint["classes"])
    execution = Execution.for_study(variant["study"])
    models = load_classifiers(checkpoints, variant, fingerprint["channels"], len(classes), execution)
    channels = input_channels(variant["model"], fingerprint["channels"])
    mean = torch.tensor(fingerprint["mean"], dtype=torch.float32)
    std = torch.tensor(fingerprint["std"], dtype=torch.float32)
    files = list_images(images)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        pixels = fit_image(path, int(fingerprint["size"]), fingerprint["policy"], int(fingerprint["channels"]))
        x = execution.inputs(to_tensor(pixels, mean, std, channels, fingerprint["standardise"] == "image")[None])
        with torch.no_grad(), execution.autocast():
            per_model = [m(x).float().softmax(1) for m in models]
            if tta:
                per_model = [(p + m(x.flip(-1)).float().softmax(1)) / 2 for p, m in zip(per_model, models)]
        probs = torch.stack(per_model).mean(0)[0].cpu().numpy()
        top = int(probs.argmax())
        rows.append({"file": path.name, "predicted_class": classes[top], "probability": float(probs[top]),
                     **{f"prob_{c}": float(p) for c, p in zip(classes, probs)}})
        if cams:
            write_cam(models[0], x, top, pixels, out / "cams" / f"{path.stem}.png")
    pd.DataFrame(rows).to_csv(out / "predictions.csv", index=False)
    return f"{len(rows)} images classified in {out / 'predictions.csv'}" + (f", CAM overlays in {out / 'cams'}" if cams else "")


def write_cam(model: torch.nn.Module, x: torch.Tensor, predicted: int, pixels: np.ndarray, path: Path) -> None:
    """The Grad-CAM of the predicted class over the prepared image, as a PNG."""
    from PIL import Image

    from ..cam import find_target_layer, grad_cam, overlay

    cam = grad_cam(model, x.float(), find_target_layer(model, x.float()), torch.tensor([predicted], device=x.device))[0]
    image = pixels[..., 0] if pixels.shape[2] == 1 else pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, cam.cpu().numpy())).save(path)
