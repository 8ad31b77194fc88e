"""Image-level labels: find, verify, prepare and serve the images of a classification study.

Sources read here (see :mod:`seglab.classification.sources` for the generated ones):

* a folder per class, ``root/<class>/<image>`` (torchvision ``ImageFolder``'s layout);
  classes are the sub-folders in sorted order, an empty one is reported;
* a CSV/TSV table with a header and the columns ``path``, ``label`` and optionally ``group``
  (paths relative to the root; the classes are the sorted distinct labels).

Verification decodes every image and reports unreadable or missing files, empty classes and
the class counts (``verify.json``). Preprocessing resizes (or pads) every usable image to
``preprocess.size`` and caches ``images.npy`` (N, S, S, C) uint8 — C is 1 when every image is
grey, 3 otherwise — and ``labels.npy`` (N,) int64, with ``manifest.csv`` (id, path, label,
class, group, sizes, sha256) and ``fingerprint.json`` (classes, channels, mean and std, and
``standardise``: the dataset's statistics or each image's own).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from .. import layout
from ..data.dataset import Key, split_key
from ..data.io import DataError, sha256_file
from .sources import IMAGES_DIR

LABELS = "labels.npy"
STORE_FILES = (layout.IMAGES, LABELS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def data_root(dataset: dict[str, Any], raw: Path | None) -> Path:
    """Where the images lie: the user's folder (class_folder/class_table) or data/raw/<name>/images."""
    if dataset["source"] in ("class_folder", "class_table"):
        root = dataset["folder"]["root"]
        if not root or not Path(root).is_dir():
            raise DataError(f"dataset.folder.root: {root!r} is not a folder. Set it to the folder holding the images "
                            "(relative to the project or absolute).")
        return Path(root)
    if raw is None:
        raise DataError(f"dataset.source {dataset['source']}: the raw data folder is missing; run the download stage.")
    return raw / IMAGES_DIR


def _unique_ids(paths: list[Path], root: Path) -> list[str]:
    """File stems, or the path below the root (``/`` as ``__``) where two stems coincide."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p.relative_to(root).with_suffix("")).replace("/", "__") for p in paths]


def list_class_folder(root: Path) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(items, class names, empty classes) of ``root/<class>/<image>``."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class folders. A class_folder dataset holds one sub-folder per class "
                        "(root/<class>/<image>.png).")
    paths, labels, empty = [], [], []
    for name in classes:
        found = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            empty.append(name)
        paths += found
        labels += [name] * len(found)
    ids = _unique_ids(paths, root)
    items = [{"id": i, "path": str(p), "class": c, "group": i} for i, p, c in zip(ids, paths, labels)]
    return items, classes, empty


def list_class_table(root: Path, table: str) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(items, class names, no empty class) of a CSV/TSV of path,label[,group]."""
    path = Path(table) if Path(table).is_absolute() else root / table
    if not path.is_file():
        raise DataError(f"dataset.labels.table: {path} not found. Give the CSV/TSV of path,label[,group] "
                        "(relative to dataset.folder.root).")
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {' or '.join(missing)} (columns: {', '.join(frame.columns)}). "
                        "The table needs a header with path and label (and optionally group).")
    paths = [Path(p) if Path(p).is_absolute() else root / p for p in frame["path"]]
    ids = _unique_ids(paths, root)
    groups = frame["group"].tolist() if "group" in frame.columns else ids
    items = [{"id": i, "path": str(p), "class": str(c), "group": str(g)}
             for i, p, c, g in zip(ids, paths, frame["label"], groups)]
    return items, sorted(set(frame["label"].astype(str))), []


def check_image(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(height, width, grey) of a decodable image, or the problem."""
    if not path.is_file():
        return None, "file not found"
    try:
        with Image.open(path) as img:
            img.load()
            return {"height": img.height, "width": img.width, "grey": img.mode in GREY_MODES}, None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"cannot be decoded as an image ({exc})"


def verify_images(dataset: dict[str, Any], raw: Path | None, on_error: str) -> dict[str, Any]:
    """The verification report of a classification dataset (see the module docstring)."""
    root = data_root(dataset, raw)
    if dataset["source"] == "class_table":
        items, classes, empty = list_class_table(root, dataset["labels"]["table"])
    else:
        items, classes, empty = list_class_folder(root)
    ok, problems = [], []
    for item in items:
        info, problem = check_image(Path(item["path"]))
        if problem:
            problems.append({"file": item["path"], "problem": problem})
        else:
            ok.append({**item, **info})
    counts = {c: sum(1 for i in ok if i["class"] == c) for c in classes}
    empty = sorted(set(empty) | {c for c, n in counts.items() if n == 0})
    problems += [{"file": str(root / c), "problem": "empty class: no usable image"} for c in empty]
    if problems and on_error == "fail":
        listed = "; ".join(f"{p['file']}: {p['problem']}" for p in problems[:5])
        raise DataError(f"{len(problems)} problem(s) in {root}: {listed}{' ...' if len(problems) > 5 else ''}. "
                        "Fix or remove them, or set verify.on_error: skip to leave them out.")
    if len(classes) - len(empty) < 2:
        raise DataError(f"{root}: {len(classes) - len(empty)} class(es) with usable images; classification needs at least 2.")
    ids = [i["id"] for i in ok]
    if len(set(ids)) != len(ids):
        raise DataError(f"{root}: two images share an id; give them distinct file names.")
    return {"task": "classification", "root": str(root), "classes": classes, "class_counts": counts,
            "empty_classes": empty, "items": ok, "problems": problems, "pairs_found": len(items), "pairs_ok": len(ok)}


def fit_image(path: Path, size: int, policy: str, channels: int) -> np.ndarray:
    """(size, size, channels) uint8: the image resized (stretched) or padded to the square."""
    with Image.open(path) as img:
        img = img.convert("L" if channels == 1 else "RGB")
        if policy == "pad":
            img = ImageOps.pad(img, (size, size), method=Image.Resampling.BILINEAR)
        else:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if channels == 1 else array


def preprocess_images(report: dict[str, Any], size: int, policy: str, out: Path, standardise: str = "dataset") -> dict[str, Any]:
    """Write the prepared cache of a verified classification dataset; return its fingerprint."""
    if policy == "native":
        raise DataError("preprocess.policy native keeps each image's size, which a classifier cannot batch; "
                        "use resize or pad for a classification study.")
    items = report["items"]
    classes = [c for c in report["classes"] if c not in report["empty_classes"]]
    index = {c: k for k, c in enumerate(classes)}
    channels = 1 if all(i["grey"] for i in items) else 3
    out.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(out / layout.IMAGES, mode="w+", dtype=np.uint8, shape=(len(items), size, size, channels))
    for row, item in enumerate(items):
        images[row] = fit_image(Path(item["path"]), size, policy, channels)
    images.flush()
    labels = np.array([index[i["class"]] for i in items], dtype=np.int64)
    np.save(out / LABELS, labels)
    manifest = pd.DataFrame({
        "id": [i["id"] for i in items], "path": [i["path"] for i in items], "label": labels,
        "class": [i["class"] for i in items], "group": [i["group"] for i in items],
        "orig_height": [i["height"] for i in items], "orig_width": [i["width"] for i in items],
        "sha256": [sha256_file(Path(i["path"])) for i in items],
    })
    manifest.to_csv(out / layout.MANIFEST, index=False)
    pixels = np.asarray(images, dtype=np.float64).reshape(-1, channels) / 255.0
    fingerprint = {
        "task": "classification", "size": size, "policy": policy, "channels": channels, "classes": classes,
        "num_classes": len(classes), "num_images": len(items),
        "class_counts": {c: int((labels == k).sum()) for k, c in enumerate(classes)},
        "mean": pixels.mean(axis=0).round(6).tolist(), "std": np.maximum(pixels.std(axis=0), 1e-6).round(6).tolist(),
        "standardise": standardise, "source_root": report["root"],
    }
    (out / layout.FINGERPRINT).write_text(json.dumps(fingerprint, indent=2) + "\n")
    return fingerprint


class PreparedImages:
    """The prepared cache of a classification study, opened read-only."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.images = np.load(self.folder / layout.IMAGES, mmap_mode="r")
        self.labels = np.load(self.folder / LABELS)
        self.manifest = pd.read_csv(self.folder / layout.MANIFEST, dtype={"id": str, "group": str})
        self.fingerprint: dict[str, Any] = json.loads((self.folder / layout.FINGERPRINT).read_text())
        self._row = {id_: i for i, id_ in enumerate(self.manifest["id"])}

    @property
    def classes(self) -> list[str]:
        return list(self.fingerprint["classes"])

    @property
    def num_classes(self) -> int:
        return int(self.fingerprint["num_classes"])

    @property
    def channels(self) -> int:
        return int(self.fingerprint["channels"])

    def indices(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self._row[i] for i in ids], dtype=np.int64)


def to_tensor(image: np.ndarray, mean: torch.Tensor, std: torch.Tensor, channels: int, per_image: bool = False) -> torch.Tensor:
    """(H, W, C) uint8 -> (channels, H, W) standardised float32 (with the dataset's per-channel
    ``mean``/``std``, or ``per_image`` to the image's own mean and std); a grey image is repeated
    to three channels only when the model needs three (ImageNet backbones)."""
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
    if per_image:
        x = (x - x.mean()) / x.std().clamp(min=1e-6)
    else:
        x = (x - mean[:, None, None]) / std[:, None, None]
    return x.expand(channels, -1, -1).contiguous() if x.shape[0] == 1 and channels == 3 else x


class ClassificationDataset(Dataset):
    """(image (C, H, W) float32, label int64) of the given ids, augmented when a policy is given."""

    def __init__(self, data: PreparedImages, ids: Sequence[str], channels: int, augment: Any = None) -> None:
        self.data = data
        self.ids = list(ids)
        self.rows = data.indices(self.ids)
        self.channels = channels
        self.augment = augment
        self.mean = torch.tensor(data.fingerprint["mean"], dtype=torch.float32)
        self.std = torch.tensor(data.fingerprint["std"], dtype=torch.float32)
        self.per_image = data.fingerprint["standardise"] == "image"

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[split_key(key, self.augment)]
        image = np.asarray(self.data.images[row])
        if self.augment is not None:
            image = self.augment(image=image)["image"]
            if image.ndim == 2:  # some albumentations transforms drop a single channel axis
                image = image[..., None]
        return to_tensor(image, self.mean, self.std, self.channels, self.per_image), torch.tensor(int(self.data.labels[row]))
