import json

import pytest

from seglab.config import ConfigError, config_hash, load_config, stage_configs, validate, write_if_changed
from tests.helpers import REPO, tiny_study


def test_default_study_validates_and_resolves_variants():
    cfg = load_config(REPO / "config.yaml")
    assert set(cfg["variants"]) == {"unet-bce", "unet-dice", "unet-bce-colorization"}
    dice = cfg["variants"]["unet-dice"]
    assert dice["loss"]["name"] == "dice"
    assert dice["model"] == cfg["variants"]["unet-bce"]["model"]  # only the loss differs
    assert cfg["variants"]["unet-bce-colorization"]["init"] == "colorization"
    # Colorization pretrains once, on a generated pool that no fold validates on and no test holds.
    assert cfg["pretrain"]["images"] == "unlabelled" and cfg["dataset"]["builtin"]["unlabelled"] > 0
    assert cfg["split"]["folds"] == 3 and cfg["study"]["baseline"] == "unet-bce"
    # Variance-aware by default: the verdicts test against the run-to-run variance of 2+ repeats.
    assert cfg["split"]["repeats"] >= 2


def test_repeats_stay_out_of_the_split_stage_config():
    """Raising split.repeats must not touch the split file every existing job depends on."""
    two, three = (stage_configs(validate(tiny_study(split={"folds": 2, "repeats": r}))) for r in (2, 3))
    assert two["split.json"] == three["split.json"] and "repeats" not in two["split.json"]["split"]
    assert all(two[k] == three[k] for k in two if k.startswith("variants/"))
    assert two["study.json"] != three["study.json"]


def test_defaults_are_filled_from_the_schema():
    cfg = validate({"variants": {"only": {}}})
    assert cfg["preprocess"] == {"size": 64, "policy": "resize", "max_side": None, "clahe": None, "standardise": "dataset"}
    assert cfg["variants"]["only"]["optimizer"]["name"] == "adam"
    assert cfg["study"]["baseline"] == "only"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"variants": {"a": {}}, "split": {"folds": 1}}, "key 'split.folds': 1 is less than the minimum of 2"),
        ({"variants": {"a": {"optimizer": {"lr": -0.1}}}}, "key 'variants.a.optimizer.lr'"),
        ({"variants": {"a": {"train": {"epoch": 3}}}}, "unknown key 'variants.a.train.epoch'"),
        ({"variants": {"a": {}}, "colour": 1}, "unknown key 'colour'"),
        ({"variants": {"a": {}}, "study": {"baseline": "b"}}, "'b' is not a variant"),
        ({"variants": {}}, "variants"),
        ({"variants": {"a": {}}, "preprocess": {"size": 50}}, "preprocess.size"),
    ],
)
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(raw, source="study.yaml")


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_stage_configs_change_only_where_the_config_changes(tmp_path):
    base = validate(tiny_study())
    changed = validate(tiny_study(variants={"scratch": {"loss": {"name": "dice"}}, "colorized": {"init": "colorization"}}))
    a, b = stage_configs(base), stage_configs(changed)
    assert a["variants/colorized.json"] == b["variants/colorized.json"]
    assert a["variants/scratch.json"] != b["variants/scratch.json"]
    assert a["prepare.json"] == b["prepare.json"]
    # One pretraining per distinct architecture, named after it.
    assert [k for k in a if k.startswith("pretrain/")] == [k for k in b if k.startswith("pretrain/")]


def test_write_if_changed_keeps_the_file_time_when_content_is_equal(tmp_path):
    path = tmp_path / "x.json"
    assert write_if_changed(path, {"a": 1})
    before = path.stat().st_mtime_ns
    assert not write_if_changed(path, {"a": 1})
    assert path.stat().st_mtime_ns == before
    assert write_if_changed(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": {"c": 2}}) == config_hash({"b": {"c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_colorization_with_native_sizes_is_refused_with_the_key_and_the_fix():
    cfg = tiny_study()  # its "colorized" variant pretrains by colorization
    cfg["preprocess"] = {"size": 32, "policy": "native"}
    cfg["defaults"]["train"]["patch_size"] = 32
    with pytest.raises(ConfigError) as error:
        validate(cfg, "study.yaml")
    message = str(error.value)
    assert "key 'variants.colorized.init'" in message and "preprocess.policy resize or pad" in message
    cfg["variants"] = {"scratch": {}}
    assert validate(cfg, "study.yaml")["preprocess"]["policy"] == "native"
