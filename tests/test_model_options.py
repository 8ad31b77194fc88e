"""The model and augmentation options the lab reports need: per-level decoder widths and
decoder dropout (encoder-decoder models), per-level U-Net kernels, a ReLU output layer, and
OneOf augmentation groups. Each is config only, validated with a message naming the key."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from seglab.config import ConfigError, validate
from seglab.data.transforms import build_augmentation
from seglab.models import build_model


def model_of(model: dict) -> dict:
    return validate({"variants": {"v": {"model": model}}})["variants"]["v"]["model"]


def decoder_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))


def test_plain_decoder_with_the_isic_reports_widths_has_its_parameter_count():
    """isic-mobilenetv2 report: decoder 1280->512->256->64->32->16 (3x3 conv, BN, ReLU, x2 up,
    dropout) and a 1x1 head: 7,251,041 trainable parameters. seglab's convolutions before batch
    norm have no bias (it would be cancelled), which is 512+256+64+32+16 = 880 fewer."""
    cfg = model_of({"name": "plain_decoder", "encoder": "mobilenet_v2", "decoder_widths": [512, 256, 64, 32, 16],
                    "decoder_dropout": 0.5})
    model = build_model(cfg, 3, 1)
    assert decoder_params(model) == 7_251_041 - 880
    # The encoder is MobileNetV2's feature extractor: the report's 3,504,872 frozen parameters
    # less torchvision's 1,281,000-weight classifier, which a segmentation model never runs.
    assert sum(p.numel() for p in model.encoder.parameters()) == 3_504_872 - 1_281_000
    dropouts = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 5 and all(d.p == 0.5 for d in dropouts)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_plain_decoder_without_new_keys_keeps_its_weight_names():
    """decoder_widths: null and decoder_dropout: 0 build the decoder the halving widths always built."""
    old = build_model(model_of({"name": "plain_decoder", "encoder": "mobilenet_v2", "decoder_width": 64}), 3, 1)
    same = build_model(model_of({"name": "plain_decoder", "encoder": "mobilenet_v2", "decoder_widths": [64, 32, 16, 8, 8]}), 3, 1)
    assert {k: v.shape for k, v in old.state_dict().items()} == {k: v.shape for k, v in same.state_dict().items()}


def test_smp_unet_takes_per_level_widths_and_decoder_dropout_that_acts_only_in_training():
    cfg = model_of({"name": "smp", "encoder": "resnet18", "decoder_widths": [32, 32, 32, 32, 32], "decoder_dropout": 0.5})
    model = build_model(cfg, 3, 1)
    assert [b.conv1[0].out_channels for b in model.decoder.blocks] == [32] * 5
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    assert torch.equal(model(x), model(x))  # no dropout at inference
    model.train()
    torch.manual_seed(0)
    first = model(x)
    torch.manual_seed(1)
    assert not torch.equal(first, model(x))
    pickle.dumps(model)  # tracking.log_model pickles the model: hooks must be picklable


def test_unet_kernel_size_per_level():
    cfg = model_of({"name": "unet", "base": 4, "depth": 3, "kernel_size": [7, 3, 3, 3]})
    model = build_model(cfg, 3, 2)
    assert model.encoder[0][0].kernel_size == (7, 7) and model.encoder[1][0].kernel_size == (3, 3)
    assert model.decoder[-1].conv[0].kernel_size == (7, 7)  # the full-resolution decoder level mirrors it
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ConfigError, match=r"key 'variants\.v\.model\.kernel_size': 2 sides for 4 levels"):
        model_of({"name": "unet", "depth": 3, "kernel_size": [7, 3]})


def test_relu_output_activation_cuts_negative_logits():
    plain = model_of({"name": "unet", "base": 4, "depth": 2})
    relu = model_of({"name": "unet", "base": 4, "depth": 2, "output_activation": "relu"})
    torch.manual_seed(0)
    a = build_model(plain, 3, 1)
    torch.manual_seed(0)
    b = build_model(relu, 3, 1)
    x = torch.randn(2, 3, 32, 32)
    assert (a(x) < 0).any() and torch.equal(b(x), torch.relu(a(x)))
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(ConfigError, match="output_activation"):
        model_of({"name": "unet", "output_activation": "tanh"})


@pytest.mark.parametrize(("model", "key"), [
    ({"name": "plain_decoder", "decoder_widths": [8, 8, 8]}, "decoder_widths': 3 widths for 5 decoder blocks"),
    ({"name": "smp", "arch": "FPN", "decoder_dropout": 0.1}, "decoder_dropout': per-block widths and decoder_dropout need model.arch Unet"),
])
def test_decoder_options_name_the_key(model, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        model_of(model)


def test_one_of_group_applies_exactly_one_of_its_transforms():
    aug = validate({"variants": {"v": {"augmentation": {"preset": "none", "policy": [
        {"one_of": [{"name": "HorizontalFlip", "params": {"p": 1.0}}, {"name": "VerticalFlip", "params": {"p": 1.0}}]},
    ]}}}})["variants"]["v"]["augmentation"]
    pipeline = build_augmentation(aug, seed=0)
    image = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    mask = np.zeros((8, 8), dtype=np.uint8)
    seen = set()
    for _ in range(20):
        out = pipeline(image=image, mask=mask)["image"]
        h, v = np.array_equal(out, image[:, ::-1]), np.array_equal(out, image[::-1])
        assert h != v  # one flip, never both, never none
        seen.add("h" if h else "v")
    assert seen == {"h", "v"}


def test_one_of_errors_name_the_member():
    with pytest.raises(ConfigError, match=r"policy\[0\]\.one_of\[1\]\.name': 'Flip90' is not an albumentations"):
        validate({"variants": {"v": {"augmentation": {"policy": [
            {"one_of": [{"name": "HorizontalFlip"}, {"name": "Flip90"}]}]}}}})
    with pytest.raises(ConfigError, match="unknown key 'variants.v.augmentation.policy.0.prob'"):
        validate({"variants": {"v": {"augmentation": {"policy": [{"one_of": [{"name": "HorizontalFlip"}], "prob": 1}]}}}})
