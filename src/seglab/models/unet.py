"""A parametric U-Net (Ronneberger et al., 2015) whose every choice is a config key.

Shape contract: input (N, in_channels, H, W) with H and W divisible by 2**depth;
output (N, out_channels, H, W) logits. The contracting path is ``self.encoder`` (so it
can be frozen or initialised like any other encoder) and the final 1x1 convolution is
``self.head`` (so pretrained weights transfer to everything but the head).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

# Where dropout may go: the encoder levels above the bottleneck, the bottleneck (deepest
# encoder level) and the decoder levels. The lab reports put it in bottleneck + decoder.
DROPOUT_PLACES = ("encoder", "bottleneck", "decoder")


def conv_block(in_ch: int, out_ch: int, batch_norm: bool, dropout: float, kernel_size: int = 3) -> nn.Sequential:
    """Two same-padded convolutions; bias is redundant before batch norm, so it is dropped there."""
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, kernel_size, padding=kernel_size // 2,
                                bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    if dropout > 0:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class Up(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, mode: str, batch_norm: bool, dropout: float, kernel_size: int = 3) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(in_ch, out_ch, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, out_ch, 1),
            )
        self.conv = conv_block(out_ch * 2, out_ch, batch_norm, dropout, kernel_size)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base: int = 16,
        depth: int = 3,
        batch_norm: bool = True,
        dropout: float = 0.0,
        upsample: str = "transpose",
        kernel_size: int = 3,
        dropout_in: Sequence[str] = ("bottleneck", "decoder"),
    ) -> None:
        super().__init__()
        if upsample not in ("transpose", "bilinear"):
            raise ValueError(f"model.upsample must be 'transpose' or 'bilinear', got {upsample!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size must be an odd positive integer (3, 5, 7), got {kernel_size}")
        unknown = set(dropout_in) - set(DROPOUT_PLACES)
        if unknown:
            raise ValueError(f"model.dropout_in: unknown place(s) {sorted(unknown)}; use {', '.join(DROPOUT_PLACES)}")
        widths = [base * 2**i for i in range(depth + 1)]
        self.depth = depth

        def rate(place: str) -> float:
            return dropout if place in dropout_in else 0.0

        levels = [conv_block(in_channels, widths[0], batch_norm, rate("encoder"), kernel_size)]
        for i in range(depth):
            place = "bottleneck" if i == depth - 1 else "encoder"
            levels.append(conv_block(widths[i], widths[i + 1], batch_norm, rate(place), kernel_size))
        self.encoder = nn.ModuleList(levels)
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            [Up(widths[i + 1], widths[i], upsample, batch_norm, rate("decoder"), kernel_size) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.depth or x.shape[-2] % 2**self.depth:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by 2**model.depth={2**self.depth}; "
                "change preprocess.size or model.depth"
            )
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)
