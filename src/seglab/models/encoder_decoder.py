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
    """Raise a ValueError naming ``model.encoder`` when smp does not know ``name``."""
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


def smp_model(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    """``model.arch`` from :data:`ARCHITECTURES` on ``model.encoder`` (random weights)."""
    arch = cfg["arch"]
    if arch not in ARCHITECTURES:
        raise ValueError(f"model.arch: unknown architecture {arch!r}; use one of {', '.join(ARCHITECTURES)}")
    check_encoder(cfg["encoder"])
    depth = cfg["encoder_depth"]
    kwargs: dict[str, Any] = {}
    if arch in ("Unet", "UnetPlusPlus"):
        # smp's U-Nets need one decoder width per encoder level.
        kwargs["decoder_channels"] = [max(cfg["decoder_width"] // 2**i, 8) for i in range(depth)]
    model = ARCHITECTURES[arch](
        encoder_name=cfg["encoder"], encoder_depth=depth, encoder_weights=None,
        in_channels=in_channels, classes=out_channels, **kwargs,
    )
    model.register_forward_pre_hook(lambda _module, args: _check_divisible(args[0], depth))
    return model


def decoder_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv, batch norm, ReLU, then x2 bilinear up-sampling."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


class PlainDecoderNet(nn.Module):
    """An smp encoder, then ``depth`` decoder blocks on its deepest feature map only.

    Decoder block i has ``max(decoder_width / 2**i, 8)`` channels; no skip connections, so
    the decoder sees only what the (possibly frozen) encoder summarised.
    """

    def __init__(self, encoder: str, in_channels: int, out_channels: int, depth: int = 5, decoder_width: int = 128) -> None:
        super().__init__()
        check_encoder(encoder)
        self.depth = depth
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=depth, weights=None)
        widths = [self.encoder.out_channels[-1]] + [max(decoder_width // 2**i, 8) for i in range(depth)]
        self.decoder = nn.Sequential(*[decoder_block(widths[i], widths[i + 1]) for i in range(depth)])
        self.head = nn.Conv2d(widths[-1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible(x, self.depth)
        return self.head(self.decoder(self.encoder(x)[-1]))


def plain_decoder_model(cfg: dict[str, Any], in_channels: int, out_channels: int) -> nn.Module:
    return PlainDecoderNet(cfg["encoder"], in_channels, out_channels, cfg["encoder_depth"], cfg["decoder_width"])
