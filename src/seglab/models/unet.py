"""A parametric U-Net (Ronneberger et al., 2015) whose every choice is a config key.

Shape contract: input (N, in_channels, H, W) with H and W divisible by 2**depth;
output (N, out_channels, H, W) logits. ``kernel_size`` may give one side per level (the
lab reports' variants put a 7x7 kernel on the first level only). The contracting path is ``self.encoder`` (so it
can be frozen or initialised like any other encoder) and the final 1x1 convolution is
``self.head`` (so pretrained weights transfer to everything but the head).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

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


def level_kernels(kernel_size: int | Sequence[int], depth: int) -> list[int]:
    """One kernel side per level (``depth + 1``: the full-resolution level first, the bottleneck
    last); an int is the same side everywhere (the config checked sides and count)."""
    return [kernel_size] * (depth + 1) if isinstance(kernel_size, int) else list(kernel_size)


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
    """The ``model`` options of ``name: unet``, as the validated config gives them (their
    values, ranges and defaults are the schema's). ``dropout_in`` names where dropout goes:
    ``encoder`` (the levels above the bottleneck), ``bottleneck`` (the deepest encoder level)
    and ``decoder``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        base: int,
        depth: int,
        batch_norm: bool,
        dropout: float,
        upsample: str,
        kernel_size: int | Sequence[int],
        dropout_in: Sequence[str],
    ) -> None:
        super().__init__()
        kernels = level_kernels(kernel_size, depth)
        widths = [base * 2**i for i in range(depth + 1)]
        self.depth = depth

        def rate(place: str) -> float:
            return dropout if place in dropout_in else 0.0

        levels = [conv_block(in_channels, widths[0], batch_norm, rate("encoder"), kernels[0])]
        for i in range(depth):
            place = "bottleneck" if i == depth - 1 else "encoder"
            levels.append(conv_block(widths[i], widths[i + 1], batch_norm, rate(place), kernels[i + 1]))
        self.encoder = nn.ModuleList(levels)
        self.pool = nn.MaxPool2d(2)
        # The decoder block of level i uses the kernel of encoder level i (mirror image).
        self.decoder = nn.ModuleList(
            [Up(widths[i + 1], widths[i], upsample, batch_norm, rate("decoder"), kernels[i]) for i in reversed(range(depth))]
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
