"""Chance references of a mean over repeated train/test splits, shared by the studies and their comparison.

Repeated splits of one cohort reuse the same lesions: their per-trial AUCs are positively correlated, the SD
over trials is a spread, not a standard error, and a model without signal does not average to 0.5. Three
pieces state chance for such a mean:

* :func:`corrected_interval`: the Nadeau-Bengio corrected resampled t interval of a mean over ``J``
  overlapping trials, ``mean ± t_{J-1, 0.975} * sqrt((1/J + n_test/n_train) * var)`` (the correction of
  :func:`adaptrt.metrics.stats.corrected_resampled_ttest`);
* :func:`rank_auc`: ROC AUC as the Mann-Whitney statistic (ties count one half, as
  :func:`sklearn.metrics.roc_auc_score`), for many label vectors against one score vector at once, so a
  label-permutation null of a fixed score costs one matrix product per trial;
* :func:`chance_verdict`: the project's conservative verdict (issue 14): *above* / *below chance* only when
  the mean lies outside the permutation null band **and** the corrected interval excludes 0.5 on the same side;
  otherwise *at chance*, with the reason.

The response study (:mod:`adaptrt.response.chance`) and the comparison of Part I and Part II
(:mod:`adaptrt.compare`) use them; nothing here imports a study.

References
----------
* C. Nadeau and Y. Bengio, "Inference for the generalization error", Machine Learning 52(3):239-281, 2003.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["chance_verdict", "corrected_interval", "rank_auc"]


def corrected_interval(
    values: Sequence[float], test_train_ratio: float, *, bounds: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Mean and Nadeau-Bengio corrected 95 % interval of a per-trial metric.

    Parameters
    ----------
    values
        Per-trial values (NaNs dropped).
    test_train_ratio
        ``n_test / n_train`` of one trial.
    bounds
        The metric's range, e.g. ``(0, 1)`` for an AUC: the interval (a t approximation, which can reach past
        the range with few, spread trials) is truncated to it. None: not truncated.

    Returns
    -------
    (mean, low, high)
        NaN bounds with fewer than two finite values; all NaN with none.

    Examples
    --------
    >>> m, lo, hi = corrected_interval([0.5, 0.7, 0.6, 0.6], 0.25)
    >>> round(m, 3), round(hi - m, 3)
    (0.6, 0.184)
    >>> corrected_interval([0.9, 1.0, 0.6], 0.25, bounds=(0.0, 1.0))[2]
    1.0
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, v.size - 1)) * math.sqrt(
        (1.0 / v.size + test_train_ratio) * v.var(ddof=1)
    )
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return mean, lo, hi


def rank_auc(labels: ArrayLike, scores: ArrayLike) -> NDArray[np.float64]:
    """ROC AUC of one score vector against one or many label vectors (Mann-Whitney U / (n_pos n_neg)).

    Parameters
    ----------
    labels
        ``(n,)`` or ``(P, n)`` labels in {0, 1} (e.g. ``P`` permutations of one label vector).
    scores
        ``(n,)`` finite scores, larger = more likely class 1.

    Returns
    -------
    ndarray
        ``()`` or ``(P,)`` float64: the AUC of each label vector; tied scores count one half (average ranks),
        as :func:`sklearn.metrics.roc_auc_score`; NaN for a label vector with one class only.

    Raises
    ------
    ValueError
        Shapes that do not match, or scores that are not finite.

    Examples
    --------
    >>> float(rank_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.ndim != 1 or y.shape[-1:] != s.shape or y.ndim > 2:
        raise ValueError(f"labels must be (n,) or (P, n) and scores (n,); got {y.shape} and {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite; drop the lesions without a score first")
    ranks = rankdata(s)  # average ranks of ties: (n,)
    n_pos = y.sum(axis=-1)
    n_neg = s.size - n_pos
    u = y @ ranks - n_pos * (n_pos + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)
    return np.asarray(auc, dtype=np.float64)


def chance_verdict(
    mean: float,
    ci_low: float,
    ci_high: float,
    null_low: float | None = None,
    null_high: float | None = None,
    *,
    chance: float = 0.5,
) -> tuple[str, str]:
    """The project's conservative verdict on a mean AUC against chance, and its reason in words.

    Parameters
    ----------
    mean
        Mean AUC over the trials.
    ci_low, ci_high
        Its corrected 95 % interval (:func:`corrected_interval`; NaN with fewer than two trials).
    null_low, null_high
        The permutation null band of the mean on the same splits; None (or NaN) when there is none.
    chance
        The chance level of the metric (0.5 for an AUC).

    Returns
    -------
    (verdict, reason)
        ``verdict`` is ``"above chance"``, ``"below chance"``, ``"at chance"`` or ``"not scored"`` (no finite
        mean). With a band: above (below) only when the mean is above (below) the band **and** the interval
        excludes ``chance`` on that side, as :func:`adaptrt.response.chance.auc_verdicts`. Without a band: the
        interval alone decides.

    Examples
    --------
    >>> chance_verdict(0.79, 0.38, 1.20, 0.32, 0.70)[0]
    'at chance'
    >>> chance_verdict(0.80, 0.62, 0.98, 0.32, 0.70)[0]
    'above chance'
    """
    if not math.isfinite(mean):
        return "not scored", "no trial could be scored"
    ci = (
        f"corrected interval [{ci_low:.2f}, {ci_high:.2f}]"
        if math.isfinite(ci_low) and math.isfinite(ci_high)
        else "no corrected interval (fewer than two trials)"
    )
    low = math.nan if null_low is None else float(null_low)
    high = math.nan if null_high is None else float(null_high)
    if not (math.isfinite(low) and math.isfinite(high)):
        if ci_low > chance:
            return "above chance", f"{ci} excludes {chance:g} (no permutation null band)"
        if ci_high < chance:
            return "below chance", f"{ci} excludes {chance:g} (no permutation null band)"
        return "at chance", f"{ci} includes {chance:g} (no permutation null band)"
    band = f"null band [{low:.2f}, {high:.2f}]"
    if mean > high and ci_low > chance:
        return "above chance", f"mean {mean:.2f} above the {band} and {ci} excludes {chance:g}"
    if mean < low and ci_high < chance:
        return "below chance", f"mean {mean:.2f} below the {band} and {ci} excludes {chance:g}"
    if mean > high or mean < low:
        side = "above" if mean > high else "below"
        return "at chance", f"mean {mean:.2f} {side} the {band}, but {ci} does not exclude {chance:g}"
    return "at chance", f"mean {mean:.2f} inside the {band}"
