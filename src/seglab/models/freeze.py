"""Freezing the encoder: no gradient for its weights, no update of its batch-norm statistics.

``requires_grad = False`` alone is not a frozen encoder: a batch-norm layer in training
mode still updates its running mean and variance. :func:`hold_frozen_batchnorm` puts every
batch-norm layer whose affine parameters are all frozen back in eval mode; the engine calls
it after each ``model.train()`` so the rule holds for any architecture.
"""

from __future__ import annotations

from torch import nn


def encoder_of(model: nn.Module) -> nn.Module:
    """The model's encoder (every registered model keeps it at ``model.encoder``)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'encoder' to freeze; set train.freeze_encoder: false")
    return encoder


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze (``False``) or unfreeze (``True``) every encoder parameter."""
    for param in encoder_of(model).parameters():
        param.requires_grad_(trainable)


def hold_frozen_batchnorm(model: nn.Module) -> None:
    """Put batch-norm layers whose parameters are all frozen in eval mode (running stats fixed)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            if not any(p.requires_grad for p in module.parameters(recurse=False)):
                module.eval()
