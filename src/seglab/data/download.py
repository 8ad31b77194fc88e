"""Download one file over HTTP(S): progress bar, resume by HTTP Range, checksum.

The bytes go to ``<name>.part`` next to the destination; only a complete file whose
checksum matches is renamed to its final name, so the final name never holds a
partial or corrupt file. A broken transfer keeps the ``.part`` (and says so) so the
next run resumes it; a checksum mismatch deletes it (its bytes cannot be trusted).
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .io import DataError

CHUNK = 1 << 16


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def check_digest(path: Path, sha256: str | None, md5: str | None) -> str | None:
    """None when the file matches every checksum given, else what went wrong."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                return f"{algorithm} is {actual}, expected {expected}"
    return None


def _manual_hint(url: str, dest: Path) -> str:
    return (f"If this machine is offline, download {url} elsewhere and put it at {dest} "
            f"(folder {dest.parent}), then run again.")


def _open(url: str, offset: int, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "seglab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)


def download(url: str, dest: Path, sha256: str | None = None, md5: str | None = None,
             timeout: float = 20.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``); verify; return ``dest``.

    A ``dest`` already present is only re-checked, so files put there by hand are used.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if (problem := check_digest(dest, sha256, md5)) is None:
            return dest
        dest.unlink()
        print(f"{dest}: {problem}; downloading it again", file=sys.stderr)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the .part already holds every byte
            response = None
        else:
            raise DataError(f"cannot download {url}: HTTP {exc.code} {exc.reason}. {_manual_hint(url, dest)}") from None
    except (urllib.error.URLError, socket.timeout, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"cannot download {url}: {reason}. {_manual_hint(url, dest)}") from None

    if response is not None:
        with response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the Range request: start again from byte 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            written = offset
            try:
                with open(part, "ab" if offset else "wb") as out, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=dest.name, file=sys.stderr, disable=not progress, mininterval=1.0,
                ) as bar:
                    while block := response.read(CHUNK):
                        out.write(block)
                        written += len(block)
                        bar.update(len(block))
            except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
                raise _broken(url, dest, part, written, total, exc) from None
            if total is not None and written < total:
                raise _broken(url, dest, part, written, total, "connection closed early")

    if (problem := check_digest(part, sha256, md5)) is not None:
        part.unlink()
        raise DataError(
            f"{url}: checksum mismatch ({problem}); the download was deleted. "
            "Run again; if it persists the file on the server changed: check dataset.url.archives."
        )
    part.replace(dest)
    return dest


def _broken(url: str, dest: Path, part: Path, written: int, total: int | None, why: Any) -> DataError:
    of = f" of {total}" if total is not None else ""
    return DataError(
        f"download of {url} broke after {written}{of} bytes ({why}). Nothing was written to {dest}; "
        f"the bytes so far are kept in {part} and the next run resumes from there."
    )
