"""Whole-image prediction by overlapping windows blended with a Gaussian importance map.

A network trained on patches predicts best near a patch's centre: border pixels see
zero padding instead of context. Like nnU-Net and MONAI's ``sliding_window_inference``,
windows of the patch size overlap and each window's probabilities are weighted by a
Gaussian centred on it (sigma = window / 8), so each pixel is decided mostly by the
windows that see it in their middle and no step shows where windows meet.

Memory stays bounded by the output. The windows form a grid (rows x columns) and the
Gaussian is separable, g(y, x) = g_h(y) g_w(x), so the summed weight at a pixel is the
product of two 1-D sums: ``sum_rows g_h`` x ``sum_cols g_w``. Only the weighted
probabilities need a full-size accumulator (P, H, W) float32; the normaliser is two
vectors, and no window keeps a full-size copy. Windows run in batches of ``batch_size``.

Shape contract: image (C, H, W) float32, already standardised -> probabilities
(P, H, W) float32, where ``predict`` maps a batch of windows (B, C, h, w) to (B, P, h, w).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# nnU-Net's choice: sigma = 1/8 of the window, so the edge of a window weighs exp(-8) of its centre.
SIGMA_SCALE = 0.125

Predictor = Callable[[torch.Tensor], torch.Tensor]


def gaussian_1d(length: int, sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """(length,) float32 Gaussian centred on the window, peak 1, every value > 0."""
    centre = (length - 1) / 2
    sigma = max(length * sigma_scale, 1e-6)
    x = torch.arange(length, dtype=torch.float64)
    g = torch.exp(-0.5 * ((x - centre) / sigma) ** 2)
    # A strictly positive floor (as nnU-Net clamps zeros): a pixel that only a window's
    # edge covers (an image corner) still gets a defined weight.
    return g.clamp(min=1e-6).float()


def gaussian_importance(window: tuple[int, int], sigma_scale: float = SIGMA_SCALE) -> torch.Tensor:
    """(h, w) importance map of one window: the outer product of two 1-D Gaussians."""
    return torch.outer(gaussian_1d(window[0], sigma_scale), gaussian_1d(window[1], sigma_scale))


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``window`` pixels covering ``length`` (>= window) pixels.

    Consecutive windows overlap by at least ``overlap`` of a window; the starts are spread
    evenly so that the first window begins at 0 and the last ends at ``length``.
    """
    if length <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = -(-(length - window) // step) + 1  # ceil: enough windows to reach the end
    span = length - window
    return [round(i * span / (count - 1)) for i in range(count)]


def _padding(size: int, window: int) -> tuple[int, int]:
    """(before, after) padding that brings a side shorter than the window up to it."""
    missing = max(window - size, 0)
    return missing // 2, missing - missing // 2


@torch.no_grad()
def sliding_window_inference(
    image: torch.Tensor,
    predict: Predictor,
    window: tuple[int, int],
    overlap: float = 0.5,
    batch_size: int = 4,
    sigma_scale: float = SIGMA_SCALE,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Probabilities (P, H, W) of ``image`` (C, H, W) predicted window by window.

    ``device`` holds the accumulator (default: the image's); windows are handed to
    ``predict`` on the image's device and its outputs moved to ``device``. A side shorter
    than the window is padded with zeros (the dataset mean after standardisation) and the
    padding cropped from the result. With one window covering the image, the result is
    the direct forward pass (the weights cancel).
    """
    if image.dim() != 3:
        raise ValueError(f"sliding_window_inference: expected one (C, H, W) image, got shape {tuple(image.shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"sliding window overlap must be in [0, 1), got {overlap}")
    wh, ww = int(window[0]), int(window[1])
    _, height, width = image.shape
    pad_top, pad_bottom = _padding(height, wh)
    pad_left, pad_right = _padding(width, ww)
    if pad_top or pad_bottom or pad_left or pad_right:
        image = F.pad(image, (pad_left, pad_right, pad_top, pad_bottom))
    _, full_h, full_w = image.shape
    device = device or image.device
    rows, cols = window_starts(full_h, wh, overlap), window_starts(full_w, ww, overlap)
    g_h, g_w = gaussian_1d(wh, sigma_scale), gaussian_1d(ww, sigma_scale)
    importance = torch.outer(g_h, g_w).to(device)
    # Summed weight per row and per column: the separable normaliser (see the module docstring).
    norm_h = torch.zeros(full_h, dtype=torch.float32)
    norm_w = torch.zeros(full_w, dtype=torch.float32)
    for top in rows:
        norm_h[top:top + wh] += g_h
    for left in cols:
        norm_w[left:left + ww] += g_w

    starts = [(top, left) for top in rows for left in cols]
    output: torch.Tensor | None = None
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        batch = torch.stack([image[:, t:t + wh, s:s + ww] for t, s in chunk])
        probs = predict(batch).to(device=device, dtype=torch.float32)
        if output is None:
            output = torch.zeros((probs.shape[1], full_h, full_w), dtype=torch.float32, device=device)
        for (top, left), window_probs in zip(chunk, probs):
            output[:, top:top + wh, left:left + ww].addcmul_(window_probs, importance)
    assert output is not None  # at least one window always exists
    output.div_(norm_h.to(device)[None, :, None]).div_(norm_w.to(device)[None, None, :])
    return output[:, pad_top:pad_top + height, pad_left:pad_left + width]
