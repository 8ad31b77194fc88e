"""url source: download over HTTP from a local server, checksum, resume, safe extraction."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.archive import extract_archive
from seglab.data.download import download
from seglab.data.io import DataError
from seglab.data.sources import downloads_dir, fetch_dataset
from seglab.data.verify import verify_dataset


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder, honours single ``bytes=N-`` ranges, and can cut a transfer short."""

    cut_after: int | None = None   # close the connection after this many body bytes (once)
    ranges: list[str] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        header = self.headers.get("Range")
        type(self).ranges.append(header or "")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = type(self).cut_after
        if cut is not None:
            type(self).cut_after = None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (_Handler,), {"cut_after": None, "ranges": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _dataset_members(n: int = 6) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    members = {}
    for i in range(n):
        image = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        mask = np.zeros((16, 16), np.uint8)
        mask[2:8 + i, 3:9] = 255
        members[f"pack/images/case{i}.png"] = _png(image)
        members[f"pack/masks/case{i}.png"] = _png(mask)
    # Random padding makes the archive big enough to cut in the middle.
    members["pack/README.bin"] = rng.integers(0, 255, 200_000, dtype=np.uint8).tobytes()
    return members


def _zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _url_dataset(url: str, sha256: str | None) -> dict:
    return {
        "name": "served", "source": "url",
        "url": {"archives": [{"url": url, "sha256": sha256, "md5": None, "filename": None}],
                "max_extract_mb": 10, "timeout_s": 5},
        "folder": {"root": "", "images": "pack/images", "masks": "pack/masks",
                   "image_regex": "^(?P<id>.+)$", "mask_regex": "^(?P<id>.+)$", "group_regex": None},
        "classes": None, "mask_encoding": "binary", "ignore_index": None,
        "grey_levels": None, "palette": None, "mask_mapping": None,
    }


def test_download_checksum_extract_and_verify(tmp_path: Path, server) -> None:
    served, base, _ = server
    sha = _zip(served / "pack.zip", _dataset_members())
    raw = tmp_path / "data" / "raw" / "served"
    dataset = _url_dataset(f"{base}/pack.zip", sha)

    fetch_dataset(dataset, raw, progress=False)

    assert (downloads_dir(raw) / "pack.zip").read_bytes() == (served / "pack.zip").read_bytes()
    assert sorted(p.name for p in (raw / "pack" / "images").iterdir()) == [f"case{i}.png" for i in range(6)]
    assert not list(raw.parent.glob("*.partial")) and not list(downloads_dir(raw).glob("*.part"))
    report = verify_dataset(raw, dataset, "fail")
    assert report["pairs_ok"] == 6 and report["classes"]["names"] == ["background", "foreground"]


def test_interrupted_download_resumes_with_range(tmp_path: Path, server) -> None:
    served, base, handler = server
    sha = _zip(served / "pack.zip", _dataset_members())
    size = (served / "pack.zip").stat().st_size
    dest = tmp_path / "dl" / "pack.zip"
    handler.cut_after = 100_000

    with pytest.raises(DataError) as broken:
        download(f"{base}/pack.zip", dest, sha256=sha, timeout=5, progress=False)
    message = str(broken.value)
    assert "broke after 100000" in message and "resumes" in message and str(dest) in message
    assert not dest.exists()  # the final name never holds a partial file
    part = dest.with_name("pack.zip.part")
    assert part.stat().st_size == 100_000

    download(f"{base}/pack.zip", dest, sha256=sha, timeout=5, progress=False)

    assert handler.ranges[-1] == "bytes=100000-"  # the second request asked only for the rest
    assert dest.stat().st_size == size and hashlib.sha256(dest.read_bytes()).hexdigest() == sha
    assert not part.exists()


def test_checksum_mismatch_leaves_nothing_behind(tmp_path: Path, server) -> None:
    served, base, _ = server
    _zip(served / "pack.zip", _dataset_members())
    raw = tmp_path / "raw" / "served"
    wrong = "0" * 64

    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset(_url_dataset(f"{base}/pack.zip", wrong), raw, progress=False)

    assert not raw.exists() and not raw.with_name("served.partial").exists()
    assert list(downloads_dir(raw).iterdir()) == []


def test_corrupted_archive_is_rejected_and_leaves_nothing(tmp_path: Path, server) -> None:
    served, base, _ = server
    _zip(served / "good.zip", _dataset_members())
    data = bytearray((served / "good.zip").read_bytes())
    data[len(data) // 3: len(data) // 3 + 4000] = b"\0" * 4000  # damage member bytes, not the directory
    (served / "bad.zip").write_bytes(bytes(data))
    sha = hashlib.sha256(bytes(data)).hexdigest()  # the checksum matches: the archive itself is bad
    raw = tmp_path / "raw" / "served"

    with pytest.raises(DataError, match="damaged archive"):
        fetch_dataset(_url_dataset(f"{base}/bad.zip", sha), raw, progress=False)

    assert not raw.exists() and not raw.with_name("served.partial").exists()


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("pack/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        tf.addfile(member, io.BytesIO(data) if data else None)


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink"])
def test_unsafe_tar_members_are_refused(tmp_path: Path, kind: str) -> None:
    if kind == "dotdot":
        member = tarfile.TarInfo("pack/../../evil.txt")
    elif kind == "absolute":
        member = tarfile.TarInfo(str(tmp_path / "evil.txt"))
    else:
        member = tarfile.TarInfo("pack/link")
        member.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        member.linkname = "/etc/passwd"
    data = b"evil"
    if kind in ("dotdot", "absolute"):
        member.size = len(data)
    archive = tmp_path / "evil.tar.gz"
    _tar_with(archive, member, data if member.isfile() else b"")
    dest = tmp_path / "out"

    with pytest.raises(DataError, match="refused member"):
        extract_archive(archive, dest, max_bytes=10**6)

    assert not dest.exists()  # checked before anything was written
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_zip_traversal_and_oversize_are_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../evil.txt", b"evil")
    with pytest.raises(DataError, match="climbs out"):
        extract_archive(evil, tmp_path / "out", max_bytes=10**6)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 2_000_000)
    assert bomb.stat().st_size < 50_000
    with pytest.raises(DataError, match="max_extract_mb"):
        extract_archive(bomb, tmp_path / "out2", max_bytes=1_000_000)
    assert not (tmp_path / "out2").exists()


def test_offline_fails_fast_naming_url_and_folder(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: connection refused, as offline
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/pack.zip"
    raw = tmp_path / "raw" / "served"
    with pytest.raises(DataError) as error:
        fetch_dataset(_url_dataset(url, None), raw, progress=False)
    message = str(error.value)
    assert url in message and "offline" in message
    assert f"put it at {downloads_dir(raw) / 'pack.zip'}" in message  # where to put the file by hand
    assert not raw.exists()


def test_file_put_there_by_hand_is_used_without_network(tmp_path: Path, server) -> None:
    served, _, _ = server
    sha = _zip(served / "pack.zip", _dataset_members())
    raw = tmp_path / "raw" / "served"
    downloads_dir(raw).mkdir(parents=True)
    (downloads_dir(raw) / "pack.zip").write_bytes((served / "pack.zip").read_bytes())

    fetch_dataset(_url_dataset("http://127.0.0.1:9/pack.zip", sha), raw, progress=False)  # port 9: nothing there

    assert len(list((raw / "pack" / "masks").iterdir())) == 6
