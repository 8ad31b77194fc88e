"""Unpack zip and tar archives safely.

Every member is checked before anything is written: absolute paths, ``..``
components, links and device files are refused (they could write outside the
target folder), and the declared total size must stay under a limit (a small
archive that unpacks to terabytes). The bytes actually written are counted too,
since a zip header can lie about its sizes.
"""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from .io import DataError


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive}: refused member {name!r}: absolute path. The archive is unsafe; do not use it.")
    if ".." in path.parts:
        raise DataError(f"{archive}: refused member {name!r}: it climbs out with '..'. The archive is unsafe; do not use it.")
    return path


def _members(archive: Path) -> Iterator[tuple[PurePosixPath, bool, int, object]]:
    """(relative path, is_dir, declared size, handle) of every member, after the safety checks."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if (mode & 0o170000) == 0o120000:
                    raise DataError(f"{archive}: refused member {info.filename!r}: a symbolic link. The archive is unsafe.")
                yield _safe_name(info.filename, archive), info.is_dir(), info.file_size, info
        return
    try:
        tf = tarfile.open(archive)
    except tarfile.TarError:
        raise DataError(f"{archive}: neither a zip nor a tar archive (or it is damaged). Delete it and download again.") from None
    with tf:
        for member in tf.getmembers():
            if member.issym() or member.islnk():
                raise DataError(f"{archive}: refused member {member.name!r}: a link. The archive is unsafe; do not use it.")
            if not (member.isfile() or member.isdir()):
                raise DataError(f"{archive}: refused member {member.name!r}: not a file or folder. The archive is unsafe.")
            yield _safe_name(member.name, archive), member.isdir(), member.size, member


def check_archive(archive: Path, max_bytes: int) -> int:
    """Check every member; return the declared unpacked size. Raises DataError."""
    total = 0
    try:
        for _, _, size, _ in _members(archive):
            total += size
            if total > max_bytes:
                raise DataError(
                    f"{archive}: unpacks to more than {max_bytes} bytes. If that is expected, raise dataset.url.max_extract_mb."
                )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: damaged archive ({exc}). Delete it and download again.") from None
    return total


def _copy(src: IO[bytes], dst: Path, budget: int, archive: Path) -> int:
    written = 0
    with open(dst, "wb") as out:
        while block := src.read(1 << 20):
            written += len(block)
            if written > budget:
                raise DataError(f"{archive}: unpacks to more than its limit. Raise dataset.url.max_extract_mb if expected.")
            out.write(block)
    return written


def extract_archive(archive: Path, dest: Path, max_bytes: int) -> None:
    """Unpack ``archive`` into ``dest`` (created); nothing is written unless every member is safe."""
    check_archive(archive, max_bytes)
    budget = max_bytes
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for rel, is_dir, _, info in _members(archive):
                    target = dest.joinpath(*rel.parts)
                    if is_dir:
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src:  # type: ignore[arg-type]
                        budget -= _copy(src, target, budget, archive)
        else:
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    rel = _safe_name(member.name, archive)
                    target = dest.joinpath(*rel.parts)
                    if member.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tf.extractfile(member)
                    if src is None:
                        raise DataError(f"{archive}: member {member.name!r} cannot be read. Delete the archive and download again.")
                    with src:
                        budget -= _copy(src, target, budget, archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: damaged archive ({exc}). Delete it and download again.") from None

