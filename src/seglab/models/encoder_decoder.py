"""Encoder-decoder networks on segmentation-models-pytorch encoders.

* :func:`smp_model`: one of smp's architectures (``model.arch``) on any smp encoder
  (``model.encoder``), e.g. a ResNet34 U-Net or a MobileNetV2 DeepLabV3+.
* :class:`PlainDecoderNet`: an encoder with a plain decoder and no skip connections,
  conv-BN-ReLU-upsample blocks from the deepest feature map back to full resolution (the
  frozen-MobileNetV2 studies of the lab reports).

Shape contract (both): (N, in_channels, H, W) -> (N, out_channels, H, W) logits, H and W
divisible by 2**encoder_depth. The encoder is ``self.encoder`` and the last layer lives
under ``segmentation_head.`` or ``head.``, so freezing and weight transfer need no
per-architecture code. Weights are never downloaded here: every encoder is built with
random weights and initialised afterwards by :mod:`seglab.models.init`.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

# The architectures a config may name, mapped to smp's classes. Keys are the config values.
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "Unet": smp.Unet,
    "UnetPlusPlus": smp.UnetPlusPlus,
    "FPN": smp.FPN,
    "DeepLabV3Plus": smp.DeepLabV3Plus,
    "Linknet": smp.Linknet,
}


def encoder_names() -> list[str]:
    """Every encoder smp can build (its own, plus ``tu-<timm name>``)."""
    return smp.encoders.get_encoder_names()


def check_encoder(name: str) -> None:
    """Raise a ValueError naming ``model.encoder`` when smp does not know ``name``.

    Called by the config's validation (:mod:`seglab.config`), so builders get known names only."""
    if name.startswith("tu-") or name in encoder_names():
        return
    close = [n for n in encoder_names() if name.split("_")[0].rstrip("0123456789") in n][:8]
    hint = f" Close matches: {', '.join(close)}." if close else ""
    raise ValueError(
        f"model.encoder: smp has no encoder {name!r}.{hint} See "
        "segmentation_models_pytorch.encoders.get_encoder_names() (e.g. resnet34, mobilenet_v2)."
    )


def _check_divisible(x: torch.Tensor, depth: int) -> None:
    if x.shape[-1] % 2**depth or x.shape[-2] % 2**depth:
        raise ValueError(
            f"input size {tuple(x.shape[-2:])} is not divisible by 2**model.encoder_depth={2**depth}; "
            "change preprocess.size or model.encoder_depth"
        )


class CheckDivisible:
    """Forward pre-hook: a clear error for an input side smp's encoder cannot halve enough
    (a class, not a lambda, so that the model pickles for ``tracking.log_model``)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __call__(self, _module: nn.Module, args: tuple) -> None:
        _check_divisible(args[0], self.depth)


def smp_model(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """``model.arch`` from :data:`ARCHITECTURES` on ``model.encoder`` (random weights); the
    schema checked the arch and the config's validation the encoder (:func:`check_encoder`)."""
    arch = cfg["arch"]
    depth = cfg["encoder_depth"]
    kwargs: dict[str, Any] = {}
    if arch in ("Unet", "UnetPlusPlus"):
        # smp's U-Nets need one decoder width per encoder level.
        kwargs["decoder_channels"] = decoder_widths(cfg, depth)
    model = ARCHITECTURES[arch](
        encoder_name=cfg["encoder"], encoder_depth=depth, encoder_weights=None,
        in_channels=in_channels, classes=out_channels, **kwargs,
    )
    model.register_forward_pre_hook(CheckDivisible(depth))
    rate = cfg["decoder_dropout"]
    if rate:  # Unet and UnetPlusPlus only (the config checks it)
        blocks = model.decoder.blocks.values() if isinstance(model.decoder.blocks, nn.ModuleDict) else model.decoder.blocks
        for block in blocks:
            # smp's decoder blocks take (x, skip): a hook adds the dropout after each one without
            # changing the module tree (so weights and checkpoints keep their names).
            block.register_forward_hook(DropoutAfter(rate))
    return model


class DropoutAfter:
    """Forward hook: element-wise dropout on a module's output while it trains (picklable)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(output, self.rate, module.training)


def decoder_widths(cfg: dict[str, Any], depth: int) -> list[int]:
    """Channels of each decoder block, deepest first: ``decoder_widths`` as given, else
    ``decoder_width`` halved at each block (at least 8)."""
    widths = cfg["decoder_widths"]
    if widths is None:
        return [max(cfg["decoder_width"] // 2**i, 8) for i in range(depth)]
    return list(widths)  # one per block: the config checks the count


def decoder_block(in_ch: int, out_ch: int, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, x2 bilinear up-sampling, then (element-wise) dropout if asked.

    Dropout is the last module, so a block without it has the same weight names either way.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class PlainDecoderNet(nn.Module):
    """An smp encoder, then ``depth`` decoder blocks on its deepest feature map only.

    Decoder block i has ``widths[i]`` channels (by default ``max(decoder_width / 2**i, 8)``)
    and ends with dropout when ``decoder_dropout`` > 0; no skip connections, so the decoder
    sees only what the (possibly frozen) encoder summarised.
    """

    def __init__(self, encoder: str, in_channels: int, out_channels: int, depth: int, widths: list[int],
                 decoder_dropout: float) -> None:
        super().__init__()
        self.depth = depth
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=depth, weights=None)
        widths = [self.encoder.out_channels[-1], *widths]
        self.decoder = nn.Sequential(*[decoder_block(widths[i], widths[i + 1], decoder_dropout) for i in range(depth)])
        self.head = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.depth)
        return self.head(self.decoder(self.encoder(x)[-1]))


def plain_decoder_model(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    depth = cfg["encoder_depth"]
    return PlainDecoderNet(cfg["encoder"], in_channels, out_channels, depth, decoder_widths(cfg, depth),
                           cfg["decoder_dropout"])
