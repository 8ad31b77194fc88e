"""Losses: limits (perfect ~0, wrong ~1), ignore_index, gradients, head checks, the registry,
and agreement with the torch reference losses where one exists."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seglab.config import ConfigError, validate
from seglab.losses import LOSSES, build_loss, loss_names

IGNORE = 255

# One config per registered loss, with the head types ("one" = 1 logit, "multi" = C logits)
# each supports.
CONFIGS = {
    "bce": ({"name": "bce", "pos_weight": 2.0}, ("one",)),
    "ce": ({"name": "ce"}, ("multi",)),
    "dice": ({"name": "dice", "smooth": 1.0}, ("one", "multi")),
    "weighted_dice": ({"name": "weighted_dice"}, ("one", "multi")),
    "focal": ({"name": "focal", "gamma": 2.0, "alpha": 0.25}, ("one", "multi")),
    "tversky": ({"name": "tversky", "alpha": 0.3, "beta": 0.7}, ("one", "multi")),
    "sum": ({"name": "sum", "terms": [{"name": "focal", "weight": 0.5}, {"name": "dice", "weight": 0.5}]},
            ("one", "multi")),
}
CASES = [(name, head) for name, (_, heads) in CONFIGS.items() for head in heads]


def resolved(loss: dict) -> dict:
    """The loss block with every default filled, as the workflow hands it to training."""
    return validate({"variants": {"v": {"loss": loss}}}, source="study.yaml")["variants"]["v"]["loss"]


def build(loss: dict, num_classes: int, ignore_index: int | None):
    return build_loss(resolved(loss), num_classes, ignore_index)


def _num_classes(head: str) -> int:
    return 2 if head == "one" else 3


def _batch(head: str, seed: int = 0, ignore: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = _num_classes(head)
    channels = 1 if head == "one" else k
    logits = torch.randn(2, channels, 8, 8, generator=g)
    target = torch.randint(0, k, (2, 8, 8), generator=g)
    if ignore:
        target[:, :2, :] = IGNORE
    return logits, target


def _perfect_logits(target: torch.Tensor, channels: int, k: int, sign: float = 1.0) -> torch.Tensor:
    """Confident logits predicting ``target`` (sign=+1) or confidently another class (sign=-1)."""
    if channels == 1:
        return (sign * 20.0 * (2 * target.float() - 1)).unsqueeze(1)
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).float()
    return sign * 20.0 * (2 * onehot - 1)


def test_registry_names():
    assert loss_names() == list(LOSSES)
    assert set(loss_names()) == set(CONFIGS)


def test_every_loss_has_a_case_here():
    assert {name for name, _ in CASES} == set(LOSSES)


@pytest.mark.parametrize("name,head", CASES)
def test_runs_on_supported_heads_and_gradients_flow(name, head):
    cfg, _ = CONFIGS[name]
    loss = build(cfg, _num_classes(head), IGNORE)
    logits, target = _batch(head)
    logits.requires_grad_(True)
    value = loss(logits, target)
    assert value.dim() == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    # Ignored pixels receive no gradient: they are in no term.
    assert logits.grad[:, :, :2, :].abs().sum() == 0


@pytest.mark.parametrize("name,head", CASES)
def test_ignored_pixels_do_not_change_the_loss(name, head):
    cfg, _ = CONFIGS[name]
    loss = build(cfg, _num_classes(head), IGNORE)
    logits, target = _batch(head)
    changed = logits.clone()
    changed[:, :, :2, :] = torch.randn_like(changed[:, :, :2, :]) * 10
    assert torch.allclose(loss(logits, target), loss(changed, target), atol=1e-6)


@pytest.mark.parametrize("name,head", CASES)
def test_all_pixels_ignored_gives_a_finite_loss(name, head):
    cfg, _ = CONFIGS[name]
    loss = build(cfg, _num_classes(head), IGNORE)
    logits, target = _batch(head)
    assert torch.isfinite(loss(logits, torch.full_like(target, IGNORE)))


@pytest.mark.parametrize("name", ["dice", "weighted_dice", "tversky"])
@pytest.mark.parametrize("head", ["one", "multi"])
def test_overlap_losses_perfect_is_zero_and_wrong_is_one(name, head):
    k = _num_classes(head)
    channels = 1 if head == "one" else k
    _, target = _batch(head, ignore=False)
    loss = build({"name": name}, k, None)
    assert loss(_perfect_logits(target, channels, k), target).item() < 1e-3
    assert loss(_perfect_logits(target, channels, k, sign=-1.0), target).item() > 0.95


def test_dice_by_hand():
    # 1-logit head, probabilities p = [0.8, 0.6, 0.2, 0.5] vs target [1, 1, 0, 0]:
    # I = 0.8 + 0.6 = 1.4, P = 2.1, T = 2 -> Dice = (2.8 + 1) / (4.1 + 1).
    p = torch.tensor([0.8, 0.6, 0.2, 0.5])
    logits = torch.logit(p).reshape(1, 1, 1, 4)
    target = torch.tensor([[[1, 1, 0, 0]]])
    loss = build({"name": "dice", "smooth": 1.0}, 2, None)
    assert loss(logits, target).item() == pytest.approx(1 - 3.8 / 5.1, abs=1e-6)
    # include_background adds class 0: I = 0.8 + 0.5, P = 1.9, T = 2 -> (2.6 + 1) / (3.9 + 1).
    both = build({"name": "dice", "smooth": 1.0, "include_background": True}, 2, None)
    expected = 1 - (3.8 / 5.1 + 3.6 / 4.9) / 2
    assert both(logits, target).item() == pytest.approx(expected, abs=1e-6)


def test_one_logit_and_two_logit_heads_agree():
    """A 2-logit softmax with l1 - l0 = x is the 1-logit sigmoid head with logit x."""
    logits1, target = _batch("one")
    logits2 = torch.cat([torch.zeros_like(logits1), logits1], dim=1)
    for cfg in ({"name": "dice"}, {"name": "tversky"}, {"name": "focal", "alpha": 0.25},
                {"name": "weighted_dice"}, {"name": "dice", "include_background": True}):
        loss = build(cfg, 2, IGNORE)
        assert loss(logits1, target).item() == pytest.approx(loss(logits2, target).item(), abs=1e-6)
    bce = build({"name": "bce"}, 2, IGNORE)(logits1, target)
    ce = build({"name": "ce"}, 2, IGNORE)(logits2, target)
    assert bce.item() == pytest.approx(ce.item(), abs=1e-6)


def test_ce_matches_torch_and_ignores_pixels():
    logits, target = _batch("multi")
    loss = build({"name": "ce"}, 3, IGNORE)
    assert loss(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, ignore_index=IGNORE).item(), abs=1e-6)
    # The mean runs over the valid pixels only.
    valid = target != IGNORE
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert loss(logits, target).item() == pytest.approx(manual.item(), abs=1e-6)

    weights = [0.2, 0.5, 1.3]
    weighted = build({"name": "ce", "class_weights": weights}, 3, IGNORE)
    reference = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=IGNORE)
    assert weighted(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)
    # ignore_index None: no pixel ignored (cross_entropy's -100 default is no real label).
    _, plain = _batch("multi", ignore=False)
    assert build({"name": "ce"}, 3, None)(logits, plain).item() == pytest.approx(
        F.cross_entropy(logits, plain).item(), abs=1e-6)


def test_bce_matches_torch():
    logits, target = _batch("one", ignore=False)
    loss = build({"name": "bce", "pos_weight": 3.0}, 2, None)
    reference = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=torch.tensor(3.0))
    assert loss(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_focal_with_gamma_zero_is_cross_entropy():
    logits, target = _batch("multi")
    focal = build({"name": "focal", "gamma": 0.0}, 3, IGNORE)
    ce = build({"name": "ce"}, 3, IGNORE)
    assert focal(logits, target).item() == pytest.approx(ce(logits, target).item(), abs=1e-6)
    logits1, target1 = _batch("one")
    focal1 = build({"name": "focal", "gamma": 0.0}, 2, IGNORE)
    bce = build({"name": "bce"}, 2, IGNORE)
    assert focal1(logits1, target1).item() == pytest.approx(bce(logits1, target1).item(), abs=1e-6)


def test_focal_matches_torchvision_formula_for_one_logit():
    logits, target = _batch("one", ignore=False)
    x, t = logits[:, 0], target.float()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    reference = (alpha_t * ce * (1 - p_t) ** 2).mean()
    loss = build({"name": "focal", "gamma": 2.0, "alpha": 0.25}, 2, None)
    assert loss(logits, target).item() == pytest.approx(reference.item(), abs=1e-6)


def test_tversky_with_equal_weights_is_dice():
    logits, target = _batch("multi")
    # smooth 0: with smooth s Tversky(0.5, 0.5) is (2I + 2s) / (P + T + 2s), Dice (2I + s) / (P + T + s).
    tversky = build({"name": "tversky", "alpha": 0.5, "beta": 0.5, "smooth": 0.0}, 3, IGNORE)
    dice = build({"name": "dice", "smooth": 0.0}, 3, IGNORE)
    assert tversky(logits, target).item() == pytest.approx(dice(logits, target).item(), abs=1e-6)


def test_weighted_dice_with_equal_weights_is_dice_and_weights_matter():
    logits, target = _batch("multi")
    dice = build({"name": "dice"}, 3, IGNORE)(logits, target)
    equal = build({"name": "weighted_dice", "class_weights": [5.0, 1.0, 1.0]}, 3, IGNORE)
    assert equal(logits, target).item() == pytest.approx(dice.item(), abs=1e-6)
    only2 = build({"name": "weighted_dice", "class_weights": [0.0, 0.0, 1.0]}, 3, IGNORE)
    dice2 = build({"name": "dice", "include_background": True}, 3, IGNORE)
    # Class 2 alone, by hand from the same batch sums.
    valid = target != IGNORE
    p2 = torch.softmax(logits, 1)[:, 2] * valid
    t2 = ((target == 2) & valid).float()
    by_hand = 1 - (2 * (p2 * t2).sum() + 1) / (p2.sum() + t2.sum() + 1)
    assert only2(logits, target).item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert dice2(logits, target).item() != pytest.approx(only2(logits, target).item(), abs=1e-4)


def test_sum_is_the_weighted_sum_of_its_parts():
    logits, target = _batch("one")
    total = build({"name": "sum", "terms": [{"name": "bce", "weight": 0.3},
                                                 {"name": "dice", "weight": 0.7},
                                                 {"name": "tversky"}]}, 2, IGNORE)
    parts = (0.3 * build({"name": "bce"}, 2, IGNORE)(logits, target)
             + 0.7 * build({"name": "dice"}, 2, IGNORE)(logits, target)
             + 1.0 * build({"name": "tversky"}, 2, IGNORE)(logits, target))
    assert total(logits, target).item() == pytest.approx(parts.item(), abs=1e-6)


def test_bce_rejects_multi_logit_heads_with_a_clear_message():
    loss = build({"name": "bce"}, 2, None)
    logits, target = _batch("one")
    with pytest.raises(ValueError, match=r"loss\.name.*bce needs a 1-logit head.*use 'ce'"):
        loss(torch.cat([logits, logits], dim=1), target)


def test_ce_rejects_one_logit_heads():
    loss = build({"name": "ce"}, 2, None)
    logits, target = _batch("one")
    with pytest.raises(ValueError, match=r"ce needs a multi-logit.*use 'bce'"):
        loss(logits, target)


def test_term_of_sum_names_its_key():
    loss = build({"name": "sum", "terms": [{"name": "dice"}, {"name": "bce"}]}, 3, None)
    logits, target = _batch("multi", ignore=False)
    with pytest.raises(ValueError, match=r"loss\.terms\[1\]\.name"):
        loss(logits, target)


def test_channels_must_match_num_classes():
    loss = build({"name": "dice"}, 4, None)
    logits, target = _batch("multi")
    with pytest.raises(ValueError, match="num_classes"):
        loss(logits, target)
    with pytest.raises(ValueError, match="1-logit head only fits a binary"):
        loss(torch.randn(2, 1, 8, 8), target)


@pytest.mark.parametrize("cfg,match", [
    ({"name": "nope"}, r"loss\.name.*'bce', 'ce', 'dice', 'weighted_dice', 'focal', 'tversky', 'sum'"),
    ({"name": "dice", "smoth": 1.0}, r"loss\.smoth"),
    ({"name": "focal", "gamma": -1}, r"loss\.gamma"),
    ({"name": "focal", "alpha": 0.25, "class_weights": [1, 1, 1]}, r"loss\.alpha"),
    ({"name": "tversky", "alpha": 0, "beta": 0}, r"loss\.alpha"),
    ({"name": "dice", "include_background": "yes"}, r"loss\.include_background"),
    ({"name": "dice", "smooth": float("inf")}, r"loss\.smooth.*not a finite number"),
    ({"name": "ce", "class_weights": [0, 0, 0]}, r"loss\.class_weights.*not all zero"),
    ({"name": "weighted_dice", "class_weights": [1, 0, 0]}, r"loss\.class_weights.*foreground"),
    ({"name": "sum", "terms": []}, r"loss\.terms"),
    ({"name": "sum", "terms": [{"name": "dice", "weight": "x"}]}, r"loss\.terms\.0\.weight"),
    ({"name": "sum", "terms": [{"name": "dcie"}]}, r"loss\.terms\.0\.name"),
])
def test_config_errors_name_the_key(cfg, match):
    """Options are checked once, by the config's validation, with the key of the variant."""
    with pytest.raises(ConfigError, match=r"study\.yaml: (unknown )?key 'variants\.v\." + match):
        resolved(cfg)


def test_class_weights_must_match_the_dataset_classes():
    """The number of classes is known only from the prepared data: checked when the loss is built."""
    with pytest.raises(ValueError, match=r"loss\.class_weights.*3 non-negative"):
        build({"name": "ce", "class_weights": [1.0, 2.0]}, 3, None)
    with pytest.raises(ValueError, match=r"loss\.terms\[0\]\.class_weights.*3 non-negative"):
        build({"name": "sum", "terms": [{"name": "focal", "class_weights": [1.0, 2.0]}]}, 3, None)


@pytest.mark.parametrize("name,head", CASES)
def test_half_precision_logits_give_a_float32_loss(name, head):
    """Under autocast the logits may be bfloat16; batch sums must still be taken in float32."""
    cfg, _ = CONFIGS[name]
    loss = build(cfg, _num_classes(head), IGNORE)
    logits, target = _batch(head)
    value = loss(logits.bfloat16(), target)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(loss(logits.bfloat16().float(), target).item(), abs=1e-5)


def test_loss_follows_the_module_to_another_dtype_device():
    loss = build({"name": "ce", "class_weights": [1.0, 2.0, 3.0]}, 3, None).to(torch.float64)
    logits, target = _batch("multi", ignore=False)
    assert torch.isfinite(loss(logits.double(), target))
