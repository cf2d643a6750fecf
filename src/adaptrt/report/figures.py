"""Figures shared by the studies (matplotlib, Agg backend, nothing shown on screen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

__all__ = ["lesion_gallery", "volume_trajectories"]


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
