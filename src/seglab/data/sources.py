"""Where raw data comes from: the built-in generator, archives on the web, named datasets.

Every source ends as a folder (``data/raw/<name>``) that verification then reads
like any user folder: the generator writes ``images/``, ``masks/`` and
``classes.json``; the ``url`` and ``public`` sources unpack their archives there and
``dataset.folder`` says where the images and masks lie inside. Downloaded archives
are kept in ``data/raw/<name>.downloads/``, where a user can also put them by hand.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from .archive import extract_archive
from .catalog import effective_dataset
from .download import download
from .io import DataError
from .synthetic import generate_dataset


def downloads_dir(out_dir: Path) -> Path:
    """Archives live beside the raw folder, so rebuilding the folder never re-downloads them."""
    return out_dir.with_name(out_dir.name + ".downloads")


def archive_filename(archive: dict[str, Any]) -> str:
    if archive.get("filename"):
        return archive["filename"]
    name = PurePosixPath(unquote(urlparse(archive["url"]).path)).name
    if not name:
        raise DataError(f"dataset.url.archives: cannot name the file of {archive['url']}; set its filename.")
    return name


def fetch_archives(url_cfg: dict[str, Any], out_dir: Path, progress: bool = True) -> list[Path]:
    """Download (or re-check) every archive of a ``url`` source; return their paths."""
    folder = downloads_dir(out_dir)
    paths = []
    for archive in url_cfg["archives"]:
        dest = folder / archive_filename(archive)
        download(archive["url"], dest, archive.get("sha256"), archive.get("md5"),
                 timeout=url_cfg["timeout_s"], progress=progress)
        paths.append(dest)
    return paths


def fetch_dataset(dataset: dict[str, Any], out_dir: Path, progress: bool = True) -> None:
    """Materialise the raw dataset in ``out_dir`` (written to a temporary folder, then renamed).

    A failure leaves neither ``out_dir`` nor the temporary folder behind.
    """
    dataset = effective_dataset(dataset)
    source = dataset["source"]
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if source == "builtin":
            b = dataset["builtin"]
            generate_dataset(tmp, b["kind"], b["count"], b["size"], b["seed"], groups=b["groups"], unlabelled=b["unlabelled"])
        elif source == "url":
            if not dataset["url"]["archives"]:
                raise DataError("dataset.url.archives is empty. List the archive(s) to download, each with its url and sha256.")
            max_bytes = dataset["url"]["max_extract_mb"] * 1024 * 1024
            for path in fetch_archives(dataset["url"], out_dir, progress):
                extract_archive(path, tmp, max_bytes)
        else:
            raise ValueError(f"dataset.source {source!r} has nothing to download; it is read where it lies")
        record = {"source": source, source: dataset[source]}
        (tmp / "source.json").write_text(json.dumps(record, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
