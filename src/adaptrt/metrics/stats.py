"""Paired comparison of two models over repeated train/test trials.

Both models are evaluated on the same ``J`` trials (the same splits), giving per-trial differences
``d_j = metric_a_j - metric_b_j``. :func:`paired_comparison` reports

* the mean difference and a seeded percentile-bootstrap 95 % CI of it (trials resampled with replacement);
* the Wilcoxon signed-rank test of the differences (:func:`scipy.stats.wilcoxon`, two-sided, zero
  differences dropped -- Wilcoxon's convention);
* the **corrected resampled t-test** of Nadeau & Bengio, the primary p-value.

Why the correction
------------------
Repeated random splits or cross-validation folds of one cohort share lesions: the training sets overlap
heavily and the test sets overlap across repetitions, so the ``d_j`` are positively correlated. The
Wilcoxon test, the naive paired t-test and the bootstrap all treat them as independent, underestimate the
variance of the mean difference, and give **optimistic** (too small) p-values and too narrow CIs; the more
trials, the worse. Nadeau & Bengio (2003) correct the variance of the mean for this correlation:

    t = mean(d) / sqrt((1 / J + n_test / n_train) * s²),   s² = var(d, ddof=1),   df = J - 1,

with ``n_test / n_train`` the ratio of test to training set sizes of one trial (e.g. 1/4 for 5-fold CV).
The correction is a heuristic (it assumes a correlation ``rho = n_test / (n_test + n_train)`` between
trials) but it is the recognised one; Bouckaert & Frank (2004) found it to have close to nominal type I
error, unlike the uncorrected tests. Report it as the p-value; the Wilcoxon p-value and the bootstrap CI
are descriptive.

References
----------
* C. Nadeau and Y. Bengio, "Inference for the generalization error", Machine Learning 52(3):239-281, 2003.
* R. R. Bouckaert and E. Frank, "Evaluating the replicability of significance tests for comparing learning
  algorithms", PAKDD 2004, LNCS 3056:3-12.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from ..seeding import SeedLike, as_generator

__all__ = ["PairedComparison", "bootstrap_mean_ci", "corrected_resampled_ttest", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    """Result of :func:`paired_comparison` (differences are ``a - b``).

    Attributes
    ----------
    n
        Number of trials with both values finite (the pairs used).
    n_dropped
        Trials left out because either value was NaN or infinite.
    mean_diff
        Mean of ``a - b`` over the ``n`` trials.
    ci_low, ci_high
        Percentile-bootstrap confidence interval of the mean difference (level ``confidence``).
    confidence
        Level of the CI, e.g. 0.95.
    t_corrected, p_corrected
        Nadeau-Bengio corrected resampled t statistic and its two-sided p-value (``df = n - 1``): the
        primary test.
    test_train_ratio
        ``n_test / n_train`` used by the correction.
    wilcoxon_statistic, p_wilcoxon
        Wilcoxon signed-rank statistic (two-sided: the smaller of the rank sums) and p-value; optimistic
        because the trials overlap.
    """

    n: int
    n_dropped: int
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    t_corrected: float
    p_corrected: float
    test_train_ratio: float
    wilcoxon_statistic: float
    p_wilcoxon: float


def _as_1d(x: ArrayLike, name: str) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per trial), got shape {a.shape}")
    return a


def corrected_resampled_ttest(differences: ArrayLike, test_train_ratio: float) -> tuple[float, float]:
    """Nadeau & Bengio's corrected resampled t-test of per-trial differences (see the module docstring).

    Parameters
    ----------
    differences
        ``(J,)`` finite per-trial differences of a metric between two models on the same splits.
    test_train_ratio
        ``n_test / n_train`` of one trial, > 0 (0 gives back the naive paired t-test).

    Returns
    -------
    t, p
        The statistic ``mean / sqrt((1/J + ratio) * var(ddof=1))`` and its two-sided p-value with ``J - 1``
        degrees of freedom. Both NaN when ``J < 2`` or when the differences are all equal (zero variance:
        the test is undefined).

    Examples
    --------
    >>> t, p = corrected_resampled_ttest([0.1, 0.2, 0.0, 0.1], test_train_ratio=0.25)
    >>> round(t, 4)
    1.7321
    """
    d = _as_1d(differences, "differences")
    if not np.all(np.isfinite(d)):
        raise ValueError("differences must be finite; drop the NaN trials first")
    if not (math.isfinite(test_train_ratio) and test_train_ratio >= 0):
        raise ValueError(f"test_train_ratio must be a finite number >= 0, got {test_train_ratio}")
    j = d.size
    if j < 2:
        return math.nan, math.nan
    var = float(d.var(ddof=1))
    # equal differences leave a rounding-level variance (e.g. 1e-35 for [0.1] * 3): treat it as zero
    if not var > (1e-12 * float(np.max(np.abs(d)))) ** 2:
        return math.nan, math.nan
    t = float(d.mean()) / math.sqrt((1.0 / j + test_train_ratio) * var)
    p = float(2.0 * stats.t.sf(abs(t), df=j - 1))
    return t, p


def bootstrap_mean_ci(
    values: ArrayLike, *, seed: SeedLike, n_boot: int = 10_000, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``values`` (resampled with replacement, seeded).

    Returns ``(nan, nan)`` for no values; ``(v, v)`` for a single value.
    """
    v = _as_1d(values, "values")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if v.size == 0:
        return math.nan, math.nan
    rng = as_generator(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_comparison(
    a: ArrayLike,
    b: ArrayLike,
    *,
    test_train_ratio: float,
    seed: SeedLike,
    n_boot: int = 10_000,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare two models' per-trial values of one metric (``a - b``), trials paired by index.

    Parameters
    ----------
    a, b
        ``(J,)`` metric of model A and of model B on the same ``J`` trials (e.g. the AUC of each test
        split). Trials where either is NaN/inf are dropped and counted in ``n_dropped``.
    test_train_ratio
        ``n_test / n_train`` of one trial, for the corrected t-test (e.g. 14 / 55 for 69 lesions split 80/20).
    seed
        Seed of the bootstrap.
    n_boot, confidence
        Bootstrap resamples and CI level.

    Returns
    -------
    PairedComparison
        See its attributes; ``p_corrected`` is the primary p-value.
    """
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must have one value per trial each, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    t, p = corrected_resampled_ttest(d, test_train_ratio)
    lo, hi = bootstrap_mean_ci(d, seed=seed, n_boot=n_boot, confidence=confidence)
    nonzero = d[d != 0]
    if d.size == 0:
        w_stat, w_p = math.nan, math.nan
    elif nonzero.size == 0:
        w_stat, w_p = 0.0, 1.0  # identical models on every trial: no evidence of a difference
    else:
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        w_stat, w_p = float(res.statistic), float(res.pvalue)
    return PairedComparison(
        n=int(d.size),
        n_dropped=int(x.size - d.size),
        mean_diff=float(d.mean()) if d.size else math.nan,
        ci_low=lo,
        ci_high=hi,
        confidence=float(confidence),
        t_corrected=t,
        p_corrected=p,
        test_train_ratio=float(test_train_ratio),
        wilcoxon_statistic=w_stat,
        p_wilcoxon=w_p,
    )
