"""The comparison procedure is honest: simulated score tables with a known run-to-run
(seed) variance and no true difference are called significant about α of the time, and a
true difference of known size is found (power printed; run with -s to see the figures).

No training: the tables are drawn from the model each test assumes, with the variance
components of a small seglab study (Dice differences of a few hundredths between runs).
Every draw is seeded, so the rates are the same on every run.
"""

from __future__ import annotations

import numpy as np
import pytest

from seglab import stats

ALPHA = 0.05
# Monte-Carlo error of a rate near 0.05 over 2,000 draws is ~0.005: "α ± a few points" is ±0.02.
TOLERANCE = 0.02
DRAWS = 2000
BOOT_DRAWS = 800       # each draw runs a bootstrap: fewer draws, the same deterministic seeds


def cv_tables(rng: np.random.Generator, repeats: int, folds: int, delta: float, run_sd: float = 0.015):
    """Fold scores of two variants on the same R x k folds.

    Each fold score is a training run: its own seed noise (``run_sd``), plus a component
    shared by all runs of one variant on this dataset, as overlapping training sets make
    them correlated (Nadeau & Bengio: correlation n_test / n_total), plus the fold's
    difficulty, which both variants share and the pairing cancels.
    """
    rho = 1 / folds                                                   # n_test / n_total of k-fold CV
    difficulty = rng.normal(0, 0.03, size=(repeats, folds))
    shared = rng.normal(0, run_sd * np.sqrt(rho), size=2)
    noise = rng.normal(0, run_sd * np.sqrt(1 - rho), size=(2, repeats, folds))
    a = 0.85 + delta + difficulty + shared[0] + noise[0]
    b = 0.85 + difficulty + shared[1] + noise[1]
    return a, b


def cv_rate(repeats: int, folds: int, delta: float, ratio: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(DRAWS):
        a, b = cv_tables(rng, repeats, folds, delta)
        hits += stats.corrected_repeated_cv_ttest(a, b, ratio)["p"] < ALPHA
    return hits / DRAWS


def test_corrected_repeated_cv_ttest_holds_alpha_where_the_plain_one_does_not():
    repeats, folds = 3, 3
    ratio = 1 / (folds - 1)                                           # n_test / n_train of one fold
    corrected = cv_rate(repeats, folds, 0.0, ratio, seed=1)
    plain = cv_rate(repeats, folds, 0.0, 0.0, seed=1)
    power = cv_rate(repeats, folds, 0.05, ratio, seed=2)
    print(f"\ncorrected repeated CV t-test, R={repeats} k={folds}: false-positive rate {corrected:.3f} "
          f"(plain paired t-test {plain:.3f}); power at a true difference of 0.05 Dice: {power:.3f}")
    assert abs(corrected - ALPHA) <= TOLERANCE
    assert plain > ALPHA + 0.1, "the uncorrected test should be visibly too optimistic on correlated folds"
    assert power >= 0.6


def held_out_differences(rng: np.random.Generator, repeats: int, images: int, delta: float, run_sd: float, image_sd: float,
                noise_sd: float = 0.01) -> np.ndarray:
    """Per-image test Dice differences (A - B) of each repeat's two fold ensembles: the
    recipes' true difference, the run-to-run difference of the two trainings (one per
    repeat), how much the difference varies between images, and cell noise."""
    run = rng.normal(0, run_sd, size=(repeats, 1))
    image = rng.normal(0, image_sd, size=(1, images))
    return delta + run + image + rng.normal(0, noise_sd, size=(repeats, images))


def bootstrap_rate(repeats: int, delta: float, run_sd: float, image_sd: float, seed: int, images: int = 48,
                   draws: int = BOOT_DRAWS) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(draws):
        d = held_out_differences(rng, repeats, images, delta, run_sd, image_sd)
        hits += stats.hierarchical_bootstrap(d, n_boot=200, seed=k)["p"] < ALPHA
    return hits / draws


SCENARIOS = {"run-dominated": (0.02, 0.005), "image-dominated": (0.002, 0.04), "mixed": (0.01, 0.02)}


@pytest.mark.parametrize("repeats", [2, 3, 5])
def test_hierarchical_bootstrap_holds_alpha(repeats):
    rates = {name: bootstrap_rate(repeats, 0.0, *sds, seed=repeats, draws=BOOT_DRAWS) for name, sds in SCENARIOS.items()}
    print(f"\nhierarchical bootstrap, R={repeats}, false-positive rate: "
          + ", ".join(f"{name} {rate:.3f}" for name, rate in rates.items()))
    # Two repeats give the run-to-run variance ~1 degree of freedom: no test is exact there,
    # and this one errs by at most a few points either way.
    for rate in rates.values():
        assert abs(rate - ALPHA) <= TOLERANCE + (0.015 if repeats == 2 else 0.0)


def test_hierarchical_bootstrap_power_and_the_cost_of_one_repeat():
    power = {r: bootstrap_rate(r, 0.02, 0.01, 0.02, seed=10 + r) for r in (3, 5)}
    # One repeat: only the images are resampled, the run-to-run difference is mistaken for an effect.
    one = bootstrap_rate(1, 0.0, 0.02, 0.005, seed=20)
    print(f"\nhierarchical bootstrap power at a true difference of 0.02 Dice (run sd 0.01, image sd 0.02): "
          f"R=3 {power[3]:.3f}, R=5 {power[5]:.3f}; false-positive rate with R=1 when run variance dominates: {one:.3f}")
    assert power[5] >= power[3] >= 0.3
    assert one > 0.5


def test_holm_keeps_the_family_wise_rate_over_three_null_comparisons():
    rng = np.random.default_rng(5)
    any_hit = 0
    for _ in range(DRAWS):
        p = [stats.corrected_repeated_cv_ttest(*cv_tables(rng, 2, 3, 0.0), 0.5)["p"] for _ in range(3)]
        any_hit += min(stats.holm(p)) < ALPHA
    rate = any_hit / DRAWS
    print(f"\nHolm over 3 null comparisons: family-wise false-positive rate {rate:.3f}")
    assert rate <= ALPHA + TOLERANCE
