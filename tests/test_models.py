"""Model registry, encoder initialisation and freezing (seglab.models)."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from seglab.checkpoint import CheckpointError, save_checkpoint
from seglab.config import ConfigError, validate
from seglab.engine import Execution, run_epoch
from seglab.models import build_model, count_parameters, output_channels
from seglab.models.encoder_decoder import ARCHITECTURES
from seglab.models.freeze import set_encoder_trainable
from seglab.models.weights import imagenet_cache_file, initialise


def resolved(variant: dict) -> dict:
    """A variant with every default filled, as the workflow hands it to training."""
    return validate({"variants": {"v": variant}})["variants"]["v"]


SMALL_MODELS = [
    {"name": "unet", "base": 4, "depth": 2},
    {"name": "unet", "base": 4, "depth": 3, "kernel_size": 5, "upsample": "bilinear", "dropout": 0.2,
     "dropout_in": ["encoder", "bottleneck", "decoder"], "batch_norm": False},
    *({"name": "smp", "arch": arch, "encoder": "mobilenet_v2", "decoder_width": 32} for arch in ARCHITECTURES),
    {"name": "smp", "arch": "Unet", "encoder": "resnet34", "decoder_width": 32},
    {"name": "plain_decoder", "encoder": "mobilenet_v2", "decoder_width": 32},
    {"name": "plain_decoder", "encoder": "resnet34", "encoder_depth": 4, "decoder_width": 16},
]


@pytest.mark.parametrize("index", range(len(SMALL_MODELS)),
                         ids=["-".join(str(v) for v in m.values())[:40] for m in SMALL_MODELS])
def test_every_registered_architecture_maps_nchw_to_nchw(index):
    model_cfg, channels = SMALL_MODELS[index], (1, 3)[index % 2]  # 1-logit and C-logit heads alternate
    model = build_model(resolved({"model": model_cfg})["model"], 3, channels)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, channels, 32, 32)
    assert isinstance(model.encoder, nn.Module)  # freezing and init rely on it


def test_the_registry_covers_every_schema_name():
    from seglab.config import load_schema
    from seglab.models import MODELS
    from seglab.tasks import TASK_CHOICES

    names = load_schema()["$defs"]["variant"]["properties"]["model"]["properties"]["name"]["enum"]
    arches = load_schema()["$defs"]["model_smp"]["properties"]["arch"]["enum"]
    # The schema's names are the tasks' (classifiers are built in seglab.classification.models).
    assert sorted(names) == sorted({name for task in TASK_CHOICES.values() for name in task["models"]})
    assert sorted(MODELS) == sorted(TASK_CHOICES["segmentation"]["models"])
    assert sorted(arches) == sorted(ARCHITECTURES)


def test_unet_options_change_the_network():
    base = resolved({"model": {"base": 4, "depth": 2}})["model"]
    wide = build_model({**base, "kernel_size": 5}, 3, 1)
    narrow = build_model(base, 3, 1)
    assert wide.encoder[0][0].kernel_size == (5, 5) and narrow.encoder[0][0].kernel_size == (3, 3)
    dropped = build_model({**base, "dropout": 0.3, "dropout_in": ["encoder"]}, 3, 1)
    kinds = [type(m).__name__ for m in dropped.encoder[0]] + [type(m).__name__ for m in dropped.decoder.modules()]
    assert kinds[:len(dropped.encoder[0])].count("Dropout2d") == 1  # the first encoder level has dropout
    assert "Dropout2d" not in kinds[len(dropped.encoder[0]):]  # the decoder has none


def test_binary_head_choice_sets_the_output_channels():
    assert output_channels(2, "sigmoid") == 1
    assert output_channels(2, "softmax") == 2
    assert output_channels(4, "sigmoid") == 4


@pytest.mark.parametrize("model_cfg", [{"name": "smp", "arch": "Unet", "encoder": "mobilenet_v2"},
                                       {"name": "plain_decoder"}, {"name": "unet", "depth": 3}])
def test_input_not_divisible_is_a_clear_error(model_cfg):
    model = build_model(resolved({"model": model_cfg})["model"], 3, 1)
    with pytest.raises(ValueError, match="preprocess.size"):
        model(torch.randn(1, 3, 36, 36))


def test_unknown_encoder_names_the_key():
    """Checked once, by the config's validation; the builders get known encoders only."""
    with pytest.raises(ConfigError, match="key 'variants.v.model.encoder': smp has no encoder 'resnet35'"):
        resolved({"model": {"name": "smp", "arch": "Unet", "encoder": "resnet35", "encoder_depth": 5, "decoder_width": 16}})


# ---------------------------------------------------------------- freezing


def _batches(n: int = 2, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 4, 3, size, size, generator=gen) * 2 + 1  # far from BN's initial stats
    masks = (torch.rand(n, 4, size, size, generator=gen) > 0.5).long()
    return list(zip(images, masks))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("model_cfg", [{"name": "plain_decoder", "decoder_width": 16},
                                       {"name": "smp", "arch": "Unet", "encoder": "resnet34", "decoder_width": 16},
                                       {"name": "unet", "base": 4}])
def test_frozen_encoder_keeps_weights_and_batchnorm_statistics(model_cfg):
    torch.manual_seed(0)
    model = build_model(resolved({"model": model_cfg})["model"], 3, 1)
    set_encoder_trainable(model, False)
    counts = count_parameters(model)
    assert counts["params_frozen"] == sum(p.numel() for p in model.encoder.parameters())
    assert counts["params_trainable"] == sum(p.numel() for p in model.parameters()) - counts["params_frozen"]
    encoder_before, head_before = _snapshot(model.encoder), _snapshot(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)  # frozen params included, as in train_fold
    loss = nn.BCEWithLogitsLoss()
    run_epoch(model, _batches(), lambda o, t: loss(o[:, 0], t.float()), Execution(torch.device("cpu")), optimizer)

    after = model.encoder.state_dict()
    for name, tensor in encoder_before.items():  # weights and running_mean/var/num_batches_tracked
        assert torch.equal(after[name], tensor), name
    changed = [k for k, v in model.state_dict().items() if not k.startswith("encoder.") and not torch.equal(v, head_before[k])]
    assert changed, "the decoder and head must still learn"
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.encoder.modules()) or model_cfg["name"] == "unet"


def test_unfrozen_encoder_learns_again():
    torch.manual_seed(0)
    model = build_model(resolved({"model": {"name": "plain_decoder", "decoder_width": 16}})["model"], 3, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss = nn.BCEWithLogitsLoss()
    set_encoder_trainable(model, False)
    run_epoch(model, _batches(1), lambda o, t: loss(o[:, 0], t.float()), Execution(torch.device("cpu")), optimizer)
    before = _snapshot(model.encoder)
    set_encoder_trainable(model, True)
    run_epoch(model, _batches(1), lambda o, t: loss(o[:, 0], t.float()), Execution(torch.device("cpu")), optimizer)
    after = model.encoder.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.endswith("running_mean"))
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.endswith("weight"))
    assert count_parameters(model)["params_frozen"] == 0


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("model_cfg", [{"name": "smp", "arch": "FPN", "encoder": "mobilenet_v2"},
                                       {"name": "smp", "arch": "Unet", "encoder": "resnet34", "decoder_width": 16},
                                       {"name": "plain_decoder", "decoder_width": 16}])
def test_colorization_weights_transfer_to_smp_models_except_the_head(tmp_path, model_cfg):
    variant = resolved({"model": model_cfg, "init": "colorization"})
    torch.manual_seed(1)
    pretrained = build_model(variant["model"], 3, 3)  # the pretraining network: 3-channel colour head
    save_checkpoint({"model": pretrained.state_dict(), "epoch": 1}, tmp_path / "weights.pt")
    torch.manual_seed(2)
    model = build_model(variant["model"], 3, 1)
    info = initialise(model, {**variant, "variant": "v"}, tmp_path / "weights.pt")

    source, own = pretrained.state_dict(), model.state_dict()
    body = [k for k in own if not k.startswith(("head.", "segmentation_head."))]
    assert info["loaded"] == len(body)
    assert all(torch.equal(own[k], source[k]) for k in body)
    head = [k for k in own if k.startswith(("head.", "segmentation_head."))]
    assert head and all(own[k].shape != source[k].shape or not torch.equal(own[k], source[k]) for k in head)


def test_init_file_accepts_an_encoder_only_safetensors_file(tmp_path):
    variant = resolved({"model": {"name": "plain_decoder", "decoder_width": 16}, "init": "file", "init_file": "enc.safetensors"})
    torch.manual_seed(3)
    donor = build_model(variant["model"], 3, 1)
    save_file({k: v.contiguous() for k, v in donor.encoder.state_dict().items()}, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(4)
    model = build_model(variant["model"], 3, 1)
    info = initialise(model, variant, tmp_path / "enc.safetensors")
    assert info["loaded"] == len(donor.encoder.state_dict())
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in donor.encoder.state_dict().items())


def test_init_file_from_another_architecture_is_a_clear_error(tmp_path):
    save_checkpoint({"model": {"nothing.like.this": torch.zeros(3)}}, tmp_path / "w.pt")
    variant = resolved({"model": {"name": "unet", "base": 4}, "init": "file", "init_file": "w.pt"})
    with pytest.raises(CheckpointError, match="no tensor in it matches"):
        initialise(build_model(variant["model"], 3, 1), variant, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="not found"):
        initialise(build_model(variant["model"], 3, 1), variant, tmp_path / "missing.pt")


def test_imagenet_offline_without_cache_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    variant = resolved({"model": {"name": "smp", "arch": "Unet", "encoder": "resnet34"}, "init": "imagenet"})
    model = build_model(variant["model"], 3, 1)
    with pytest.raises(CheckpointError, match="not in the local cache .*never downloads.*encoder_weights='imagenet'"):
        initialise(model, variant, None)
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_imagenet_weights_are_read_from_the_local_hf_cache(tmp_path, monkeypatch):
    """A cache laid out as huggingface_hub writes it is found and loaded into the encoder."""
    import segmentation_models_pytorch as smp
    from huggingface_hub import constants

    settings = smp.encoders.encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    repo = tmp_path / "hub" / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = repo / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    torch.manual_seed(5)
    donor = smp.encoders.get_encoder("mobilenet_v2", weights=None)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(snapshot / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    assert imagenet_cache_file("mobilenet_v2") == snapshot / "model.safetensors"
    variant = resolved({"model": {"name": "plain_decoder", "decoder_width": 16}, "init": "imagenet"})
    model = build_model(variant["model"], 3, 1)
    initialise(model, variant, None)
    assert all(torch.equal(model.encoder.state_dict()[k], v) for k, v in donor.state_dict().items())
