"""Verify a raw dataset before anything is trained on it.

Every image and mask is decoded; pairs are checked for a missing partner, a size
mismatch, mask values outside the declared classes, undecodable files and duplicates.
The result is a report (JSON) listing the good pairs and every problem. With
``verify.on_error: fail`` any problem stops the study with one message naming every
bad file; with ``skip`` the bad pairs are dropped and listed, never silently.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .catalog import effective_dataset
from .classes import resolve_classes
from .io import IMAGE_SUFFIXES, DataError, decode_mask, describe_values, read_image, sha256_file


def dataset_root(dataset: dict[str, Any], raw_dir: Path | None) -> Path:
    """The folder holding the data: the downloaded/generated one, or the user's folder."""
    if dataset["source"] == "folder":
        root = dataset["folder"]["root"]
        if not root:
            raise DataError("dataset.folder.root is empty. Set it to the folder holding your images and masks.")
        if not Path(root).is_dir():
            raise DataError(f"dataset.folder.root: {root} is not a folder. Check the path (relative to the project).")
        return Path(root)
    if raw_dir is None:
        raise ValueError("a raw data folder is needed for source " + dataset["source"])
    return raw_dir


def _index(folder: Path, pattern: str, what: str, key: str | None = None) -> tuple[dict[str, Path], list[str]]:
    """Files of ``folder`` by the regex's ``id`` group, and the image files the regex left out.

    ``key`` is the config key naming the folder (default ``what``: images or masks).
    """
    key = key or what
    if not folder.is_dir():
        raise DataError(f"{folder}: the {what} folder does not exist. Check dataset.folder.root and dataset.folder.{key}.")
    files = [p for p in sorted(folder.iterdir()) if p.is_file()]
    if not files:
        raise DataError(f"{folder}: the {what} folder is empty. Put the {what} there or fix dataset.folder.{key}.")
    regex = re.compile(pattern)
    found: dict[str, Path] = {}
    left_out: list[str] = []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        match = regex.match(path.stem)
        if not match:
            left_out.append(str(path))
            continue
        key = match.group("id")
        if key in found:
            raise DataError(
                f"{path} and {found[key]} both give the id {key!r} with dataset.folder.{what[:-1]}_regex {pattern!r}. "
                "Make the regex tell them apart."
            )
        found[key] = path
    return found, left_out


def discover_pairs(root: Path, folder_cfg: dict[str, Any], what: str = "") -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Pair images with masks by the ``id`` group of the two regexes.

    ``what`` prefixes the config keys named in errors (``train.`` for dataset.folder.train.images).
    Returns (pairs, problems: lone images and masks, image files no regex matched).
    """
    images, images_left = _index(root / folder_cfg["images"], folder_cfg["image_regex"], "images", f"{what}images")
    masks, masks_left = _index(root / folder_cfg["masks"], folder_cfg["mask_regex"], "masks", f"{what}masks")
    if not images:
        raise DataError(
            f"{root / folder_cfg['images']}: no image matches dataset.folder.image_regex "
            f"{folder_cfg['image_regex']!r}. Check the folder and the regex."
        )
    group_re = re.compile(folder_cfg["group_regex"]) if folder_cfg["group_regex"] else None
    pairs, problems = [], []
    for key, image in images.items():
        if key not in masks:
            problems.append({"id": key, "file": str(image), "problem": "image without a mask"})
            continue
        group = key
        if group_re:
            m = group_re.search(key)
            if m is None:
                raise DataError(f"dataset.folder.group_regex {folder_cfg['group_regex']!r} does not match the id {key!r}. "
                                "Fix the regex (it needs a 'group' group) or set it to null.")
            group = m.group("group")
        pairs.append({"id": key, "image": str(image), "mask": str(masks[key]), "group": group})
    for key in sorted(set(masks) - set(images)):
        problems.append({"id": key, "file": str(masks[key]), "problem": "mask without an image"})
    if folder_cfg.get("roi"):
        rois, rois_left = _index(root / folder_cfg["roi"], folder_cfg["roi_regex"], "rois", f"{what}roi")
        images_left += rois_left
        with_roi = []
        for pair in pairs:
            if pair["id"] in rois:
                with_roi.append({**pair, "roi": str(rois[pair["id"]])})
            else:
                problems.append({"id": pair["id"], "file": pair["image"],
                                 "problem": "image without a ROI mask (dataset.folder.roi, roi_regex)"})
        pairs = with_roi
    return pairs, problems, images_left + masks_left


# The parts of a pre-split dataset (dataset.folder.train/val/test, and unlabelled images).
ROLES = ("train", "val", "test")
UNLABELLED = "unlabelled"


def discover_layout(root: Path, folder_cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[str]]:
    """Pairs of a flat dataset (images/ + masks/), or of each pre-split folder plus unlabelled images.

    A pre-split pair's id is ``<role>/<file id>`` (a frame named alike in train/ and test/ stays two
    images) and carries its ``role``; unlabelled images have no mask. Groups come from the file id.
    """
    given = [role for role in ROLES if folder_cfg.get(role)]
    if not given:
        pairs, problems, left_out = discover_pairs(root, folder_cfg)
    else:
        pairs, problems, left_out = [], [], []
        for role in given:
            part = {**folder_cfg, "images": folder_cfg[role]["images"], "masks": folder_cfg[role]["masks"], "roi": None}
            found, trouble, left = discover_pairs(root, part, what=f"{role}.")
            pairs += [{**p, "id": f"{role}/{p['id']}", "role": role} for p in found]
            problems += [{**p, "id": f"{role}/{p['id']}"} for p in trouble]
            left_out += left
    if folder_cfg.get(UNLABELLED):
        folder = root / folder_cfg[UNLABELLED]
        images, left = _index(folder, folder_cfg["image_regex"], "images", key=f"{UNLABELLED}")
        pairs += [{"id": f"{UNLABELLED}/{key}", "image": str(path), "mask": None, "group": f"{UNLABELLED}/{key}",
                   "role": UNLABELLED} for key, path in images.items()]
        left_out += left
    return pairs, problems, left_out


def check_pair(pair: dict[str, Any], classes: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
    """Decode one pair; return its record (size, hashes) or the problems found.

    An unlabelled image (``mask`` None) is checked alone: it only has to decode.
    """
    problems = []
    try:
        image = read_image(Path(pair["image"]))
    except DataError as exc:
        return None, [{"id": pair["id"], "file": pair["image"], "problem": str(exc)}]
    if pair["mask"] is None:
        return {**pair, "height": int(image.shape[0]), "width": int(image.shape[1]),
                "sha256_image": sha256_file(Path(pair["image"])), "sha256_mask": None}, []
    try:
        mask, unknown = decode_mask(Path(pair["mask"]), classes)
    except DataError as exc:
        return None, [{"id": pair["id"], "file": pair["mask"], "problem": str(exc)}]
    if image.shape[:2] != mask.shape:
        problems.append({
            "id": pair["id"], "file": pair["mask"],
            "problem": f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                       f"{image.shape[1]}x{image.shape[0]} ({pair['image']})",
        })
    if unknown:
        problems.append({
            "id": pair["id"], "file": pair["mask"],
            "problem": f"mask values {describe_values(unknown, classes['mask_encoding'])} are not among the "
                       f"{len(classes['names'])} declared classes {classes['names']} "
                       "(declare them in dataset.classes / the class table, or set dataset.ignore_index)",
        })
    if problems:
        return None, problems
    record = {
        **pair,
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "sha256_image": sha256_file(Path(pair["image"])),
        "sha256_mask": sha256_file(Path(pair["mask"])),
    }
    return record, []


def verify_dataset(root: Path, dataset: dict[str, Any], on_error: str) -> dict[str, Any]:
    """Check every pair under ``root``; raise DataError (policy ``fail``) or skip bad pairs."""
    dataset = effective_dataset(dataset)
    classes = resolve_classes(dataset, root)
    layout = _builtin_layout(dataset["builtin"]) if dataset["source"] == "builtin" else dataset["folder"]
    pairs, problems, left_out = discover_layout(root, layout)
    ok: list[dict[str, Any]] = []
    seen: dict[str, tuple[str, str | None]] = {}
    for pair in pairs:
        record, found = check_pair(pair, classes)
        problems.extend(found)
        if record is None:
            continue
        first = seen.get(record["sha256_image"])
        if pair.get("role") == UNLABELLED:
            # The pool is what pretraining sees instead of the labelled images: a copy of one of
            # them would let it see an image that is validated or tested on.
            if first is not None:
                which = "" if first[1] == UNLABELLED else f"{first[1] or 'labelled'} image "
                problems.append({"id": pair["id"], "file": pair["image"], "problem": f"duplicate (same sha256) of {which}{first[0]}"
                                 + ("" if first[1] == UNLABELLED else "; colorization pretraining on the unlabelled pool "
                                    "would see an image that is validated or tested on")})
                continue
        elif first is not None:
            problems.append({"id": pair["id"], "file": pair["image"], "problem": f"duplicate (same sha256) of {first[0]}"})
            continue
        if first is None or pair.get("role") != UNLABELLED:
            seen[record["sha256_image"]] = (pair["image"], pair.get("role"))
        ok.append(record)
    report = {
        "root": str(root),
        "pairs_found": len(pairs),
        "pairs_ok": len(ok),
        "on_error": on_error,
        "classes": classes,
        "problems": problems,
        # Image files in the image/mask folders that no regex matched: not data, but listed.
        "files_not_matched": left_out,
        "pairs": ok,
    }
    if problems and on_error == "fail":
        listing = "\n".join(f"  {p['file']}: {p['problem']}" for p in problems)
        raise DataError(
            f"verification found {len(problems)} problem(s) in {root}:\n{listing}\n"
            "Fix or remove these files, or set verify.on_error: skip to leave them out (they are then listed in the report)."
        )
    if not ok:
        raise DataError(f"{root}: no usable image/mask pair left after verification. Check the dataset block of the config.")
    return report


def _builtin_layout(builtin: dict[str, Any]) -> dict[str, Any]:
    """Generated data are laid out as images/<id>.png + masks/<id>.png, and its unlabelled pool as
    unlabelled/<id>.png (seglab.data.synthetic.UNLABELLED_DIR)."""
    return {"images": "images", "masks": "masks", "image_regex": "^(?P<id>.+)$",
            "mask_regex": "^(?P<id>.+)$", "group_regex": r"^(?P<group>[^_]+)_",
            UNLABELLED: UNLABELLED if builtin["unlabelled"] else None}
