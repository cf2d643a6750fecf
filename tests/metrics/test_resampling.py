"""Tests of adaptrt.metrics.resampling: the corrected interval, the rank AUC and the chance verdict."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from adaptrt.metrics import resampling
from adaptrt.metrics.resampling import chance_verdict, corrected_interval, rank_auc


def test_corrected_interval_by_hand() -> None:
    v = [0.5, 0.7, 0.6, 0.6]
    m, lo, hi = corrected_interval(v, 0.25)
    # var(ddof=1) = 0.02 / 3; half width = t_{3, .975} * sqrt((1/4 + 1/4) * var)
    half = stats.t.ppf(0.975, 3) * math.sqrt(0.5 * 0.02 / 3)
    assert m == pytest.approx(0.6)
    assert (lo, hi) == pytest.approx((0.6 - half, 0.6 + half))
    assert hi - m == pytest.approx(0.1837, abs=1e-4)


def test_corrected_interval_nan_and_few_values() -> None:
    m, lo, hi = corrected_interval([0.7, math.nan], 0.25)
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in corrected_interval([], 0.25))
    # the correction widens the naive interval: ratio 0 gives the plain t interval
    naive = corrected_interval([0.4, 0.6, 0.5], 0.0)
    corrected = corrected_interval([0.4, 0.6, 0.5], 0.25)
    assert corrected[2] - corrected[1] > naive[2] - naive[1]


def test_response_chance_reexports_the_same_function() -> None:
    from adaptrt.response import chance

    assert chance.corrected_interval is resampling.corrected_interval
    assert "corrected_interval" in chance.__all__


def test_rank_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(4, 15))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        s = rng.integers(0, 4, n).astype(float)  # many ties
        assert float(rank_auc(y, s)) == pytest.approx(roc_auc_score(y, s))


def test_rank_auc_by_hand_and_many_label_vectors() -> None:
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert float(rank_auc([0, 0, 1, 1], s)) == pytest.approx(0.75)
    many = rank_auc(np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]]), s)
    assert many.shape == (3,)
    assert many[:2] == pytest.approx([0.75, 0.25])
    assert math.isnan(many[2])  # one class only


def test_rank_auc_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        rank_auc([0, 1], [0.1, math.nan])
    with pytest.raises(ValueError, match=r"\(n,\) or \(P, n\)"):
        rank_auc([0, 1, 1], [0.1, 0.2])


@pytest.mark.parametrize(
    ("args", "verdict", "needle"),
    [
        ((0.80, 0.62, 0.98, 0.32, 0.70), "above chance", "above the null band"),
        ((0.20, 0.05, 0.40, 0.32, 0.70), "below chance", "below the null band"),
        ((0.79, 0.38, 1.20, 0.32, 0.70), "at chance", "does not exclude 0.5"),
        ((0.60, 0.52, 0.68, 0.32, 0.70), "at chance", "inside the null band"),
        ((0.60, 0.52, 0.68, None, None), "above chance", "no permutation null band"),
        ((0.60, math.nan, math.nan, 0.32, 0.55), "at chance", "fewer than two trials"),
        ((math.nan, math.nan, math.nan, 0.3, 0.7), "not scored", "no trial"),
    ],
)
def test_chance_verdict_cases(args: tuple, verdict: str, needle: str) -> None:
    got, reason = chance_verdict(*args)
    assert got == verdict
    assert needle in reason


def test_chance_verdict_agrees_with_the_response_study_rule() -> None:
    """The same rule as adaptrt.response.chance.auc_verdicts on a grid of means, spreads and bands."""
    from adaptrt.response.chance import NullBand, auc_verdicts
    from adaptrt.splits import Split

    splits = [Split(t, np.arange(8), np.arange(8, 10), t) for t in range(3)]
    ratio = 2 / 8
    for centre, spread, (lo_b, hi_b) in itertools.product(
        (0.1, 0.3, 0.45, 0.5, 0.6, 0.72, 0.9), (0.0, 0.02, 0.2), ((0.3, 0.7), (0.4, 0.6))
    ):
        vals = [centre - spread, centre, centre + spread]
        rows = [{"model": "m", "test_set": "mri2", "auc": v} for v in vals]
        band = NullBand(lo_b, hi_b, 0.5, 10, ("pixels",), {}, {})
        want = auc_verdicts(rows, splits, band, {"m": "M"})[0]["verdict"]
        mean, lo, hi = corrected_interval(vals, ratio)
        assert chance_verdict(mean, lo, hi, lo_b, hi_b)[0] == want, (centre, spread, lo_b)
        want_no_band = auc_verdicts(rows, splits, None, {"m": "M"})[0]["verdict"]
        assert chance_verdict(mean, lo, hi)[0] == want_no_band


def test_corrected_interval_truncated_to_bounds() -> None:
    vals = [0.9, 1.0, 0.6]
    m, lo, hi = corrected_interval(vals, 0.25)
    assert hi > 1.0  # the t approximation reaches past an AUC's range with few, spread trials
    mb, lob, hib = corrected_interval(vals, 0.25, bounds=(0.0, 1.0))
    assert (mb, lob, hib) == (m, lo, 1.0)
