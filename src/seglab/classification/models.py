"""Classifiers by name: the reports' small networks as parametric models, and torchvision/timm
backbones with a new head for the dataset's classes.

Every classifier keeps its convolutional part at ``model.encoder`` (what ``train.freeze_encoder``
freezes, see :mod:`seglab.models.freeze`) and its final ``nn.Linear`` at :func:`last_layer`
(what ``train.last_layer_only`` trains alone). Inputs are (N, C, H, W) with C from
:func:`input_channels`; outputs are (N, K) logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError

# Backbones whose ImageNet weights come from torchvision (cached under torch.hub.get_dir()).
TORCHVISION_NAMES = ("vgg16", "vgg16_bn", "resnet18", "resnet34", "resnet50", "mobilenet_v2")


def global_pool(kind: str) -> nn.Module:
    """Global average (``avg``) or max (``max``) pooling to one value per channel."""
    return nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)


class VGGNet(nn.Module):
    """A VGG-style network: ``blocks`` blocks of ``convs_per_block`` 3x3 convolutions (+ batch
    norm) and 2x2 max pooling, widths ``base * 2**b`` (at most 512), then global average pooling
    and a head Dropout-Linear(hidden)-ReLU-Dropout-Linear(K). Global pooling (``avg``, or ``max``:
    "is the evidence anywhere?", which learns a small object among clutter much sooner) makes any
    input side of at least ``2**blocks`` work."""

    def __init__(self, in_channels: int, num_classes: int, base: int, blocks: int, convs_per_block: int,
                 batch_norm: bool, dropout: float, hidden: int, pool: str = "avg") -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for b in range(blocks):
            width = min(base * 2 ** b, 512)
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm)]
                layers += [nn.BatchNorm2d(width)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(global_pool(pool), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, hidden),
                                  nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = nn.Identity() if stride == 1 and in_ch == out_ch else nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class SmallResNet(nn.Module):
    """An N-block ResNet (Lab 4's "N-layer ResNet"): a 3x3 stem, ``depth`` basic blocks (each
    after the first halves the side and doubles the width, at most 256), global pooling and one
    linear layer (with ``avg`` pooling the plain CAM applies)."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, base: int, pool: str = "avg") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base, 3, 1, 1, bias=False), nn.BatchNorm2d(base), nn.ReLU(inplace=True)]
        channels = base
        for b in range(depth):
            width = min(base * 2 ** b, 256)
            layers.append(BasicBlock(channels, width, 1 if b == 0 else 2))
            channels = width
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(global_pool(pool), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _replace_last_linear(net: nn.Module, num_classes: int) -> str:
    """Swap the network's last ``nn.Linear`` for one with ``num_classes`` outputs; return its name."""
    name, linear = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], nn.Linear(linear.in_features, num_classes))
    return name


class Backbone(nn.Module):
    """A torchvision (or timm) classification network by name, with a new last layer.

    ``encoder`` is every top-level part of the network but its classifier (``fc``,
    ``classifier`` or ``head``), exposed without registering it twice (the state dict keeps
    torchvision's names under ``net.``, so ImageNet weights load as they are).
    """

    def __init__(self, arch: str, num_classes: int) -> None:
        super().__init__()
        self.net = _make_backbone(arch)
        self.last_name = _replace_last_linear(self.net, num_classes)
        head = self.last_name.split(".")[0]
        parts = [m for n, m in self.net.named_children() if n != head]
        self.__dict__["encoder"] = nn.ModuleList(parts)  # a view, not a registered child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _make_backbone(arch: str) -> nn.Module:
    import torchvision

    if arch in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(arch, weights=None)
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"model.arch: {arch!r} is neither a torchvision classification model nor a timm model; "
                         f"use e.g. {', '.join(TORCHVISION_NAMES)}")
    return timm.create_model(arch, pretrained=False)


def check_arch(arch: str) -> None:
    """ValueError (``model.arch: ...``) for a name neither torchvision nor timm knows."""
    import torchvision

    if arch in torchvision.models.list_models(module=torchvision.models):
        return
    import timm

    if not timm.is_model(arch):
        raise ValueError(f"model.arch: {arch!r} is neither a torchvision classification model nor a timm model; "
                         f"use e.g. {', '.join(TORCHVISION_NAMES)}")


def input_channels(model_cfg: dict[str, Any], data_channels: int) -> int:
    """Channels the model reads: backbones want RGB (grey is repeated); the small nets take the data's."""
    return 3 if model_cfg["name"] == "backbone" else data_channels


def build_classifier(cfg: dict[str, Any], in_channels: int, num_classes: int) -> nn.Module:
    """The classifier a validated ``model`` block names."""
    name = cfg["name"]
    if name == "vgg":
        return VGGNet(in_channels, num_classes, cfg["base"], cfg["blocks"], cfg["convs_per_block"], cfg["batch_norm"],
                      cfg["dropout"], cfg["hidden"], cfg["pool"])
    if name == "resnet":
        return SmallResNet(in_channels, num_classes, cfg["depth"], cfg["base"], cfg["pool"])
    if name == "backbone":
        return Backbone(cfg["arch"], num_classes)
    raise ValueError(f"model.name: {name!r} is not a classifier; use vgg, resnet or backbone")


def last_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer (the one ``train.last_layer_only`` trains)."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def set_trainable(model: nn.Module, last_only: bool) -> None:
    """``last_only``: freeze every weight but the last linear layer's (batch norm then stays in eval mode)."""
    if last_only:
        model.requires_grad_(False)
        last_layer(model).requires_grad_(True)


def imagenet_weights_file(arch: str) -> Path:
    """torchvision's cached ImageNet weights of ``arch``; CheckpointError when absent (never downloads)."""
    import torchvision

    if arch not in TORCHVISION_NAMES and arch not in torchvision.models.list_models(module=torchvision.models):
        raise CheckpointError(f"model.arch {arch!r}: ImageNet weights are read for torchvision models only; "
                              "use init: file with its weights, or init: scratch.")
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise CheckpointError(
            f"ImageNet weights for {arch!r} are not in the local cache ({path}) and seglab never downloads during a "
            f"run. On a machine with internet run `python -c \"import torchvision; torchvision.models.get_model('{arch}', "
            f"weights='DEFAULT')\"` (copy {path.parent} here if this machine is offline; TORCH_HOME moves it), "
            "or use init: scratch / file."
        )
    return path


def initialise_classifier(model: nn.Module, variant: dict[str, Any], weights: Path | None) -> dict[str, Any]:
    """Apply ``init`` (scratch, file, imagenet); return what was loaded, for the run record."""
    from ..models.weights import load_matching, read_state_dict

    init = variant["init"]
    if init == "scratch":
        return {"init": init, "loaded": 0}
    if init == "file":
        if weights is None:
            raise CheckpointError(f"variant {variant['variant']!r} has init: file but no weights file was given.")
        result = load_matching(model, read_state_dict(weights), str(weights))
        return {"init": init, "loaded": len(result["loaded"]), "skipped": len(result["skipped"]), "source": str(weights)}
    if init == "imagenet":
        if not isinstance(model, Backbone):
            raise CheckpointError("init: imagenet needs model.name: backbone (a torchvision network).")
        path = imagenet_weights_file(variant["model"]["arch"])
        state = torch.load(path, map_location="cpu", weights_only=True)
        # Every tensor but the replaced classifier, whose shape no longer matches.
        own = model.net.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.net.load_state_dict(kept, strict=False)
        return {"init": init, "loaded": len(kept), "skipped": len(state) - len(kept), "source": str(path)}
    raise ValueError(f"init: {init!r} is not available for classification; use scratch, file or imagenet")
