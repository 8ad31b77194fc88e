"""Named public datasets: where they are published and how their files are laid out.

A named dataset is a preset of the ``url`` source: its archives (real URLs, with the
checksum where one is published) and the folder layout and mask encoding of what
they unpack to. :func:`effective_dataset` turns ``source: public`` into that ``url``
dataset, so downloading, verification and preprocessing have a single code path.
"""

from __future__ import annotations

import copy
from typing import Any

from .io import DataError

_ANY_ID = "^(?P<id>.+)$"

PUBLIC: dict[str, dict[str, Any]] = {
    # Oxford-IIIT Pet (Parkhi et al., CVPR 2012), CC BY-SA 4.0. The publisher gives no
    # checksum; these MD5s are the ones torchvision's OxfordIIITPet pins for the same URLs.
    # Trimaps: 1 = pet, 2 = background, 3 = border (ambiguous). The archive also holds
    # macOS "._" files, which the regexes leave out (they are listed in the report).
    "oxford-pet": {
        "archives": [
            {"url": "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
             "sha256": None, "md5": "5c4f3ee8e5d25df40f4fd59a7f44e54c", "filename": None},
            {"url": "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
             "sha256": None, "md5": "95a8c909bbe2e81eed6a22bccdf3f68f", "filename": None},
        ],
        "folder": {"root": "", "images": "images", "masks": "annotations/trimaps",
                   "image_regex": r"^(?P<id>[A-Za-z].*_\d+)$", "mask_regex": r"^(?P<id>[A-Za-z].*_\d+)$",
                   "group_regex": None},
        "mask_encoding": "grey_levels",
        # The official test list is annotations/test.txt (split.test_file in configs/datasets/oxford-pet.yaml).
    },
    # Kvasir-SEG (Jha et al., MMM 2020): 1000 polyp images with JPEG masks (so thresholded).
    # No checksum is published for kvasir-seg.zip: the download is checked for size only.
    "kvasir-seg": {
        "archives": [{"url": "https://datasets.simula.no/downloads/kvasir-seg.zip",
                      "sha256": None, "md5": None, "filename": None}],
        "folder": {"root": "", "images": "Kvasir-SEG/images", "masks": "Kvasir-SEG/masks",
                   "image_regex": _ANY_ID, "mask_regex": _ANY_ID, "group_regex": None},
        "mask_encoding": "binary",
        "classes": ["background", "polyp"],
    },
    # ISIC 2018 Task 1 (Codella et al. 2019; Tschandl et al. 2018), CC BY-NC 4.0: the
    # 2594 training images and their lesion masks. ISIC publishes no checksums.
    "isic2018-task1": {
        "archives": [
            {"url": "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1-2_Training_Input.zip",
             "sha256": None, "md5": None, "filename": None},
            {"url": "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task1_Training_GroundTruth.zip",
             "sha256": None, "md5": None, "filename": None},
        ],
        "folder": {"root": "", "images": "ISIC2018_Task1-2_Training_Input",
                   "masks": "ISIC2018_Task1_Training_GroundTruth",
                   "image_regex": r"^(?P<id>ISIC_\d+)$", "mask_regex": r"^(?P<id>ISIC_\d+)_segmentation$",
                   "group_regex": None},
        "mask_encoding": "binary",
        "classes": ["background", "lesion"],
    },
}


def _oxford_pet_classes(trimap: str) -> dict[str, Any]:
    if trimap == "three-class":
        return {"classes": ["background", "pet", "border"], "grey_levels": [2, 1, 3], "ignore_index": None}
    # binary: pet vs background, the ambiguous border excluded from losses and metrics.
    return {"classes": ["background", "pet", "border"], "grey_levels": [2, 1, 3], "ignore_index": 2}


def effective_dataset(dataset: dict[str, Any]) -> dict[str, Any]:
    """The dataset block as the stages use it: ``source: public`` becomes its ``url`` preset."""
    if dataset["source"] != "public":
        return dataset
    public = dataset["public"]
    name = public["name"]
    if name not in PUBLIC:
        raise DataError(f"dataset.public.name: unknown dataset {name!r}. Known: {', '.join(sorted(PUBLIC))}.")
    preset = copy.deepcopy(PUBLIC[name])
    out = copy.deepcopy(dataset)
    out["source"] = "url"
    out["url"] = {**dataset.get("url", {}), "archives": preset["archives"]}
    out["folder"] = preset["folder"]
    out["mask_encoding"] = preset["mask_encoding"]
    out["classes"] = preset.get("classes")
    out["ignore_index"] = None
    out["grey_levels"] = out["palette"] = out["mask_mapping"] = None
    if name == "oxford-pet":
        out.update(_oxford_pet_classes(public["trimap"]))
    return out

