"""Encoder initialisation by name: scratch, colorization, a local weights file, or ImageNet.

Every path is local: ImageNet weights are looked up in the Hugging Face cache that
segmentation-models-pytorch downloads into (``smp-hub/<encoder>.imagenet``), with
``HF_HUB_OFFLINE=1`` set, so an offline machine without them fails at once with a message
saying how to get them, and nothing is ever downloaded during a run or a test.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, load_checkpoint
from . import transfer_weights
from .freeze import encoder_of

INITS = ("scratch", "colorization", "file", "imagenet")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a weights-only torch file (``{'model': ...}``,
    ``{'state_dict': ...}`` or the bare dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found (init_file). Give the path of a .pt/.pth/.safetensors file.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc}).") from None
    obj = load_checkpoint(path)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (expected {{name: tensor}} or {{'model': {{...}}}}).")
    return obj


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, list[str]]:
    """Transfer a whole-model state dict, or an encoder-only one (names without ``encoder.``),
    whichever matches more tensors."""
    own = model.state_dict()

    def matches(prefix: str) -> int:
        return sum(1 for k, v in state.items() if prefix + k in own and own[prefix + k].shape == v.shape)

    prefix = "encoder." if matches("encoder.") > matches("") else ""
    try:
        return transfer_weights(model, state, prefix)
    except ValueError:
        raise CheckpointError(
            f"{source}: no tensor in it matches this model's names and shapes; check that the file was "
            "saved from the same architecture (or from its encoder alone)."
        ) from None


def imagenet_cache_file(encoder: str) -> Path:
    """The cached smp ImageNet weights of ``encoder``; CheckpointError when absent."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: nothing below may reach the network
    import segmentation_models_pytorch as smp
    from huggingface_hub import constants, try_to_load_from_cache

    settings = smp.encoders.encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if settings is None:
        raise CheckpointError(f"model.encoder {encoder!r} has no ImageNet weights in smp; use init: scratch, colorization or file.")
    found = try_to_load_from_cache(settings["repo_id"], "model.safetensors", revision=settings["revision"])
    if not isinstance(found, str):
        raise CheckpointError(
            f"ImageNet weights for encoder {encoder!r} are not in the local cache ({constants.HF_HUB_CACHE}, "
            f"repo {settings['repo_id']}) and seglab never downloads during a run. On a machine with internet run "
            f"`python -c \"import segmentation_models_pytorch as smp; smp.Unet('{encoder}', encoder_weights='imagenet')\"` "
            "(copy the cache folder here if this machine is offline), or use init: scratch / colorization / file."
        )
    return Path(found)


def initialise(model: nn.Module, variant: dict[str, Any], weights: Path | None) -> dict[str, Any]:
    """Apply the variant's ``init`` to ``model``; return what was loaded, for the run record.

    ``weights`` is the colorization checkpoint (init: colorization) or the file named by
    ``init_file`` (init: file); ImageNet weights come from the cache.
    """
    init = variant["init"]
    if init == "scratch":
        return {"init": init, "loaded": 0}
    if init in ("colorization", "file"):
        if weights is None:
            raise CheckpointError(f"variant {variant.get('variant')!r} has init: {init} but no weights file was given.")
        result = load_matching(model, read_state_dict(weights), str(weights))
        return {"init": init, "loaded": len(result["loaded"]), "skipped": len(result["skipped"]), "source": str(weights)}
    if init == "imagenet":  # the config allows it for smp's own encoders only
        from safetensors.torch import load_file

        path = imagenet_cache_file(variant["model"]["encoder"])
        encoder_of(model).load_state_dict(load_file(str(path), device="cpu"))
        return {"init": init, "loaded": len(encoder_of(model).state_dict()), "source": str(path)}
    raise ValueError(f"init: unknown initialisation {init!r}; use one of {', '.join(INITS)}")
