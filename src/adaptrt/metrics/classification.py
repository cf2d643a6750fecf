"""Binary classification metrics of Part I's Table 1, and their mean ± SD over repeated trials.

Conventions
-----------
* The positive class is **1 = responder** (GTV volume fell by >= 20 %); 0 = non-responder.
* A lesion is predicted positive when its score is **>= threshold** (default 0.5 on a probability).
* A ratio whose denominator is 0 is **NaN**, never 0: sensitivity without positives, specificity without
  negatives, precision when nothing is predicted positive, AUC when one class is absent. A 0 would be
  averaged into a mean over trials as if it were a measured failure; a NaN is excluded from the mean and
  counted (:func:`summarise_trials` reports how many trials each mean rests on). The reason for every NaN
  is kept in :attr:`BinaryMetrics.reasons`.
* F1 is computed from counts, ``2 TP / (2 TP + FP + FN)``: the harmonic mean of precision and sensitivity
  when both exist, and 0 when positives exist but none is found (precision undefined, sensitivity 0: the
  predicted and true positive sets do not overlap). NaN only when there are no positives and none is
  predicted.
* Balanced accuracy = (sensitivity + specificity) / 2; NaN when either is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

__all__ = ["METRIC_NAMES", "BinaryMetrics", "binary_metrics", "format_mean_sd", "summarise_trials"]

#: The metrics of Part I's Table 1, in its order.
METRIC_NAMES: tuple[str, ...] = ("sensitivity", "specificity", "accuracy", "precision", "f1", "auc")


class BinaryMetrics(dict[str, float]):
    """The ``dict[str, float]`` returned by :func:`binary_metrics`, with the reasons for its NaNs.

    Attributes
    ----------
    reasons
        ``{metric name: why it is NaN}`` for every NaN metric; empty when all are defined.
    """

    reasons: dict[str, str]

    def __init__(self, values: Mapping[str, float], reasons: Mapping[str, str]) -> None:
        super().__init__(values)
        self.reasons = dict(reasons)


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else math.nan


def binary_metrics(y_true: ArrayLike, y_score: ArrayLike, *, threshold: float = 0.5) -> BinaryMetrics:
    """Sensitivity, specificity, accuracy, precision, F1, AUC and more for one test set.

    Parameters
    ----------
    y_true
        ``(n,)`` labels in {0, 1} (booleans accepted); 1 = responder.
    y_score
        ``(n,)`` finite scores, higher = more likely responder (e.g. ``predict_proba(X)[:, 1]``).
    threshold
        Scores ``>= threshold`` are predicted responders.

    Returns
    -------
    BinaryMetrics
        A dict with ``sensitivity`` (recall of class 1), ``specificity``, ``accuracy``, ``precision``,
        ``f1``, ``auc`` (ROC AUC of the scores, threshold-free), ``balanced_accuracy``, and the counts ``n``,
        ``n_pos``, ``tp``, ``fp``, ``tn``, ``fn`` (as floats). NaN conventions in the module docstring; the
        reason of each NaN is in ``.reasons``.

    Raises
    ------
    ValueError
        For empty or mismatched inputs, labels other than 0/1, non-finite scores or threshold.

    Examples
    --------
    >>> m = binary_metrics([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1])
    >>> m["sensitivity"], m["specificity"], m["auc"]
    (0.5, 0.5, 0.75)
    """
    yt = np.asarray(y_true)
    ys = np.asarray(y_score, dtype=np.float64)
    if yt.ndim != 1 or ys.ndim != 1 or yt.shape != ys.shape:
        raise ValueError(f"y_true and y_score must be 1-D of equal length, got {yt.shape} and {ys.shape}")
    if yt.size == 0:
        raise ValueError("binary_metrics needs at least one sample")
    if yt.dtype == np.bool_:
        yt = yt.astype(np.int64)
    if yt.dtype.kind not in "iuf" or not np.all(np.isin(yt, (0, 1))):
        raise ValueError(f"y_true must hold only 0 and 1 (1 = responder), got values {np.unique(yt)[:10]}")
    if not np.all(np.isfinite(ys)):
        raise ValueError("y_score has non-finite values")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    pos = yt == 1
    pred = ys >= threshold
    tp = int(np.count_nonzero(pos & pred))
    fn = int(np.count_nonzero(pos & ~pred))
    fp = int(np.count_nonzero(~pos & pred))
    tn = int(np.count_nonzero(~pos & ~pred))
    n, n_pos = int(yt.size), tp + fn
    n_neg = n - n_pos

    reasons: dict[str, str] = {}
    sens = _ratio(tp, n_pos)
    spec = _ratio(tn, n_neg)
    prec = _ratio(tp, tp + fp)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    if n_pos == 0:
        reasons["sensitivity"] = "no positive (responder) samples"
    if n_neg == 0:
        reasons["specificity"] = "no negative (non-responder) samples"
    if tp + fp == 0:
        reasons["precision"] = f"nothing predicted positive at threshold {threshold:g}"
    if math.isnan(f1):
        reasons["f1"] = "no positive samples and nothing predicted positive"
    bal = (sens + spec) / 2.0
    if math.isnan(bal):
        reasons["balanced_accuracy"] = "sensitivity or specificity undefined"
    if n_pos == 0 or n_neg == 0:
        auc = math.nan
        reasons["auc"] = f"only one class present ({n_pos} positive, {n_neg} negative)"
    else:
        auc = float(roc_auc_score(yt, ys))
    values = {
        "sensitivity": sens,
        "specificity": spec,
        "accuracy": (tp + tn) / n,
        "precision": prec,
        "f1": f1,
        "auc": auc,
        "balanced_accuracy": bal,
        "n": float(n),
        "n_pos": float(n_pos),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }
    return BinaryMetrics(values, reasons)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def summarise_trials(rows: Sequence[Mapping[str, object]]) -> dict[str, tuple[float, float, int]]:
    """Mean, SD and number of finite values of each metric over repeated trials.

    Parameters
    ----------
    rows
        One ``{metric: value}`` per trial (e.g. :func:`binary_metrics` of each test split). Rows may also
        carry labels (``"model": "cam"``): a key whose value is a string or a boolean in any row is not a
        metric and is left out; ``None`` counts as a missing value.

    Returns
    -------
    dict[str, tuple[float, float, int]]
        ``{metric: (mean, sd, n)}`` for every numeric key seen in any row (first-seen order): ``n`` is the
        number of trials with a finite value, the mean and SD (``ddof=1``) are over those; NaN, infinite,
        ``None`` and missing values are excluded and show as ``n`` below ``len(rows)``. The mean is NaN when
        ``n == 0`` and the SD NaN when ``n < 2``.

    Examples
    --------
    >>> summarise_trials([{"auc": 0.8}, {"auc": 0.9}, {"auc": float("nan")}])["auc"]
    (0.8500000000000001, 0.07071067811865474, 2)
    """
    keys: dict[str, None] = {}
    labels: set[str] = set()
    for row in rows:
        for key, value in row.items():
            keys.setdefault(key, None)
            if value is not None and not _is_number(value):
                labels.add(key)
    out: dict[str, tuple[float, float, int]] = {}
    for key in keys:
        if key in labels:
            continue
        vals = np.array(
            [math.nan if r.get(key) is None else float(r[key]) for r in rows],  # type: ignore[arg-type]
            dtype=np.float64,
        )
        v = vals[np.isfinite(vals)]
        mean = float(v.mean()) if v.size else math.nan
        sd = float(v.std(ddof=1)) if v.size >= 2 else math.nan
        out[key] = (mean, sd, int(v.size))
    return out


def format_mean_sd(mean: float, sd: float, digits: int = 3, *, n: int | None = None) -> str:
    """Format ``mean ± SD`` with ``digits`` decimals, e.g. ``"0.877 ± 0.045"``; NaN shows as ``"n/a"``.

    With ``n`` (the count from :func:`summarise_trials`) the count is appended: ``"0.877 ± 0.045 (n=9)"``.
    """
    if not (isinstance(digits, int) and digits >= 0):
        raise ValueError(f"digits must be a non-negative integer, got {digits!r}")

    def fmt(x: float) -> str:
        return f"{x:.{digits}f}" if math.isfinite(x) else "n/a"

    text = f"{fmt(mean)} ± {fmt(sd)}"
    return text if n is None else f"{text} (n={n})"
