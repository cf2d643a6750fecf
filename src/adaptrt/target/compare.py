"""Comparison of CTVs against the progression: per-patient metrics, summaries, Wilcoxon tests, equal volume.

Reference lesion
----------------
The paper (Tran et al. 2025, Methods) trains and evaluates against "a composite lesion mask of the NEL and
CEL from both pre-RT and progression time points". NEL ∪ CEL = T2L ∪ CEL (NEL is T2L minus CEL), so

    composite lesion = T2L_baseline ∪ CEL_baseline ∪ T2L_progression ∪ CEL_progression,

all on the baseline grid (the manifest's progression masks are already warped onto it). Every CTV — RTOG,
EORTC, and any later one such as the deep-learning CTV — is scored against it with
:func:`adaptrt.metrics.segmentation.segmentation_metrics` (specificity within the brain).

Equal-volume view
-----------------
A CTV can look "more specific" only because it is smaller. Public benchmarks therefore compare CTVs at
equal volume: for a family of CTVs grown from one base by a margin ``m`` (RTOG-style ``(T2L ∪ CEL) + m``,
EORTC-style ``(CEL ∪ cavity) + m``, clipped to the brain, critical structures removed), the share of the
**new** progression covered against the CTV volume (:func:`coverage_volume_curve`). The new progression is
the progression lesion outside the baseline lesion: ``(T2L_p ∪ CEL_p) \\ (T2L_b ∪ CEL_b)``.
:func:`coverage_at_volume` reads a curve at a given volume, and :func:`margin_for_volume` finds the margin
that gives a base the volume of another CTV ("grow or shrink RTOG to the DL CTV's volume").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from ..metrics.segmentation import SEGMENTATION_METRICS, segmentation_metrics, summarise
from .ctv import CTV, CriticalLike, MaskLike, _as_mask, _spacing, critical_union, margin_ctv
from .margins import distance_mm

__all__ = [
    "COMPARED_METRICS",
    "DEFAULT_MARGINS_MM",
    "CoverageCurve",
    "MarginForVolume",
    "composite_lesion",
    "coverage_at_volume",
    "coverage_volume_curve",
    "equal_volume_ctv",
    "evaluate_ctvs",
    "family_curves",
    "margin_for_volume",
    "new_progression",
    "pooled_curve",
    "summarise_ctvs",
    "wilcoxon_ctvs",
    "wilcoxon_paired",
]

#: The metrics of the per-patient table that are summarised and tested (the paper's six, plus volume).
COMPARED_METRICS: tuple[str, ...] = (*SEGMENTATION_METRICS, "volume_cm3")
#: Margins (mm) of the coverage-volume curves: 0 to 40 mm in 1 mm steps.
DEFAULT_MARGINS_MM: tuple[float, ...] = tuple(float(m) for m in range(41))
_LESION_KEYS = ("t2l_baseline", "cel_baseline", "t2l_progression", "cel_progression")


def _get(masks: Mapping[str, MaskLike], key: str) -> NDArray[np.bool_]:
    if key not in masks:
        raise KeyError(f"the mask {key!r} is needed; got {sorted(masks)}")
    return _as_mask(masks[key], key)


def composite_lesion(masks: Mapping[str, MaskLike]) -> NDArray[np.bool_]:
    """``T2L_b ∪ CEL_b ∪ T2L_p ∪ CEL_p``: the paper's composite lesion (NEL ∪ CEL at both time points).

    Parameters
    ----------
    masks
        Boolean arrays or Volumes with the keys ``t2l_baseline``, ``cel_baseline``, ``t2l_progression``,
        ``cel_progression`` on one grid (the manifest's names).

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    out = _get(masks, _LESION_KEYS[0]).copy()
    for k in _LESION_KEYS[1:]:
        out |= _get(masks, k)
    return out


def new_progression(masks: Mapping[str, MaskLike]) -> NDArray[np.bool_]:
    """``(T2L_p ∪ CEL_p) \\ (T2L_b ∪ CEL_b)``: the progression outside the baseline lesion (bool z, y, x)."""
    prog = _get(masks, "t2l_progression") | _get(masks, "cel_progression")
    base = _get(masks, "t2l_baseline") | _get(masks, "cel_baseline")
    return np.asarray(prog & ~base, dtype=bool)


def _ctv_list(ctvs: Iterable[CTV] | Mapping[str, CTV]) -> list[CTV]:
    items = list(ctvs.values()) if isinstance(ctvs, Mapping) else list(ctvs)
    names = [c.name for c in items]
    if len(set(names)) != len(names):
        raise ValueError(f"CTV names must be unique, got {names}")
    return items


def evaluate_ctvs(
    ctvs: Iterable[CTV] | Mapping[str, CTV],
    lesion: MaskLike,
    brain: MaskLike,
    *,
    patient_id: str,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per CTV of every metric against the reference lesion (one patient).

    Parameters
    ----------
    ctvs
        The patient's CTVs (any number, unique names), on the lesion's grid.
    lesion
        The reference (bool z, y, x), normally :func:`composite_lesion`.
    brain
        Brain mask (bool z, y, x): specificity is counted inside it; it sets the PCC weights.
    patient_id
        Written in every row.
    extra
        Further columns for every row (treatment, time to progression, ...).

    Returns
    -------
    list of dict
        ``patient_id``, ``ctv``, then the keys of :func:`~adaptrt.metrics.segmentation.segmentation_metrics`
        (``volume_cm3`` is the CTV's), then ``extra``.
    """
    t = _as_mask(lesion, "lesion")
    b = _as_mask(brain, "brain")
    rows = []
    for c in _ctv_list(ctvs):
        if c.mask.shape != t.shape:
            raise ValueError(f"CTV {c.name!r} has shape {c.mask.shape}, the lesion {t.shape}")
        row: dict[str, Any] = {"patient_id": patient_id, "ctv": c.name}
        row.update(segmentation_metrics(c.mask, t, b, c.spacing_mm))
        row.update(extra or {})
        rows.append(row)
    return rows


def _ctv_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: list[str] = []
    for r in rows:
        if r["ctv"] not in names:
            names.append(str(r["ctv"]))
    return names


def summarise_ctvs(
    rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = COMPARED_METRICS
) -> list[dict[str, Any]]:
    """Median [IQR] and mean ± SD of every metric per CTV, with empty / undefined cases counted.

    Parameters
    ----------
    rows
        Rows of :func:`evaluate_ctvs` for all patients.
    metrics
        Columns to summarise.

    Returns
    -------
    list of dict
        One row per (CTV, metric): ``ctv``, ``metric`` and the fields of
        :class:`~adaptrt.metrics.segmentation.MetricSummary` (statistics over finite values; ``n_inf`` counts
        e.g. HD95 of an empty CTV, ``n_nan`` undefined values), plus ``text``.
    """
    out = []
    for name in _ctv_names(rows):
        sub = [r for r in rows if r["ctv"] == name]
        for m in metrics:
            s = summarise(float(r[m]) for r in sub)
            out.append({"ctv": name, "metric": m, **s.as_dict(), "text": s.text(3)})
    return out


def wilcoxon_paired(a: ArrayLike, b: ArrayLike) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (paired by position, e.g. by patient).

    Conventions: pairs where either value is not finite (e.g. HD95 = inf of an empty CTV) are dropped and
    counted (``n_dropped``); zero differences are dropped (Wilcoxon's ``zero_method="wilcox"``) and counted
    (``n_zero``); tied non-zero differences get average ranks. ``scipy.stats.wilcoxon``'s default method is
    used: the exact null distribution for ≤ 50 pairs without ties or zeros, an exhaustive permutation
    test for ≤ 13 pairs with ties or zeros, the normal approximation with tie correction otherwise. With
    every difference zero the p-value is 1.0; with no pair it is NaN. With fewer than 6 non-zero pairs the
    smallest possible two-sided p-value is ``2 / 2**n >= 0.0625``: the test cannot reach 0.05, and ``note``
    says so.

    Returns
    -------
    dict
        ``n`` (finite pairs), ``n_dropped``, ``n_zero``, ``median_diff``, ``statistic``, ``p``, ``note``.
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"a and b must be paired (same length), got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    nz = d[d != 0]
    notes = []
    if d.size == 0:
        stat, p = math.nan, math.nan
        notes.append("no finite pair")
    elif nz.size == 0:
        stat, p = 0.0, 1.0
        notes.append("every difference is zero")
    else:
        res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
        stat, p = float(res.statistic), float(res.pvalue)
    if 0 < nz.size < 6:
        notes.append(f"only {nz.size} non-zero pairs: p cannot fall below 0.05")
    if int(x.size - d.size):
        notes.append(f"{int(x.size - d.size)} pairs with a non-finite value dropped")
    return {
        "n": int(d.size),
        "n_dropped": int(x.size - d.size),
        "n_zero": int(d.size - nz.size),
        "median_diff": float(np.median(d)) if d.size else math.nan,
        "statistic": stat,
        "p": p,
        "note": "; ".join(notes),
    }


def wilcoxon_ctvs(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = COMPARED_METRICS,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Wilcoxon signed-rank tests between CTVs, paired by patient, for every metric.

    Parameters
    ----------
    rows
        Rows of :func:`evaluate_ctvs` for all patients.
    metrics
        Columns to test.
    pairs
        ``(a, b)`` CTV names to compare (``a - b``); default every pair in order of appearance.

    Returns
    -------
    list of dict
        ``ctv_a``, ``ctv_b``, ``metric`` and the fields of :func:`wilcoxon_paired`. Only patients that have
        both CTVs are paired.
    """
    names = _ctv_names(rows)
    use = list(pairs) if pairs is not None else list(combinations(names, 2))
    by = {(str(r["patient_id"]), str(r["ctv"])): r for r in rows}
    out = []
    for a, b in use:
        for n in (a, b):
            if n not in names:
                raise ValueError(f"no CTV named {n!r} in the rows; they hold {names}")
        patients = [p for (p, c) in by if c == a and (p, b) in by]
        for m in metrics:
            va = [float(by[(p, a)][m]) for p in patients]
            vb = [float(by[(p, b)][m]) for p in patients]
            out.append({"ctv_a": a, "ctv_b": b, "metric": m, **wilcoxon_paired(va, vb)})
    return out


# ------------------------------------------------------------------------------------ equal volume
@dataclass(frozen=True, eq=False)
class CoverageCurve:
    """Coverage of the new progression against CTV volume for a margin family.

    Attributes
    ----------
    family
        E.g. ``"RTOG-style (T2L ∪ CEL) + m"``.
    patient_id
        The patient, or ``"pooled"``.
    margins_mm
        ``(M,)`` margins, increasing.
    volume_cm3
        ``(M,)`` CTV volume at each margin (non-decreasing); for a pooled curve the mean over patients.
    coverage
        ``(M,)`` share of the new progression inside the CTV, in [0, 1]; NaN when the patient has no new
        progression. For a pooled curve: covered new voxels over all new voxels of the patients that have
        some (voxel-pooled).
    new_voxels
        Number of new-progression voxels (summed over patients for a pooled curve).
    n_patients
        1, or the number of patients pooled (those with new progression).
    """

    family: str
    patient_id: str
    margins_mm: NDArray[np.float64]
    volume_cm3: NDArray[np.float64]
    coverage: NDArray[np.float64]
    new_voxels: int
    n_patients: int = 1

    def rows(self) -> list[dict[str, Any]]:
        """One dict per margin (for CSV tables)."""
        return [
            {
                "family": self.family,
                "patient_id": self.patient_id,
                "margin_mm": float(m),
                "volume_cm3": float(v),
                "coverage": float(c),
            }
            for m, v, c in zip(self.margins_mm, self.volume_cm3, self.coverage, strict=True)
        ]


def _margins(margins_mm: Sequence[float]) -> NDArray[np.float64]:
    m = np.asarray(list(margins_mm), dtype=np.float64)
    if m.ndim != 1 or m.size == 0 or not np.all(np.isfinite(m)) or np.any(m < 0) or np.any(np.diff(m) <= 0):
        raise ValueError(f"margins_mm must be finite, >= 0 and increasing, got {list(margins_mm)}")
    return m


def coverage_volume_curve(
    base: MaskLike,
    new: MaskLike,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    margins_mm: Sequence[float] = DEFAULT_MARGINS_MM,
    *,
    family: str,
    patient_id: str = "",
    critical: CriticalLike = None,
) -> CoverageCurve:
    """Coverage of ``new`` by ``(base + m) ∩ brain \\ critical`` and its volume, for every margin ``m``.

    The CTV at margin ``m`` is exactly :func:`adaptrt.target.ctv.margin_ctv` ``(base, brain, spacing_mm, m)``
    (one distance transform serves every margin).

    Parameters
    ----------
    base, new, brain : bool (z, y, x)
        The volume the margin grows from, the new progression, the brain.
    spacing_mm : (z, y, x) in mm
    margins_mm : increasing margins in mm (default 0..40)
    family, patient_id : labels of the curve
    critical : critical structures removed from every CTV

    Returns
    -------
    CoverageCurve
    """
    b, n, br = _as_mask(base, "base"), _as_mask(new, "new"), _as_mask(brain, "brain")
    if not (b.shape == n.shape == br.shape):
        raise ValueError(f"base, new and brain must share a grid, got {b.shape}, {n.shape}, {br.shape}")
    sp = _spacing(spacing_mm)
    m = _margins(margins_mm)
    crit, _ = critical_union(critical, b.shape)
    allowed = br & ~crit
    d = distance_mm(b, sp)
    voxel_cm3 = float(np.prod(sp)) / 1000.0
    d_allowed = np.sort(d[allowed])
    d_new = np.sort(d[allowed & n])
    n_new = int(np.count_nonzero(n))
    thr = m + 1e-9  # the tolerance of expand_mm
    volume = np.searchsorted(d_allowed, thr, side="right") * voxel_cm3
    if n_new:
        coverage = np.searchsorted(d_new, thr, side="right") / n_new
    else:
        coverage = np.full(m.shape, np.nan)
    return CoverageCurve(family, patient_id, m, volume.astype(np.float64), coverage.astype(np.float64), n_new)


def family_curves(
    masks: Mapping[str, MaskLike],
    spacing_mm: Sequence[float],
    margins_mm: Sequence[float] = DEFAULT_MARGINS_MM,
    *,
    patient_id: str = "",
    critical: CriticalLike = None,
) -> dict[str, CoverageCurve]:
    """The RTOG-style and EORTC-style coverage-volume curves of one patient.

    Parameters
    ----------
    masks
        The manifest's masks (``brain``, ``cavity``, ``cel_*``, ``t2l_*``), arrays or Volumes.
    spacing_mm, margins_mm, patient_id, critical
        As :func:`coverage_volume_curve`.

    Returns
    -------
    dict
        ``{"RTOG": curve of (T2L ∪ CEL) + m, "EORTC": curve of (CEL ∪ cavity) + m}``.
    """
    new = new_progression(masks)
    brain = _get(masks, "brain")
    cel = _get(masks, "cel_baseline")
    bases = {
        "RTOG": (_get(masks, "t2l_baseline") | cel, "RTOG-style (T2L ∪ CEL) + m"),
        "EORTC": (cel | _get(masks, "cavity"), "EORTC-style (CEL ∪ cavity) + m"),
    }
    return {
        k: coverage_volume_curve(
            base, new, brain, spacing_mm, margins_mm, family=fam, patient_id=patient_id, critical=critical
        )
        for k, (base, fam) in bases.items()
    }


def pooled_curve(curves: Sequence[CoverageCurve]) -> CoverageCurve:
    """Pool per-patient curves of one family (same margins): mean volume, voxel-pooled coverage.

    Patients without new progression are left out of both (their number is ``len(curves) - n_patients``).
    """
    if not curves:
        raise ValueError("pooled_curve needs at least one curve")
    m = curves[0].margins_mm
    for c in curves:
        if c.margins_mm.shape != m.shape or not np.allclose(c.margins_mm, m):
            raise ValueError("pooled curves must share their margins")
    use = [c for c in curves if c.new_voxels > 0]
    total = sum(c.new_voxels for c in use)
    if use:
        covered = np.sum([c.coverage * c.new_voxels for c in use], axis=0)
        coverage = covered / total
        volume = np.mean([c.volume_cm3 for c in use], axis=0)
    else:
        coverage = np.full(m.shape, np.nan)
        volume = np.mean([c.volume_cm3 for c in curves], axis=0)
    return CoverageCurve(curves[0].family, "pooled", m.copy(), volume, coverage, int(total), len(use))


def coverage_at_volume(curve: CoverageCurve, volume_cm3: float) -> float:
    """Coverage of the curve's family at ``volume_cm3``, by linear interpolation between margins.

    The CTVs of one family are nested, so equal volumes mean equal CTVs and the curve is a function of
    volume. Returns NaN when ``volume_cm3`` lies outside the curve's volume range (smaller than the base,
    larger than the largest margin): extend ``margins_mm`` rather than extrapolate.
    """
    v = float(volume_cm3)
    vols, first = np.unique(curve.volume_cm3, return_index=True)
    cov = curve.coverage[first]
    if not math.isfinite(v) or v < vols[0] - 1e-12 or v > vols[-1] + 1e-12:
        return math.nan
    return float(np.interp(v, vols, cov))


@dataclass(frozen=True)
class MarginForVolume:
    """The margin that gives a base volume a target volume.

    Attributes
    ----------
    margin_mm
        The margin; the CTV ``margin_ctv(base, brain, spacing, margin_mm)`` has ``volume_cm3``.
    volume_cm3
        The volume reached: the achievable volume nearest to ``target_cm3`` (volumes grow in steps of whole
        voxels, so an exact match is generally impossible).
    target_cm3
        The volume asked for.
    reachable
        False when the target is below the volume at margin 0 (the base itself; shrinking below it would
        need an inner margin) or above the volume at ``max_margin_mm``.
    """

    margin_mm: float
    volume_cm3: float
    target_cm3: float
    reachable: bool


def margin_for_volume(
    base: MaskLike,
    target_cm3: float,
    *,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    critical: CriticalLike = None,
    max_margin_mm: float = 80.0,
) -> MarginForVolume:
    """The margin whose CTV ``(base + m) ∩ brain \\ critical`` has the volume nearest to ``target_cm3``.

    Exact, not by bisection: the CTV volume is a step function of the margin that changes only at the
    voxels' distances from the base, so the distances of the allowed voxels are sorted once and the step
    nearest to the target is taken (a bisection on the margin would converge to the same step).

    Parameters
    ----------
    base, brain : bool (z, y, x)
    target_cm3 : float, >= 0
    spacing_mm : (z, y, x) in mm
    critical : critical structures removed
    max_margin_mm : the largest margin considered

    Returns
    -------
    MarginForVolume
    """
    b, br = _as_mask(base, "base"), _as_mask(brain, "brain")
    if b.shape != br.shape:
        raise ValueError(f"base and brain must share a grid, got {b.shape} and {br.shape}")
    t = float(target_cm3)
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"target_cm3 must be a finite volume >= 0, got {target_cm3!r}")
    sp = _spacing(spacing_mm)
    crit, _ = critical_union(critical, b.shape)
    d = distance_mm(b, sp)[br & ~crit]
    d = d[d <= float(max_margin_mm) + 1e-9]
    voxel_cm3 = float(np.prod(sp)) / 1000.0
    if d.size == 0:
        return MarginForVolume(0.0, 0.0, t, reachable=t == 0.0)
    levels, counts = np.unique(d, return_counts=True)
    vols = np.cumsum(counts) * voxel_cm3
    if levels[0] > 0:  # the base lies outside the allowed region: margin 0 gives an empty CTV
        levels = np.concatenate([[0.0], levels])
        vols = np.concatenate([[0.0], vols])
    i = int(np.argmin(np.abs(vols - t)))
    reachable = bool(vols[0] - voxel_cm3 / 2 <= t <= vols[-1] + voxel_cm3 / 2)
    return MarginForVolume(float(levels[i]), float(vols[i]), t, reachable)


def equal_volume_ctv(
    base: MaskLike,
    target_cm3: float,
    *,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    name: str,
    critical: CriticalLike = None,
    max_margin_mm: float = 80.0,
) -> tuple[CTV, MarginForVolume]:
    """A margin CTV grown (or shrunk) from ``base`` to the volume nearest ``target_cm3``.

    For the part-2 comparison "RTOG at the DL CTV's volume": ``equal_volume_ctv(t2l | cel, dl.volume_cm3,
    brain=brain, spacing_mm=sp, name="RTOG@DL")``; then score it with :func:`evaluate_ctvs`.
    """
    found = margin_for_volume(
        base, target_cm3, brain=brain, spacing_mm=spacing_mm, critical=critical, max_margin_mm=max_margin_mm
    )
    ctv = margin_ctv(
        base,
        brain,
        spacing_mm,
        found.margin_mm,
        name=name,
        definition=f"base + {found.margin_mm:.2f} mm: the margin giving the volume nearest {found.target_cm3:.1f} cm³",
        critical=critical,
    )
    return ctv, found
