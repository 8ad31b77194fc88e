"""Study configuration: load, validate against the schema, fill defaults, resolve variants.

The schema (``schemas/config.schema.yaml``, linked from ``workflow/schemas/``) is the
single description of every key, its type, range, default and meaning. Validation
fills defaults, refuses unknown keys, and turns the first problem into one
``ConfigError`` that names the file, the key and the fix.

A variant is ``defaults`` deep-merged with the variant's own overrides, validated as a
whole: variants differ only in data, never in code.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import posixpath
from functools import lru_cache
from importlib import resources
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import jsonschema

from . import layout

SCHEMA_RESOURCE = "schemas/config.schema.yaml"


class ConfigError(ValueError):
    """A problem in the study configuration that the user can fix."""


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    text = resources.files("seglab").joinpath(SCHEMA_RESOURCE).read_text()
    return yaml.safe_load(text)


@lru_cache(maxsize=1)
def _defaulting_validator_class() -> type:
    """A Draft 2020-12 validator that writes each property's ``default`` into the instance.

    Defaults are set before descending, so an object defaulted to ``{}`` gets its own
    nested defaults filled as well. A number must also be finite: YAML can spell ``.inf`` and
    ``.nan``, which JSON Schema's ranges do not catch (NaN compares false to any bound).

    Built on first use: every stage job imports this module to read its stage config, and
    only validation (Snakemake's start, ``seglab predict``) needs jsonschema (~0.2 s to import).
    """
    import jsonschema

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]
    validate_type = base.VALIDATORS["type"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    def finite_type(validator, types, instance, schema):
        yield from validate_type(validator, types, instance, schema)
        if isinstance(instance, float) and not math.isfinite(instance):
            yield jsonschema.ValidationError(f"{instance} is not a finite number")

    return jsonschema.validators.extend(base, {"properties": set_defaults, "type": finite_type})



def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated by ``override``; nested dicts merge, everything else replaces.

    A block that names a different ``name`` (``model: {name: smp}`` over ``model: {name:
    unet, base: 8}``) replaces the block instead: the old options belong to the old name.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        old = merged.get(key)
        renamed = isinstance(value, dict) and isinstance(old, dict) and "name" in value and value["name"] != old.get("name", value["name"])
        if isinstance(value, dict) and isinstance(old, dict) and not renamed:
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _describe(error: jsonschema.ValidationError, prefix: str) -> str:
    path = ".".join(str(p) for p in [prefix, *error.absolute_path] if p != "")
    key = path or "(top level)"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unexpected = sorted(set(error.instance) - set(known))
        where = f"{key}." if path else ""
        return (
            f"unknown key '{where}{unexpected[0]}'. Known keys here: {', '.join(known)}. "
            "Fix the spelling or remove it."
        )
    if error.validator == "unevaluatedProperties":
        known = sorted(_known_keys(error.schema, error.instance))
        unexpected = sorted(set(error.instance) - set(known)) or ["?"]
        name = error.instance.get("name") if isinstance(error.instance, dict) else None
        return (
            f"unknown key '{key}.{unexpected[0]}' for name '{name}'. Known keys here: {', '.join(known)}. "
            "Fix the spelling or remove it (options depend on the name)."
        )
    # An error inside an anyOf branch carries the branch's schema; the key's description sits
    # beside the anyOf, on the parent error.
    hint, parent = error.schema.get("description"), error.parent
    while hint is None and parent is not None:
        hint = parent.schema.get("description") if isinstance(parent.schema, dict) else None
        parent = parent.parent
    text = f"key '{key}': {error.message}."
    return f"{text} ({hint})" if hint else text


def _known_keys(schema: dict[str, Any], instance: Any) -> set[str]:
    """Keys a name-dependent block accepts: its own properties and those of the branch whose
    ``if`` matches the instance's ``name``."""
    keys = set(schema.get("properties", {}))
    defs = load_schema()["$defs"]
    for branch in schema.get("allOf", []):
        const = branch.get("if", {}).get("properties", {}).get("name", {}).get("const")
        if isinstance(instance, dict) and const == instance.get("name"):
            then = branch.get("then", {})
            if "$ref" in then:
                then = defs[then["$ref"].rsplit("/", 1)[-1]]
            keys |= set(then.get("properties", {}))
    return keys


def _check(instance: Any, schema: dict[str, Any], source: str, prefix: str = "") -> None:
    import jsonschema

    validator = _defaulting_validator_class()(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        # The deepest error is the informative one: a bad option inside a sum term also makes
        # the enclosing loss block fail as a whole.
        depth = max(len(e.absolute_path) for e in errors)
        best = jsonschema.exceptions.best_match(e for e in errors if len(e.absolute_path) == depth)
        raise ConfigError(f"{source}: {_describe(best, prefix)}")


@lru_cache(maxsize=1)
def _registry() -> Any:
    """Lets a variant be validated on its own against ``$defs/variant`` of the schema."""
    from referencing import Registry, Resource

    return Registry().with_resource("urn:seglab", Resource.from_contents(load_schema()))


def _variant_schema() -> dict[str, Any]:
    return {"$ref": "urn:seglab#/$defs/variant"}


def validate(raw: dict[str, Any] | None, source: str = "config.yaml") -> dict[str, Any]:
    """Validate a raw study config and return it with defaults filled and variants resolved.

    The returned dict has ``variants`` mapping each name to its complete resolved
    settings (defaults merged with the variant's overrides).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of sections (study, dataset, ..., variants).")
    cfg = copy.deepcopy(raw)
    _check(cfg, load_schema(), source)

    defaults_raw = raw.get("defaults") or {}
    variants = {**cfg["variants"], **_sweep_variants(cfg, source)}
    # The grid points as [name, {key: value}] pairs: a list keeps the file's order of keys and
    # names through the sorted JSON of the stage configs, so later stages never rename them.
    cfg["sweep"]["points"] = [[name, point] for name, point in sweep_points(cfg["sweep"]).items()]
    if not variants:
        raise ConfigError(f"{source}: key 'variants': no variant to run. Add one (e.g. variants: {{baseline: {{}}}}) "
                          "or a sweep.grid.")
    resolved: dict[str, Any] = {}
    for name, override in variants.items():
        merged = deep_merge(defaults_raw, override or {})
        where = "defaults" if not override else f"variants.{name}" if name in cfg["variants"] else "sweep.grid"
        _check(merged, _variant_schema(), source, prefix=where)
        _check_variant(merged, source, where)
        resolved[name] = merged
    cfg["variants"] = resolved
    _check_output_dir(cfg["study"]["output_dir"], source)
    _check_task(cfg, source)
    _check_presplit(raw, cfg, source)
    _check_size_fits_models(cfg, source)
    _check_colorization_batches(cfg, source)
    _resolve_pretrain_images(cfg, source)

    baseline = cfg["study"]["baseline"]
    if baseline is None:
        cfg["study"]["baseline"] = next(iter(resolved))
    elif baseline not in resolved:
        raise ConfigError(
            f"{source}: key 'study.baseline': '{baseline}' is not a variant. "
            f"Use one of: {', '.join(resolved)}."
        )
    return cfg


def sweep_points(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variant name -> {dotted key: value} for every point of a sweep's grid, in grid order.

    The name joins each key's last part and its value (``lr0.001_multiplier2``), so a variant
    says what it is wherever it appears (paths, MLflow runs, the report).
    """
    grid = sweep["grid"]
    if not grid:
        return {}
    points = {}
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        name = sweep["prefix"] + "_".join(f"{key.rsplit('.', 1)[-1]}{value}" for key, value in point.items())
        points[name] = point
    return points


def _sweep_variants(cfg: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The sweep's variants as overrides (nested dicts), refusing a name a listed variant has."""
    out = {}
    for name, point in sweep_points(cfg["sweep"]).items():
        if name in cfg["variants"]:
            raise ConfigError(f"{source}: key 'sweep.grid': it makes a variant named '{name}', which variants already has. "
                              "Rename that variant or set sweep.prefix.")
        override: dict[str, Any] = {}
        for key, value in point.items():
            *parents, leaf = key.split(".")
            node = override
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        out[name] = override
    return out


# Project folders a study must not write into: the code and workflow (DVC's code dependency:
# results there would change it and re-run every study), configs, tests, docs, the tools'
# own folders and the raw data.
RESERVED_DIRS = ("src", "workflow", "configs", "tests", "docs", "benchmarks", ".git", ".dvc", ".snakemake",
                 ".venv", layout.RAW_ROOT)


def _check_output_dir(output_dir: str, source: str) -> None:
    """``study.output_dir`` is a folder of its own inside the project, outside code and raw data."""
    key = f"{source}: key 'study.output_dir'"
    fix = "Use a folder of its own inside the project, e.g. results/studies/<study name>."
    if PurePosixPath(output_dir).is_absolute() or PureWindowsPath(output_dir).is_absolute():
        raise ConfigError(f"{key}: {output_dir!r} is absolute; DVC versions only what lies inside the project. {fix}")
    norm = posixpath.normpath(output_dir.replace("\\", "/"))
    if norm == "." or norm == ".." or norm.startswith("../"):
        where = "the project folder itself" if norm == "." else "outside the project"
        raise ConfigError(f"{key}: {output_dir!r} is {where}. {fix}")
    for reserved in RESERVED_DIRS:
        if norm == reserved or norm.startswith(reserved + "/"):
            raise ConfigError(
                f"{key}: {output_dir!r} is inside '{reserved}/', which holds the project's "
                f"{'raw data' if reserved == layout.RAW_ROOT else 'code or tooling'}; results written there would mix "
                f"with it{' (and change the code DVC tracks, re-running every study)' if reserved in ('src', 'workflow') else ''}. {fix}"
            )


def _check_presplit(raw: dict[str, Any], cfg: dict[str, Any], source: str) -> None:
    """Pre-split folders (dataset.folder.train/val/test) against the flat layout and the split keys."""
    folder, split = cfg["dataset"]["folder"], cfg["split"]
    given = [role for role in ("train", "val", "test") if folder[role] is not None]
    raw_folder = ((raw.get("dataset") or {}).get("folder") or {})
    if given and "train" not in given:
        raise ConfigError(f"{source}: key 'dataset.folder.{given[0]}': a pre-split dataset needs dataset.folder.train "
                          "too (its images and masks folders).")
    if given and ({"images", "masks"} & set(raw_folder)):
        key = "images" if "images" in raw_folder else "masks"
        raise ConfigError(f"{source}: key 'dataset.folder.{key}': give either images/masks (one folder of every image) "
                          "or train/val/test (pre-split folders), not both.")
    if folder["test"] is not None and (split["test_file"] or split["test_ids"]):
        key = "test_file" if split["test_file"] else "test_ids"
        raise ConfigError(f"{source}: key 'split.{key}': dataset.folder.test already gives the test images. Remove one of them.")
    if split["validation"] == "fixed" and folder["val"] is None:
        raise ConfigError(f"{source}: key 'split.validation': fixed validates on dataset.folder.val, which is not given. "
                          "Add dataset.folder.val (images and masks) or use validation: folds.")
    if cfg["dataset"]["source"] == "builtin" and (given or folder["unlabelled"]):
        key = given[0] if given else "unlabelled"
        raise ConfigError(f"{source}: key 'dataset.folder.{key}': the built-in dataset has no folders to give; "
                          "use dataset.source: folder (or url) with it.")


def has_unlabelled_pool(dataset: dict[str, Any]) -> bool:
    """Whether the dataset brings images without masks for colorization pretraining only."""
    if dataset["source"] == "builtin":
        return dataset["builtin"]["unlabelled"] > 0
    return bool(dataset["folder"]["unlabelled"])


def _resolve_pretrain_images(cfg: dict[str, Any], source: str) -> None:
    """``pretrain.images: auto`` becomes the pool when the dataset has one, else ``fold``; the
    stages then read what was decided, and a pool that is not there is refused here."""
    pretrain, pool = cfg["pretrain"], has_unlabelled_pool(cfg["dataset"])
    if pretrain["images"] == "auto":
        pretrain["images"] = "unlabelled" if pool else "fold"
    elif pretrain["images"] == "unlabelled" and not pool:
        raise ConfigError(
            f"{source}: key 'pretrain.images': unlabelled pretrains on the dataset's unlabelled pool, and this dataset "
            "has none. Give dataset.folder.unlabelled (a folder of images without masks) or dataset.builtin.unlabelled "
            "(a number of generated images), or use pretrain.images: fold (each fold's own training images)."
        )


def pretrains_per_fold(cfg: dict[str, Any]) -> bool:
    """One colorization pretraining per repeat and fold (``pretrain.images: fold``), else one per study."""
    return cfg["pretrain"]["images"] == "fold"


def fold_count(cfg: dict[str, Any]) -> int:
    """Training jobs per variant: split.folds, or 1 when a fixed validation folder is the fold."""
    return 1 if cfg["split"]["validation"] == "fixed" else cfg["split"]["folds"]


def _check_size_fits_models(cfg: dict[str, Any], source: str) -> None:
    """The U-Net halves the input ``depth`` times: the size must divide by 2**depth.

    The schema's multipleOf 16 covers depth <= 4; deeper variants need more.
    """
    size, policy = cfg["preprocess"]["size"], cfg["preprocess"]["policy"]
    for name, variant in cfg["variants"].items():
        model = variant["model"]
        if model["name"] not in _DOWNSAMPLING_KEY:
            continue  # classifiers end in global pooling: any size at least their input fits
        # U-Nets halve `depth` times; smp encoders `encoder_depth` times.
        depth = model[_DOWNSAMPLING_KEY[model["name"]]]
        factor = 2 ** depth
        _check_windows(variant, name, factor, size, policy, source)
        if policy == "native":
            continue  # the network sees patches and windows only, never the whole image
        if size % factor:
            raise ConfigError(
                f"{source}: key 'preprocess.size': {size} is not divisible by {factor}, which variant '{name}' "
                f"(model depth {depth}) needs. Use a multiple of {factor} (e.g. {size // factor * factor or factor}) "
                "or a smaller depth."
            )


# The key holding how often a segmentation model halves its input (the size must divide by 2**it).
_DOWNSAMPLING_KEY = {"unet": "depth", "smp": "encoder_depth", "plain_decoder": "encoder_depth"}


def _check_task(cfg: dict[str, Any], source: str) -> None:
    """The dataset source, the models and the losses belong to the study's task (seglab.tasks)."""
    from .tasks import TASK_CHOICES

    task = cfg["study"]["task"]
    choices = TASK_CHOICES[task]
    if cfg["dataset"]["source"] not in choices["sources"]:
        raise ConfigError(f"{source}: key 'dataset.source': {cfg['dataset']['source']!r} is not a {task} source "
                          f"(study.task {task}). Use one of: {', '.join(choices['sources'])}, or change study.task.")
    if task == "classification" and cfg["dataset"]["source"] == "class_table" and not cfg["dataset"]["labels"]["table"]:
        raise ConfigError(f"{source}: key 'dataset.labels.table': source class_table needs the CSV/TSV of path,label[,group]. "
                          "Set dataset.labels.table (relative to dataset.folder.root).")
    if task != "classification" and cfg["preprocess"]["standardise"] != "dataset":
        raise ConfigError(f"{source}: key 'preprocess.standardise': image is classification only (study.task is {task}). "
                          "Remove it.")
    for name, variant in cfg["variants"].items():
        where = f"variants.{name}"
        if variant["model"]["name"] not in choices["models"]:
            raise ConfigError(f"{source}: key '{where}.model.name': {variant['model']['name']!r} is not a {task} model. "
                              f"Use one of: {', '.join(choices['models'])}.")
        loss = variant["loss"]
        if loss["name"] not in choices["losses"]:
            raise ConfigError(f"{source}: key '{where}.loss.name': {loss['name']!r} is not a {task} loss. "
                              f"Use one of: {', '.join(choices['losses'])}.")
        if variant["init"] not in choices["inits"]:
            raise ConfigError(f"{source}: key '{where}.init': {variant['init']!r} is not available for {task} "
                              f"(colorization pretrains segmentation U-Nets). Use one of: {', '.join(choices['inits'])}.")
        if task != "classification" and (variant["train"]["last_layer_only"] or loss.get("label_smoothing")):
            key = "train.last_layer_only" if variant["train"]["last_layer_only"] else "loss.label_smoothing"
            raise ConfigError(f"{source}: key '{where}.{key}': classification only (study.task is {task}). Remove it.")
        if variant["model"]["name"] == "backbone":
            from .classification.models import check_arch

            try:
                check_arch(variant["model"]["arch"])
            except ValueError as exc:
                raise _keyed(exc, source, where) from None
        if variant["train"]["last_layer_only"] and variant["train"]["freeze_encoder"]:
            raise ConfigError(f"{source}: key '{where}.train.last_layer_only': already freezes the encoder; "
                              "remove train.freeze_encoder (or last_layer_only).")


def _check_colorization_batches(cfg: dict[str, Any], source: str) -> None:
    """Colorization pretrains on whole images in batches, which needs one image size per study."""
    if cfg["preprocess"]["policy"] != "native":
        return
    for name, variant in cfg["variants"].items():
        if variant["init"] == "colorization":
            raise ConfigError(
                f"{source}: key 'variants.{name}.init': colorization pretrains on whole images in batches, and "
                "preprocess.policy native keeps each image at its own size. Use preprocess.policy resize or pad "
                "for a study that pretrains, or another init for this variant."
            )


def _check_windows(variant: dict[str, Any], name: str, factor: int, size: int, policy: str, source: str) -> None:
    """Patches and sliding windows are network inputs: divisible by 2**depth, and inside a square image."""
    where = f"variants.{name}"
    patch, window = variant["train"]["patch_size"], variant["inference"]["window"]
    for key, side in (("train.patch_size", patch), ("inference.window", window)):
        if side is None:
            continue
        if side % factor:
            raise ConfigError(f"{source}: key '{where}.{key}': {side} is not divisible by {factor}, which the model "
                              f"(depth {factor.bit_length() - 1}) needs. Use a multiple of {factor}.")
        if policy != "native" and side > size:
            raise ConfigError(f"{source}: key '{where}.{key}': {side} is larger than the prepared images "
                              f"(preprocess.size {size}). Use at most {size}, or preprocess.policy: native.")
    if policy == "native" and patch is None:
        raise ConfigError(f"{source}: key '{where}.train.patch_size': preprocess.policy native keeps images of their own "
                          "sizes, which cannot be batched whole. Set train.patch_size (e.g. 96).")
    if patch is not None and variant["augmentation"]["mode"] == "offline":
        raise ConfigError(f"{source}: key '{where}.augmentation.mode': offline copies are whole images; with "
                          "train.patch_size use mode: online (each patch is augmented as it is drawn).")


def _keyed(exc: Exception, source: str, where: str) -> ConfigError:
    """'model.encoder: message' from a builder -> ConfigError "file: key 'variants.x.model.encoder': message"."""
    key, _, message = str(exc).partition(": ")
    return ConfigError(f"{source}: key '{where}.{key}': {message}")


def _check_variant(variant: dict[str, Any], source: str, where: str) -> None:
    """Rules that span keys (the schema checks each key alone); heavy imports only when needed."""
    model, init, train = variant["model"], variant["init"], variant["train"]
    if init == "file" and not variant["init_file"]:
        raise ConfigError(f"{source}: key '{where}.init_file': init is 'file' but no init_file is given. Set init_file: <path to weights>.")
    if init != "file" and variant["init_file"]:
        raise ConfigError(f"{source}: key '{where}.init_file': only read with init: file (init is '{init}'). Remove it or set init: file.")
    # The models built on an smp encoder (smp, plain_decoder) are those whose schema branch has
    # model.encoder; these rules are checked here only, the model builders trust them.
    smp_encoder = "encoder" in model
    if init == "imagenet" and model["name"] != "backbone":
        if not smp_encoder:
            raise ConfigError(
                f"{source}: key '{where}.init': ImageNet weights exist only for smp encoders, not for model.name {model['name']}. "
                "Use model.name: smp or plain_decoder, or init: scratch / colorization / file."
            )
        if model["encoder"].startswith("tu-"):
            raise ConfigError(f"{source}: key '{where}.init': init: imagenet supports smp's own encoders; for {model['encoder']!r} use init: file.")
    if train["unfreeze_at_epoch"] is not None and not train["freeze_encoder"]:
        raise ConfigError(f"{source}: key '{where}.train.unfreeze_at_epoch': set only with train.freeze_encoder: true.")
    if train["unfreeze_at_epoch"] is not None and train["unfreeze_at_epoch"] >= train["epochs"]:
        raise ConfigError(
            f"{source}: key '{where}.train.unfreeze_at_epoch': {train['unfreeze_at_epoch']} is not before the last epoch "
            f"(train.epochs {train['epochs']}); lower it or use null to keep the encoder frozen."
        )
    if variant["schedule"]["warmup_epochs"] >= train["epochs"]:
        raise ConfigError(f"{source}: key '{where}.schedule.warmup_epochs': must be below train.epochs ({train['epochs']}).")
    if model["name"] == "unet" and isinstance(model["kernel_size"], list) and len(model["kernel_size"]) != model["depth"] + 1:
        raise ConfigError(
            f"{source}: key '{where}.model.kernel_size': {len(model['kernel_size'])} sides for {model['depth'] + 1} levels "
            f"(model.depth {model['depth']} + 1). Give one per level, the full-resolution level first, or one number for all."
        )
    if smp_encoder:
        from .models.encoder_decoder import check_encoder

        try:
            check_encoder(model["encoder"])
        except ValueError as exc:
            raise _keyed(exc, source, where) from None
        widths = model["decoder_widths"]
        if widths is not None and len(widths) != model["encoder_depth"]:
            raise ConfigError(
                f"{source}: key '{where}.model.decoder_widths': {len(widths)} widths for {model['encoder_depth']} decoder "
                "blocks (model.encoder_depth). Give one per block, the deepest first."
            )
        decoder_blocks = model["name"] == "plain_decoder" or model["arch"] in ("Unet", "UnetPlusPlus")
        if not decoder_blocks and (widths is not None or model["decoder_dropout"]):
            key = "decoder_widths" if widths is not None else "decoder_dropout"
            raise ConfigError(
                f"{source}: key '{where}.model.{key}': per-block widths and decoder_dropout need model.arch "
                f"Unet or UnetPlusPlus (arch is {model['arch']}). Remove them or change the arch."
            )
    _check_loss(variant["loss"], source, f"{where}.loss")
    aug = variant["augmentation"]
    if aug["policy"]:
        from .data.transforms import parse_policy

        try:
            parse_policy(aug["policy"])
        except ValueError as exc:
            raise _keyed(exc, source, where) from None
    if aug["mode"] == "offline" and aug["multiplier"] > 1 and aug["preset"] == "none" and not aug["policy"]:
        raise ConfigError(
            f"{source}: key '{where}.augmentation.multiplier': offline copies need a preset or a policy to augment with."
        )


def _check_loss(loss: dict[str, Any], source: str, key: str) -> None:
    """Loss rules that span options (each option's type, range and default are the schema's).

    The one rule that needs the dataset, ``class_weights`` holding one weight per class, is
    checked when the loss is built (:func:`seglab.losses.build_loss`).
    """
    name = loss["name"]
    if name == "sum":
        for i, term in enumerate(loss["terms"]):
            _check_loss(term, source, f"{key}.terms.{i}")
    elif name == "focal" and loss["alpha"] is not None and loss["class_weights"] is not None:
        raise ConfigError(
            f"{source}: key '{key}.alpha': set either alpha (background 1-alpha, other classes alpha) or "
            "class_weights (one factor per class), not both."
        )
    elif name == "tversky" and loss["alpha"] + loss["beta"] <= 0:
        raise ConfigError(f"{source}: key '{key}.alpha': alpha + beta must be positive; e.g. alpha 0.3, beta 0.7.")
    elif name == "weighted_dice" and isinstance(loss["class_weights"], list) and not loss["include_background"] \
            and sum(loss["class_weights"][1:]) <= 0:
        raise ConfigError(
            f"{source}: key '{key}.class_weights': only the background weight is non-zero but "
            "include_background is false; give a foreground class a positive weight."
        )


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping.

    Plain YAML keeps the last of two equal keys, so a study file with ``variants:`` twice
    would silently lose every variant of the first block.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges keys that the mapping's own keys may override
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                block = isinstance(value_node, yaml.MappingNode)
                raise DuplicateKeyError(key, seen[key], line, self._path(node, key_node), block)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def _path(self, node: yaml.MappingNode, key_node: yaml.Node) -> str:
        """The dotted key of ``key_node`` (``variants``, ``defaults.model`` ...)."""
        parts = [str(self.construct_object(key_node, deep=True))]
        target = node
        while True:
            parent = self._parents.get(id(target))
            if parent is None:
                break
            target, name = parent
            parts.append(name)
        return ".".join(reversed(parts)).replace(".[", "[")


class DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int, path: str, block: bool) -> None:
        super().__init__(path)
        self.key, self.first, self.second, self.path, self.block = key, first, second, path, block


def _index_parents(node: yaml.Node, parents: dict[int, tuple[yaml.Node, str]]) -> None:
    """Map each nested mapping node to (its parent mapping, its key), for dotted key names."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if isinstance(value, (yaml.MappingNode, yaml.SequenceNode)):
                parents[id(value)] = (node, str(key_node.value))
                _index_parents(value, parents)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            if isinstance(value, (yaml.MappingNode, yaml.SequenceNode)):
                parents[id(value)] = (node, f"[{i}]")
                _index_parents(value, parents)


def read_yaml(path: str | Path) -> Any:
    """Parse a study file, refusing keys given twice (see :class:`_StrictLoader`).

    Snakemake reads ``--configfile`` with plain YAML; the workflow calls this on the same
    files first, so a duplicated key stops the study before Snakemake merges it away.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file. Pass an existing YAML file (e.g. config.yaml).")
    text = path.read_text()
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        loader._parents = {}
        if root is not None:
            _index_parents(root, loader._parents)
        return loader.construct_document(root) if root is not None else None
    except DuplicateKeyError as exc:
        fix = f"Merge the two into one '{exc.key}:' block." if exc.block else f"Keep one '{exc.key}:'."
        raise ConfigError(
            f"{path}: key '{exc.path}' is given twice (lines {exc.first} and {exc.second}); YAML would keep only "
            f"the second and silently drop the first. {fix}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML study file and validate it (see :func:`validate`)."""
    return validate(read_yaml(path), source=str(path))


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(obj: Any, length: int = 12) -> str:
    """Short, stable hash of a config block (key order does not matter)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def pretrain_key(variant: dict[str, Any]) -> str:
    """Name of the colorization pretraining a variant needs: one per distinct architecture."""
    return f"{variant['model']['name']}-{config_hash(variant['model'], 8)}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists are kept as JSON strings."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(obj, list):
        return {prefix[:-1]: canonical_json(obj)}
    return {prefix[:-1]: obj}


def dataset_location(dataset: dict[str, Any]) -> str:
    """Where a dataset's raw files lie: the user's folder, or data/raw/<name> for generated and
    downloaded data."""
    if dataset["source"] in ("folder", "class_folder", "class_table"):
        return dataset["folder"]["root"]
    return layout.raw_dir(dataset["name"])


def stage_configs(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-stage config files the workflow writes under ``<output_dir>/config/``.

    Each stage reads only its own file, so changing one key re-runs only the stages
    that depend on it (Snakemake sees the file's time change only when its content does).
    """
    study = cfg["study"]
    files: dict[str, dict[str, Any]] = {
        "dataset.json": {"dataset": cfg["dataset"]},
        "prepare.json": {"dataset": cfg["dataset"], "verify": cfg["verify"], "preprocess": cfg["preprocess"]},
        # The split stage reads which folders a pre-split dataset gave (the roles in the manifest).
        # Without split.repeats: raising it adds the new repeats' jobs and re-runs no existing one.
        "split.json": {"split": {k: v for k, v in cfg["split"].items() if k != "repeats"}},
        "study.json": cfg,
    }
    run_common = {
        "study": {k: study[k] for k in ("name", "seed", "device", "deterministic", "precision", "channels_last", "task")},
        # What a run records as its MLflow dataset input (name and where the raw data lies).
        "dataset": {"name": cfg["dataset"]["name"], "location": dataset_location(cfg["dataset"])},
        "tracking": cfg["tracking"],
    }
    for name, variant in cfg["variants"].items():
        files[f"variants/{name}.json"] = {**run_common, "variant": name, **variant}
        if variant["init"] == "colorization":
            key = pretrain_key(variant)
            files[f"pretrain/{key}.json"] = {**run_common, "pretrain": cfg["pretrain"], "model": variant["model"]}
    return files


def write_if_changed(path: Path, obj: Any) -> bool:
    """Write JSON only when the content differs, so file times mean 'content changed'."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found. Run the stage that writes it first (see the Snakefile).") from None
