"""Figures shared by the studies (matplotlib, Agg backend, nothing shown on screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from numpy.typing import NDArray

__all__ = ["lesion_gallery", "lesion_timepoints", "map_panels", "volume_trajectories"]


def lesion_gallery(
    images: Sequence[NDArray[Any]],
    masks: Sequence[NDArray[np.bool_]],
    titles: Sequence[str],
    *,
    ncols: int = 6,
) -> Any:
    """A grid of 2-D lesion slices with the GTV outline in red.

    Parameters
    ----------
    images, masks
        2-D arrays ``(y, x)`` of equal length; images in any range (shown with their own min/max).
    titles
        One title per panel.
    """
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.0 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, m, t in zip(axes.ravel(), images, masks, titles, strict=False):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        if np.any(m) and not np.all(m):
            ax.contour(m.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(t, fontsize=7)
    fig.tight_layout()
    return fig


def volume_trajectories(
    volumes: Mapping[str, Sequence[float]], labels: Mapping[str, bool | None], timepoints: Sequence[str]
) -> Any:
    """Relative GTV volume (first time point = 1) of every lesion over time points, coloured by label."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    colours = {True: "tab:green", False: "tab:red", None: "tab:gray"}
    for key, vols in volumes.items():
        v = np.asarray(vols, dtype=float)
        ax.plot(range(len(v)), v / v[0], marker="o", color=colours[labels.get(key)], alpha=0.7, lw=1)
    ax.set_xticks(range(len(timepoints)), list(timepoints))
    ax.set_ylabel("GTV volume / first MRI")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_title("Lesion volumes (green: responder, red: non-responder)", fontsize=9)
    fig.tight_layout()
    return fig


def lesion_timepoints(
    panels: Sequence[
        tuple[str, Sequence[NDArray[Any]], Sequence[NDArray[np.bool_]], Sequence[NDArray[np.bool_]]]
    ],
    timepoints: Sequence[str],
) -> Any:
    """One row per lesion, one column per time point: image, GTV outline (red), truth sub-region (cyan).

    Parameters
    ----------
    panels
        ``(title, images, gtvs, truths)`` per lesion; each a list of 2-D arrays ``(y, x)``, one per time point.
    timepoints
        Column titles.
    """
    n = len(panels)
    k = len(timepoints)
    fig, axes = plt.subplots(max(n, 1), k, figsize=(2.1 * k, 2.1 * max(n, 1)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (title, images, gtvs, truths) in enumerate(panels):
        lo = float(np.percentile(images[0], 1))
        hi = float(np.percentile(images[0], 99.5))
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if np.any(gtvs[c]):
                ax.contour(gtvs[c].astype(float), levels=[0.5], colors="red", linewidths=0.8)
            if np.any(truths[c]):
                ax.contour(truths[c].astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_title(f"{title} {timepoints[c]}" if c == 0 else timepoints[c], fontsize=7)
    fig.tight_layout()
    return fig


def map_panels(
    maps: Mapping[str, NDArray[Any]], contours: Mapping[str, NDArray[np.bool_]], *, ncols: int = 5
) -> Any:
    """Axial slices of co-registered maps with mask outlines (e.g. CEL, T2L, progression) on each."""
    names = list(maps)
    ncols = max(1, min(ncols, len(names)))
    nrows = int(np.ceil(len(names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.3 * nrows), squeeze=False)
    colours = ["red", "yellow", "cyan", "lime", "magenta"]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.imshow(maps[name], cmap="gray", interpolation="nearest")
        for m, col in zip(contours.values(), colours, strict=False):
            if np.any(m):
                ax.contour(m.astype(float), levels=[0.5], colors=col, linewidths=0.7)
        ax.set_title(name, fontsize=8)
    handles = [Line2D([], [], color=col, label=cname) for cname, col in zip(contours, colours, strict=False)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig
