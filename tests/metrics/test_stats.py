"""Tests of adaptrt.metrics.stats: corrected resampled t-test, Wilcoxon, bootstrap CI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from adaptrt.metrics.stats import bootstrap_mean_ci, corrected_resampled_ttest, paired_comparison


def test_corrected_ttest_matches_a_hand_computation() -> None:
    d = [0.05, 0.10, -0.02, 0.08, 0.04]
    # mean 0.05; deviations 0, .05, -.07, .03, -.01 -> sum of squares 0.0084, var = 0.0084 / 4 = 0.0021
    # corrected SE = sqrt((1/5 + 0.25) * 0.0021) = sqrt(0.000945)
    t_hand = 0.05 / math.sqrt(0.45 * 0.0021)
    t, p = corrected_resampled_ttest(d, test_train_ratio=0.25)
    assert t == pytest.approx(t_hand)
    assert p == pytest.approx(2 * stats.t.sf(t_hand, df=4))
    # ratio 0 is the ordinary paired t-test; the correction always makes p larger
    t0, p0 = corrected_resampled_ttest(d, test_train_ratio=0.0)
    ref = stats.ttest_1samp(d, 0.0)
    assert (t0, p0) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert p > p0


def test_corrected_ttest_undefined_cases() -> None:
    assert all(math.isnan(v) for v in corrected_resampled_ttest([0.1], 0.25))
    assert all(math.isnan(v) for v in corrected_resampled_ttest([0.1, 0.1, 0.1], 0.25))
    with pytest.raises(ValueError, match="finite"):
        corrected_resampled_ttest([0.1, float("nan")], 0.25)
    with pytest.raises(ValueError, match="test_train_ratio"):
        corrected_resampled_ttest([0.1, 0.2], -1.0)


def test_wilcoxon_on_a_known_case_and_nan_trials_dropped() -> None:
    # 5 positive differences: the exact two-sided p-value is 2 / 2^5 = 0.0625, statistic min(W+, W-) = 0
    a = [0.9, 0.8, 0.85, 0.7, 0.95, float("nan")]
    b = [0.8, 0.6, 0.55, 0.3, 0.45, 0.5]
    res = paired_comparison(a, b, test_train_ratio=0.25, seed=0, n_boot=2000)
    assert res.n == 5 and res.n_dropped == 1
    assert res.wilcoxon_statistic == 0.0
    assert res.p_wilcoxon == pytest.approx(0.0625)
    d = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert res.mean_diff == pytest.approx(0.3)
    assert (res.t_corrected, res.p_corrected) == tuple(
        pytest.approx(v) for v in corrected_resampled_ttest(d, 0.25)
    )
    assert d.min() <= res.ci_low < res.mean_diff < res.ci_high <= d.max()
    # the bootstrap is seeded
    again = paired_comparison(a, b, test_train_ratio=0.25, seed=0, n_boot=2000)
    assert (again.ci_low, again.ci_high) == (res.ci_low, res.ci_high)


def test_identical_models_give_no_difference() -> None:
    a = [0.7, 0.8, 0.9]
    res = paired_comparison(a, a, test_train_ratio=0.25, seed=1, n_boot=100)
    assert res.mean_diff == 0.0 and res.p_wilcoxon == 1.0
    assert math.isnan(res.p_corrected)  # zero variance: undefined, not "significant"
    assert (res.ci_low, res.ci_high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="one value per trial"):
        paired_comparison([0.1, 0.2], [0.1], test_train_ratio=0.25, seed=0)


def test_bootstrap_ci_covers_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(1.0, 1.0, size=10)
    large = rng.normal(1.0, 1.0, size=400)
    lo_s, hi_s = bootstrap_mean_ci(small, seed=0, n_boot=2000)
    lo_l, hi_l = bootstrap_mean_ci(large, seed=0, n_boot=2000)
    assert lo_s < small.mean() < hi_s and lo_l < large.mean() < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 3
    assert all(math.isnan(v) for v in bootstrap_mean_ci([], seed=0))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0], seed=0, confidence=1.5)
