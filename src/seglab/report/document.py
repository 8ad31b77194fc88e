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
import pandas as pd

from ..data.dataset import PreparedData
from . import figures

COLUMNS = [
    ("cv_dice_mean", "CV Dice", "max"), ("cv_dice_sd", "± sd", None), ("cv_iou_mean", "CV IoU", "max"),
    ("test_dice", "test Dice", "max"), ("test_iou", "test IoU", "max"), ("test_pixel_accuracy", "test pixel acc.", "max"),
    ("test_hd95", "test HD95 (px)", "min"), ("params_trainable", "trainable params", None),
    ("params_frozen", "frozen params", None), ("train_seconds", "train time (s)", "min"),
]


@dataclass
class ReportInputs:
    """Paths to everything the report shows (all written by earlier stages)."""

    study: dict[str, Any]
    metrics: dict[str, Any]
    curves: pd.DataFrame
    prepared: Path
    splits: dict[str, Any]
    verify: dict[str, Any]
    eval_dirs: dict[str, Path]
    pretrain_dirs: list[Path] = field(default_factory=list)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def variant_table(metrics: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(metrics["variants"]).T


def _best_per_column(table: pd.DataFrame) -> dict[str, Any]:
    best = {}
    for key, _, rule in COLUMNS:
        if rule and key in table and table[key].notna().any():
            values = table[key].astype(float)
            best[key] = values.max() if rule == "max" else values.min()
    return best


def table_html(table: pd.DataFrame) -> str:
    best = _best_per_column(table)
    head = "".join(f"<th>{label}</th>" for _, label, _ in COLUMNS)
    rows = []
    for name, row in table.iterrows():
        cells = []
        for key, _, _ in COLUMNS:
            value = row.get(key)
            mark = key in best and value is not None and float(value) == best[key]
            cells.append(f"<td{' class=best' if mark else ''}>{_fmt(value)}</td>")
        rows.append(f"<tr><th>{html.escape(str(name))}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>variant</th>{head}</tr>{''.join(rows)}</table>"


def table_markdown(table: pd.DataFrame) -> str:
    best = _best_per_column(table)
    lines = ["| variant | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for name, row in table.iterrows():
        cells = []
        for key, _, _ in COLUMNS:
            text = _fmt(row.get(key))
            cells.append(f"**{text}**" if key in best and row.get(key) is not None and float(row.get(key)) == best[key] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sample_rows(data: PreparedData, test_ids: list[str], eval_dir: Path) -> list[dict[str, Any]]:
    """Best, median and worst test image of a variant's ensemble, by Dice."""
    per_image = pd.read_csv(eval_dir / "per_image.csv", dtype={"id": str})
    ensemble = per_image[per_image["model"] == "ensemble"].reset_index(drop=True)
    predictions = np.load(eval_dir / "ensemble_predictions.npy")
    order = ensemble["dice"].to_numpy().argsort(kind="stable")
    picks = {"best": order[-1], "median": order[len(order) // 2], "worst": order[0]}
    rows = []
    fg = list(range(1, data.num_classes))
    for caption, i in picks.items():
        row = data.indices([test_ids[i]])[0]
        image, truth, pred = np.asarray(data.images[row]), np.asarray(data.masks[row]), predictions[i]
        rows.append({"image": image, "truth": truth, "pred": pred, "overlay": figures.overlay(image, truth, pred, fg),
                     "caption": f"{caption}: {test_ids[i]}\nDice {ensemble['dice'][i]:.3f}"})
    return rows


def build_report(inputs: ReportInputs, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    study, metrics = inputs.study, inputs.metrics
    table = variant_table(metrics)
    data = PreparedData(inputs.prepared)
    fp = data.fingerprint
    verify = inputs.verify
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = {
        "study": study["study"]["name"],
        "dataset": f"{study['dataset']['name']} ({study['dataset']['source']}), {fp['num_images']} images, "
                   f"classes: {', '.join(fp['classes'])}",
        "input size": f"{fp['size']}×{fp['size']} ({fp['policy']})",
        "verification": f"{verify['pairs_ok']} of {verify['pairs_found']} pairs usable, {len(verify['problems'])} problem(s)",
        "splits": f"test {len(inputs.splits['test'])} images, {len(inputs.splits['folds'])} folds of "
                  f"{', '.join(str(len(f)) for f in inputs.splits['folds'])}",
        "normalisation": f"mean {fp['mean']}, std {fp['std']}",
        "class frequency": ", ".join(f"{n} {f:.3f}" for n, f in zip(fp["classes"], fp["class_frequency"])),
        "baseline": metrics["baseline"],
        "best variant (test Dice)": metrics["best_variant"],
        "python / platform": f"{platform.python_version()} / {platform.platform()}",
        "written": when,
    }
    sections = [f"<h1>seglab study: {html.escape(study['study']['name'])}</h1>",
                "<h2>At a glance</h2><table>" + "".join(
                    f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts.items()) + "</table>",
                "<h2>Variants</h2>",
                "<p>CV: best-epoch validation score of each fold, mean ± sd over folds. Test: the fold ensemble "
                "(mean of the folds' probabilities) on the held-out test set. Dice and IoU are per image, averaged "
                "over foreground classes then over images; an image where a class is absent from both truth and "
                "prediction scores 1 for that class. Best value per column in bold.</p>",
                table_html(table),
                _img(figures.metric_bars(table), "Dice per variant"),
                "<h2>Learning curves</h2><div class=grid>"]
    for variant in table.index:
        sections.append(_img(figures.learning_curves(inputs.curves, variant), f"learning curves {variant}"))
    sections.append("</div><h2>Sample predictions (test set, fold ensemble)</h2>")
    for variant, eval_dir in inputs.eval_dirs.items():
        rows = sample_rows(data, inputs.splits["test"], eval_dir)
        sections.append(f"<h3>{html.escape(variant)}</h3>" + _img(figures.sample_grid(rows, data.num_classes), f"samples {variant}"))
    if inputs.pretrain_dirs:
        sections.append("<h2>Colorization pretraining</h2>")
        for folder in inputs.pretrain_dirs:
            history = pd.read_csv(folder / "history.csv")
            sections.append(f"<h3>{html.escape(folder.name)}</h3>" + _img(figures.pretrain_curve(history), "pretraining curve")
                            + _img((folder / "samples.png").read_bytes(), "recoloured samples"))
    if verify["problems"]:
        sections.append("<h2>Verification problems</h2><ul>" + "".join(
            f"<li>{html.escape(p['file'])}: {html.escape(p['problem'])}</li>" for p in verify["problems"]) + "</ul>")
    (out_dir / "index.html").write_text(_page(study["study"]["name"], "\n".join(sections)))
    (out_dir / "summary.md").write_text(_markdown(facts, table))


def _markdown(facts: dict[str, Any], table: pd.DataFrame) -> str:
    lines = [f"# seglab study: {facts['study']}", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items() if k != "study"]
    lines += ["", "## Variants", "", table_markdown(table), "",
              "CV: mean ± sd over folds of the best-epoch validation score. Test: fold ensemble on the held-out test set.", ""]
    return "\n".join(lines)


def _page(title: str, body: str) -> str:
    style = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td.best{font-weight:bold;background:#e8f6e8}img{max-width:100%;margin:6px}
.grid{display:flex;flex-wrap:wrap}.grid img{max-width:48%}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
"""
    return (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)} – seglab report</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


def load_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
