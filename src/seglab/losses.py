"""Segmentation losses, built by name from a variant's ``loss`` config block.

Shared conventions (the same as :mod:`seglab.metrics`):

* ``logits``: float tensor ``(N, C, H, W)``. ``C == 1`` is a binary 1-logit head (sigmoid,
  ``model.binary_head: sigmoid``); ``C >= 2`` is a softmax over ``C == num_classes`` classes
  (a binary task may use ``C == 2``, ``model.binary_head: softmax``).
* ``target``: long tensor ``(N, H, W)`` of class indices ``0..num_classes-1``; pixels equal to
  ``ignore_index`` (an int, or ``None`` for no ignore label) count in no loss.

Every loss returns a scalar tensor: a mean over the non-ignored pixels (bce, ce, focal) or
``1 - score`` of a score computed over the whole batch (dice, weighted_dice, tversky).

Internally a 1-logit head is read as the two class probabilities ``[1 - sigmoid, sigmoid]``, so
the Dice-family and focal losses share one code path for both head types, and a 1-logit head
gives the same Dice loss as a 2-logit softmax head with the same foreground probability.

``include_background`` (dice, weighted_dice, tversky) defaults to ``False`` for both head types:
class 0 is left out of the class average, so a binary task (either head) scores the foreground
class only, and a multi-class task averages classes ``1..K-1``. Set it to ``True`` to average
class 0 as well (for a 1-logit head the background channel is ``1 - sigmoid``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A builder gets (loss config block, num_classes, ignore_index, config key of the block).
# The block is a validated one: the schema gives every option its type, range and default,
# and seglab.config checks the rules that span options; builders only read the values.
LossBuilder = Callable[[dict[str, Any], int, int | None, str], nn.Module]

_EPS = 1e-7


# ---------------------------------------------------------------------------------------------
# Config helper
# ---------------------------------------------------------------------------------------------


def _class_weights(cfg: dict[str, Any], num_classes: int, key: str) -> Tensor | None:
    """``class_weights`` as a tensor, or None. Their number must match the dataset's classes,
    which only the prepared data knows, so that one rule is checked here and not in the config."""
    value = cfg["class_weights"]
    if value is None:
        return None
    if len(value) != num_classes:
        raise ValueError(
            f"key '{key}.class_weights': got {value!r}; give {num_classes} non-negative numbers "
            f"(one per class, index 0 first, not all zero)."
        )
    return torch.tensor([float(w) for w in value], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Tensor helpers (pure)
# ---------------------------------------------------------------------------------------------


def _valid_and_safe(target: Tensor, ignore_index: int | None) -> tuple[Tensor, Tensor]:
    """(N,H,W) long -> (valid bool (N,H,W), safe long (N,H,W)).

    ``safe`` replaces ignored labels by 0 so that it can index/one-hot without going out of
    range; every use multiplies by ``valid`` so those zeros never count.
    """
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool), target
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


def _at_least_float32(x: Tensor) -> Tensor:
    """Half/bfloat16 logits (autocast) are upcast: sums over a batch of pixels need float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _class_log_probs(logits: Tensor) -> Tensor:
    """(N,C,H,W) -> (N,K,H,W) log-probabilities (float32 or wider); K = 2 when C == 1 else C.

    A 1-logit head becomes ``[log(1 - sigmoid), log(sigmoid)]`` via logsigmoid, which stays
    finite for large logits (log(1 - sigmoid(x)) == logsigmoid(-x)).
    """
    x = _at_least_float32(logits)
    if x.shape[1] == 1:
        return torch.cat([F.logsigmoid(-x), F.logsigmoid(x)], dim=1)
    return F.log_softmax(x, dim=1)


def _masked_one_hot(safe: Tensor, valid: Tensor, num_classes: int) -> Tensor:
    """(N,H,W) -> (N,K,H,W) float one-hot, all-zero at ignored pixels."""
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return onehot * valid.unsqueeze(1)


def _batch_stats(logits: Tensor, target: Tensor, num_classes: int,
                 ignore_index: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Soft per-class sums over the batch, ignored pixels left out.

    logits (N,C,H,W), target (N,H,W) -> (intersection, prob_sum, target_sum), each (K,):
    ``sum p*t``, ``sum p``, ``sum t`` over N, H, W.
    """
    valid, safe = _valid_and_safe(target, ignore_index)
    probs = _class_log_probs(logits).exp() * valid.unsqueeze(1)
    onehot = _masked_one_hot(safe, valid, num_classes)
    dims = (0, 2, 3)
    return (probs * onehot).sum(dims), probs.sum(dims), onehot.sum(dims)


def _safe_ratio(num: Tensor, den: Tensor, empty: float = 1.0) -> Tensor:
    """num / den, ``empty`` where den == 0 (an absent, unpredicted class scores as perfect).

    The denominator is replaced before dividing so that the unused branch of ``where`` holds no
    NaN, which would otherwise poison the gradient.
    """
    nonzero = den > 0
    return torch.where(nonzero, num / torch.where(nonzero, den, torch.ones_like(den)),
                       torch.full_like(num, empty))


def _masked_mean(values: Tensor, valid: Tensor) -> Tensor:
    """Mean of (N,H,W) values over valid pixels; 0 (with a graph) when none is valid."""
    total = (values * valid).sum()
    return total / valid.sum().clamp(min=1)


# ---------------------------------------------------------------------------------------------
# Loss modules
# ---------------------------------------------------------------------------------------------

_ANY, _ONE, _MULTI = "any", "one", "multi"


class SegLoss(nn.Module):
    """Base class: checks shapes and head type, then calls :meth:`compute`.

    ``head`` is ``"one"`` (needs C == 1), ``"multi"`` (needs C >= 2) or ``"any"``.
    """

    head = _ANY

    def __init__(self, name: str, key: str, num_classes: int, ignore_index: int | None) -> None:
        super().__init__()
        self.name = name
        self.key = key
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (N,C,H,W) float, target (N,H,W) long -> scalar tensor."""
        self._check(logits, target)
        return self.compute(logits, target)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check(self, logits: Tensor, target: Tensor) -> None:
        if logits.dim() != 4 or target.dim() != 3 or logits.shape[0] != target.shape[0] \
                or logits.shape[2:] != target.shape[1:]:
            raise ValueError(
                f"{self.name}: logits must be (N, C, H, W) and target (N, H, W) with the same "
                f"N, H, W; got {tuple(logits.shape)} and {tuple(target.shape)}."
            )
        channels = logits.shape[1]
        if self.head == _ONE and channels != 1:
            raise ValueError(
                f"key '{self.key}.name': {self.name} needs a 1-logit head (model.binary_head: "
                f"sigmoid) but the logits have {channels} channels; use 'ce' for multi-logit heads."
            )
        if self.head == _MULTI and channels == 1:
            raise ValueError(
                f"key '{self.key}.name': {self.name} needs a multi-logit softmax head but the "
                f"logits have 1 channel; use 'bce' for a 1-logit head (or set "
                f"model.binary_head: softmax)."
            )
        if channels == 1 and self.num_classes != 2:
            raise ValueError(
                f"{self.name}: a 1-logit head only fits a binary dataset, but num_classes is "
                f"{self.num_classes}; the model needs {self.num_classes} output channels."
            )
        if channels >= 2 and channels != self.num_classes:
            raise ValueError(
                f"{self.name}: the logits have {channels} channels but the dataset has "
                f"{self.num_classes} classes; the model's output channels must equal num_classes."
            )


class BCELoss(SegLoss):
    """Binary cross-entropy on a 1-logit head; mean over non-ignored pixels.

    ``pos_weight`` multiplies the loss of foreground pixels (as in BCEWithLogitsLoss).
    """

    head = _ONE

    def __init__(self, key: str, num_classes: int, ignore_index: int | None,
                 pos_weight: float | None) -> None:
        super().__init__("bce", key, num_classes, ignore_index)
        self.register_buffer("pos_weight", None if pos_weight is None else torch.tensor(pos_weight))

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        x = _at_least_float32(logits[:, 0])
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(x.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(
            x, (safe == 1).to(x.dtype), pos_weight=pos_weight, reduction="none"
        )
        return _masked_mean(per_pixel, valid)


class CELoss(SegLoss):
    """Softmax cross-entropy (C >= 2) with optional class weights.

    Weighted like ``F.cross_entropy(weight=w)``: sum of ``w[y] * nll`` over valid pixels divided
    by the sum of ``w[y]``. Computed by hand so a batch with no valid pixel gives 0, not NaN.
    """

    head = _MULTI

    def __init__(self, key: str, num_classes: int, ignore_index: int | None,
                 class_weights: Tensor | None) -> None:
        super().__init__("ce", key, num_classes, ignore_index)
        self.register_buffer("class_weights", class_weights)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        # -100 is cross_entropy's own default: no real label takes it.
        ignore = -100 if self.ignore_index is None else self.ignore_index
        x = _at_least_float32(logits)
        weights = None if self.class_weights is None else self.class_weights.to(x.dtype)
        per_pixel = F.cross_entropy(x, target, weight=weights, ignore_index=ignore, reduction="none")
        if weights is None:
            return _masked_mean(per_pixel, valid)
        norm = (weights[safe] * valid).sum()
        return per_pixel.sum() / norm.clamp(min=_EPS)


class DiceLoss(SegLoss):
    """Soft Dice loss: ``1 - mean_k (2 I_k + s) / (P_k + T_k + s)`` over the included classes.

    I, P, T are summed over the whole batch (N, H, W) per class; a class with ``P + T + s == 0``
    scores 1 (absent and not predicted).
    """

    def __init__(self, key: str, num_classes: int, ignore_index: int | None, smooth: float,
                 include_background: bool) -> None:
        super().__init__("dice", key, num_classes, ignore_index)
        self.smooth = smooth
        self.first = 0 if include_background else 1

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        inter, psum, tsum = _batch_stats(logits, target, self.num_classes, self.ignore_index)
        dice = _safe_ratio(2 * inter + self.smooth, psum + tsum + self.smooth)
        return 1 - dice[self.first:].mean()


class WeightedDiceLoss(SegLoss):
    """Class-weighted Dice loss.

    * ``class_weights`` given: ``1 - sum_k w_k Dice_k`` with the weights of the included classes
      normalised to sum 1.
    * not given: generalised Dice (Sudre et al. 2017), weights ``1 / T_k^2`` from the batch's
      target counts: ``1 - (2 sum w I + s) / (sum w (P + T) + s)``. A class absent from the batch
      gets the largest finite weight so its false positives still cost. Weights are normalised
      to sum 1 (keeps ``smooth`` on the scale of pixel counts) and carry no gradient.
    """

    def __init__(self, key: str, num_classes: int, ignore_index: int | None, smooth: float,
                 include_background: bool, class_weights: Tensor | None) -> None:
        super().__init__("weighted_dice", key, num_classes, ignore_index)
        self.smooth = smooth
        self.first = 0 if include_background else 1
        if class_weights is not None:
            class_weights = class_weights[self.first:]
            class_weights = class_weights / class_weights.sum()
        self.register_buffer("class_weights", class_weights)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        inter, psum, tsum = (s[self.first:] for s in
                             _batch_stats(logits, target, self.num_classes, self.ignore_index))
        if self.class_weights is not None:
            dice = _safe_ratio(2 * inter + self.smooth, psum + tsum + self.smooth)
            return 1 - (self.class_weights * dice).sum()
        weights = _generalised_weights(tsum.detach())
        return 1 - _safe_ratio(2 * (weights * inter).sum() + self.smooth,
                               (weights * (psum + tsum)).sum() + self.smooth)


def _generalised_weights(target_sum: Tensor) -> Tensor:
    """(K,) target pixel counts -> (K,) weights ``1/T^2`` normalised to sum 1.

    Absent classes (T == 0) take the largest finite weight; all absent -> uniform.
    """
    present = target_sum > 0
    inv = torch.where(present, 1.0 / target_sum.clamp(min=1) ** 2, torch.zeros_like(target_sum))
    largest = inv.max()
    inv = torch.where(present, inv, largest)
    # All classes absent: every weight is 0 here; fall back to uniform (no host sync needed).
    inv = torch.where(largest > 0, inv, torch.ones_like(inv))
    return inv / inv.sum()


class TverskyLoss(SegLoss):
    """Tversky loss: ``1 - mean_k (I + s) / (I + alpha FP + beta FN + s)``.

    ``FP = P - I`` (soft false positives, weighted by ``alpha``), ``FN = T - I`` (weighted by
    ``beta``); ``alpha = beta = 0.5`` is the Dice loss. Summed over the batch per class.
    """

    def __init__(self, key: str, num_classes: int, ignore_index: int | None, alpha: float,
                 beta: float, smooth: float, include_background: bool) -> None:
        super().__init__("tversky", key, num_classes, ignore_index)
        self.alpha, self.beta, self.smooth = alpha, beta, smooth
        self.first = 0 if include_background else 1

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        inter, psum, tsum = _batch_stats(logits, target, self.num_classes, self.ignore_index)
        den = inter + self.alpha * (psum - inter) + self.beta * (tsum - inter) + self.smooth
        index = _safe_ratio(inter + self.smooth, den)
        return 1 - index[self.first:].mean()


class FocalLoss(SegLoss):
    """Focal loss ``-a_y (1 - p_y)^gamma log p_y``, mean over non-ignored pixels.

    ``p_y`` is the probability of the true class (sigmoid or softmax). Per-class factor ``a``:
    ``class_weights`` if given; else from ``alpha`` as ``[1 - alpha, alpha, ..., alpha]``
    (background vs the rest, which for a 1-logit head is torchvision's sigmoid focal loss);
    else 1 for every class.
    """

    def __init__(self, key: str, num_classes: int, ignore_index: int | None, gamma: float,
                 class_alpha: Tensor | None) -> None:
        super().__init__("focal", key, num_classes, ignore_index)
        self.gamma = gamma
        self.register_buffer("class_alpha", class_alpha)

    def compute(self, logits: Tensor, target: Tensor) -> Tensor:
        valid, safe = _valid_and_safe(target, self.ignore_index)
        logp = _class_log_probs(logits).gather(1, safe.unsqueeze(1)).squeeze(1)  # (N,H,W)
        # 1 - p as -expm1(log p): exact for p near 1. The clamp keeps the gradient of
        # (1 - p)^gamma finite for gamma < 1 when p saturates to exactly 1.
        modulator = (-torch.expm1(logp)).clamp(min=1e-12) ** self.gamma
        per_pixel = -modulator * logp
        if self.class_alpha is not None:
            per_pixel = per_pixel * self.class_alpha[safe]
        return _masked_mean(per_pixel, valid)


class SumLoss(nn.Module):
    """Weighted sum of losses: ``sum_i weight_i * loss_i(logits, target)``."""

    def __init__(self, terms: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.name = "sum"
        self.terms = nn.ModuleList(terms)
        self.weights = list(weights)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """logits (N,C,H,W), target (N,H,W) -> scalar tensor."""
        total = logits.new_zeros((), dtype=torch.float32)
        for weight, term in zip(self.weights, self.terms):
            total = total + weight * term(logits, target)
        return total


# ---------------------------------------------------------------------------------------------
# Builders and registry
# ---------------------------------------------------------------------------------------------


def _build_bce(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    pos_weight = cfg["pos_weight"]
    return BCELoss(key, num_classes, ignore_index, None if pos_weight is None else float(pos_weight))


def _build_ce(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    return CELoss(key, num_classes, ignore_index, _class_weights(cfg, num_classes, key))


def _build_dice(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    return DiceLoss(key, num_classes, ignore_index, float(cfg["smooth"]), cfg["include_background"])


def _build_weighted_dice(cfg: dict[str, Any], num_classes: int, ignore_index: int | None,
                         key: str) -> nn.Module:
    return WeightedDiceLoss(key, num_classes, ignore_index, float(cfg["smooth"]), cfg["include_background"],
                            _class_weights(cfg, num_classes, key))


def _build_focal(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    class_alpha = _class_weights(cfg, num_classes, key)
    if cfg["alpha"] is not None:  # never together with class_weights (a config rule)
        alpha = float(cfg["alpha"])
        class_alpha = torch.full((num_classes,), alpha)
        class_alpha[0] = 1 - alpha
    return FocalLoss(key, num_classes, ignore_index, float(cfg["gamma"]), class_alpha)


def _build_tversky(cfg: dict[str, Any], num_classes: int, ignore_index: int | None,
                   key: str) -> nn.Module:
    return TverskyLoss(key, num_classes, ignore_index, float(cfg["alpha"]), float(cfg["beta"]),
                       float(cfg["smooth"]), cfg["include_background"])


def _build_sum(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    terms = [_build(term, num_classes, ignore_index, f"{key}.terms[{i}]") for i, term in enumerate(cfg["terms"])]
    return SumLoss(terms, [float(term["weight"]) for term in cfg["terms"]])


LOSSES: dict[str, LossBuilder] = {
    "bce": _build_bce,
    "ce": _build_ce,
    "dice": _build_dice,
    "weighted_dice": _build_weighted_dice,
    "focal": _build_focal,
    "tversky": _build_tversky,
    "sum": _build_sum,
}


def loss_names() -> list[str]:
    """Names of the registered losses, in registry order."""
    return list(LOSSES)


def _build(cfg: dict[str, Any], num_classes: int, ignore_index: int | None, key: str) -> nn.Module:
    return LOSSES[cfg["name"]](cfg, num_classes, ignore_index, key)


def build_loss(cfg: dict[str, Any], num_classes: int, ignore_index: int | None) -> nn.Module:
    """Build the loss named by ``cfg["name"]`` from the variant's validated ``loss`` block
    (:func:`seglab.config.validate` filled its defaults and checked its options).

    Returns a module called as ``loss(logits (N,C,H,W), target (N,H,W) long) -> scalar``.
    What only the data tells raises ValueError naming the key: ``class_weights`` of another
    length than ``num_classes`` here, a head of the wrong type when the loss is called.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes is {num_classes}; a dataset needs at least 2 classes "
                         f"(background and foreground).")
    return _build(cfg, num_classes, ignore_index, "loss")
