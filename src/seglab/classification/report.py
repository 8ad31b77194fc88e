"""The report of a classification study: ``index.html`` (self-contained) and ``summary.md``, with
the figures as PNG files, built like segmentation's (:mod:`seglab.report.document`) from the
files the earlier stages wrote: the variants table (CV accuracy mean ± sd and CI, pooled OOF,
test ensemble), the significance tests, learning curves of loss and accuracy, the augmentation
previews, per-class tables and confusion matrices, and class activation maps of correctly and
wrongly classified test images.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .. import layout
from ..report.class_figures import confusion_matrix_figure
from ..report.document import (Figures, ReportInputs, _cell, _fmt, _page, curve_and_augmentation_sections, run_ids_html,
                               significance_html, significance_markdown, table_html)
from .data import PreparedImages

# (key in the study table, header, which value is best).
COLUMNS = [
    ("repeats", "repeats", None),
    ("cv_accuracy_mean", "CV accuracy (best epoch chosen on the same fold)", "max"), ("cv_accuracy_sd", "± sd over folds", "min"),
    ("cv_accuracy_repeat_sd", "± run-to-run sd", "min"), ("cv_accuracy_ci", "CV accuracy 95% CI", None),
    ("cv_balanced_accuracy_mean", "CV balanced acc.", "max"), ("oof_accuracy", "pooled OOF accuracy", "max"),
    ("test_accuracy", "test accuracy (ensemble, mean over repeats)", "max"), ("test_accuracy_repeat_sd", "± run-to-run sd", "min"),
    ("ranked_first", "ranked first (share of repeats)", "max"), ("test_balanced_accuracy", "test balanced acc.", "max"),
    ("test_macro_f1", "test macro F1", "max"), ("test_roc_auc", "test ROC AUC", "max"),
    ("test_accuracy_folds", "test accuracy per fold model", None),
    ("params_trainable", "trainable params", None), ("params_frozen", "frozen params", None),
    ("train_seconds", "train time (s)", "min"), ("best_epochs", "best epoch per run", None),
]


def variant_table(metrics: dict[str, Any]) -> pd.DataFrame:
    table = pd.DataFrame(metrics["variants"]).T
    table["cv_accuracy_ci"] = [f"{_fmt(lo)} – {_fmt(hi)}" for lo, hi in
                               zip(table["cv_accuracy_ci95_low"], table["cv_accuracy_ci95_high"])]
    return table


def table_markdown(table: pd.DataFrame) -> str:
    keys = ["cv_accuracy_mean", "cv_accuracy_sd", "oof_accuracy", "test_accuracy", "test_balanced_accuracy", "test_macro_f1",
            "test_roc_auc", "train_seconds"]
    labels = dict((k, label) for k, label, _ in COLUMNS)
    lines = ["| variant | " + " | ".join(labels[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += ["| " + " | ".join([str(name)] + [_cell(k, row.get(k)) for k in keys]) + " |" for name, row in table.iterrows()]
    return "\n".join(lines)


def per_class_html(eval_dir: Path) -> str:
    frame = pd.read_csv(eval_dir / layout.PER_CLASS)
    frame = frame[frame["model"].isin(["ensemble", "pooled"])]
    head = "<tr><th>set</th><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    rows = "".join(f"<tr><td>{'test ensemble' if r['set'] == 'test' else 'pooled OOF'}</td><td>{html.escape(str(r['class']))}</td>"
                   f"<td>{_fmt(r['precision'])}</td><td>{_fmt(r['recall'])}</td><td>{_fmt(r['f1'])}</td><td>{int(r['support'])}</td></tr>"
                   for _, r in frame.iterrows())
    return f"<table>{head}{rows}</table>"


def study_facts(inputs: ReportInputs, data: PreparedImages) -> dict[str, str]:
    study, metrics, fp, verify = inputs.study, inputs.metrics, data.fingerprint, inputs.verify
    devices = sorted({str(r["device"]) for r in metrics["variants"].values()})
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in inputs.stage_seconds.items()) or "no benchmark files"
    counts = ", ".join(f"{c} {n}" for c, n in fp["class_counts"].items())
    return {
        "study": study["study"]["name"], "task": "classification (one label per image)",
        "dataset": f"{study['dataset']['name']} (source {study['dataset']['source']}): {fp['num_images']} images, "
                   f"{verify['pairs_found'] - verify['pairs_ok']} left out by verification",
        "classes": f"{fp['num_classes']}: {counts}",
        "images": f"{fp['size']} x {fp['size']} px, {fp['channels']} channel(s) ({fp['policy']})",
        "split": f"test {len(inputs.splits['test'])} images ({inputs.splits['test_source']}), "
                 f"{len(inputs.splits['folds'])} folds of {[len(f) for f in inputs.splits['folds']]} images, "
                 f"stratified by class; {metrics['repeats']} repeat(s)",
        "baseline": study["study"]["baseline"], "best variant (test accuracy)": metrics["best_variant"],
        "device": ", ".join(devices), "wall time per stage": stages,
        "git commit": inputs.git_commit, "config hash": inputs.config_hash,
        "versions": ", ".join(f"{k} {v}" for k, v in inputs.versions.items()),
    }


def build_report(inputs: ReportInputs, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    study, metrics = inputs.study, inputs.metrics
    table = variant_table(metrics)
    data = PreparedImages(inputs.prepared)
    facts = study_facts(inputs, data)
    figs = Figures(out_dir / "figures")
    sections = [
        f"<h1>seglab study: {html.escape(study['study']['name'])}</h1>",
        "<h2>At a glance</h2><table class=facts>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()) + "</table>",
        "<h2>Variants</h2>",
        "<p>CV: each fold's validation accuracy at its best epoch, chosen on that same fold (so slightly optimistic), "
        "mean ± sd and t-based 95% CI over every repeat's folds. Pooled OOF: every fold's best checkpoint on its own "
        "validation fold, all out-of-fold images scored together. Test: each repeat's fold ensemble (mean of its folds' "
        "class probabilities) on the held-out test set, mean over repeats. Balanced accuracy is the mean recall over "
        "classes; ROC AUC is one-vs-rest (macro) for more than two classes. Best value per column in bold.</p>",
        table_html(table, COLUMNS),
        "<h2>Significance against the baseline</h2>",
        significance_html(inputs.comparisons),
    ]
    sections += curve_and_augmentation_sections(figs, inputs, list(table.index), "Learning curves (loss and validation accuracy)")
    sections.append("<h2>Per class and confusion matrices (test ensemble, repeat 0)</h2>")
    for variant, eval_dir in inputs.eval_dirs.items():
        evaluation = json.loads((eval_dir / layout.EVAL_METRICS).read_text())
        matrix = confusion_matrix_figure(evaluation["test_confusion"], evaluation["classes"],
                                         figs.folder / f"confusion_{variant}.png", f"{variant}: test images")
        sections.append(f"<h3>{html.escape(variant)}</h3>" + per_class_html(eval_dir)
                        + figs.add(f"confusion_{variant}", matrix.read_bytes(), f"confusion matrix {variant}"))
    sections += cam_sections(inputs, figs)
    sections.append("<h2>MLflow runs</h2>" + run_ids_html(metrics, []))
    if inputs.verify["problems"]:
        sections.append("<h2>Verification problems</h2><ul>" + "".join(
            f"<li>{html.escape(p['file'])}: {html.escape(p['problem'])}</li>" for p in inputs.verify["problems"]) + "</ul>")
    (out_dir / "index.html").write_text(_page(study["study"]["name"], "\n".join(sections)))
    lines = [f"# seglab study: {facts['study']}", ""] + [f"- **{k}**: {v}" for k, v in facts.items() if k != "study"]
    lines += ["", "## Variants", "", table_markdown(table), "", "## Significance against the baseline", ""]
    lines += significance_markdown(inputs.comparisons) + [""]
    (out_dir / "summary.md").write_text("\n".join(lines))


def cam_sections(inputs: ReportInputs, figs: Figures) -> list[str]:
    """Each variant's Grad-CAM overlays of its most confident correct and misclassified test images."""
    found = {v: d / layout.CAM_OVERLAYS for v, d in inputs.eval_dirs.items() if (d / layout.CAM_OVERLAYS).is_file()}
    if not found:
        return []
    sections = ["<h2>Class activation maps (test set, repeat 0's fold ensemble)</h2>",
                "<p>Grad-CAM of the predicted class at each network's last feature map, averaged over the fold models: "
                "where the evidence for the prediction lies. The most confident correct images first, then the most "
                "confident misclassified ones (red).</p>"]
    for variant, path in found.items():
        sections.append(f"<h3>{html.escape(variant)}</h3>" + figs.add(f"cams_{variant}", path.read_bytes(), f"class activation maps {variant}"))
    return sections
