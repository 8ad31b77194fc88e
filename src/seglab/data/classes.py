"""Resolve what the mask values of a dataset mean: class names, encoding, ignore label.

Every encoding is reduced to *labels* 0..L-1, each with a name and the raw mask
values that stand for it, then to a value map raw value -> class index:

- ``binary``: masks thresholded to 0/1 (0/255, 0/1 and JPEG-noisy masks alike).
- ``labels``: the raw value is the label (CamVid's 0..11, palette PNG indices).
- ``grey_levels``: label k is drawn with grey level(s) ``grey_levels[k]``, or as a
  mapping file says (EndoVis ships ``{"Shaft": 10, "Wrist": 20, ...}``).
- ``rgb``: label k is drawn in colour ``palette[k]``, or as a mapping file says.

``ignore_index`` names a label (for ``labels``, any raw value such as 255) whose
pixels are excluded from losses and metrics; it is not a class. Class names are
indexed by label, so the ignored label's name (CamVid's "Unlabelled") is dropped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .io import IGNORE, DataError

DEFAULT_CLASSES = ["background", "foreground"]
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")
_TRIPLE = re.compile(r"^\s*(\d+)\s*[, ]\s*(\d+)\s*[, ]\s*(\d+)\s*$")


def _read_meta(root: Path) -> dict[str, Any]:
    meta_file = root / "classes.json"
    if not meta_file.is_file():
        return {}
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_file}: not valid JSON ({exc}). Fix or remove the file.") from None
    # Publishers write the names as a list or as {"0": "Sky", ...}; both are indexed by label.
    names = meta.get("names", meta.get("classes"))
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    return {**meta, "names": names}


def _colour(value: Any, where: str) -> int:
    if isinstance(value, str) and (m := _HEX.match(value) or _TRIPLE.match(value)):
        if len(m.groups()) == 1:
            return int(m.group(1), 16)
        r, g, b = (int(x) for x in m.groups())
    elif isinstance(value, (list, tuple)) and len(value) == 3:
        r, g, b = (int(x) for x in value)
    else:
        raise DataError(f"{where}: {value!r} is not a colour; write [r, g, b], 'r,g,b' or '#rrggbb'.")
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise DataError(f"{where}: colour {value!r} has a channel outside 0..255.")
    return (r << 16) | (g << 8) | b


def _raw_values(value: Any, encoding: str, where: str) -> list[int]:
    """One label's raw values: a grey level or colour, or a list of them."""
    if encoding == "rgb":
        if isinstance(value, list) and value and isinstance(value[0], (list, str)):
            return [_colour(v, where) for v in value]
        return [_colour(value, where)]
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
        raise DataError(f"{where}: grey levels must be integers 0..255, got {value!r}.")
    return list(values)


def read_mapping_file(path: Path, encoding: str) -> list[tuple[str | None, list[int]]]:
    """Labels (name, raw values) from a mapping file, in label order.

    Accepted forms: ``{"10": 1, "20": "Wrist"}`` (raw value -> label index or name),
    ``{"Shaft": 10, "Wrist": 20}`` (name -> raw value, EndoVis style; labels follow
    the raw values in ascending order and raw 0/black becomes "background" unless
    listed), and ``[{"name": ..., "color"|"value": ..., "classid": k}, ...]``.
    """
    if not path.is_file():
        raise DataError(f"{path}: mapping file not found. Check dataset.mask_mapping (relative to the dataset root).")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}).") from None
    where = str(path)
    if isinstance(data, list):
        rows = []
        for i, item in enumerate(data):
            raw = item.get("color", item.get("colour", item.get("value", item.get("grey"))))
            label = item.get("classid", item.get("class", item.get("label", i)))
            rows.append((int(label), item.get("name"), _raw_values(raw, encoding, where)))
        rows.sort(key=lambda r: r[0])
        if [r[0] for r in rows] != list(range(len(rows))):
            raise DataError(f"{path}: class ids must be 0..{len(rows) - 1}, each once.")
        return [(name, raw) for _, name, raw in rows]
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a JSON object or list describing the mask values.")
    keys_are_values = all(k.strip().isdigit() or _HEX.match(k) or _TRIPLE.match(k) for k in data)
    if keys_are_values:
        by_label: dict[Any, list[int]] = {}
        for key, label in data.items():
            raw = _raw_values(int(key) if key.strip().isdigit() and encoding != "rgb" else key, encoding, where)
            by_label.setdefault(label, []).extend(raw)
        if all(isinstance(k, int) for k in by_label):
            if sorted(by_label) != list(range(len(by_label))):
                raise DataError(f"{path}: class indices must be 0..{len(by_label) - 1}, each used at least once.")
            return [(None, by_label[k]) for k in sorted(by_label)]
        return [(str(k), v) for k, v in by_label.items()]
    labels = sorted(((name, _raw_values(v, encoding, where)) for name, v in data.items()), key=lambda r: r[1][0])
    if not any(0 in raw for _, raw in labels):
        labels.insert(0, ("background", [0]))
    return labels


def _labels_from_config(dataset: dict[str, Any], meta: dict[str, Any], root: Path, encoding: str) -> list[tuple[str | None, list[int]]]:
    if dataset.get("mask_mapping"):
        path = Path(dataset["mask_mapping"])
        return read_mapping_file(path if path.is_absolute() else root / path, encoding)
    table = dataset.get("grey_levels") if encoding == "grey_levels" else dataset.get("palette")
    table = table or meta.get("grey_levels" if encoding == "grey_levels" else "palette")
    key = "dataset.grey_levels" if encoding == "grey_levels" else "dataset.palette"
    if not table:
        raise DataError(f"{key} (or dataset.mask_mapping) is needed for mask_encoding {encoding}: say which value draws each class.")
    return [(None, _raw_values(v, encoding, key)) for v in table]


def _auto_encoding(dataset: dict[str, Any], meta: dict[str, Any], names: list[str] | None) -> str:
    if meta.get("mask_encoding"):
        return meta["mask_encoding"]
    if dataset.get("grey_levels"):
        return "grey_levels"
    if dataset.get("palette"):
        return "rgb"
    return "binary" if names is None or len(names) == 2 else "labels"


def resolve_classes(dataset: dict[str, Any], root: Path) -> dict[str, Any]:
    """``{names, mask_encoding, ignore_index, value_map}``: config first, then ``root/classes.json``.

    ``value_map`` is a list of [raw value, class index or IGNORE] pairs.
    """
    meta = _read_meta(root)
    names_cfg = dataset.get("classes") or meta.get("names")
    encoding = dataset.get("mask_encoding", "auto")
    if encoding == "auto":
        encoding = _auto_encoding(dataset, meta, names_cfg)
    ignore = dataset.get("ignore_index")
    if ignore is None:
        ignore = meta.get("ignore_index")

    if encoding == "binary":
        if ignore is not None:
            raise DataError("dataset.ignore_index has no meaning for binary masks (thresholded to 0/1). "
                            "Use mask_encoding: labels or grey_levels to ignore a value.")
        labels: list[tuple[str | None, list[int]]] = [(None, [0]), (None, [1])]
    elif encoding == "labels":
        n = len(names_cfg) if names_cfg else 2
        labels = [(None, [v]) for v in range(n)]
    elif encoding in ("grey_levels", "rgb"):
        labels = _labels_from_config(dataset, meta, root, encoding)
    else:
        raise DataError(f"dataset.mask_encoding: unknown encoding {encoding!r}.")

    names_all = list(names_cfg) if names_cfg else [n or f"class_{k}" for k, (n, _) in enumerate(labels)]
    if names_cfg is None and len(labels) == 2 and not any(n for n, _ in labels):
        names_all = list(DEFAULT_CLASSES)
    if len(names_all) != len(labels):
        raise DataError(
            f"dataset.classes names {len(names_all)} classes but the mask encoding ({encoding}) defines {len(labels)}. "
            "Give one name per label, in label order (the ignored label included)."
        )
    value_map: dict[int, int] = {}
    names: list[str] = []
    for label, (_, raw_values) in enumerate(labels):
        target = IGNORE if label == ignore else len(names)
        if label != ignore:
            names.append(str(names_all[label]))
        for raw in raw_values:
            if raw in value_map:
                raise DataError(f"raw mask value {raw} is given to two labels; check the class table of the dataset block.")
            value_map[raw] = target
    if ignore is not None and ignore >= len(labels):
        if encoding != "labels":
            raise DataError(f"dataset.ignore_index {ignore} is not a label of the {len(labels)}-entry class table.")
        value_map[ignore] = IGNORE  # e.g. 255 = "void" in label maps: a raw value beyond the classes
    if len(names) < 2:
        raise DataError("the dataset defines fewer than two classes once the ignore label is removed; check dataset.classes.")
    return {
        "names": names,
        "mask_encoding": encoding,
        "ignore_index": ignore,
        "value_map": sorted([raw, cls] for raw, cls in value_map.items()),
    }
