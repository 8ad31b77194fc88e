"""``seglab predict``: apply a finished variant to a folder of new images.

The fold ensemble (or one fold) predicts each image after the same preprocessing as in
training (size, policy and normalisation from the prepared dataset's fingerprint); the
probabilities are mapped back to the original size, then written as a mask PNG (class
indices; 0/255 for a binary task so it is visible) and a colour overlay PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .data.dataset import normalise
from .data.io import IMAGE_SUFFIXES, DataError, read_image
from .data.preprocess import fit_to_size
from .engine import Execution
from .models import output_channels
from .inference import colour_overlay, labels_from_probabilities, load_models, predict_ensemble, restore_size


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder. Pass --images a folder of {', '.join(IMAGE_SUFFIXES)} files.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}). Point --images at the folder holding them.")
    return files


@torch.no_grad()
def predict_folder(variant: dict[str, Any], fingerprint: dict[str, Any], checkpoints: list[Path], images: Path,
                   out_dir: Path, tta: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Write ``masks/<stem>.png`` and ``overlays/<stem>.png`` for every image; return one record each."""
    execution = Execution.for_study(variant["study"])
    num_classes = int(fingerprint["num_classes"])
    models = load_models(checkpoints, variant["model"], output_channels(num_classes, variant["model"]["binary_head"]), execution)
    mean = torch.tensor(fingerprint["mean"], dtype=torch.float32)
    std = torch.tensor(fingerprint["std"], dtype=torch.float32)
    size, policy = int(fingerprint["size"]), fingerprint["policy"]
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(list_images(images), desc="predict", unit="image", disable=not progress):
        image = read_image(path)
        h, w = image.shape[:2]
        fitted, _ = fit_to_size(image, np.zeros((h, w), np.uint8), size, policy)
        batch = execution.inputs(normalise(fitted, mean, std)[None])
        probs = predict_ensemble(models, batch, execution, tta)[-1][0].cpu()
        labels = labels_from_probabilities(restore_size(probs, h, w, size, policy)[None])[0].numpy().astype(np.uint8)
        mask = labels * 255 if num_classes == 2 else labels
        Image.fromarray(mask).save(out_dir / "masks" / f"{path.stem}.png")
        Image.fromarray(colour_overlay(image, labels, num_classes)).save(out_dir / "overlays" / f"{path.stem}.png")
        records.append({"image": str(path), "height": h, "width": w,
                        "foreground_fraction": float((labels > 0).mean())})
    return records
