"""How training and inference run on a device: precision, memory format, loader workers,
seeded augmentation draws and loading weights without a random init. All on the CPU."""

import numpy as np
import pytest
import torch

from seglab.checkpoint import save_checkpoint
from seglab.config import ConfigError, validate
from seglab.data.dataset import SegmentationDataset
from seglab.data.transforms import build_augmentation
from seglab.engine import Execution, run_epoch
from seglab.losses import build_loss
from seglab.models import build_model
from seglab.inference import build_from_state, load_models, predict_batch
from seglab.tracking import NullRun
from seglab.data.loaders import loader_generators, loader_workers, make_loader
from seglab.train import train_fold

UNET = {"name": "unet", "base": 4, "depth": 2, "batch_norm": True, "dropout": 0.0, "upsample": "transpose"}
# The blocks as the validated config hands them to training (defaults filled, loss bce).
VARIANT = validate({"variants": {"v": {"model": UNET}}})["variants"]["v"]


def test_auto_execution_on_the_cpu_is_float32_channels_last():
    execution = Execution.for_device(torch.device("cpu"))
    assert execution.dtype is None and execution.scaler is None and execution.channels_last
    x = execution.inputs(torch.zeros(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    plain = Execution.for_device(torch.device("cpu"), "fp32", False)
    assert plain.inputs(torch.zeros(2, 3, 8, 8)).is_contiguous()
    assert Execution.for_device(torch.device("cpu"), "bf16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="study.precision"):
        Execution.for_device(torch.device("cpu"), "fp8")


def test_study_keys_choose_the_execution_and_reach_every_training_job():
    cfg = validate({"study": {"precision": "bf16", "channels_last": False}, "variants": {"v": {}}})
    execution = Execution.for_study(cfg["study"])
    assert execution.dtype == torch.bfloat16 and not execution.channels_last
    with pytest.raises(ConfigError, match="precision"):
        validate({"study": {"precision": "half"}, "variants": {"v": {}}})
    from seglab.config import stage_configs

    assert stage_configs(cfg)["variants/v.json"]["study"]["precision"] == "bf16"


@pytest.mark.parametrize("precision,channels_last", [("fp32", True), ("bf16", False), ("bf16", True)])
def test_training_steps_learn_in_every_precision_and_layout(tiny_data, precision, channels_last):
    data, splits = tiny_data.data, tiny_data.splits
    images, masks = zip(*(SegmentationDataset(data, splits["folds"][0])[i] for i in range(8)))
    batch = [(torch.stack(images), torch.stack(masks))]
    torch.manual_seed(0)
    execution = Execution.for_device(torch.device("cpu"), precision, channels_last)
    model = execution.prepare(build_model(VARIANT["model"], 3, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = build_loss(VARIANT["loss"], 2, None)
    losses = [run_epoch(model, batch, loss_fn, execution, optimizer)["loss"] for _ in range(6)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_channels_last_changes_the_layout_not_the_predictions(tiny_data):
    data, splits = tiny_data.data, tiny_data.splits
    images = torch.stack([SegmentationDataset(data, splits["test"])[i][0] for i in range(4)])
    torch.manual_seed(0)
    model = build_model(VARIANT["model"], 3, 1).eval()
    plain = predict_batch(model, images, Execution.for_device(torch.device("cpu"), "fp32", False), tta=True)
    nhwc = Execution.for_device(torch.device("cpu"), "fp32", True)
    fast = predict_batch(nhwc.prepare(model), images, nhwc, tta=True)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)
    # TTA is the mean of the identity, h-flip and v-flip predictions, each flipped back.
    with torch.no_grad():
        single = [torch.sigmoid(model(images.flip(d)).flip(d)) if d else torch.sigmoid(model(images))
                  for d in ((), (3,), (2,))]
    torch.testing.assert_close(plain, sum(single) / 3, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_cfg", [UNET, {"name": "smp", "arch": "Unet", "encoder": "resnet18"}])
def test_loaded_models_skip_the_random_init_and_match_the_checkpoint(tmp_path, model_cfg):
    model_cfg = validate({"variants": {"v": {"model": model_cfg}}})["variants"]["v"]["model"]
    torch.manual_seed(1)
    trained = build_model(model_cfg, 3, 1).eval()
    save_checkpoint({"model": trained.state_dict()}, tmp_path / "best.pt")
    rebuilt = build_from_state(model_cfg, 1, trained.state_dict())
    assert not any(t.is_meta for t in (*rebuilt.parameters(), *rebuilt.buffers()))
    [loaded] = load_models([tmp_path / "best.pt"], model_cfg, 1, Execution.for_device(torch.device("cpu")))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x.contiguous(memory_format=torch.channels_last)), trained(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(rebuilt.eval()(x), trained(x))


def test_num_workers_auto_is_none_on_the_cpu_and_numbers_pass_through():
    assert loader_workers("auto", torch.device("cpu")) == 0
    assert loader_workers(3, torch.device("cpu")) == 3
    cfg = validate({"variants": {"v": {}}})
    assert cfg["variants"]["v"]["train"]["num_workers"] == "auto"
    assert validate({"variants": {"v": {"train": {"num_workers": 2}}}})["variants"]["v"]["train"]["num_workers"] == 2
    with pytest.raises(ConfigError, match="num_workers"):
        validate({"variants": {"v": {"train": {"num_workers": "many"}}}})


def _epochs(loader, n):
    return [[(x.clone(), y.clone()) for x, y in loader] for _ in range(n)]


def test_augmentation_draws_do_not_depend_on_worker_processes(tiny_data):
    """The same seed gives the same augmented batches with 0 or 2 workers, and the workers
    do not repeat each other's draws (a forked seeded pipeline would)."""
    data, splits = tiny_data.data, tiny_data.splits
    ids = splits["folds"][0] + splits["folds"][1]

    def loader(workers):
        dataset = SegmentationDataset(data, ids, build_augmentation({"preset": "light"}, 7))
        return make_loader(dataset, 4, True, 7, workers, torch.device("cpu"))

    in_process, with_workers = _epochs(loader(0), 4), _epochs(loader(2), 4)
    for epoch_a, epoch_b in zip(in_process, with_workers):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Each epoch draws afresh.
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(in_process[0], in_process[1]))


def test_a_restored_generator_replays_the_next_epoch_exactly(tiny_data):
    """What exact resume relies on: the loader's generator state alone fixes the next
    epoch's order and augmentation, whatever the augmentation pipeline's own state."""
    data, splits = tiny_data.data, tiny_data.splits
    ids = splits["folds"][0]
    dataset = SegmentationDataset(data, ids, build_augmentation({"preset": "heavy"}, 3))
    loader = make_loader(dataset, 4, True, 3, 0, torch.device("cpu"))
    _epochs(loader, 1)
    saved = [g.get_state() for g in loader_generators(loader)]
    expected = _epochs(loader, 1)[0]
    fresh = make_loader(SegmentationDataset(data, ids, build_augmentation({"preset": "heavy"}, 99)), 4, True, 3, 0,
                        torch.device("cpu"))
    for generator, state in zip(loader_generators(fresh), saved):
        generator.set_state(state)
    for (xa, ya), (xb, yb) in zip(expected, _epochs(fresh, 1)[0]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_fold_records_how_it_ran(tiny_data, tmp_path):
    cfg, data, splits = tiny_data.cfg, tiny_data.data, tiny_data.splits
    variant = {"study": cfg["study"], "tracking": cfg["tracking"], "variant": "scratch", **cfg["variants"]["scratch"]}
    params = {}

    class Recorder(NullRun):
        def log_params(self, p):
            params.update(p)

    train_fold(variant, data.folder, splits, 0, tmp_path / "fold0", run=Recorder())
    assert params["loader_workers"] == 0 and params["precision"] == "float32" and params["channels_last"] is True


def test_flips_are_drawn_independently_of_each_other():
    """Both ways an image is augmented (a seed per item, and the pipeline's own stream for
    offline copies and the preview grid) give all four flip outcomes, not just identity and
    180 degrees, as albumentations' per-transform seeding would."""
    from seglab.data.dataset import split_key

    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    mask = np.zeros((16, 16), np.uint8)
    outcomes = {"identity": image, "h": image[:, ::-1], "v": image[::-1], "hv": image[::-1, ::-1]}

    def outcome(out):
        return next(name for name, want in outcomes.items() if np.array_equal(out["image"], want))

    augment = build_augmentation({"preset": "flip"}, 0)
    sequential = {outcome(augment(image=image, mask=mask)) for _ in range(64)}
    seeded = set()
    for i in range(64):
        split_key((i, 0), augment)
        seeded.add(outcome(augment(image=image, mask=mask)))
    assert sequential == seeded == set(outcomes)
