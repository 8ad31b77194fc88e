"""Model registry: ``model.name`` in the config picks the builder; the rest are its options.

Every builder returns an ``nn.Module`` mapping (N, in_channels, H, W) to (N, out_channels, H, W)
logits, with its contracting path at ``model.encoder`` (frozen or initialised by name, see
:mod:`.freeze` and :mod:`.weights`) and its final layer named in :data:`HEAD_PREFIXES` so
weight transfer can skip it. Builders never download weights.

* ``unet``: the parametric U-Net of :mod:`.unet`.
* ``smp``: a segmentation-models-pytorch architecture (``arch``) on any smp ``encoder``.
* ``plain_decoder``: an smp ``encoder`` with a decoder without skip connections.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .unet import UNet

HEAD_PREFIXES = ("head.", "segmentation_head.")


def _unet(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    return UNet(
        in_channels,
        out_channels,
        base=cfg["base"],
        depth=cfg["depth"],
        batch_norm=cfg["batch_norm"],
        dropout=cfg["dropout"],
        upsample=cfg["upsample"],
        kernel_size=cfg["kernel_size"],  # one side, or one per level
        dropout_in=cfg["dropout_in"],
    )


def _smp(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    # segmentation-models-pytorch pulls in timm and torchvision (~1.5 s): every training job
    # imports this package, so only the jobs that build an smp model pay for it.
    from .encoder_decoder import smp_model

    return smp_model(cfg, in_channels, out_channels)


def _plain_decoder(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    from .encoder_decoder import plain_decoder_model

    return plain_decoder_model(cfg, in_channels, out_channels)


MODELS: dict[str, Callable[[dict[str, Any], int, int], nn.Module]] = {
    "unet": _unet,
    "smp": _smp,
    "plain_decoder": _plain_decoder,
}

def build_model(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """The network of a validated ``model`` block (:func:`seglab.config.validate` checked the
    name, the options and the encoder)."""
    model = MODELS[cfg["name"]](cfg, in_channels, out_channels)
    if cfg["output_activation"] == "relu":
        # A ReLU on the logits (the output layer of the Oxford-Pet report's ResNet34-UNet): the
        # losses still read them as logits, so negative evidence is cut off. A forward hook keeps
        # the module tree, hence the weight names, the same as without it.
        model.register_forward_hook(relu_output)
    return model


def relu_output(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of ``output_activation: relu`` (a named function, so models still pickle)."""
    return torch.relu(output)


def output_channels(num_classes: int, binary_head: str) -> int:
    """Logits the head needs: 1 for a sigmoid binary head, else one per class."""
    if num_classes == 2 and binary_head == "sigmoid":
        return 1
    return num_classes


def count_parameters(model: nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"params_trainable": trainable, "params_frozen": total - trainable}


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, list[str]]:
    """Load every pretrained tensor whose name (after ``prefix``) and shape match, except the head.

    ``prefix`` lets an encoder-only state dict (``conv1.weight``) load into ``encoder.conv1.weight``.
    Returns the names loaded and skipped so that the run can record what was transferred.
    """
    own = model.state_dict()
    loaded, skipped = [], []
    for name, tensor in state.items():
        target = prefix + name
        if target.startswith(HEAD_PREFIXES) or target not in own or own[target].shape != tensor.shape:
            skipped.append(name)
            continue
        own[target] = tensor
        loaded.append(target)
    if not loaded:
        raise ValueError("the pretrained weights share no layer with this model; check that init and model match")
    model.load_state_dict(own)
    return {"loaded": loaded, "skipped": skipped}
