"""Statistics for comparing variants: pure functions over numbers, no files, no I/O.

The user's question is whether one *recipe* beats another, and a recipe's score moves from
one training run to the next (seed, fold assignment). The decisions therefore use the
variance of whole training runs, measured by repeating the cross-validation R times:

* :func:`corrected_repeated_cv_ttest` — the R x k paired fold scores of A vs B, with the
  Nadeau-Bengio variance correction for overlapping training sets as Bouckaert & Frank
  (2004) apply it to repeated k-fold CV: var x (1/(R k) + n_test/n_train), R k - 1 df;
* :func:`hierarchical_bootstrap` — test-set Dice of A vs B, one fold ensemble per repeat:
  resamples repeats, then test images (or groups), for the mean difference; its p-value
  refers the bootstrap standard error to a t distribution with Welch-Satterthwaite degrees
  of freedom, so that two or three repeats are not treated as many;
* :func:`holm` — step-down family-wise correction over the comparisons of a study.

Secondary, and labelled as such in the report: :func:`wilcoxon_signed_rank` of the
per-image test Dice of *one pair of fitted models* (repeat 0's ensembles), which asks
whether those two models differ on these images, not whether the recipes do.

:func:`compare` runs them for the baseline (and optionally every pair) and says in words
what is significant; with one repeat every sentence says that run-to-run variance was
not measured. ``tests/test_stats_simulation.py`` checks the false-positive rate and the
power of the procedure on simulated score tables.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence

import numpy as np
# Distribution functions from scipy.special, not scipy.stats: the same numbers (t.ppf is
# stdtrit, t.sf(x) stdtr(-x), norm.cdf ndtr, chi2.ppf(q) chdtri(1-q)) for a third of the import
# time, which every evaluate and aggregate job pays for its confidence intervals.
from scipy import special

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
    half = float(special.stdtrit(len(x) - 1, 0.5 + level / 2)) * sem
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
    from scipy.stats import rankdata

    ranks = rankdata(np.abs(d))
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
    return {"statistic": statistic, "p": float(min(1.0, 2 * special.ndtr(-abs(z)))), "n": n, "method": "normal"}


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
    return {"t": t, "p": float(2 * special.stdtr(j - 1, -abs(t))), "df": j - 1, "mean": mean}


def corrected_repeated_cv_ttest(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]],
                                test_train_ratio: float) -> dict[str, Any]:
    """Corrected repeated k-fold CV t-test (Bouckaert & Frank 2004) over R x k paired fold scores.

    ``a[r][k]`` and ``b[r][k]`` are the scores of fold k of repeat r (the same folds for both).
    The R k differences d enter t = mean(d) / sqrt((1/(R k) + n_test/n_train) var(d)) with
    R k - 1 degrees of freedom: Nadeau & Bengio's correction for the overlap of training
    sets, which also covers the overlap between repeats of the same images.
    """
    rows_a, rows_b = [list(r) for r in a], [list(r) for r in b]
    if len(rows_a) != len(rows_b) or any(len(x) != len(y) for x, y in zip(rows_a, rows_b)):
        raise ValueError("corrected_repeated_cv_ttest needs the same repeats and folds for both variants")
    flat_a = [v for row in rows_a for v in row]
    flat_b = [v for row in rows_b for v in row]
    result = nadeau_bengio_ttest(flat_a, flat_b, test_train_ratio)
    return {**result, "repeats": len(rows_a), "folds": len(rows_a[0]) if rows_a else 0,
            "test_train_ratio": test_train_ratio}


def hierarchical_bootstrap(diffs: Sequence[Sequence[float]], groups: Sequence[Any] | None = None, n_boot: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Test of a mean paired difference measured over R repeats on the same test images.

    ``diffs[r][i]`` is A's minus B's score on test image i for repeat r (each repeat one
    fold ensemble per variant, trained on that repeat's folds). A draw resamples the R
    repeats, then the images (whole ``groups`` when given), and averages the drawn cells.
    Two corrections keep a handful of repeats honest. The repeat means are spread around
    the grand mean by sqrt(R / median(chi2_{R-1})) before resampling: the bootstrap's
    variance of a mean of R draws is (R-1)/R too small, and the usual unbiased variance of
    2-3 repeat means is too often far below the truth (chi2 with 1-2 df), which made 2-3
    repeats call noise significant 8-12% of the time in simulation; scaled to be
    median-unbiased it stays near alpha. And the statistic mean/se is referred to a t
    distribution whose degrees of freedom (Welch-Satterthwaite) follow the repeat and image
    shares of the variance: with run-to-run variance dominating it has ~R-1 df.
    ``low``/``high`` are the matching t interval; ``pct_low``/``pct_high`` the percentile
    interval of the draws. With R = 1 only images are resampled (``run_variance_measured``
    false): the test is then about two fitted models, not two recipes.
    """
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    repeats, n = d.shape
    empty = {"mean": math.nan, "low": math.nan, "high": math.nan, "pct_low": math.nan, "pct_high": math.nan,
             "se": math.nan, "t": math.nan, "df": math.nan, "p": math.nan, "repeats": repeats, "units": 0,
             "unit": "images", "run_variance_measured": repeats > 1}
    if n == 0:
        return empty
    mean = float(d.mean())
    if repeats > 1:
        row = d.mean(axis=1, keepdims=True)
        d = d + (math.sqrt(repeats / float(special.chdtri(repeats - 1, 0.5))) - 1) * (row - mean)
    if groups is None:
        sums, sizes, unit = d, np.ones(n), "images"
    else:
        labels, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        sums = np.stack([np.bincount(inverse, weights=row, minlength=len(labels)) for row in d])
        sizes, unit = np.bincount(inverse, minlength=len(labels)).astype(float), "groups"
    units = sums.shape[1]
    rng = np.random.default_rng(seed)
    rep_draw = rng.integers(0, repeats, size=(n_boot, repeats))
    unit_draw = rng.integers(0, units, size=(n_boot, units))
    drawn_sizes = sizes[unit_draw].sum(axis=1)
    per_unit = sums[rep_draw].sum(axis=1)                                  # (n_boot, units)
    means = np.take_along_axis(per_unit, unit_draw, axis=1).sum(axis=1) / (repeats * drawn_sizes)
    # The two shares of the variance, each resampled alone, for the degrees of freedom.
    var_images = float((sums.sum(axis=0)[unit_draw].sum(axis=1) / (repeats * drawn_sizes)).var(ddof=1))
    var_repeats = float((sums[rep_draw].sum(axis=(1, 2)) / (repeats * sizes.sum())).var(ddof=1)) if repeats > 1 else 0.0
    se = float(means.std(ddof=1))
    terms = (var_repeats**2 / (repeats - 1) if repeats > 1 else 0.0) + (var_images**2 / (units - 1) if units > 1 else 0.0)
    df = (var_repeats + var_images) ** 2 / terms if terms > 0 else float(max(units - 1, 1))
    alpha = 1 - level
    pct_low, pct_high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if se == 0:
        t, p, half = (math.nan if mean == 0 else math.copysign(math.inf, mean)), (1.0 if mean == 0 else 0.0), 0.0
    else:
        t = mean / se
        p = float(2 * special.stdtr(df, -abs(t)))
        half = float(special.stdtrit(df, 1 - alpha / 2)) * se
    return {"mean": mean, "low": mean - half, "high": mean + half, "pct_low": float(pct_low), "pct_high": float(pct_high),
            "se": se, "t": t, "df": float(df), "p": p, "repeats": repeats, "units": units, "unit": unit,
            "run_variance_measured": repeats > 1}


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
    per_image: dict[str, list[dict[str, float]]],
    fold_scores: dict[str, list[list[float]]],
    baseline: str,
    *,
    groups: dict[str, str] | None = None,
    test_train_ratio: float = 0.5,
    all_pairs: bool = False,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
    metric: str = "dice",
    label: str = "Dice",
) -> dict[str, Any]:
    """Every comparison of a study, Holm-corrected per test, with a sentence and warnings each.

    ``per_image``: variant -> one {image id: test Dice of that repeat's fold ensemble} per
    repeat; ``fold_scores``: variant -> one list of fold scores per repeat (same repeats and
    fold order for every variant); ``groups``: image id -> group, given only when the dataset
    has real groups. Two verdicts, each Holm-adjusted over the comparisons: the test set's
    (:func:`hierarchical_bootstrap`) and cross-validation's (:func:`corrected_repeated_cv_ttest`);
    ``significant`` needs both. The Wilcoxon test of repeat 0's two ensembles is kept as a
    secondary column (``wilcoxon``, ``wilcoxon_p_holm``).
    """
    variants = list(per_image)
    rows: list[dict[str, Any]] = []
    for a, b in comparison_pairs(variants, baseline, all_pairs):
        repeats = min(len(per_image[a]), len(per_image[b]), len(fold_scores.get(a, [])), len(fold_scores.get(b, [])))
        ids = sorted(set.intersection(*(set(per_image[v][r]) for v in (a, b) for r in range(repeats))))
        x = np.array([[per_image[a][r][i] for i in ids] for r in range(repeats)]).reshape(repeats, len(ids))
        y = np.array([[per_image[b][r][i] for i in ids] for r in range(repeats)]).reshape(repeats, len(ids))
        warnings: list[str] = []
        n_groups = len({groups[i] for i in ids}) if groups else 0
        use_groups = groups is not None and n_groups >= MIN_GROUPS
        if groups is not None and not use_groups:
            warnings.append(f"only {n_groups} groups among the test images: the bootstrap resamples images, "
                            "which treats images of one group as independent (CI too narrow)")
        if len(ids) < MIN_IMAGES:
            warnings.append(f"only {len(ids)} paired test images: too few for a test on them to mean much")
        folds = min([len(f) for v in (a, b) for f in fold_scores[v][:repeats]], default=0)
        fold_a = [f[:folds] for f in fold_scores[a][:repeats]]
        fold_b = [f[:folds] for f in fold_scores[b][:repeats]]
        if repeats * folds < MIN_FOLDS:
            warnings.append(f"only {repeats * folds} fold scores ({repeats} repeat(s) x {folds} folds): the corrected "
                            f"t-test has {max(repeats * folds - 1, 0)} degree(s) of freedom and can rarely detect a difference")
        rows.append({
            "variant": a, "reference": b, "repeats": repeats, "folds": folds, "images": len(ids),
            "mean_a": float(x.mean()) if x.size else math.nan, "mean_b": float(y.mean()) if y.size else math.nan,
            "cv_mean_a": float(np.mean(fold_a)) if folds else math.nan,
            "cv_mean_b": float(np.mean(fold_b)) if folds else math.nan,
            "bootstrap": hierarchical_bootstrap(x - y, [groups[i] for i in ids] if use_groups else None, n_boot, seed),
            "cv_ttest": corrected_repeated_cv_ttest(fold_a, fold_b, test_train_ratio) if folds else
            {"t": math.nan, "p": math.nan, "df": 0, "mean": math.nan, "repeats": repeats, "folds": 0},
            "wilcoxon": wilcoxon_signed_rank(x[0], y[0]) if repeats else {"statistic": 0.0, "p": math.nan, "n": 0, "method": "none"},
            "run_variance_measured": repeats > 1,
            "warnings": warnings,
        })
    for row, test_adj, cv_adj, wil_adj in zip(rows, holm([r["bootstrap"]["p"] for r in rows]),
                                             holm([r["cv_ttest"]["p"] for r in rows]),
                                             holm([r["wilcoxon"]["p"] for r in rows])):
        row["test_p_holm"], row["cv_p_holm"], row["wilcoxon_p_holm"] = test_adj, cv_adj, wil_adj
        row["test_significant"] = bool(test_adj < alpha)
        row["cv_significant"] = bool(cv_adj < alpha)
        # Both tests, and in the same direction: one recipe beats the other on held-out data and in CV.
        same_way = (row["bootstrap"]["mean"] > 0) == (row["cv_ttest"]["mean"] > 0)
        row["significant"] = row["test_significant"] and row["cv_significant"] and same_way
        row["sentence"] = describe(row, alpha, label)
    return {"baseline": baseline, "alpha": alpha, "all_pairs": all_pairs, "metric": metric, "correction": "holm",
            "repeats": min((r["repeats"] for r in rows), default=0), "comparisons": rows}


NOT_MEASURED = "run-to-run variance was not measured (split.repeats: 1), so this speaks for these trained models, not the recipes"


def _verdict(significant: bool, better: str, alpha: float, measured: bool) -> str:
    if not significant:
        return f"not significant at α = {alpha}"
    return f"significant at α = {alpha} ({better} is better)" + ("" if measured else f", but {NOT_MEASURED}")


def describe(row: dict[str, Any], alpha: float, label: str = "Dice") -> str:
    """One sentence a reader can act on; with one repeat it always says that run-to-run
    variance was not measured, whatever the verdict."""
    boot, cv = row["bootstrap"], row["cv_ttest"]
    measured = row["run_variance_measured"]
    test_better = row["variant"] if boot["mean"] > 0 else row["reference"]
    cv_better = row["variant"] if cv["mean"] > 0 else row["reference"]
    unit = f"{boot['units']} {boot['unit']}"
    test = (f"test set: {_verdict(row['test_significant'], test_better, alpha, measured)}, mean {label} difference "
            f"{boot['mean']:+.4f} (95% CI {boot['low']:+.4f} to {boot['high']:+.4f}; hierarchical bootstrap over "
            f"{row['repeats']} repeat(s) and {unit}, Holm p = {row['test_p_holm']:.4g})")
    folds = (f"cross-validation: {_verdict(row['cv_significant'], cv_better, alpha, measured)}, mean fold {label} difference "
             f"{cv['mean']:+.4f} (corrected repeated k-fold t-test over {row['repeats']} x {row['folds']} folds, "
             f"Holm p = {row['cv_p_holm']:.4g})")
    if row["significant"]:
        overall = f"both agree: {test_better} is better" + ("" if measured else f", though {NOT_MEASURED}")
    elif not measured:
        overall = f"no evidence that they differ; {NOT_MEASURED}"
    else:
        overall = "no evidence that the recipes differ beyond run-to-run variance"
    sentence = f"{row['variant']} vs {row['reference']}: {overall}; {test}; {folds}."
    if row["warnings"]:
        sentence += " Caution: " + "; ".join(row["warnings"]) + "."
    return sentence
