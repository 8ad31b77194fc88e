"""Class activation maps for any torch image classifier: Grad-CAM and plain CAM.

* Grad-CAM (Selvaraju et al. 2017): the target layer's feature maps ``A_k``, weighted by the
  spatial mean of the class score's gradient ``d y_c / d A_k``, summed over channels and
  passed through ReLU.  Works for any head after the target layer.
* plain CAM (Zhou et al. 2016): for a head that is global-average-pool + linear, the class's
  linear weights applied to the feature maps, ``sum_k w_ck A_k``.

Both maps are then treated alike (ReLU, bilinear upsampling to the input size, min-max
normalisation per image to [0, 1]), so for a GAP + linear head they are the same map: the
gradient of ``y_c = sum_k w_ck mean(A_k) + b_c`` with respect to ``A_k(i, j)`` is
``w_ck / (h w)`` everywhere, so Grad-CAM's weights are ``w_ck / (h w)``, a positive multiple
of CAM's, which normalisation removes.

Models are inspected, never changed: every hook is removed, and every module's train/eval
flag and every parameter's ``requires_grad`` is put back afterwards, also when an error is
raised.  The maps are computed in eval mode (batch-norm running statistics, no dropout).
The activation's gradient comes from ``torch.autograd.grad`` rather than ``backward()``, so
no parameter's ``.grad`` is touched either.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cam_peak", "find_target_layer", "grad_cam", "overlay", "plain_cam"]

# Square probe sizes tried, in order, when find_target_layer has no example input: 64 suits
# most backbones cheaply (VGG/ResNet/MobileNet keep a 2x2 map), 224 their native size; the
# small ones serve custom nets whose flatten + linear head fixes the input size.
_PROBE_SIZES = (64, 224, 32, 28, 48, 96, 128, 256)


def find_target_layer(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """The last module producing a 4-D feature map with more than one pixel: the usual
    Grad-CAM target (ResNet ``layer4``, VGG and MobileNetV2 ``features``, a custom net's last
    conv block).

    Found by one forward pass (eval mode, no gradients) that records each module's output in
    the order the modules finish, so wrappers (``layer4``) win over what they contain
    (``layer4[-1]``): the same tensor, one hook fewer.  Adaptive pooling (which resamples to
    a fixed size instead of computing features) and 1x1 outputs (global pooling, timm's conv
    "fc" layers) are skipped.  ``example`` is an input batch to probe with; without it a
    blank batch is tried at a few sizes, with the input channels of the first convolution.

    Raises:
        ValueError: no probe input runs through the model, or no module yields a feature map.
    """
    finished: list[nn.Module] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if (
            isinstance(output, torch.Tensor)
            and output.dim() == 4
            and output.shape[-2] * output.shape[-1] > 1
            and not isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
        ):
            finished.append(module)

    candidates = [example] if example is not None else [_blank(model, s) for s in _PROBE_SIZES]
    errors = []
    with _inspecting(model):
        handles = [m.register_forward_hook(record) for m in model.modules() if m is not model]
        try:
            for probe in candidates:
                finished.clear()
                try:
                    with torch.no_grad():
                        model(probe)
                except RuntimeError as error:  # wrong input size for a fixed-size head: next size
                    errors.append(f"{tuple(probe.shape)}: {str(error).splitlines()[0]}")
                    continue
                if finished:
                    return finished[-1]
                raise ValueError(
                    f"{type(model).__name__} has no module producing a 4-D feature map larger than "
                    "1x1; pass Grad-CAM's target layer explicitly"
                )
        finally:
            for handle in handles:
                handle.remove()
    raise ValueError(
        f"could not run {type(model).__name__} on a probe input to find its last feature map "
        f"({'; '.join(errors)}); pass an example input batch"
    )


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grad-CAM of ``classes`` (default: each image's predicted class) at ``target_layer``.

    Returns an (N, H, W) float tensor in [0, 1] at the input size (all zeros where no
    location speaks for the class).  If ``target_layer`` runs more than once per forward
    pass, its last call is used.
    """
    _check_images(images)
    with _inspecting(model), _capture(target_layer) as captured, torch.enable_grad():
        # The input carries the graph so the activation has a gradient even when every
        # parameter is frozen; parameters are switched off to spare their gradients.
        inputs = images.detach().clone().requires_grad_(True)
        logits = _logits(model, inputs)
        activation = _captured_map(captured, target_layer)
        chosen = _classes(logits, classes)
        # Images are independent in eval mode, so one backward pass of the summed scores
        # gives every image the gradient of its own class score.
        score = logits.gather(1, chosen[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, activation)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        raw = (weights * activation).sum(dim=1)
    return _finish(raw.detach(), images.shape[-2:])


def plain_cam(
    model: nn.Module,
    images: torch.Tensor,
    features: nn.Module,
    linear: nn.Linear,
    classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """CAM (Zhou et al. 2016) for a model whose head is global-average-pool + ``linear``
    applied to ``features``' output: ``sum_k w_ck A_k`` for the class (default predicted).

    Returns an (N, H, W) float tensor in [0, 1] at the input size, post-processed as
    Grad-CAM's (which it equals for such a head).

    Raises:
        ValueError: ``features``' channels do not match ``linear.in_features``.
    """
    _check_images(images)
    with _inspecting(model), _capture(features) as captured, torch.no_grad():
        logits = _logits(model, images)
        activation = _captured_map(captured, features)
        if activation.shape[1] != linear.in_features:
            raise ValueError(
                f"features give {activation.shape[1]} channels but the linear layer takes "
                f"{linear.in_features}: plain CAM needs features -> global-average-pool -> linear"
            )
        chosen = _classes(logits, classes)
        raw = torch.einsum("nk,nkhw->nhw", linear.weight[chosen], activation)
    return _finish(raw, images.shape[-2:])


def cam_peak(cam: torch.Tensor) -> torch.Tensor:
    """(N, 2) int64 (row, column) of each map's maximum (the first in raster order on ties)."""
    if cam.dim() != 3:
        raise ValueError(f"cam must be (N, H, W), got shape {tuple(cam.shape)}")
    flat = cam.flatten(1).argmax(dim=1)
    width = cam.shape[-1]
    return torch.stack([flat // width, flat % width], dim=1)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` (uint8, HxW or HxWx{1,3}) with ``cam`` (HxW, values in [0, 1]) blended over
    it in a jet colour map (blue low, red high); returns HxWx3 uint8 RGB."""
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    rgb = image if image.ndim == 3 else image[..., None]
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"image must be HxW or HxWx1/3, got shape {image.shape}")
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"cam shape {cam.shape} differs from the image's {rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = _jet(np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0))
    blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


@contextmanager
def _inspecting(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; each module's mode and each
    parameter's requires_grad restored afterwards (also on error)."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in flags:
            param.requires_grad_(flag)


@contextmanager
def _capture(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs of ``layer`` during the block (a forward hook, removed on exit)."""
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def _captured_map(captured: list, layer: nn.Module) -> torch.Tensor:
    if not captured:
        raise ValueError(f"target layer {type(layer).__name__} did not run in the model's forward pass")
    activation = captured[-1]
    if not isinstance(activation, torch.Tensor) or activation.dim() != 4:
        shape = tuple(activation.shape) if isinstance(activation, torch.Tensor) else type(activation).__name__
        raise ValueError(
            f"target layer {type(layer).__name__} must output an (N, C, h, w) feature map, got {shape}"
        )
    return activation


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    logits = model(images)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError("the model must return (N, n_classes) logits")
    return logits


def _classes(logits: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    if classes is None:
        return logits.argmax(dim=1)
    chosen = torch.as_tensor(classes, dtype=torch.long, device=logits.device).reshape(-1)
    if chosen.shape[0] != logits.shape[0]:
        raise ValueError(f"classes has {chosen.shape[0]} entries for {logits.shape[0]} images")
    if chosen.min() < 0 or chosen.max() >= logits.shape[1]:
        raise ValueError(f"classes must lie in 0..{logits.shape[1] - 1}")
    return chosen


def _finish(raw: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """ReLU, bilinear upsampling to ``size``, per-image min-max to [0, 1] (a flat map -> 0)."""
    cam = F.interpolate(raw.clamp(min=0)[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    low = cam.flatten(1).min(dim=1).values[:, None, None]
    span = cam.flatten(1).max(dim=1).values[:, None, None] - low
    return torch.where(span > 0, (cam - low) / span.clamp(min=torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be an (N, C, H, W) batch, got shape {tuple(images.shape)}")


def _blank(model: nn.Module, size: int) -> torch.Tensor:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 3
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    return torch.zeros(1, channels, size, size, device=device)


def _jet(x: np.ndarray) -> np.ndarray:
    """The classic jet colour map as 0..255 RGB (piecewise linear, no matplotlib needed)."""
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.stack([r, g, b], axis=-1) * 255.0
