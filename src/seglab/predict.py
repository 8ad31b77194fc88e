"""``seglab predict``: apply a finished variant to a folder of new images.

The fold ensemble (or one fold) predicts each image after the same preprocessing as in
training (size, policy and normalisation from the prepared dataset's fingerprint), by
sliding windows for a patch-trained variant; the probabilities are mapped back to the
original size, then written as a mask PNG (class
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
from .data.contrast import equalise_contrast
from .data.io import IMAGE_SUFFIXES, DataError, read_image
from .data.preprocess import fit_native, fit_to_size, read_roi
from .engine import Execution
from .models import output_channels
from .inference import (colour_overlay, inference_window, labels_from_probabilities, load_models, predict_whole_image,
                        to_original_size)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder. Pass --images a folder of {', '.join(IMAGE_SUFFIXES)} files.")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}). Point --images at the folder holding them.")
    return files


def find_roi(folder: Path, image: Path) -> Path:
    """The ROI mask of ``image`` in ``folder``: same stem, or the stem followed by ``_`` and a
    suffix (DRIVE's 21_training.tif -> 21_training_mask.gif)."""
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                        and (p.stem == image.stem or p.stem.startswith(image.stem + "_")))
    if not candidates:
        raise DataError(f"{folder}: no ROI mask for {image.name} (expected {image.stem}.<ext> or {image.stem}_<suffix>.<ext>). "
                        "Add it, or leave out --roi.")
    exact = [p for p in candidates if p.stem == image.stem]
    return (exact or candidates)[0]


def prepared_image(image: np.ndarray, fingerprint: dict[str, Any]) -> np.ndarray:
    """The image as preprocessing prepared the training images (square fit, or native with its cap;
    then the same contrast equalisation, if any)."""
    blank = np.zeros(image.shape[:2], np.uint8)
    if fingerprint["policy"] == "native":
        fitted = fit_native(image, blank, fingerprint["max_side"])[0]
    else:
        fitted = fit_to_size(image, blank, int(fingerprint["size"]), fingerprint["policy"])[0]
    return equalise_contrast(fitted, fingerprint.get("clahe"))  # older fingerprints lack the key: none


@torch.no_grad()
def predict_folder(variant: dict[str, Any], fingerprint: dict[str, Any], checkpoints: list[Path], images: Path,
                   out_dir: Path, tta: bool = False, progress: bool = True, roi: Path | None = None) -> list[dict[str, Any]]:
    """Write ``masks/<stem>.png`` and ``overlays/<stem>.png`` for every image; return one record each.

    A patch-trained variant (or one with ``inference.window``) predicts by sliding windows;
    with ``roi`` (a folder of region-of-interest masks), pixels outside the ROI are background.
    """
    if roi is not None and not roi.is_dir():
        raise DataError(f"{roi}: no such folder. Pass --roi a folder of ROI masks (non-zero = inside), or leave it out.")
    execution = Execution.for_study(variant["study"])
    num_classes = int(fingerprint["num_classes"])
    models = load_models(checkpoints, variant["model"], output_channels(num_classes, variant["model"]["binary_head"]), execution)
    mean = torch.tensor(fingerprint["mean"], dtype=torch.float32)
    std = torch.tensor(fingerprint["std"], dtype=torch.float32)
    window, inference = inference_window(variant), variant["inference"]
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    records = []
    for path in tqdm(list_images(images), desc="predict", unit="image", disable=not progress):
        image = read_image(path, fingerprint.get("value_range"))  # older fingerprints lack the key: 8-bit data
        h, w = image.shape[:2]
        fitted = normalise(prepared_image(image, fingerprint), mean, std)
        probs = predict_whole_image(models, fitted, execution, tta, window, inference["overlap"], inference["batch_size"])
        probs = to_original_size(probs.mean(0).cpu(), h, w, fingerprint)  # the fold ensemble
        labels = labels_from_probabilities(probs[None])[0].numpy().astype(np.uint8)
        if roi is not None:
            inside = read_roi(find_roi(roi, path), (h, w))
            labels[~inside] = 0
        mask = labels * 255 if num_classes == 2 else labels
        Image.fromarray(mask).save(out_dir / "masks" / f"{path.stem}.png")
        Image.fromarray(colour_overlay(image, labels, num_classes)).save(out_dir / "overlays" / f"{path.stem}.png")
        records.append({"image": str(path), "height": h, "width": w,
                        "foreground_fraction": float((labels > 0).mean())})
    return records
