"""Overlap and distance metrics of a predicted mask against a reference mask (target study, drift study).

All functions take boolean arrays of one shape (``(z, y, x)`` for the volumes of the studies; the overlap
metrics accept any dimension) and count voxels over the **whole array** unless stated otherwise:

* TP = ``pred & truth``, FP = ``pred & ~truth``, FN = ``~pred & truth``;
* :func:`specificity` counts TN and FP only inside a ``within`` mask (the brain), as the glioblastoma paper
  (Tran et al., npj Digit. Med. 2025) does: the air around the head is not "spared normal brain".

Conventions for degenerate cases (stated here once, tested):

* ``sensitivity`` with an empty ``truth`` and ``specificity`` with no truth-negative voxel inside ``within``
  are undefined: ``math.nan``.
* ``dice``, ``tversky`` and ``pcc`` of two empty masks are ``1.0`` (the masks agree); with only one empty
  they are ``0.0``.
* ``hd95`` of two empty masks is ``0.0``; with exactly one empty it is ``math.inf`` (no surface to measure
  to). It is never NaN.

These values are kept in the per-case tables. :func:`summarise` reports the median, quartiles, mean and SD
over the **finite** values and counts the infinite and undefined cases next to them, so an empty mask never
drops silently out of a mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

__all__ = [
    "SEGMENTATION_METRICS",
    "TVERSKY_ALPHA",
    "TVERSKY_BETA",
    "MetricSummary",
    "confusion_counts",
    "dice",
    "hd95",
    "pcc",
    "pcc_weights",
    "segmentation_metrics",
    "sensitivity",
    "specificity",
    "summarise",
    "surface_voxels",
    "tversky",
]

#: The paper's Tversky weights: ``alpha`` on false positives, ``beta`` on false negatives.
TVERSKY_ALPHA = 0.02
TVERSKY_BETA = 0.98

#: Keys of :func:`segmentation_metrics` that are scores (the rest are counts and volumes).
SEGMENTATION_METRICS: tuple[str, ...] = (
    "sensitivity",
    "specificity",
    "dice",
    "hd95_mm",
    "tversky",
    "pcc",
)


def _mask(a: ArrayLike, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(a)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    return arr


def _pair(pred: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    p, t = _mask(pred, "pred"), _mask(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but truth has shape {t.shape}; they must be on one grid")
    return p, t


def _spacing(spacing_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be {ndim} finite values > 0 (mm), got {tuple(spacing_mm)}")
    return sp


def confusion_counts(pred: ArrayLike, truth: ArrayLike, within: ArrayLike | None = None) -> dict[str, int]:
    """Voxel counts ``tp``, ``fp``, ``fn`` over the whole array and ``tn``, ``fp_within`` inside ``within``.

    Parameters
    ----------
    pred, truth : ndarray of bool, same shape
    within : ndarray of bool, same shape, optional
        Region where true negatives are counted (default: the whole array).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (whole array), ``tn`` and ``fp_within`` (inside ``within``).
    """
    p, t = _pair(pred, truth)
    w = np.ones(p.shape, dtype=bool) if within is None else _mask(within, "within")
    if w.shape != p.shape:
        raise ValueError(f"within has shape {w.shape} but pred has shape {p.shape}")
    return {
        "tp": int(np.count_nonzero(p & t)),
        "fp": int(np.count_nonzero(p & ~t)),
        "fn": int(np.count_nonzero(~p & t)),
        "tn": int(np.count_nonzero(~p & ~t & w)),
        "fp_within": int(np.count_nonzero(p & ~t & w)),
    }


def sensitivity(pred: ArrayLike, truth: ArrayLike) -> float:
    """Sensitivity (recall) ``TP / (TP + FN)``; ``nan`` when ``truth`` is empty.

    Parameters
    ----------
    pred, truth : ndarray of bool, same shape (z, y, x)
    """
    p, t = _pair(pred, truth)
    n = int(np.count_nonzero(t))
    return math.nan if n == 0 else int(np.count_nonzero(p & t)) / n


def specificity(pred: ArrayLike, truth: ArrayLike, within: ArrayLike) -> float:
    """Specificity ``TN / (TN + FP)`` with TN and FP counted only inside ``within`` (e.g. the brain).

    Parameters
    ----------
    pred, truth, within : ndarray of bool, same shape (z, y, x)

    Returns
    -------
    float
        ``nan`` when ``within`` holds no voxel outside ``truth`` (no negatives to spare).
    """
    c = confusion_counts(pred, truth, within)
    n = c["tn"] + c["fp_within"]
    return math.nan if n == 0 else c["tn"] / n


def _tversky_counts(tp: float, fp: float, fn: float, alpha: float, beta: float) -> float:
    den = tp + alpha * fp + beta * fn
    if den == 0:
        # tp = 0 and every weighted error 0: both masks empty (or all errors weighted 0)
        return 1.0 if fp == 0 and fn == 0 else 0.0
    return tp / den


def dice(pred: ArrayLike, truth: ArrayLike) -> float:
    """Dice coefficient ``2 TP / (2 TP + FP + FN)``; 1.0 for two empty masks, 0.0 when only one is empty.

    Parameters
    ----------
    pred, truth : ndarray of bool, same shape (z, y, x)
    """
    c = confusion_counts(pred, truth)
    return _tversky_counts(c["tp"], c["fp"], c["fn"], 0.5, 0.5)


def _check_weight(name: str, value: float) -> float:
    v = float(value)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def tversky(
    pred: ArrayLike, truth: ArrayLike, alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA
) -> float:
    """Tversky index ``TP / (TP + alpha * FP + beta * FN)``.

    ``alpha`` weighs the **false positives** (over-treated voxels) and ``beta`` the **false negatives**
    (missed progression). The paper's ``alpha = 0.02, beta = 0.98`` penalise a missed voxel 49 times more than
    an over-treated one (its text: a higher beta "reduces false negatives and improves sensitivity").
    ``alpha = beta = 0.5`` is Dice. Two empty masks give 1.0; only one empty gives 0.0.

    Parameters
    ----------
    pred, truth : ndarray of bool, same shape (z, y, x)
    alpha, beta : float, >= 0
    """
    a, b = _check_weight("alpha", alpha), _check_weight("beta", beta)
    c = confusion_counts(pred, truth)
    return _tversky_counts(c["tp"], c["fp"], c["fn"], a, b)


def pcc_weights(lesion_voxels: float, brain_voxels: float) -> tuple[float, float]:
    """The paper's personalised Tversky weights (eq. 1): ``f = lesion / brain``, ``beta = 1 / (f + 1)``.

    Parameters
    ----------
    lesion_voxels : float, >= 0
        Number (or soft sum) of reference-lesion voxels.
    brain_voxels : float, > 0
        Number of brain voxels.

    Returns
    -------
    (alpha, beta) : tuple of float
        ``alpha = 1 - beta = f / (f + 1)`` weighs false positives, ``beta`` false negatives; a small lesion
        (small ``f``) gives ``beta`` near 1, so missing it costs more. (The paper's eq. 2,
        ``beta = 1 - n_lesion / (n_brain + n_lesion)``, is the same number.)
    """
    lv, bv = float(lesion_voxels), float(brain_voxels)
    if not (math.isfinite(lv) and lv >= 0):
        raise ValueError(f"lesion_voxels must be a finite number >= 0, got {lesion_voxels!r}")
    if not (math.isfinite(bv) and bv > 0):
        raise ValueError(f"brain_voxels must be a finite number > 0, got {brain_voxels!r}")
    f = lv / bv
    beta = 1.0 / (f + 1.0)
    return 1.0 - beta, beta


def pcc(pred: ArrayLike, truth: ArrayLike, brain: ArrayLike) -> float:
    """Progression Coverage Coefficient (the paper's eq. 1) as a metric on binary masks.

    ``PCC = TP / (TP + alpha * FP + beta * FN)`` with ``(alpha, beta) = pcc_weights(|truth|, |brain|)``:
    a Tversky index whose weights are personalised by the reference lesion's share of the brain. TP, FP,
    FN are counted over the whole array (as :func:`tversky`); ``brain`` only sets the weights.

    Parameters
    ----------
    pred, truth, brain : ndarray of bool, same shape (z, y, x)

    Raises
    ------
    ValueError
        When ``brain`` is empty.
    """
    p, t = _pair(pred, truth)
    b = _mask(brain, "brain")
    if b.shape != p.shape:
        raise ValueError(f"brain has shape {b.shape} but pred has shape {p.shape}")
    n_brain = int(np.count_nonzero(b))
    if n_brain == 0:
        raise ValueError("the brain mask is empty: the PCC weights need the number of brain voxels")
    alpha, beta = pcc_weights(int(np.count_nonzero(t)), n_brain)
    c = confusion_counts(p, t)
    return _tversky_counts(c["tp"], c["fp"], c["fn"], alpha, beta)


_CONNECTIVITY = {6: 1, 18: 2, 26: 3}


def surface_voxels(mask: ArrayLike, connectivity: Literal[6, 18, 26] = 6) -> NDArray[np.bool_]:
    """The mask's voxels that have a neighbour outside it: ``mask & ~erosion(mask)``.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
    connectivity : {6, 18, 26}
        Neighbourhood of the erosion (6: face neighbours, as MONAI's ``get_mask_edges``). Voxels on the
        array's border count as surface (outside the array is background).

    Returns
    -------
    ndarray of bool, same shape.
    """
    m = _mask(mask, "mask")
    if connectivity not in _CONNECTIVITY:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    structure = ndimage.generate_binary_structure(m.ndim, _CONNECTIVITY[connectivity])
    eroded = ndimage.binary_erosion(m, structure=structure, border_value=0)
    return np.asarray(m & ~eroded, dtype=bool)


def _directed(
    src: NDArray[np.bool_], dst: NDArray[np.bool_], spacing: tuple[float, ...]
) -> NDArray[np.float64]:
    """Distance (mm) from every ``src`` voxel centre to the nearest ``dst`` voxel centre."""
    d = ndimage.distance_transform_edt(~dst, sampling=spacing)
    return np.asarray(d, dtype=np.float64)[src]


def hd95(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing_mm: Sequence[float],
    *,
    percentile: float = 95.0,
    connectivity: Literal[6, 18, 26] = 6,
    combine: Literal["max", "pooled"] = "max",
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm, on the grid's own (anisotropic) spacing.

    Convention (MONAI's ``compute_hausdorff_distance(percentile=95, directed=False)``):

    1. the surface of each mask is its voxels with a face neighbour outside it (6-connectivity erosion;
       see :func:`surface_voxels`);
    2. for every surface voxel of ``pred`` the Euclidean distance in mm between its centre and the nearest
       surface-voxel centre of ``truth``, using ``spacing_mm``; and the same from ``truth`` to ``pred``;
    3. the 95th percentile of each directed set (``numpy.percentile``, linear interpolation), and the larger
       of the two (``combine="max"``).

    Why the maximum of the directed percentiles rather than the percentile of the pooled distances (MedPy's
    ``hd95``, ``combine="pooled"``): a CTV's surface is many times larger than the lesion's, so a pooled
    percentile is dominated by the CTV-to-lesion direction and can hide a lesion part far outside the CTV.

    Parameters
    ----------
    pred, truth : ndarray of bool, same shape (z, y, x)
    spacing_mm : sequence of float, voxel spacing (z, y, x) in mm
    percentile : float in [0, 100]
        100 gives the classical Hausdorff distance.
    connectivity : {6, 18, 26}
        Erosion neighbourhood that defines the surface.
    combine : {"max", "pooled"}

    Returns
    -------
    float
        Distance in mm; ``0.0`` when both masks are empty, ``math.inf`` when exactly one is empty.
    """
    p, t = _pair(pred, truth)
    sp = _spacing(spacing_mm, p.ndim)
    if not (0.0 <= float(percentile) <= 100.0):
        raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
    if combine not in ("max", "pooled"):
        raise ValueError(f"combine must be 'max' or 'pooled', got {combine!r}")
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return 0.0
    if not (has_p and has_t):
        return math.inf
    # both masks lie inside their joint bounding box, so the distance transform can be computed there
    idx = np.nonzero(p | t)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    sp_surf = surface_voxels(p[box], connectivity)
    st_surf = surface_voxels(t[box], connectivity)
    d_pt = _directed(sp_surf, st_surf, sp)
    d_tp = _directed(st_surf, sp_surf, sp)
    if combine == "pooled":
        return float(np.percentile(np.concatenate([d_pt, d_tp]), percentile))
    return float(max(np.percentile(d_pt, percentile), np.percentile(d_tp, percentile)))


def segmentation_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    brain: ArrayLike,
    spacing_mm: Sequence[float],
    *,
    alpha: float = TVERSKY_ALPHA,
    beta: float = TVERSKY_BETA,
) -> dict[str, float]:
    """Every metric of the target study for one prediction against one reference.

    Parameters
    ----------
    pred, truth, brain : ndarray of bool, same shape (z, y, x)
        The prediction (e.g. a CTV), the reference (e.g. the composite progression lesion), the brain.
    spacing_mm : sequence of 3 float, (z, y, x) in mm
    alpha, beta : float
        Weights of :func:`tversky` (FP and FN).

    Returns
    -------
    dict
        ``sensitivity``, ``specificity`` (within the brain), ``dice``, ``hd95_mm``, ``tversky``, ``pcc``,
        ``pcc_alpha``, ``pcc_beta``, ``volume_cm3`` (of ``pred``), ``truth_volume_cm3``, and the voxel
        counts ``tp``, ``fp``, ``fn``, ``tn`` (TN within the brain). Degenerate cases as in the module
        docstring.
    """
    p, t = _pair(pred, truth)
    b = _mask(brain, "brain")
    if b.shape != p.shape:
        raise ValueError(f"brain has shape {b.shape} but pred has shape {p.shape}")
    sp = _spacing(spacing_mm, p.ndim)
    voxel_cm3 = float(np.prod(sp)) / 1000.0
    c = confusion_counts(p, t, b)
    n_truth = c["tp"] + c["fn"]
    n_neg = c["tn"] + c["fp_within"]
    n_brain = int(np.count_nonzero(b))
    if n_brain == 0:
        raise ValueError("the brain mask is empty: specificity and the PCC weights need brain voxels")
    pa, pb = pcc_weights(n_truth, n_brain)
    a, bt = _check_weight("alpha", alpha), _check_weight("beta", beta)
    return {
        "sensitivity": math.nan if n_truth == 0 else c["tp"] / n_truth,
        "specificity": math.nan if n_neg == 0 else c["tn"] / n_neg,
        "dice": _tversky_counts(c["tp"], c["fp"], c["fn"], 0.5, 0.5),
        "hd95_mm": hd95(p, t, sp),
        "tversky": _tversky_counts(c["tp"], c["fp"], c["fn"], a, bt),
        "pcc": _tversky_counts(c["tp"], c["fp"], c["fn"], pa, pb),
        "pcc_alpha": pa,
        "pcc_beta": pb,
        "volume_cm3": (c["tp"] + c["fp"]) * voxel_cm3,
        "truth_volume_cm3": n_truth * voxel_cm3,
        "tp": float(c["tp"]),
        "fp": float(c["fp"]),
        "fn": float(c["fn"]),
        "tn": float(c["tn"]),
    }


@dataclass(frozen=True)
class MetricSummary:
    """Summary of one metric over cases, with the non-finite cases counted, not dropped silently.

    Attributes
    ----------
    n
        All cases.
    n_finite
        Cases the statistics are computed over.
    n_inf
        Cases equal to ``+inf`` or ``-inf`` (e.g. HD95 with one empty mask).
    n_nan
        Undefined cases (e.g. sensitivity with an empty reference).
    median, q1, q3, mean, sd
        Over the finite values (``sd`` with ``ddof=1``); NaN when there are none (``sd``: fewer than two).
    """

    n: int
    n_finite: int
    n_inf: int
    n_nan: int
    median: float
    q1: float
    q3: float
    mean: float
    sd: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (for tables)."""
        return {
            "n": self.n,
            "n_finite": self.n_finite,
            "n_inf": self.n_inf,
            "n_nan": self.n_nan,
            "median": self.median,
            "q1": self.q1,
            "q3": self.q3,
            "mean": self.mean,
            "sd": self.sd,
        }

    def text(self, digits: int = 2) -> str:
        """``median [q1, q3]; mean ± sd (n = k, 2 empty/inf, 1 undefined)``."""
        f = f"{{:.{digits}f}}"
        if self.n_finite == 0:
            body = "no finite value"
        else:
            sd = "n/a" if math.isnan(self.sd) else f.format(self.sd)
            body = (
                f"{f.format(self.median)} [{f.format(self.q1)}, {f.format(self.q3)}]; "
                f"{f.format(self.mean)} ± {sd}"
            )
        extra = [f"n = {self.n_finite}"]
        if self.n_inf:
            extra.append(f"{self.n_inf} infinite (empty mask)")
        if self.n_nan:
            extra.append(f"{self.n_nan} undefined")
        return f"{body} ({', '.join(extra)})"


def summarise(values: Iterable[float]) -> MetricSummary:
    """Median, quartiles, mean and SD of the finite values, with infinite and NaN cases counted apart.

    Parameters
    ----------
    values : iterable of float
        One value per case (e.g. per patient).

    Returns
    -------
    MetricSummary
    """
    v = np.asarray(list(values), dtype=np.float64).ravel()
    finite = v[np.isfinite(v)]
    n_inf = int(np.count_nonzero(np.isinf(v)))
    n_nan = int(np.count_nonzero(np.isnan(v)))
    if finite.size:
        q1, med, q3 = (float(x) for x in np.percentile(finite, [25.0, 50.0, 75.0]))
        mean = float(finite.mean())
    else:
        q1 = med = q3 = mean = math.nan
    sd = float(finite.std(ddof=1)) if finite.size >= 2 else math.nan
    return MetricSummary(
        n=int(v.size),
        n_finite=int(finite.size),
        n_inf=n_inf,
        n_nan=n_nan,
        median=med,
        q1=q1,
        q3=q3,
        mean=mean,
        sd=sd,
    )
