"""Figures of the CTV comparison (matplotlib, Agg): Fig. 3-style box plots, coverage-volume curves, overlays.

Every function returns a matplotlib Figure; the run folder saves and closes it
(:meth:`adaptrt.report.run.RunFolder.save_figure`). Colours follow the paper's Fig. 4 (RTOG yellow, EORTC
green, DL red; :data:`adaptrt.target.ctv.CTV_COLOURS`), other CTVs take the RTSTRUCT palette, and legends are
built from the colours actually drawn.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from numpy.typing import NDArray

from ..report.figures import plt
from .compare import COMPARED_METRICS, CoverageCurve, pooled_curve
from .ctv import CTV, CTV_COLOURS, MaskLike, _as_mask

__all__ = ["METRIC_LABELS", "contour_overlay", "coverage_volume_figure", "ctv_colour", "metric_boxplots"]

#: Axis labels (with units) of the compared metrics.
METRIC_LABELS: Mapping[str, str] = {
    "sensitivity": "sensitivity",
    "specificity": "specificity (within the brain)",
    "dice": "Dice",
    "hd95_mm": "HD95 (mm)",
    "tversky": "Tversky (α 0.02, β 0.98)",
    "pcc": "PCC",
    "volume_cm3": "CTV volume (cm³)",
}
_PALETTE = ("tab:blue", "tab:purple", "tab:orange", "tab:cyan", "tab:brown", "tab:pink", "tab:olive")
_LESION_COLOUR = "cyan"


def ctv_colour(name: str, position: int = 0) -> tuple[float, float, float] | str:
    """The display colour of a CTV: the paper's for RTOG / EORTC / DL, else a palette colour by position."""
    if name in CTV_COLOURS:
        r, g, b = CTV_COLOURS[name]
        return (r / 255.0, g / 255.0, b / 255.0)
    return _PALETTE[position % len(_PALETTE)]


def _names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    out: list[str] = []
    for r in rows:
        if r["ctv"] not in out:
            out.append(str(r["ctv"]))
    return out


def metric_boxplots(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = COMPARED_METRICS,
    *,
    ctv_order: Sequence[str] | None = None,
    title: str = "",
) -> Any:
    """One panel per metric: a box per CTV with every patient's value as a point (Fig. 3 of the paper).

    Parameters
    ----------
    rows
        Rows of :func:`adaptrt.target.compare.evaluate_ctvs` (all patients).
    metrics
        The columns to draw, one panel each.
    ctv_order
        CTV names in drawing order (default: order of appearance).
    title
        Figure title.

    Notes
    -----
    Non-finite values (HD95 of an empty CTV, undefined values) cannot be drawn; each panel's title counts
    them, and the legend gives the number of patients per CTV.
    """
    names = list(ctv_order) if ctv_order is not None else _names(rows)
    n = len(metrics)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    counts = {c: len({r["patient_id"] for r in rows if r["ctv"] == c}) for c in names}
    for ax, metric in zip(axes.ravel(), metrics, strict=False):
        data, hidden = [], 0
        for c in names:
            v = np.asarray([float(r[metric]) for r in rows if r["ctv"] == c], dtype=float)
            hidden += int(np.count_nonzero(~np.isfinite(v)))
            data.append(v[np.isfinite(v)])
        pos = np.arange(1, len(names) + 1)
        box = ax.boxplot(
            [d if d.size else np.array([np.nan]) for d in data],
            positions=pos,
            widths=0.6,
            patch_artist=True,
            showfliers=False,
        )
        for i, (patch, c) in enumerate(zip(box["boxes"], names, strict=True)):
            patch.set_facecolor(ctv_colour(c, i))
            patch.set_alpha(0.35)
        for i, (d, c) in enumerate(zip(data, names, strict=True)):
            # deterministic spread of the points across the box
            x = pos[i] + (np.linspace(-0.18, 0.18, d.size) if d.size > 1 else np.zeros(d.size))
            ax.plot(x, d, "o", ms=3.5, color=ctv_colour(c, i), mec="black", mew=0.4, ls="none")
        ax.set_xticks(pos, names, fontsize=8)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(
            METRIC_LABELS.get(metric, metric).split(" (")[0]
            + (f"\n({hidden} not finite, not drawn)" if hidden else ""),
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
    handles = [
        Patch(facecolor=ctv_colour(c, i), alpha=0.6, label=f"{c} (n = {counts[c]})")
        for i, c in enumerate(names)
    ]
    axes.ravel()[0].legend(handles=handles, fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def coverage_volume_figure(
    curves: Mapping[str, Sequence[CoverageCurve]],
    *,
    points: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    title: str = "",
) -> Any:
    """Coverage of the new progression (%) against CTV volume (cm³), per family.

    Parameters
    ----------
    curves
        Family label -> per-patient curves (same margins). Each patient is a thin line; the pooled curve
        (:func:`adaptrt.target.compare.pooled_curve`: mean volume, voxel-pooled coverage) a thick one with a
        marker every 5 mm of margin.
    points
        Label -> ``(volume_cm3, coverage)`` points to mark (e.g. each patient's actual CTV), coverage in [0, 1].
    title
        Axes title.
    """
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    handles: list[Any] = []
    for i, (label, cs) in enumerate(curves.items()):
        colour = ctv_colour(label.split("-")[0], i)
        for c in cs:
            ax.plot(c.volume_cm3, 100 * c.coverage, color=colour, lw=0.6, alpha=0.35)
        if cs:
            p = pooled_curve(list(cs))
            step = np.isclose(np.mod(p.margins_mm, 5.0), 0.0)
            ax.plot(p.volume_cm3, 100 * p.coverage, color=colour, lw=2.2)
            ax.plot(p.volume_cm3[step], 100 * p.coverage[step], "o", color=colour, ms=4)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=colour,
                    lw=2.2,
                    marker="o",
                    ms=4,
                    label=f"{label}: pooled (n = {p.n_patients})",
                )
            )
            handles.append(Line2D([], [], color=colour, lw=0.6, alpha=0.5, label=f"{label}: per patient"))
    for j, (label, pts) in enumerate((points or {}).items()):
        arr = np.asarray(list(pts), dtype=float).reshape(-1, 2)
        colour = ctv_colour(label, j + len(curves))
        ax.plot(arr[:, 0], 100 * arr[:, 1], "D", color=colour, mec="black", ms=5, ls="none")
        handles.append(
            Line2D([], [], color=colour, marker="D", mec="black", ms=5, ls="none", label=f"{label} CTVs")
        )
    ax.set_xlabel("CTV volume (cm³)")
    ax.set_ylabel("new progression covered (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(
        title or "Coverage of new progression vs CTV volume (markers: every 5 mm of margin)", fontsize=9
    )
    fig.tight_layout()
    return fig


def contour_overlay(
    image: NDArray[Any] | Any,
    lesion: MaskLike,
    ctvs: Sequence[CTV],
    spacing_mm: Sequence[float],
    *,
    slice_index: int | None = None,
    title: str = "",
    lesion_label: str = "progression (composite lesion)",
) -> Any:
    """CTV outlines and the progression lesion on one axial slice of an image (the paper's Fig. 4).

    Parameters
    ----------
    image
        Array or Volume ``(z, y, x)``, e.g. the nFLAIR map; shown in grey with its own 1st-99th percentile.
    lesion
        Boolean ``(z, y, x)``: outlined in cyan.
    ctvs
        Outlined in their colours (:func:`ctv_colour`).
    spacing_mm
        ``(z, y, x)`` mm; sets the in-plane aspect ratio.
    slice_index
        The axial slice; default the slice with the most lesion voxels.
    title
        Axes title (the slice index is appended).
    lesion_label
        Legend label of the lesion.
    """
    img = np.asarray(getattr(image, "array", image), dtype=np.float64)
    les = _as_mask(lesion, "lesion")
    if img.shape != les.shape:
        raise ValueError(f"image {img.shape} and lesion {les.shape} must share a grid")
    k = int(np.argmax(les.sum(axis=(1, 2)))) if slice_index is None else int(slice_index)
    if not 0 <= k < img.shape[0]:
        raise ValueError(f"slice_index {k} is outside 0..{img.shape[0] - 1}")
    lo, hi = np.percentile(img[k], [1.0, 99.0])
    fig, ax = plt.subplots(figsize=(5.0, 5.0))
    ax.imshow(img[k], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    ax.set_aspect(float(spacing_mm[1]) / float(spacing_mm[2]))
    handles: list[Any] = []

    def outline(mask: NDArray[np.bool_], colour: Any, label: str, lw: float) -> None:
        sl = mask[k]
        drawn = bool(sl.any()) and not bool(sl.all())
        if drawn:
            ax.contour(sl.astype(float), levels=[0.5], colors=[colour], linewidths=lw)
        handles.append(
            Line2D([], [], color=colour, lw=lw, label=label if drawn else f"{label} (not on this slice)")
        )

    outline(les, _LESION_COLOUR, lesion_label, 1.2)
    for i, c in enumerate(ctvs):
        if c.mask.shape != les.shape:
            raise ValueError(f"CTV {c.name!r} {c.mask.shape} and lesion {les.shape} must share a grid")
        outline(c.mask, ctv_colour(c.name, i), c.name, 1.6)
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_title(f"{title + ': ' if title else ''}axial slice {k}", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig
