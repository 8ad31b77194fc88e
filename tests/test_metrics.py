"""Metrics: hand-computed cases, the empty-mask rule, ignore_index, aggregation, and agreement
with segmentation_models_pytorch / torchmetrics on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from torchmetrics.functional.segmentation import dice_score, mean_iou

from seglab.metrics import (
    METRIC_NAMES,
    MetricAccumulator,
    confusion_counts,
    hd95,
    predict_labels,
    scores_from_counts,
    summarize,
)

# 4x4 binary case: class 1 has tp=3 (the three shared 1s), fp=1 at (0,1), fn=1 at (1,3), tn=11.
TARGET_4x4 = torch.tensor([[[0, 0, 1, 1],
                            [0, 0, 1, 1],
                            [0, 0, 0, 0],
                            [0, 0, 0, 0]]])
PRED_4x4 = torch.tensor([[[0, 1, 1, 1],
                          [0, 0, 1, 0],
                          [0, 0, 0, 0],
                          [0, 0, 0, 0]]])


def test_counts_and_scores_of_the_4x4_hand_example():
    counts = confusion_counts(PRED_4x4, TARGET_4x4, num_classes=2, ignore_index=None)
    assert counts.shape == (1, 2, 4) and counts.dtype == torch.int64
    assert counts[0, 1].tolist() == [3, 1, 1, 11]
    assert counts[0, 0].tolist() == [11, 1, 1, 3]  # class 0 is class 1's mirror image
    s = scores_from_counts(counts)
    assert set(s) == set(METRIC_NAMES)
    assert s["dice"][0, 1].item() == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # 0.75
    assert s["iou"][0, 1].item() == pytest.approx(3 / 5)
    assert s["precision"][0, 1].item() == pytest.approx(3 / 4)
    assert s["recall"][0, 1].item() == pytest.approx(3 / 4)
    summary = summarize(counts, foreground=[1])
    assert summary["dice"] == pytest.approx(0.75)
    assert summary["iou"] == pytest.approx(0.6)
    assert summary["pixel_accuracy"] == pytest.approx(14 / 16)
    assert summary["dice_dataset"] == pytest.approx(0.75)
    assert summary["dice_0"] == pytest.approx(22 / 24)


def test_empty_mask_rule():
    nothing = torch.zeros((1, 4, 4), dtype=torch.long)
    counts = confusion_counts(nothing, nothing, 2, None)
    s = scores_from_counts(counts)
    for name in ("dice", "iou", "precision", "recall"):
        assert s[name][0, 1].item() == 1.0  # nothing to find, nothing found
    assert scores_from_counts(counts, empty_score=0.0)["dice"][0, 1].item() == 0.0
    assert summarize(counts, [1])["dice"] == 1.0

    # Missed object: tp = fp = 0 < fn -> precision 0/0 scores 0, not the empty score.
    missed = confusion_counts(nothing, TARGET_4x4, 2, None)
    s = scores_from_counts(missed)
    assert s["dice"][0, 1].item() == 0.0 and s["precision"][0, 1].item() == 0.0
    assert s["recall"][0, 1].item() == 0.0
    # Hallucinated object: recall 0/0 scores 0.
    assert scores_from_counts(confusion_counts(TARGET_4x4, nothing, 2, None))["recall"][0, 1].item() == 0.0


def test_ignored_pixels_are_excluded():
    target = TARGET_4x4.clone()
    target[0, 0, 1] = 255  # the false positive
    target[0, 3, 3] = 255  # a true negative
    counts = confusion_counts(PRED_4x4, target, 2, ignore_index=255)
    assert counts[0, 1].tolist() == [3, 0, 1, 10]
    assert counts[0].sum(dim=-1).tolist() == [14, 14]  # 16 pixels minus 2 ignored
    assert summarize(counts, [1])["pixel_accuracy"] == pytest.approx(13 / 14)
    # Whatever the prediction is at ignored pixels, the counts do not move.
    pred = PRED_4x4.clone()
    pred[0, 0, 1], pred[0, 3, 3] = 0, 1
    assert torch.equal(confusion_counts(pred, target, 2, 255), counts)


def test_fully_ignored_image_is_left_out_of_per_image_means():
    target = torch.stack([TARGET_4x4[0], torch.full((4, 4), 255)])
    counts = confusion_counts(torch.cat([PRED_4x4, PRED_4x4]), target, 2, 255)
    assert counts[1].sum().item() == 0
    assert summarize(counts, [1])["dice"] == pytest.approx(0.75)
    assert math.isnan(summarize(counts[1:], [1])["dice"])


def test_label_outside_classes_raises():
    target = TARGET_4x4.clone()
    target[0, 0, 0] = 7
    with pytest.raises(ValueError, match="ignore_index"):
        confusion_counts(PRED_4x4, target, 2, None)


def test_multiclass_per_class_counts():
    target = torch.tensor([[[0, 1, 2],
                            [2, 2, 1]]])
    pred = torch.tensor([[[0, 2, 2],
                          [2, 1, 1]]])
    counts = confusion_counts(pred, target, 3, None)
    # class 0: tp 1;  class 1: tp (1,2), fp (1,1), fn (0,1);  class 2: tp (0,2),(1,0), fp (0,1), fn (1,1)
    assert counts[0].tolist() == [[1, 0, 0, 5], [1, 1, 1, 3], [2, 1, 1, 2]]
    s = summarize(counts, foreground=[1, 2])
    assert s["dice_1"] == pytest.approx(2 / 4)
    assert s["dice_2"] == pytest.approx(4 / 6)
    assert s["dice"] == pytest.approx((2 / 4 + 4 / 6) / 2)
    assert s["iou"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)


def test_micro_and_macro_differ():
    # Image 0: a 4x4 object found exactly (Dice 1). Image 1: a 1-pixel object missed (Dice 0).
    target = torch.zeros((2, 8, 8), dtype=torch.long)
    target[0, :4, :4] = 1
    target[1, 7, 7] = 1
    pred = torch.zeros_like(target)
    pred[0, :4, :4] = 1
    s = summarize(confusion_counts(pred, target, 2, None), [1])
    assert s["dice"] == pytest.approx(0.5)  # per-image mean: (1 + 0) / 2
    assert s["dice_dataset"] == pytest.approx(2 * 16 / (2 * 16 + 1))  # pooled counts
    assert s["iou_dataset"] == pytest.approx(16 / 17)


def test_agrees_with_smp_and_torchmetrics_on_random_inputs():
    g = torch.Generator().manual_seed(0)
    k = 4
    pred = torch.randint(0, k, (5, 24, 24), generator=g)
    target = torch.randint(0, k, (5, 24, 24), generator=g)
    target_ign = torch.where(torch.rand(target.shape, generator=g) < 0.1, 255, target)

    counts = confusion_counts(pred, target_ign, k, 255)
    tp, fp, fn, tn = smp.metrics.get_stats(pred, target_ign, mode="multiclass", num_classes=k,
                                           ignore_index=255)
    assert torch.equal(counts, torch.stack([tp, fp, fn, tn], dim=-1))

    mine = scores_from_counts(counts)
    ref_dice = smp.metrics.f1_score(tp, fp, fn, tn, reduction="none")
    ref_iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction="none")
    assert torch.allclose(mine["dice"], ref_dice.double(), atol=1e-6)
    assert torch.allclose(mine["iou"], ref_iou.double(), atol=1e-6)

    fg = [1, 2, 3]
    s = summarize(counts, fg)
    f = slice(1, None)
    assert s["dice"] == pytest.approx(smp.metrics.f1_score(
        tp[:, f], fp[:, f], fn[:, f], tn[:, f], reduction="macro-imagewise").item(), abs=1e-6)
    assert s["iou"] == pytest.approx(smp.metrics.iou_score(
        tp[:, f], fp[:, f], fn[:, f], tn[:, f], reduction="macro-imagewise").item(), abs=1e-6)
    assert s["dice_dataset"] == pytest.approx(smp.metrics.f1_score(
        tp[:, f], fp[:, f], fn[:, f], tn[:, f], reduction="macro").item(), abs=1e-6)
    assert s["iou_dataset"] == pytest.approx(smp.metrics.iou_score(
        tp[:, f], fp[:, f], fn[:, f], tn[:, f], reduction="macro").item(), abs=1e-6)

    # torchmetrics has no ignore label in its segmentation metrics: compare without one.
    scores = scores_from_counts(confusion_counts(pred, target, k, None))
    tm_dice = dice_score(pred, target, num_classes=k, average="none", input_format="index")
    tm_iou = mean_iou(pred, target, num_classes=k, per_class=True, input_format="index")
    assert torch.allclose(scores["dice"], tm_dice.double(), atol=1e-6)
    assert torch.allclose(scores["iou"], tm_iou.double(), atol=1e-6)


def test_predict_labels_follows_the_head_convention():
    one = torch.tensor([-1.0, 0.0, 1e-3, 5.0]).reshape(1, 1, 1, 4)
    assert predict_labels(one).tolist() == [[[0, 0, 1, 1]]]  # sigmoid(0) = 0.5 is not > 0.5
    multi = torch.zeros(1, 3, 1, 2)
    multi[0, 2, 0, 0] = 1.0
    multi[0, 1, 0, 1] = 1.0
    assert predict_labels(multi).tolist() == [[[2, 1]]]
    assert predict_labels(multi).dtype == torch.long


def _random_batch(g: torch.Generator, channels: int, k: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(n, channels, 12, 12, generator=g)
    target = torch.randint(0, k, (n, 12, 12), generator=g)
    target[:, 0, :3] = 255
    return logits, target


@pytest.mark.parametrize("channels,k,fg", [(1, 2, [1]), (2, 2, [1]), (4, 4, [1, 2, 3])])
def test_accumulator_over_two_batches_equals_one_shot(channels, k, fg):
    g = torch.Generator().manual_seed(1)
    (l1, t1), (l2, t2) = _random_batch(g, channels, k), _random_batch(g, channels, k, n=2)
    acc = MetricAccumulator(k, 255, fg)
    acc.update(l1, t1)
    acc.update(l2, t2)
    logits, target = torch.cat([l1, l2]), torch.cat([t1, t2])
    one_shot = confusion_counts(predict_labels(logits), target, k, 255)
    assert torch.equal(acc.per_image_counts(), one_shot)
    assert acc.per_image_counts().shape == (5, k, 4)
    assert acc.compute() == summarize(one_shot, fg)
    acc.reset()
    assert acc.per_image_counts().shape == (0, k, 4)


def test_accumulator_update_does_not_sync(monkeypatch):
    """update() must not pull values to the host: forbid the usual ways of doing so."""
    g = torch.Generator().manual_seed(2)
    logits, target = _random_batch(g, 3, 3)
    acc = MetricAccumulator(3, 255, [1, 2])

    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in update()")

    with monkeypatch.context() as m:
        for method in ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__"):
            m.setattr(torch.Tensor, method, forbidden)
        acc.update(logits, target)
    assert acc.per_image_counts().shape == (3, 3, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_accumulator_update_does_not_sync_on_cuda():
    g = torch.Generator().manual_seed(3)
    logits, target = _random_batch(g, 3, 3)
    acc = MetricAccumulator(3, 255, [1, 2])
    cuda_logits, cuda_target = logits.cuda(), target.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        acc.update(cuda_logits, cuda_target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    expected = confusion_counts(predict_labels(logits), target, 3, 255)
    assert torch.equal(acc.per_image_counts(), expected)


def test_accumulator_rejects_bad_labels_and_shapes():
    acc = MetricAccumulator(2, None, [1])
    target = TARGET_4x4.clone()
    target[0, 0, 0] = 5
    acc.update(torch.randn(1, 1, 4, 4), target)  # deferred: no sync in update
    with pytest.raises(ValueError, match="outside 0..1"):
        acc.compute()
    with pytest.raises(ValueError, match="do not fit 2 classes"):
        acc.update(torch.randn(1, 3, 4, 4), TARGET_4x4)
    with pytest.raises(ValueError, match="foreground"):
        MetricAccumulator(2, None, [2])


def _square(top: int, left: int, side: int = 10, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_hd95_hand_cases():
    a, b = _square(5, 5), _square(5, 8)  # shifted by 3 px along x
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(b, a) == pytest.approx(3.0)
    assert hd95(a, b, spacing=0.5) == pytest.approx(1.5)
    assert hd95(a, a) == 0.0
    empty = np.zeros_like(a)
    assert hd95(empty, empty) == 0.0
    assert math.isnan(hd95(a, empty)) and math.isnan(hd95(empty, a))
    with pytest.raises(ValueError):
        hd95(a, a[:5])


def _brute_force_hd95(pred: np.ndarray, target: np.ndarray) -> float:
    """The definition, spelled out: every boundary pixel against every other boundary pixel."""
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    def edge(mask):
        inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
        return np.argwhere(mask & ~inner)

    distances = cdist(edge(pred), edge(target))
    return float(max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95)))


@pytest.mark.parametrize("seed", range(6))
def test_hd95_over_the_masks_bounding_box_equals_the_definition(seed):
    """hd95 measures inside the masks' bounding box only; blobs touching the image edge and
    blobs far apart must give the distances of the whole image."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blobs = [ndimage.gaussian_filter(rng.random((48, 40)), 3) > 0.52 for _ in range(2)]
    pred, target = blobs[0], blobs[1]
    if seed % 2:  # a blob at the image edge and one in a corner
        pred[:, :3] = True
        target[-4:, -4:] = True
    assert pred.any() and target.any()
    assert hd95(pred, target) == pytest.approx(_brute_force_hd95(pred, target))
