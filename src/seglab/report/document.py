"""The study report: ``index.html`` (self-contained, images embedded) and ``summary.md``.

Everything shown is read from the files earlier stages wrote; nothing is recomputed
except the sample selection (best, median and worst test image by ensemble Dice).
"""

from __future__ import annotations

import base64
import html
import json
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
import pandas as pd

from .. import layout
from ..config import config_hash
from ..data.prepared import PreparedData
from . import figures

# (key in the study table, header, which value is best). "ci" and list columns are formatted, never marked.
COLUMNS = [
    ("repeats", "repeats", None),
    ("cv_dice_mean", "CV Dice (best epoch chosen on the same fold)", "max"), ("cv_dice_sd", "± sd over folds", "min"),
    ("cv_dice_repeat_sd", "± run-to-run sd", "min"), ("cv_dice_ci", "CV Dice 95% CI", None),
    ("cv_dice_xfold_epoch_mean", "CV Dice (epoch chosen on the other folds)", "max"),
    ("cv_iou_mean", "CV IoU", "max"), ("oof_dice", "pooled OOF Dice", "max"),
    ("test_dice", "test Dice (ensemble, mean over repeats)", "max"), ("test_dice_repeat_sd", "± run-to-run sd", "min"),
    ("test_dice_per_repeat", "test Dice per repeat", None), ("ranked_first", "ranked first (share of repeats)", "max"),
    ("test_iou", "test IoU", "max"),
    ("test_dice_folds_sd", "sd of single-model test Dice", "min"),
    ("test_dice_folds", "test Dice per fold model", None), ("test_pixel_accuracy", "test pixel acc.", "max"),
    ("test_hd95", "test HD95 (px)", "min"), ("params_trainable", "trainable params", None),
    ("params_frozen", "frozen params", None), ("train_seconds", "train time (s)", "min"),
    ("best_epochs", "best epoch per run", None),
]
RADAR = [("test_dice", "Dice"), ("test_iou", "IoU"), ("test_precision", "precision"), ("test_recall", "recall"),
         ("test_pixel_accuracy", "pixel acc."), ("oof_dice", "OOF Dice")]


@dataclass
class ReportInputs:
    """Everything the report shows (all written by earlier stages)."""

    study: dict[str, Any]
    metrics: dict[str, Any]
    curves: pd.DataFrame
    prepared: Path
    splits: dict[str, Any]
    verify: dict[str, Any]
    eval_dirs: dict[str, Path]
    pretrain_dirs: list[Path] = field(default_factory=list)
    # Fold 0's augmentation.png of each variant that augments: what its network was shown.
    augmentation_previews: dict[str, Path] = field(default_factory=dict)
    comparisons: dict[str, Any] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str = "unknown"
    config_hash: str = ""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _cell(key: str, value: Any) -> str:
    """A table cell; a run-to-run sd of one repeat reads "not measured", never blank or zero."""
    if key.endswith("_repeat_sd") and (value is None or (isinstance(value, float) and np.isnan(value))):
        return "not measured (1 repeat)"
    return _fmt(value)


def variant_table(metrics: dict[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame(metrics["variants"]).T
    table["cv_dice_ci"] = [f"{_fmt(lo)} – {_fmt(hi)}" for lo, hi in zip(table["cv_dice_ci95_low"], table["cv_dice_ci95_high"])]
    return table


def _best_per_column(table: pd.DataFrame, columns: list[tuple[str, str, str | None]] = COLUMNS) -> dict[str, float]:
    best = {}
    for key, _, rule in columns:
        if rule and key in table and pd.to_numeric(table[key], errors="coerce").notna().any():
            values = pd.to_numeric(table[key], errors="coerce")
            best[key] = values.max() if rule == "max" else values.min()
    return best


def _is_best(best: dict[str, float], key: str, value: Any) -> bool:
    return key in best and isinstance(value, (int, float, np.number)) and not pd.isna(value) and float(value) == best[key]


def table_html(table: pd.DataFrame, columns: list[tuple[str, str, str | None]] = COLUMNS) -> str:
    """The variants table, one row per variant, the best value of each ranked column marked.

    ``columns``: (key, label, "max" | "min" | None) per column; a task's report passes its own."""
    best = _best_per_column(table, columns)
    head = "".join(f"<th>{label}</th>" for _, label, _ in columns)
    rows = []
    for name, row in table.iterrows():
        cells = []
        for key, _, _ in columns:
            value = row.get(key)
            cells.append(f"<td{' class=best' if _is_best(best, key, value) else ''}>{_cell(key, value)}</td>")
        rows.append(f"<tr><th>{html.escape(str(name))}</th>{''.join(cells)}</tr>")
    return f"<table class=variants><tr><th>variant</th>{head}</tr>{''.join(rows)}</table>"


def table_markdown(table: pd.DataFrame) -> str:
    best = _best_per_column(table)
    lines = ["| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, row in table.iterrows():
        cells = []
        for key, _, _ in COLUMNS:
            text = _cell(key, row.get(key))
            cells.append(f"**{text}**" if _is_best(best, key, row.get(key)) else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SIG_COLUMNS = ["variant", "vs", "repeats × folds", "test images", "mean test Dice diff",
               "95% CI (hierarchical bootstrap)", "test Holm p", "CV fold Dice diff", "CV Holm p (corrected t-test)",
               "verdict", "secondary: Wilcoxon Holm p (repeat 0's two models)"]


def _verdict_cell(r: dict[str, Any]) -> str:
    measured = r.get("run_variance_measured", False)
    if r["significant"]:
        return "SIGNIFICANT" + ("" if measured else " (run-to-run variance not measured)")
    return "not significant" + ("" if measured else " (run-to-run variance not measured)")


def significance_rows(comparisons: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in comparisons["comparisons"]:
        boot, cv = r["bootstrap"], r["cv_ttest"]
        rows.append([r["variant"], r["reference"], f"{r['repeats']} × {r['folds']}", str(r["images"]),
                     f"{boot['mean']:+.4f}",
                     f"{boot['low']:+.4f} to {boot['high']:+.4f} ({boot['repeats']} repeats, {boot['units']} {boot['unit']})",
                     f"{r['test_p_holm']:.4g}", f"{cv['mean']:+.4f}", f"{r['cv_p_holm']:.4g}", _verdict_cell(r),
                     f"{r['wilcoxon_p_holm']:.4g}"])
    return rows


def significance_html(comparisons: dict[str, Any] | None) -> str:
    if not comparisons or not comparisons["comparisons"]:
        return "<p>Only one variant: nothing to compare.</p>"
    head = "".join(f"<th>{c}</th>" for c in SIG_COLUMNS)
    body = []
    for r, cells in zip(comparisons["comparisons"], significance_rows(comparisons)):
        klass = "sig" if r["significant"] else "nosig"
        body.append(f"<tr class={klass}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    sentences = "".join(f"<li>{html.escape(r['sentence'])}</li>" for r in comparisons["comparisons"])
    return (f"<p>{html.escape(significance_method(comparisons))}</p>"
            f"<table class=significance><tr>{head}</tr>{''.join(body)}</table><ul class=verdicts>{sentences}</ul>")


def significance_method(comparisons: dict[str, Any]) -> str:
    """How the verdicts were reached, in words, with the run-to-run caveat when it applies."""
    text = (f"Significance level α = {comparisons['alpha']} after Holm correction over "
            f"{len(comparisons['comparisons'])} comparison(s), per test. A difference is called significant when both "
            "tests agree: on the test set, a hierarchical bootstrap that resamples repeats and then test images "
            "(one fold ensemble per variant and repeat); in cross-validation, the corrected repeated k-fold t-test "
            "(Nadeau–Bengio correction as in Bouckaert & Frank) over every repeat's fold scores. The Wilcoxon "
            "signed-rank p-value is secondary: it compares two fitted models (repeat 0's ensembles) on these test "
            "images, not the two recipes.")
    if comparisons.get("repeats", 0) <= 1:
        text += (" This study ran one repeat (split.repeats: 1): run-to-run variance was not measured, so no "
                 "verdict here says whether a recipe beats another; set split.repeats to 2 or more for that.")
    return text


def significance_markdown(comparisons: dict[str, Any] | None) -> list[str]:
    if not comparisons or not comparisons["comparisons"]:
        return ["Only one variant: nothing to compare."]
    lines = [significance_method(comparisons), "", "| " + " | ".join(SIG_COLUMNS) + " |", "|" + "---|" * len(SIG_COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in significance_rows(comparisons)]
    lines += [""] + [f"- {r['sentence']}" for r in comparisons["comparisons"]]
    return lines


def sample_rows(data: PreparedData, test_ids: list[str], eval_dir: Path) -> list[dict[str, Any]]:
    """Best, median and worst test image of a variant's ensemble, by Dice."""
    per_image = pd.read_csv(eval_dir / layout.PER_IMAGE, dtype={"id": str})
    ensemble = per_image[per_image["model"] == "ensemble"].reset_index(drop=True)
    predictions = np.load(eval_dir / layout.ENSEMBLE_PREDICTIONS)
    order = ensemble["dice"].to_numpy().argsort(kind="stable")
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    rows = []
    fg = list(range(1, data.num_classes))
    for caption, i in picks.items():
        row = data.indices([test_ids[i]])[0]
        image, truth = np.asarray(data.images[row]), np.asarray(data.masks[row])
        # The file holds test predictions at each image's original size (padded to the largest):
        # cropped to that size, then shown at the prepared size beside the prepared image.
        h, w = int(data.manifest["orig_height"][row]), int(data.manifest["orig_width"][row])
        pred = predictions[i][:h, :w]
        if pred.shape != truth.shape:
            pred = np.asarray(Image.fromarray(pred).resize((truth.shape[1], truth.shape[0]), Image.NEAREST))
        rows.append({"image": image, "truth": truth, "pred": pred, "overlay": figures.overlay(image, truth, pred, fg),
                     "caption": f"{caption}: {test_ids[i]}\nDice {ensemble['dice'][i]:.3f}"})
    return rows


def per_class_html(eval_dir: Path) -> str:
    """Per-class scores of the test ensemble and the pooled OOF predictions."""
    table = pd.read_csv(eval_dir / layout.PER_CLASS)
    table = table[(table["model"] == "ensemble") | (table["set"] == "oof")]
    head = "<tr><th>set</th><th>class</th><th>images with class</th><th>Dice</th><th>IoU</th><th>precision</th><th>recall</th></tr>"
    body = "".join(
        f"<tr><td>{html.escape(r['set'])}</td><td>{html.escape(str(r['class']))}</td><td>{r['images_with_class']}</td>"
        + "".join(f"<td>{_fmt(float(r[m]))}</td>" for m in ("dice", "iou", "precision", "recall")) + "</tr>"
        for _, r in table.iterrows())
    # Cross-validation per class: each fold's best-epoch validation score, averaged over folds.
    metrics = json.loads((eval_dir / layout.EVAL_METRICS).read_text())
    cv = metrics["cv"]
    for k, name in enumerate(metrics["classes"]):
        if f"val_iou_{k}_mean" in cv:
            body += (f"<tr><td>cv (fold mean)</td><td>{html.escape(str(name))}</td><td></td>"
                     f"<td>{_fmt(float(cv[f'val_dice_{k}_mean']))}</td><td>{_fmt(float(cv[f'val_iou_{k}_mean']))}</td>"
                     "<td></td><td></td></tr>")
    return f"<table>{head}{body}</table>"


def run_ids_html(metrics: dict[str, Any], pretrain_dirs: list[Path]) -> str:
    rows = []
    for name, row in metrics["variants"].items():
        ids = row.get("run_ids") or {}
        folds = ", ".join(f"fold {k}: <code>{html.escape(str(r))}</code>" for k, r in enumerate(ids.get("folds") or []))
        rows.append(f"<tr><th>{html.escape(name)}</th><td><code>{html.escape(str(ids.get('variant')))}</code></td><td>{folds}</td></tr>")
    for folder in pretrain_dirs:
        summary = folder / layout.SUMMARY
        run_id = json.loads(summary.read_text()).get("run_id") if summary.is_file() else None
        rows.append(f"<tr><th>pretrain {html.escape(pretrain_label(folder))}</th><td><code>{html.escape(str(run_id))}</code></td>"
                    "<td></td></tr>")
    return ("<p>Every number above comes from these MLflow runs (variant = parent run holding the test and OOF "
            "metrics; folds = child runs holding every epoch). Open them with <code>mlflow ui</code> and search "
            "<code>attributes.run_id = '&lt;id&gt;'</code>.</p>"
            f"<table><tr><th>variant</th><th>variant run</th><th>fold runs</th></tr>{''.join(rows)}</table>")


class Figures:
    """Collects the report's figures: embedded in the HTML and written as PNG files for Snakemake's report."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()

    def add(self, name: str, png: bytes, alt: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        (self.folder / f"{safe}.png").write_bytes(png)
        return _img(png, alt)


def dataset_fact(dataset: dict[str, Any], fingerprint: dict[str, Any], splits: dict[str, Any]) -> str:
    """The report's dataset line. Images of the unlabelled pool (colorization pretraining only)
    are part of the prepared data, so they are counted apart: the labelled images are what the
    folds and the test set are drawn from."""
    pool = len(splits.get("unlabelled") or [])
    images = (f"{fingerprint['num_images'] - pool} labelled images and {pool} unlabelled (colorization pretraining only)"
              if pool else f"{fingerprint['num_images']} images")
    return (f"{dataset['name']} ({dataset['source']}), {images}, {fingerprint.get('groups', '?')} groups, "
            f"classes: {', '.join(fingerprint['classes'])}")


def study_facts(inputs: ReportInputs, data: PreparedData) -> dict[str, str]:
    study, metrics, fp, verify = inputs.study, inputs.metrics, data.fingerprint, inputs.verify
    devices = sorted({str(r.get("device")) for r in metrics["variants"].values()})
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in inputs.stage_seconds.items()) or "no benchmark files"
    tta = any(r.get("test_tta") for r in metrics["variants"].values())
    return {
        "study": study["study"]["name"],
        "dataset": dataset_fact(study["dataset"], fp, inputs.splits),
        "fingerprint": f"data hash {config_hash(fp)}; mean {fp['mean']}, std {fp['std']}",
        "input size": f"{fp['size']}×{fp['size']} ({fp['policy']})",
        "verification": f"{verify['pairs_ok']} of {verify['pairs_found']} pairs usable, {len(verify['problems'])} problem(s)",
        "splits": f"test {len(inputs.splits['test'])} images, {len(inputs.splits['folds'])} folds of "
                  f"{', '.join(str(len(f)) for f in inputs.splits['folds'])} (split seed {inputs.splits.get('seed')})",
        "repeats": _repeats_fact(metrics.get("repeats", 1)),
        **({"colorization pretraining images": pretraining_images(study, [json.loads((d / layout.SUMMARY).read_text())
                                                                          for d in inputs.pretrain_dirs])}
           if inputs.pretrain_dirs else {}),
        "class frequency": ", ".join(f"{n} {f:.3f}" for n, f in zip(fp["classes"], fp["class_frequency"])),
        "baseline": metrics["baseline"],
        "best variant (test Dice)": metrics["best_variant"],
        "test-time augmentation": "flips" if tta else "none",
        "config hash": inputs.config_hash or config_hash(study),
        "git commit": inputs.git_commit,
        "device": ", ".join(devices),
        "wall time per stage": stages,
        "versions": ", ".join(f"{k} {v}" for k, v in inputs.versions.items()) or f"python {platform.python_version()}",
        "platform": platform.platform(),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def sweep_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the sweep table: each grid point's values, test Dice ± run-to-run sd, rank share."""
    points = metrics.get("sweep") or {}
    keys = list(next(iter(points.values()))) if points else []
    rows = []
    for name, point in points.items():
        row = metrics["variants"][name]
        rows.append([name, *[str(point[k]) for k in keys], _fmt(row["test_dice"]),
                     _cell("test_dice_repeat_sd", row["test_dice_repeat_sd"]), _fmt(row["cv_dice_mean"]),
                     _fmt(row.get("ranked_first"))])
    return ["variant", *keys, "test Dice", "± run-to-run sd", "CV Dice", "ranked first"], rows


def sweep_html(metrics: dict[str, Any], figs: "Figures") -> list[str]:
    points = metrics.get("sweep") or {}
    if not points:
        return []
    head, rows = sweep_rows(metrics)
    table = ("<table class=sweep><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>")
    out = ["<h2>Sweep</h2>", f"<p>{len(points)} grid points; test Dice is the mean over repeats of each repeat's fold "
           "ensemble. Which differences are real: see the significance section.</p>", table]
    if len(next(iter(points.values()))) <= 2:
        scores = {n: metrics["variants"][n]["test_dice"] for n in points}
        out.append(figs.add("sweep_heatmap", figures.sweep_heatmap(points, scores, "test Dice"), "sweep heat map of test Dice"))
    return out


def _repeats_fact(repeats: int) -> str:
    if repeats > 1:
        return (f"{repeats} repeats of the cross-validation (own folds and training seeds each): every ± run-to-run sd "
                "and every verdict below includes the variance between training runs")
    return "1 (split.repeats: 1): run-to-run variance was not measured"


def pretrain_label(folder: Path) -> str:
    """``<arch>`` for a pretraining on the pool, ``<arch> r<repeat> fold<k>`` for one on a fold's images."""
    try:
        arch, repeat, fold = layout.run_of(folder)
    except ValueError:
        return folder.name
    return f"{arch} {layout.repeat_name(repeat)} {layout.fold_name(fold)}"


def pretraining_images(study: dict[str, Any], summaries: list[dict[str, Any]]) -> str:
    """Which images colorization pretraining saw (without labels), said plainly from what each
    pretraining recorded (its mode, its image count, and how many of its ids are validated or tested on)."""
    seen_val = sum(s["seen"]["validation"] for s in summaries)
    seen_test = sum(s["seen"]["test"] for s in summaries)
    checked = (f"checked against the ids every pretraining recorded: {seen_val} validation and {seen_test} test "
               "image(s) among them")
    sizes = sorted({s["train_images"] + s["val_images"] for s in summaries})
    count = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]}"
    if {s["images"] for s in summaries} == {"fold"}:
        return (f"each fold's own training images (pretrain.images: fold): one pretraining per architecture, repeat and "
                f"fold ({len(summaries)} in all, {count} images each), so no encoder saw the images its fold is "
                f"validated on, and none saw a test image ({checked})")
    dataset = study["dataset"]
    where = ("generated apart from the labelled images, dataset.builtin.unlabelled" if dataset["source"] == "builtin"
             else f"dataset.folder.unlabelled: {dataset['folder']['unlabelled']}")
    return (f"the dataset's unlabelled pool (pretrain.images: unlabelled; {count} images, {where}), one pretraining per "
            f"architecture: no training, validation or test image ({checked})")


def _first_per_arch(folders: list[Path]) -> list[Path]:
    """One pretraining per architecture (the first of its repeats and folds), in path order."""
    first: dict[str, Path] = {}
    for folder in sorted(folders):
        first.setdefault(pretrain_label(folder).split(" ")[0], folder)
    return list(first.values())


def build_report(inputs: ReportInputs, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    study, metrics = inputs.study, inputs.metrics
    table = variant_table(metrics)
    data = PreparedData(inputs.prepared)
    facts = study_facts(inputs, data)
    figs = Figures(out_dir / "figures")
    verify = inputs.verify
    sections = [f"<h1>seglab study: {html.escape(study['study']['name'])}</h1>",
                "<h2>At a glance</h2><table class=facts>" + "".join(
                    f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()) + "</table>",
                "<h2>Variants</h2>",
                "<p>CV: each fold's validation score at its best epoch, chosen on that same fold (so slightly "
                "optimistic), mean ± sd and t-based 95% CI over every repeat's folds; ± run-to-run sd: the sd over "
                "repeats of the repeat means. CV Dice (epoch chosen on the other folds): each fold scored at the epoch "
                "whose selection value, averaged over the other folds of its repeat, is best, so its own validation "
                "labels did not pick it (its early stopping still read them; – where a repeat has one fold or "
                "evaluate.cv_epoch_from_other_folds is off). Pooled OOF: "
                "every fold's best checkpoint on its own validation fold, all out-of-fold images scored together. "
                "Test: each repeat's fold ensemble (mean of its folds' probabilities) on the held-out test set, the mean "
                "over repeats with its run-to-run sd and the value per repeat, and each fold model alone. Dice and IoU are per image, averaged over foreground classes then over images; an image where a "
                "class is absent from both truth and prediction scores 1 for that class. Best value per column in bold.</p>",
                table_html(table),
                *sweep_html(metrics, figs),
                "<h2>Significance against the baseline</h2>",
                significance_html(inputs.comparisons),
                "<h2>Metrics</h2><div class=grid>",
                figs.add("metric_bars", figures.metric_bars_ci(table), "metric bars with 95% CI"),
                figs.add("radar", figures.radar(table, RADAR), "radar chart of the variants"),
                "</div>",
                figs.add("metric_and_loss_bars", figures.metric_and_loss_bars(
                    table, figures.best_epoch_losses(inputs.curves, {v: r.get("best_epochs") for v, r in metrics["variants"].items()})),
                    "test IoU and Dice beside train and validation loss")]
    sections += curve_and_augmentation_sections(figs, inputs, list(table.index), "Learning curves")
    multi = data.num_classes > 2
    if multi:
        sections.append("<h2>Per class (test ensemble and pooled OOF)</h2>")
        for variant, eval_dir in inputs.eval_dirs.items():
            variant_metrics = json.loads((eval_dir / layout.EVAL_METRICS).read_text())
            sections.append(f"<h3>{html.escape(variant)}</h3>" + per_class_html(eval_dir) + figs.add(
                f"confusion_{variant}", figures.confusion(np.array(variant_metrics["test_confusion"]),
                                                          variant_metrics["classes"], f"{variant}: test pixels"),
                f"confusion matrix {variant}"))
    sections.append("<h2>Sample predictions (test set, repeat 0's fold ensemble: best, median, worst)</h2>")
    for variant, eval_dir in inputs.eval_dirs.items():
        rows = sample_rows(data, inputs.splits["test"], eval_dir)
        sections.append(f"<h3>{html.escape(variant)}</h3>" + figs.add(f"samples_{variant}", figures.sample_grid(rows, data.num_classes), f"samples {variant}"))
    if inputs.pretrain_dirs:
        sections.append(f"<h2>Colorization pretraining</h2><p>Images: {html.escape(facts['colorization pretraining images'])}."
                        + (" Shown: each architecture's first pretraining (repeat 0, fold 0); every one is in the MLflow "
                           "runs below." if len(inputs.pretrain_dirs) > len(_first_per_arch(inputs.pretrain_dirs)) else "")
                        + "</p>")
        for folder in _first_per_arch(inputs.pretrain_dirs):
            history = pd.read_csv(folder / layout.HISTORY)
            label = pretrain_label(folder)
            sections.append(f"<h3>{html.escape(label)}</h3>"
                            + figs.add(f"pretrain_curve_{label}", figures.pretrain_curve(history), "pretraining curve")
                            + figs.add(f"pretrain_samples_{label}", (folder / layout.COLORIZATION_SAMPLES).read_bytes(), "recoloured samples"))
    sections.append("<h2>MLflow runs</h2>" + run_ids_html(metrics, inputs.pretrain_dirs))
    if verify["problems"]:
        sections.append("<h2>Verification problems</h2><ul>" + "".join(
            f"<li>{html.escape(p['file'])}: {html.escape(p['problem'])}</li>" for p in verify["problems"]) + "</ul>")
    (out_dir / "index.html").write_text(_page(study["study"]["name"], "\n".join(sections)))
    (out_dir / "summary.md").write_text(_markdown(facts, table, inputs.comparisons, metrics))


def _markdown(facts: dict[str, Any], table: pd.DataFrame, comparisons: dict[str, Any] | None,
              metrics: dict[str, Any] | None = None) -> str:
    lines = [f"# seglab study: {facts['study']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items() if k != "study"]
    lines += ["", "## Variants", "", table_markdown(table), "",
              "CV: mean ± sd (95% CI) over every repeat's folds of each fold's validation score at its best epoch, "
              "chosen on that same fold; ± run-to-run sd: over repeats. CV Dice (epoch chosen on the other folds): "
              "each fold at the epoch best on average over the other folds of its repeat, not on its own labels. "
              "Pooled OOF: all out-of-fold predictions scored "
              "together. Test: each repeat's fold ensemble on the held-out test set, mean over repeats.", ""]
    if metrics and metrics.get("sweep"):
        head, rows = sweep_rows(metrics)
        lines += ["## Sweep", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += ["## Significance against the baseline", ""]
    lines += significance_markdown(comparisons) + [""]
    return "\n".join(lines)


def curve_and_augmentation_sections(figs: "Figures", inputs: ReportInputs, variants: list[str], title: str) -> list[str]:
    """Each variant's learning curves, then its augmented training samples (any task)."""
    sections = [f"<h2>{html.escape(title)}</h2><div class=grid>"]
    for variant in variants:
        sections.append(figs.add(f"curves_{variant}", figures.learning_curves(inputs.curves, variant), f"learning curves {variant}"))
    sections.append("</div>")
    previews = {v: p for v, p in inputs.augmentation_previews.items() if p.is_file()}
    if previews:
        sections.append("<h2>Augmentation (training samples as the network saw them, fold 0)</h2>")
        for variant, path in previews.items():
            sections.append(f"<h3>{html.escape(variant)}</h3>" + figs.add(f"augmentation_{variant}", path.read_bytes(),
                                                                             f"augmented training samples {variant}"))
        plain = [v for v in variants if v not in previews]
        if plain:
            sections.append(f"<p>Without augmentation: {html.escape(', '.join(plain))}.</p>")
    return sections


def _page(title: str, body: str) -> str:
    style = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.best{font-weight:bold;background:#e8f6e8}img{max-width:100%;margin:6px}
table.facts td,table.facts th{text-align:left}tr.sig td{background:#e8f6e8}tr.sig td:last-child{font-weight:bold}
.grid{display:flex;flex-wrap:wrap;align-items:flex-start}.grid img{max-width:48%}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
ul.verdicts li{margin:4px 0}
"""
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>{html.escape(title)} – seglab report</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


def stage_wall_times(folder: Path) -> dict[str, float]:
    """Wall time per stage, summed over its jobs, from Snakemake ``benchmark:`` TSVs.

    ``benchmarks/<stage>.tsv`` or ``benchmarks/<stage>/.../*.tsv``; column ``s`` is seconds.
    """
    totals: dict[str, float] = {}
    if not folder.is_dir():
        return totals
    for path in sorted(folder.rglob("*.tsv")):
        rel = path.relative_to(folder)
        stage = rel.parts[0] if len(rel.parts) > 1 else path.stem
        try:
            seconds = float(pd.read_csv(path, sep="\t")["s"].sum())
        except (KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            continue  # a job interrupted while writing its benchmark: leave it out rather than fail
        totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def package_versions() -> dict[str, str]:
    """Versions of what produced the numbers, from package metadata (no heavy imports)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("seglab", "torch", "numpy", "scipy", "snakemake", "mlflow", "dvc"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out

