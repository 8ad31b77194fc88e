"""Statistics for comparing variants: pure functions over numbers, no files, no I/O.

Each comparison pairs two variants on the *same* items, so that item difficulty cancels:

* :func:`wilcoxon_signed_rank` — per-image test Dice of variant A vs B (same test images);
* :func:`bootstrap_mean_diff` — 95% CI of the mean per-image difference, resampling
  images, or whole groups (patients, videos) when images of one group are correlated;
* :func:`nadeau_bengio_ttest` — fold scores of A vs B (same folds), with the variance
  correction for overlapping training sets (Nadeau & Bengio 2003), since the plain
  paired t-test over CV folds is far too optimistic;
* :func:`holm` — step-down family-wise correction over all the comparisons of a study.

:func:`compare` runs them for the baseline (and optionally every pair) and says in
words what is significant, with warnings when there is too little data to tell.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

# Below these sizes a test cannot reach the usual levels or its approximation breaks down;
# the report then warns instead of letting a p-value look meaningful.
MIN_IMAGES = 10      # exact two-sided Wilcoxon p >= 2/2^n: n < 6 can never reach 0.05
MIN_FOLDS = 5        # Nadeau-Bengio has folds-1 degrees of freedom
MIN_GROUPS = 5       # a cluster bootstrap over fewer groups has too few distinct resamples
EXACT_MAX_N = 50     # exact Wilcoxon null distribution up to this many non-zero differences


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided t-based confidence interval of the mean; (nan, nan) for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean, sem = float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x)))
    half = float(sps.t.ppf(0.5 + level / 2, len(x) - 1)) * sem
    return mean - half, mean + half


def _exact_two_sided(w_plus: float, n: int) -> float:
    """P(W+ as or more extreme) under H0 for integer ranks 1..n (no ties), two-sided."""
    # counts[s] = number of sign patterns with W+ = s, built rank by rank (subset-sum DP).
    total = n * (n + 1) // 2
    counts = np.zeros(total + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    probs = counts / 2.0**n
    w = int(round(w_plus))
    low = probs[: min(w, total - w) + 1].sum()
    return float(min(1.0, 2.0 * low))


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Paired Wilcoxon signed-rank test of a - b, two-sided.

    Zero differences are dropped (Wilcoxon's convention, scipy's ``zero_method='wilcox'``).
    Without ties and with at most :data:`EXACT_MAX_N` pairs the p-value is exact; otherwise
    the normal approximation with tie correction and no continuity correction is used
    (scipy's defaults). Returns ``statistic`` (min(W+, W-), as scipy reports), ``p``,
    ``n`` (non-zero pairs) and ``method``. All differences zero -> p = 1 (nothing differs).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.ndim != 1:
        raise ValueError("wilcoxon_signed_rank needs two 1-D sequences of equal length")
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return {"statistic": 0.0, "p": 1.0, "n": 0, "method": "none"}
    ranks = sps.rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    w_minus = float(ranks[d < 0].sum())
    statistic = min(w_plus, w_minus)
    ties = len(np.unique(np.abs(d))) < n
    if n <= EXACT_MAX_N and not ties:
        return {"statistic": statistic, "p": _exact_two_sided(w_plus, n), "n": n, "method": "exact"}
    mean = n * (n + 1) / 4
    _, tie_counts = np.unique(ranks, return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - float((tie_counts**3 - tie_counts).sum()) / 48
    z = (statistic - mean) / math.sqrt(var) if var > 0 else 0.0
    return {"statistic": statistic, "p": float(min(1.0, 2 * sps.norm.cdf(-abs(z)))), "n": n, "method": "normal"}


def bootstrap_mean_diff(diffs: Sequence[float], groups: Sequence[Any] | None = None, n_boot: int = 2000,
                        seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Percentile bootstrap CI of the mean paired difference.

    With ``groups``, whole groups are resampled (cluster bootstrap) and the statistic is the
    mean over the images of the drawn groups, so correlated images of one patient do not
    count as independent evidence. Deterministic for a seed.
    """
    d = np.asarray(diffs, dtype=float)
    if len(d) == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "unit": "images", "units": 0}
    rng = np.random.default_rng(seed)
    if groups is None:
        draws = rng.integers(0, len(d), size=(n_boot, len(d)))
        means = d[draws].mean(axis=1)
        unit, units = "images", len(d)
    else:
        labels, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        sums = np.bincount(inverse, weights=d, minlength=len(labels))
        sizes = np.bincount(inverse, minlength=len(labels)).astype(float)
        draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
        means = sums[draws].sum(axis=1) / sizes[draws].sum(axis=1)
        unit, units = "groups", len(labels)
    alpha = 1 - level
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {"mean": float(d.mean()), "low": float(low), "high": float(high), "unit": unit, "units": units}


def nadeau_bengio_ttest(a: Sequence[float], b: Sequence[float], test_train_ratio: float) -> dict[str, Any]:
    """Corrected resampled t-test over paired fold scores (Nadeau & Bengio 2003).

    t = mean(d) / sqrt((1/J + n_test/n_train) * var(d)) with J folds and J - 1 degrees of
    freedom. ``test_train_ratio`` is n_test / n_train of one fold (1/(k-1) for k-fold CV);
    0 gives the ordinary paired t-test. Zero variance: p = 1 when the mean difference is 0,
    else 0 (every fold agrees on a non-zero difference).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    j = len(d)
    if j < 2:
        return {"t": math.nan, "p": math.nan, "df": max(j - 1, 0), "mean": float(d.mean()) if j else math.nan}
    mean, var = float(d.mean()), float(d.var(ddof=1))
    if var == 0:
        return {"t": math.nan if mean == 0 else math.copysign(math.inf, mean), "p": 1.0 if mean == 0 else 0.0,
                "df": j - 1, "mean": mean}
    t = mean / math.sqrt((1 / j + test_train_ratio) * var)
    return {"t": t, "p": float(2 * sps.t.sf(abs(t), j - 1)), "df": j - 1, "mean": mean}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (NaN stays NaN, is not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for rank, i in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def comparison_pairs(variants: Sequence[str], baseline: str, all_pairs: bool) -> list[tuple[str, str]]:
    """(variant, reference) pairs: every variant against the baseline, then the other pairs if asked."""
    pairs = [(v, baseline) for v in variants if v != baseline]
    if all_pairs:
        others = [v for v in variants if v != baseline]
        pairs += list(itertools.combinations(others, 2))
    return pairs


def compare(
    per_image: dict[str, dict[str, float]],
    fold_scores: dict[str, list[float]],
    baseline: str,
    *,
    groups: dict[str, str] | None = None,
    test_train_ratio: float = 0.5,
    all_pairs: bool = False,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every comparison of a study, Holm-corrected, with a sentence and warnings each.

    ``per_image``: variant -> {image id: test Dice}; ``fold_scores``: variant -> per-fold
    scores (same fold order for every variant); ``groups``: image id -> group, given only
    when the dataset has real groups. The decision (``significant``) is the Holm-adjusted
    Wilcoxon p-value below ``alpha``; the bootstrap CI and the corrected t-test are reported
    beside it as the effect size and the fold-level view.
    """
    variants = list(per_image)
    rows: list[dict[str, Any]] = []
    for a, b in comparison_pairs(variants, baseline, all_pairs):
        ids = sorted(set(per_image[a]) & set(per_image[b]))
        x = np.array([per_image[a][i] for i in ids])
        y = np.array([per_image[b][i] for i in ids])
        warnings: list[str] = []
        n_groups = len({groups[i] for i in ids}) if groups else 0
        use_groups = groups is not None and n_groups >= MIN_GROUPS
        if groups is not None and not use_groups:
            warnings.append(f"only {n_groups} groups among the test images: the bootstrap resamples images, "
                            "which treats images of one group as independent (CI too narrow)")
        if len(ids) < MIN_IMAGES:
            warnings.append(f"only {len(ids)} paired test images: too few for the Wilcoxon test to mean much")
        folds = min(len(fold_scores.get(a, [])), len(fold_scores.get(b, [])))
        if folds < MIN_FOLDS:
            warnings.append(f"only {folds} folds: the corrected t-test has {max(folds - 1, 0)} degree(s) of freedom "
                            "and can rarely detect a difference")
        rows.append({
            "variant": a, "reference": b, "images": len(ids), "folds": folds,
            "mean_a": float(x.mean()) if len(x) else math.nan, "mean_b": float(y.mean()) if len(y) else math.nan,
            "wilcoxon": wilcoxon_signed_rank(x, y),
            "bootstrap": bootstrap_mean_diff(x - y, [groups[i] for i in ids] if use_groups else None, n_boot, seed),
            "nadeau_bengio": nadeau_bengio_ttest(fold_scores.get(a, [])[:folds], fold_scores.get(b, [])[:folds],
                                                 test_train_ratio),
            "warnings": warnings,
        })
    for row, p_adj, nb_adj in zip(rows, holm([r["wilcoxon"]["p"] for r in rows]),
                                  holm([r["nadeau_bengio"]["p"] for r in rows])):
        row["p_holm"] = p_adj
        row["nb_p_holm"] = nb_adj
        row["significant"] = bool(p_adj < alpha)
        row["sentence"] = describe(row, alpha)
    return {"baseline": baseline, "alpha": alpha, "all_pairs": all_pairs, "metric": "dice",
            "correction": "holm", "comparisons": rows}


def describe(row: dict[str, Any], alpha: float) -> str:
    """One sentence a reader can act on."""
    boot = row["bootstrap"]
    diff = f"mean Dice difference {boot['mean']:+.4f} (95% CI {boot['low']:+.4f} to {boot['high']:+.4f}, " \
           f"bootstrap over {boot['units']} {boot['unit']})"
    test = f"Wilcoxon p = {row['wilcoxon']['p']:.4g}, Holm-adjusted {row['p_holm']:.4g}"
    if row["significant"]:
        better = row["variant"] if boot["mean"] > 0 else row["reference"]
        verdict = f"significant at α = {alpha}: {better} is better"
    else:
        verdict = f"not significant at α = {alpha}: no evidence that they differ"
    sentence = f"{row['variant']} vs {row['reference']}: {verdict}; {diff}; {test}."
    if row["warnings"]:
        sentence += " Caution: " + "; ".join(row["warnings"]) + "."
    return sentence
