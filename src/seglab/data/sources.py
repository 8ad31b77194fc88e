"""Where raw data comes from: the built-in generator (more sources come with the data issue).

Every source ends as a folder laid out as ``images/``, ``masks/`` and ``classes.json``,
which verification then reads like any user folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .synthetic import generate_dataset


def fetch_dataset(dataset: dict[str, Any], out_dir: Path) -> None:
    """Materialise the raw dataset in ``out_dir`` (written to a temporary folder, then renamed)."""
    source = dataset["source"]
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if source == "builtin":
        b = dataset["builtin"]
        generate_dataset(tmp, b["kind"], b["count"], b["size"], b["seed"], groups=b["groups"])
    else:
        raise ValueError(f"dataset.source {source!r} has nothing to download; it is read where it lies")
    (tmp / "source.json").write_text(json.dumps({"source": source, **{source: dataset[source]}}, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
