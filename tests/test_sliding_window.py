"""Sliding-window inference (seglab.sliding_window): coverage, blending, padding, batching."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seglab.config import validate
from seglab.models import build_model
from seglab.sliding_window import gaussian_importance, sliding_window_inference, window_starts


def small_unet(out_channels: int = 1) -> nn.Module:
    cfg = validate({"variants": {"v": {"model": {"name": "unet", "base": 4, "depth": 2}}}})["variants"]["v"]["model"]
    torch.manual_seed(0)
    return build_model(cfg, 3, out_channels).eval()


def sigmoid_of(model: nn.Module):
    return lambda batch: torch.sigmoid(model(batch))


@pytest.mark.parametrize("length,window,overlap", [(100, 32, 0.5), (33, 32, 0.25), (32, 32, 0.5), (577, 96, 0.0), (1000, 64, 0.9)])
def test_windows_cover_the_side_evenly_with_at_least_the_overlap(length, window, overlap):
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] + window == length
    steps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(0 < s <= max(1, int(window * (1 - overlap))) for s in steps)
    assert max(steps, default=0) - min(steps, default=0) <= 1  # spread evenly


def test_one_window_over_the_whole_image_is_the_direct_forward_pass():
    model = small_unet()
    image = torch.randn(3, 48, 64)
    direct = torch.sigmoid(model(image[None]))[0]
    windowed = sliding_window_inference(image, sigmoid_of(model), (48, 64), overlap=0.5)
    torch.testing.assert_close(windowed, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("height,width", [(37, 53), (20, 45), (97, 31), (64, 64)])
def test_odd_sizes_and_padding_keep_every_pixel_exact(height, width):
    # A per-pixel network gives the same value for a pixel in every window that covers it,
    # so any error in coverage, weighting, padding or cropping shows as a difference.
    torch.manual_seed(1)
    pixelwise = nn.Conv2d(3, 2, kernel_size=1)
    image = torch.randn(3, height, width)
    direct = torch.softmax(pixelwise(image[None]), dim=1)[0]
    windowed = sliding_window_inference(image, lambda b: torch.softmax(pixelwise(b), dim=1), (32, 32), overlap=0.5, batch_size=3)
    assert windowed.shape == (2, height, width)
    torch.testing.assert_close(windowed, direct, rtol=1e-5, atol=1e-6)


def test_batch_size_does_not_change_the_result():
    model = small_unet(3)
    image = torch.randn(3, 70, 90)
    predict = lambda b: torch.softmax(model(b), dim=1)  # noqa: E731
    one = sliding_window_inference(image, predict, (32, 32), overlap=0.5, batch_size=1)
    many = sliding_window_inference(image, predict, (32, 32), overlap=0.5, batch_size=7)
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)
    assert torch.allclose(one.sum(0), torch.ones(70, 90), atol=1e-5)  # still a distribution per pixel


def _blur_model() -> nn.Module:
    """A 3x3 box filter with zero padding: constant inside a window, a step on its border."""
    conv = nn.Conv2d(3, 1, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 27)
    return conv


def _interior_deviation(sigma_scale: float) -> tuple[float, float]:
    model = _blur_model()
    image = torch.ones(3, 96, 96)
    with torch.no_grad():
        single = model(torch.ones(1, 3, 32, 32))[0, 0]
    border_step = float(single[16, 16] - single[0, 16])  # what one window shows at its edge
    out = sliding_window_inference(image, model, (32, 32), overlap=0.5, sigma_scale=sigma_scale)[0]
    inner = out[1:-1, 1:-1]  # the image's own border is zero-padded by the model itself
    return float((inner - single[16, 16]).abs().max()), border_step


def test_no_seams_on_a_constant_image():
    deviation, step = _interior_deviation(0.125)
    assert step > 0.3
    assert deviation < 0.01 * step
    # The same check fails without the Gaussian: flat weights average the window edges in.
    flat_deviation, _ = _interior_deviation(1e4)
    assert flat_deviation > 0.1 * step


def test_importance_peaks_at_the_centre_and_stays_positive():
    g = gaussian_importance((32, 48))
    assert g.shape == (32, 48) and float(g.min()) > 0
    centre = g[15:17, 23:25]  # an even side has two centre pixels
    torch.testing.assert_close(centre, torch.full_like(centre, float(g.max())))
    assert float(g[0, 0]) < 1e-6 * float(g.max())


def test_a_batch_of_images_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        sliding_window_inference(torch.zeros(1, 3, 32, 32), lambda b: b, (32, 32))
