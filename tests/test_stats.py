"""The statistics of seglab.stats checked against scipy (and by hand) on fixed numbers."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from seglab import stats

A = [0.81, 0.77, 0.92, 0.65, 0.70, 0.88, 0.93, 0.59, 0.74, 0.80, 0.86, 0.71]
B = [0.795, 0.70, 0.89, 0.663, 0.61, 0.834, 0.846, 0.604, 0.689, 0.727, 0.80, 0.731]  # no tied |A - B|


def test_wilcoxon_exact_matches_scipy():
    ours = stats.wilcoxon_signed_rank(A, B)
    ref = sps.wilcoxon(A, B, zero_method="wilcox", method="exact")
    assert ours["method"] == "exact"
    assert ours["statistic"] == pytest.approx(ref.statistic)
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-12)


def test_wilcoxon_with_ties_and_zeros_matches_scipy_normal_approximation():
    a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    b = [0, 2, 1, 5, 3, 6, 5, 9, 6, 8, 9, 11]  # zeros and tied |differences|
    ours = stats.wilcoxon_signed_rank(a, b)
    ref = sps.wilcoxon(a, b, zero_method="wilcox", method="approx", correction=False)
    assert ours["method"] == "normal"
    assert ours["n"] == 10
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_wilcoxon_large_sample_uses_normal_approximation_like_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=80), rng.normal(0.2, size=80)
    ours = stats.wilcoxon_signed_rank(a, b)
    ref = sps.wilcoxon(a, b, method="approx")
    assert ours["p"] == pytest.approx(ref.pvalue, rel=1e-10)


def test_identical_samples_are_not_different():
    result = stats.wilcoxon_signed_rank(A, A)
    assert result["p"] == 1.0 and result["n"] == 0


def test_t_interval_matches_scipy():
    low, high = stats.t_interval([0.7, 0.74, 0.69, 0.8, 0.77])
    ref = sps.t.interval(0.95, 4, loc=np.mean([0.7, 0.74, 0.69, 0.8, 0.77]),
                         scale=sps.sem([0.7, 0.74, 0.69, 0.8, 0.77]))
    assert (low, high) == pytest.approx(ref, rel=1e-12)
    assert all(math.isnan(v) for v in stats.t_interval([0.5]))


def test_nadeau_bengio_reduces_to_paired_t_test_and_inflates_variance():
    a, b = [0.80, 0.78, 0.83, 0.79, 0.81], [0.76, 0.77, 0.78, 0.74, 0.79]
    plain = stats.nadeau_bengio_ttest(a, b, 0.0)
    ref = sps.ttest_rel(a, b)
    assert plain["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert plain["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    corrected = stats.nadeau_bengio_ttest(a, b, 1 / 4)
    d = np.subtract(a, b)
    t = d.mean() / math.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    assert corrected["t"] == pytest.approx(t, rel=1e-12)
    assert corrected["p"] == pytest.approx(2 * sps.t.sf(abs(t), 4), rel=1e-12)
    assert corrected["p"] > plain["p"]


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    out = stats.holm([0.01, float("nan")])
    assert out[0] == pytest.approx(0.01) and math.isnan(out[1])


def test_bootstrap_is_deterministic_and_covers_the_mean():
    d = np.subtract(A, B)
    one = stats.bootstrap_mean_diff(d, n_boot=4000, seed=1)
    two = stats.bootstrap_mean_diff(d, n_boot=4000, seed=1)
    assert one == two
    assert one["low"] < d.mean() < one["high"]
    # Close to scipy's percentile bootstrap of the mean on the same numbers.
    ref = sps.bootstrap((d,), np.mean, n_resamples=4000, method="percentile", random_state=1).confidence_interval
    assert one["low"] == pytest.approx(ref.low, abs=0.006)
    assert one["high"] == pytest.approx(ref.high, abs=0.006)


def test_cluster_bootstrap_is_wider_when_groups_are_correlated():
    # Four groups with a shared offset each: resampling images ignores that correlation.
    d = np.repeat([0.1, -0.05, 0.12, 0.0], 6) + np.tile(np.linspace(-0.01, 0.01, 6), 4)
    groups = np.repeat(["p1", "p2", "p3", "p4"], 6)
    by_image = stats.bootstrap_mean_diff(d, None, seed=0)
    by_group = stats.bootstrap_mean_diff(d, groups, seed=0)
    assert by_group["unit"] == "groups" and by_group["units"] == 4
    assert by_group["high"] - by_group["low"] > 2 * (by_image["high"] - by_image["low"])


def test_corrected_repeated_cv_ttest_by_hand():
    a = [[0.80, 0.78, 0.83], [0.79, 0.81, 0.82]]
    b = [[0.76, 0.77, 0.78], [0.74, 0.79, 0.77]]
    d = np.subtract(a, b).ravel()
    ours = stats.corrected_repeated_cv_ttest(a, b, 0.5)
    t = d.mean() / math.sqrt((1 / 6 + 0.5) * d.var(ddof=1))   # Bouckaert & Frank: 1/(R k) + n2/n1
    assert ours["t"] == pytest.approx(t, rel=1e-12)
    assert ours["p"] == pytest.approx(2 * sps.t.sf(abs(t), 5), rel=1e-12)
    assert (ours["df"], ours["repeats"], ours["folds"]) == (5, 2, 3)
    with pytest.raises(ValueError, match="same repeats and folds"):
        stats.corrected_repeated_cv_ttest(a, [b[0]], 0.5)


def test_hierarchical_bootstrap_is_deterministic_and_wider_with_run_to_run_spread():
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.02, size=(1, 30))
    steady = 0.01 + image + rng.normal(0, 0.005, size=(3, 30))
    jumpy = steady + np.array([[0.03], [-0.03], [0.0]])           # the repeats disagree by several points
    one, two = stats.hierarchical_bootstrap(steady, seed=3), stats.hierarchical_bootstrap(steady, seed=3)
    assert one == two
    assert one["low"] < one["mean"] < one["high"] and one["repeats"] == 3 and one["run_variance_measured"]
    wide = stats.hierarchical_bootstrap(jumpy, seed=3)
    assert wide["mean"] == pytest.approx(one["mean"])
    assert wide["high"] - wide["low"] > 3 * (one["high"] - one["low"]) and wide["p"] > one["p"]
    # One repeat: the images alone; the run-to-run variance is not in it and the result says so.
    single = stats.hierarchical_bootstrap(steady[:1], seed=3)
    assert single["repeats"] == 1 and not single["run_variance_measured"] and single["df"] == pytest.approx(29)
    # Groups: whole groups are resampled.
    grouped = stats.hierarchical_bootstrap(steady, groups=np.repeat(list("abcdef"), 5), seed=3)
    assert grouped["unit"] == "groups" and grouped["units"] == 6


def _table(scores: list[float], ids: list[str], shift: float = 0.0) -> dict[str, float]:
    return {i: v + shift for i, v in zip(ids, scores)}


def test_compare_needs_both_tests_and_names_the_secondary_wilcoxon():
    ids = [f"i{k}" for k in range(12)]
    per_image = {"base": [_table(B, ids), _table(B, ids, 0.002)],
                 "better": [_table(B, ids, 0.1), _table(B, ids, 0.097)],
                 "same": [_table(B, ids, 0.001), _table(B, ids, 0.0)]}
    folds = {"base": [[0.70, 0.72, 0.71], [0.71, 0.70, 0.72]], "better": [[0.80, 0.83, 0.81], [0.82, 0.80, 0.81]],
             "same": [[0.71, 0.71, 0.70], [0.70, 0.72, 0.71]]}
    result = stats.compare(per_image, folds, "base", all_pairs=True, test_train_ratio=0.5)
    rows = {(r["variant"], r["reference"]): r for r in result["comparisons"]}
    assert set(rows) == {("better", "base"), ("same", "base"), ("better", "same")}
    assert result["repeats"] == 2
    better, same = rows[("better", "base")], rows[("same", "base")]
    assert better["test_significant"] and better["cv_significant"] and better["significant"]
    assert "both agree: better is better" in better["sentence"]
    assert not same["significant"] and "no evidence that the recipes differ" in same["sentence"]
    assert "not measured" not in better["sentence"]
    for row in rows.values():
        assert row["repeats"] == 2 and row["folds"] == 3 and "wilcoxon_p_holm" in row


def test_compare_with_one_repeat_says_run_to_run_variance_was_not_measured():
    ids = [f"i{k}" for k in range(12)]
    per_image = {"base": [_table(B, ids)], "better": [_table(B, ids, 0.1)], "same": [_table(B, ids)]}
    folds = {"base": [[0.70, 0.72, 0.71, 0.7, 0.69]], "better": [[0.80, 0.83, 0.81, 0.8, 0.82]],
             "same": [[0.70, 0.72, 0.71, 0.7, 0.69]]}
    result = stats.compare(per_image, folds, "base", test_train_ratio=0.25)
    rows = {r["variant"]: r for r in result["comparisons"]}
    assert rows["better"]["significant"] and not rows["same"]["significant"]
    for row in rows.values():
        # Every sentence that says "significant" says, in the same sentence, what was not measured.
        assert "run-to-run variance was not measured" in row["sentence"]
        for clause in row["sentence"].split(";"):
            if "significant at" in clause and "not significant" not in clause:
                assert "run-to-run variance was not measured" in clause


def test_compare_warns_when_data_is_thin():
    ids = [f"i{k}" for k in range(6)]
    per_image = {"base": [_table(B, ids)], "other": [_table(B, ids, 0.05)]}
    folds = {"base": [[0.7, 0.72, 0.71]], "other": [[0.8, 0.83, 0.81]]}
    row = stats.compare(per_image, folds, "base")["comparisons"][0]
    assert any("6 paired test images" in w for w in row["warnings"])
    assert any("3 fold scores" in w for w in row["warnings"])
    assert "Caution:" in row["sentence"]
