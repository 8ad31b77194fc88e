"""End to end: a tiny real study through Snakemake, then what the comparison and report say.

The study has three variants on the built-in data: one epoch, six epochs, and an exact copy
of the six-epoch variant. The data generator and CPU training are deterministic, so the
copy gives identical per-image scores: its difference must be reported as not significant,
while six epochs against one must be significant on the test set. The study has one repeat,
so every verdict must say that run-to-run variance was not measured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.helpers import run_seglab, run_snakemake

pytestmark = pytest.mark.e2e

STUDY = {
    "study": {"name": "e2e-stats", "output_dir": "results", "seed": 1, "device": "cpu", "baseline": "one-epoch"},
    "dataset": {"name": "tiny", "source": "builtin", "builtin": {"kind": "lesions", "count": 64, "size": 32, "groups": 16, "seed": 0}},
    "preprocess": {"size": 32},
    "split": {"folds": 2, "test_fraction": 0.25},
    "stats": {"all_pairs": True, "alpha": 0.05},
    "defaults": {"model": {"base": 4, "depth": 2}, "train": {"epochs": 6, "batch_size": 8, "patience": 6}},
    "variants": {"one-epoch": {"train": {"epochs": 1}}, "several-epochs": {}, "several-epochs-copy": {}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    cfg = {**STUDY, "tracking": {"uri": f"sqlite:///{workdir / 'mlflow.db'}"}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    done = run_snakemake(workdir, None)  # config.yaml, as `make run` reads it
    assert done.returncode == 0, done.stderr[-4000:]
    return workdir


def _rows(study: Path) -> dict[tuple[str, str], dict]:
    result = json.loads((study / "results/stats/comparisons.json").read_text())
    return {(r["variant"], r["reference"]): r for r in result["comparisons"]}


def test_clear_difference_is_significant_and_identical_variants_are_not(study):
    rows = _rows(study)
    assert set(rows) == {("several-epochs", "one-epoch"), ("several-epochs-copy", "one-epoch"),
                         ("several-epochs", "several-epochs-copy")}
    clear, same = rows[("several-epochs", "one-epoch")], rows[("several-epochs", "several-epochs-copy")]
    assert clear["test_significant"] and clear["bootstrap"]["mean"] > 0 and clear["bootstrap"]["low"] > 0
    assert not clear["run_variance_measured"]
    assert not same["significant"] and not same["test_significant"]
    assert same["bootstrap"]["mean"] == 0.0 and same["test_p_holm"] == 1.0
    # Two fold scores are too few for the fold-level test: the report must say so.
    assert any("2 fold scores" in w for w in clear["warnings"])

    html = (study / "results/report/index.html").read_text()
    summary = (study / "results/report/summary.md").read_text()
    for text in (html, summary):
        assert re.search(r"several-epochs vs one-epoch: [^\n]*test set: significant at α = 0\.05 \(several-epochs is better\), "
                         r"but run-to-run variance was not measured", text)
        assert "several-epochs vs several-epochs-copy: no evidence that they differ; run-to-run variance was not measured" in text
        assert "This study ran one repeat (split.repeats: 1): run-to-run variance was not measured" in text
    sig_rows = re.findall(r"<tr class=(sig|nosig)><td>([^<]+)</td><td>([^<]+)</td>", html)
    assert ("nosig", "several-epochs", "several-epochs-copy") in sig_rows
    assert "not measured (1 repeat)" in html, "the run-to-run sd column says why it is empty"


def test_out_of_fold_predictions_cover_each_training_image_once(study):
    splits = json.loads((study / "results/data/splits/r0.json").read_text())
    for variant in STUDY["variants"]:
        folder = study / "results/eval" / variant / "r0"
        oof = pd.read_csv(folder / "oof_per_image.csv", dtype={"id": str})
        assert sorted(oof["id"]) == sorted(i for fold in splits["folds"] for i in fold)
        for k, ids in enumerate(splits["folds"]):
            assert sorted(oof.loc[oof["fold"] == k, "id"]) == sorted(ids)
        # The best checkpoint re-scored on its validation fold gives what training recorded.
        metrics = json.loads((folder / "metrics.json").read_text())
        for k in range(len(splits["folds"])):
            summary = json.loads((study / f"results/models/{variant}/r0/fold{k}/summary.json").read_text())
            assert metrics["oof"]["per_fold"][k]["dice"] == pytest.approx(summary["val_dice"], abs=1e-6)
        assert metrics["oof"]["pooled"]["dice"] == pytest.approx(oof["dice"].mean(), abs=1e-9)
        per_class = pd.read_csv(folder / "per_class.csv")
        assert set(per_class["set"]) == {"test", "oof"}
        test = pd.read_csv(folder / "per_image.csv", dtype={"id": str})
        assert set(test["model"]) == {"fold0", "fold1", "ensemble"}


def test_study_metrics_have_spread_ci_oof_and_run_ids(study):
    metrics = json.loads((study / "results/metrics.json").read_text())
    for name, row in metrics["variants"].items():
        folds = row["cv_dice_per_fold"]
        assert row["cv_dice_mean"] == pytest.approx(np.mean(folds))
        assert row["cv_dice_sd"] == pytest.approx(np.std(folds, ddof=1))
        assert row["cv_dice_ci95_low"] <= row["cv_dice_mean"] <= row["cv_dice_ci95_high"]
        assert 0 <= row["oof_dice"] <= 1 and row["oof_images"] == 48
        ids = [row["run_ids"]["variant"], *row["run_ids"]["folds"]]
        assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids), ids
    html = (study / "results/report/index.html").read_text()
    for row in metrics["variants"].values():
        assert row["run_ids"]["variant"] in html and all(i in html for i in row["run_ids"]["folds"])
    for fact in ("config hash", "git commit", "wall time per stage", "versions", "device"):
        assert f"<th>{fact}</th>" in html
    assert re.search(r"train \d+\.\d+s", html), "wall time per stage comes from the benchmark TSVs"


def test_snakemake_report_carries_the_figures(study):
    done = run_snakemake(study, None, "--report", "results/snakemake-report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    text = (study / "results/snakemake-report.html").read_text(errors="replace")
    for name in ("radar.png", "metric_bars.png", "metric_and_loss_bars.png", "augmentation_one-epoch.png",
                 "comparisons.csv", "metrics.json"):
        assert name in text


def test_report_shows_metric_and_loss_bars_and_each_variants_augmentation(study):
    """As the ISIC report drew them: IoU/Dice beside train/validation loss; and what each
    variant's network was shown (fold 0's augmentation preview), per variant."""
    html = (study / "results/report/index.html").read_text()
    assert 'alt="test IoU and Dice beside train and validation loss"' in html
    assert "<h2>Augmentation (training samples as the network saw them, fold 0)</h2>" in html
    figures = study / "results/report/figures"
    for variant in STUDY["variants"]:  # the default augmentation (flips) applies to each
        preview = study / "results/models" / variant / "r0" / "fold0" / "augmentation.png"
        assert (figures / f"augmentation_{variant}.png").read_bytes() == preview.read_bytes()
        assert f'alt="augmented training samples {variant}"' in html


def test_predict_writes_masks_at_original_size(study, tmp_path):
    images = tmp_path / "new"
    images.mkdir()
    source = sorted((study / "data/raw/tiny/images").glob("*.png"))[0]
    shutil.copy(source, images / "a.png")
    Image.open(source).resize((50, 37)).convert("RGB").save(images / "b.jpg")
    out = tmp_path / "out"
    base = ["predict", "--config", "results/config/variants/several-epochs.json",
            "--prepared", "results/data/prepared", "--models", "results/models/several-epochs",
            "--images", str(images), "--out", str(out)]
    done = run_seglab(base, study)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "predict" in done.stderr and "100%" in done.stderr  # the progress bar
    assert Image.open(out / "masks/b.png").size == (50, 37)
    assert set(np.unique(np.asarray(Image.open(out / "masks/a.png")))) <= {0, 255}
    assert Image.open(out / "overlays/b.png").size == (50, 37)
    missing = run_seglab([*base[:-2], "--out", str(out), "--fold", "9"], study)
    assert missing.returncode == 2 and "fold9/best.pt" in missing.stderr


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


PROBE = """<script>window.addEventListener('load',function(){var imgs=[].slice.call(document.images);
var ok=imgs.filter(function(i){return i.complete&&i.naturalWidth>0&&i.naturalHeight>0&&i.getBoundingClientRect().width>0;}).length;
var d=document.createElement('pre');d.id='probe';d.textContent='IMAGES '+ok+'/'+imgs.length;document.body.appendChild(d);});</script>"""


def _rendered(page: Path, profile: Path) -> tuple[int, int]:
    """(images rendered, images) of a page in headless Chromium with every network request refused."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
           "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r"IMAGES (\d+)/(\d+)", out.stdout)
    assert found, f"chromium printed no probe result: {out.stderr[-1500:]}"
    return int(found.group(1)), int(found.group(2))


def test_report_renders_every_figure_offline_in_chromium(study, tmp_path):
    if _chromium() is None:
        pytest.skip("chromium not found: install Debian's package (apt-get install -y chromium) to run this check")
    html = (study / "results/report/index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the report must not load anything from the network"
    expected = len(re.findall(r"<img ", html))
    # bars, radar, metric-and-loss bars; curves, samples and augmentation preview per variant
    assert expected == 3 + 3 * len(STUDY["variants"])
    page = tmp_path / "probe.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    assert _rendered(page, tmp_path / "profile") == (expected, expected)
    # The probe can fail: a broken embedded image is not counted as rendered.
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("</body>", '<img alt=x src="data:image/png;base64,AAAA">' + PROBE + "</body>"))
    assert _rendered(broken, tmp_path / "profile2") == (expected, expected + 1)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p3'}",
                    "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,2400", f"--screenshot={shot}",
                    (study / "results/report/index.html").as_uri()], capture_output=True, timeout=180, cwd=tmp_path)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200, "the screenshot is blank"
