"""Raw classification data: the built-in sources written as a folder per class.

Every generated or downloaded source ends in the same layout under ``data/raw/<name>``,
``images/<class>/<id>.png`` (torchvision ImageFolder's), which the verify stage then reads
like a user's ``class_folder``:

* ``digits`` — scikit-learn's bundled 1,797 real 8x8 handwritten digits (no download);
* ``shapes`` — the built-in synthetic shapes (:mod:`seglab.data.synthetic_classes`), with each
  image's evidence mask in ``evidence/<id>.png`` (the pixels that decide the class);
* ``torchvision`` — FashionMNIST, MNIST or CIFAR-10 through torchvision's own download, which
  checks every file's MD5; the test part's ids go to ``images/test.txt`` (``split.test_file: test.txt``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.io import DataError

IMAGES_DIR = "images"
EVIDENCE_DIR = "evidence"
TEST_LIST = "test.txt"


def _write_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_digits(out: Path) -> int:
    """scikit-learn's digits as images/<digit>/digit_<nnnn>.png (grey, 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(np.round(digits.images * 255.0 / 16.0), 0, 255).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, digits.target)):
        _write_png(image, out / IMAGES_DIR / str(int(label)) / f"digit_{i:04d}.png")
    return len(images)


def write_shapes(shapes_cfg: dict[str, Any], out: Path) -> int:
    """The built-in synthetic shapes and their evidence masks."""
    from ..data.synthetic_classes import make_shapes, write_evidence, write_image_folder

    shapes = make_shapes(shapes_cfg["count"], shapes_cfg["size"], shapes_cfg["seed"])
    write_image_folder(shapes, out / IMAGES_DIR)
    write_evidence(shapes, out / EVIDENCE_DIR)
    return len(shapes.labels)


TORCHVISION_CLASSES = ("FashionMNIST", "MNIST", "CIFAR10")


def _mirrored(dataset_class: type, mirror: str) -> type:
    """The torchvision class with its download URLs pointing at ``mirror`` (same files, same MD5s)."""
    base = mirror.rstrip("/") + "/"
    attrs: dict[str, Any] = {}
    if hasattr(dataset_class, "mirrors"):
        attrs["mirrors"] = [base]
    if hasattr(dataset_class, "url"):
        attrs["url"] = base + Path(dataset_class.url).name
    return type(dataset_class.__name__, (dataset_class,), attrs)


def _torchvision_part(name: str, root: Path, train: bool, mirror: str | None) -> Any:
    import torchvision.datasets as tvd

    dataset_class = getattr(tvd, name)
    if mirror:
        dataset_class = _mirrored(dataset_class, mirror)
        # The subclass keeps the parent's folder name, where torchvision looks for the files.
        dataset_class.__name__ = name
    try:
        return dataset_class(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a checksum mismatch a RuntimeError
        where = mirror or "torchvision's mirrors"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"dataset.torchvision: downloading {name} from {where} failed ({first}). This machine may be offline: "
            f"put the files in {root / name / 'raw'} (or serve them and set dataset.torchvision.mirror), "
            "or use a local source (class_folder, class_table, digits, shapes)."
        ) from None


def write_torchvision(cfg: dict[str, Any], out: Path) -> int:
    """Download a torchvision dataset (MD5-checked by torchvision) and write it as a class folder."""
    downloads = out.parent / f"{out.name}.downloads"
    count = 0
    test_ids: list[str] = []
    for part, train, limit in (("train", True, cfg["train_count"]), ("test", False, cfg["test_count"])):
        dataset = _torchvision_part(cfg["name"], downloads, train, cfg["mirror"])
        classes = [str(c).replace("/", "-") for c in dataset.classes]
        data = np.asarray(dataset.data)
        targets = np.asarray(dataset.targets)
        n = len(data) if limit is None else min(limit, len(data))
        for i in range(n):
            image_id = f"{part}_{i:05d}"
            _write_png(data[i], out / IMAGES_DIR / classes[int(targets[i])] / f"{image_id}.png")
            if not train:
                test_ids.append(image_id)
        count += n
    # Beside the class folders, in the root verification records, so split.test_file: test.txt finds it.
    (out / IMAGES_DIR / TEST_LIST).write_text("\n".join(test_ids) + "\n")
    return count


def fetch_classification(dataset: dict[str, Any], out: Path) -> None:
    """The download stage of a classification study: write ``out`` (data/raw/<name>)."""
    source = dataset["source"]
    if source in ("class_folder", "class_table"):
        raise DataError(f"dataset.source {source} reads dataset.folder.root where it lies; nothing to download.")
    tmp = out.parent / f"{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if source == "digits":
        count = write_digits(tmp)
    elif source == "shapes":
        count = write_shapes(dataset["shapes"], tmp)
    else:
        count = write_torchvision(dataset["torchvision"], tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    print(f"{source}: {count} images written to {out}")
