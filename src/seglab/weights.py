"""Pretrained weights from the Hugging Face Hub, found in the local cache when offline.

A study that asks for published weights (e.g. an ImageNet encoder) on a machine
without network, or with ``HF_HUB_OFFLINE=1``, must stop at once with a message that
says which file is missing and how to provide it, not hang on retries or fail deep in
a download library.
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import CheckpointError

_TRUE = {"1", "true", "yes", "on"}


class WeightsUnavailable(CheckpointError):
    """Pretrained weights that cannot be had here: offline and not in the cache."""


def offline() -> bool:
    """True when the user forbade downloads (the Hub's own switches)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cache_dir() -> str:
    """The Hub cache as the Hub itself resolves it, read now (not when the Hub was imported)."""
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.environ.get("HF_HUB_CACHE") or os.path.join(home, "hub")


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """The local path of ``filename`` in the Hub repository ``repo_id``.

    Offline, only the local cache is consulted (no network call at all); a miss raises
    ``WeightsUnavailable`` naming the file, the cache folder and the ways out.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    cache = cache_dir()
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache, local_files_only=offline()))
    except LocalEntryNotFoundError:
        if offline():
            reason = "HF_HUB_OFFLINE=1 forbids downloading and it is not in the local cache"
        else:
            reason = "it could not be downloaded (no network?) and it is not in the local cache"
        raise WeightsUnavailable(
            f"pretrained weights {where}: {reason} ({cache}). Run once with network access to cache it, "
            f"copy a cache that holds it into {cache}, or use init: scratch."
        ) from None
