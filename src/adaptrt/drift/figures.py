"""Figures of the drift study, after the paper's Figs. 2-8. Every heat map has a colour bar with its unit:
images and drift are in the lesion's normalised intensity (the crop's intensity scale mapped to [0, 1]; drift
= post − pre on that scale, red = increase, blue = decrease, symmetric limits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from numpy.typing import NDArray

__all__ = ["image_grid", "loss_curves", "metric_points"]

IMG_UNIT = "normalised intensity (a.u.)"
DRIFT_UNIT = "drift, post − pre (a.u.)"
SD_UNIT = "SD or |error| (a.u.)"


def image_grid(
    rows: Sequence[Sequence[NDArray[Any] | None]],
    kinds: Sequence[Sequence[str]],
    titles: Sequence[Sequence[str]],
    row_labels: Sequence[str] = (),
    *,
    suptitle: str = "",
    drift_limit: float | None = None,
    sd_limit: float | None = None,
) -> Figure:
    """A grid of 2-D panels; ``kinds[i][j]`` is ``"image"`` (grey, [0, 1]), ``"drift"`` (red-blue,
    symmetric) or ``"sd"`` (a non-negative spread or error map, magma from 0). One colour bar per kind on the
    right, with its unit."""
    nr = len(rows)
    nc = max(len(r) for r in rows)
    n_bars = len({k for r in kinds for k in r} & {"image", "drift", "sd"})
    height = max(1.9 * nr + 0.4, 3.6 if n_bars == 3 else 0.0)  # three colour bars need room for their labels
    fig, axes = plt.subplots(nr, nc, figsize=(1.9 * nc + 1.2, height), squeeze=False)
    drifts = [
        np.abs(p).max()
        for r, k in zip(rows, kinds, strict=True)
        for p, kk in zip(r, k, strict=False)
        if p is not None and kk == "drift"
    ]
    lim = drift_limit if drift_limit is not None else (max(drifts) if drifts else 1.0) or 1.0
    sds = [
        float(np.max(p))
        for r, k in zip(rows, kinds, strict=True)
        for p, kk in zip(r, k, strict=False)
        if p is not None and kk == "sd"
    ]
    sd_lim = sd_limit if sd_limit is not None else (max(sds) if sds else 1.0) or 1.0
    im_img = im_drift = im_sd = None
    for i in range(nr):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(rows[i]) or rows[i][j] is None:
                ax.axis("off")
                continue
            panel = rows[i][j]
            if kinds[i][j] == "drift":
                im_drift = ax.imshow(panel, cmap="RdBu_r", vmin=-lim, vmax=lim)
            elif kinds[i][j] == "sd":
                im_sd = ax.imshow(panel, cmap="magma", vmin=0.0, vmax=sd_lim)
            else:
                im_img = ax.imshow(panel, cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_title(titles[i][j], fontsize=7)
            if j == 0 and i < len(row_labels):
                ax.set_ylabel(row_labels[i], fontsize=7)
    fig.subplots_adjust(right=0.86, wspace=0.05, hspace=0.3)
    bars = [(im, unit) for im, unit in ((im_img, IMG_UNIT), (im_drift, DRIFT_UNIT), (im_sd, SD_UNIT)) if im]
    if len(bars) <= 2:  # the original layout: image bar on top, drift bar below
        slots = [(0.55, 0.33), (0.12, 0.33)]
    else:
        slots = [(0.66, 0.24), (0.37, 0.24), (0.08, 0.24)]
    for (im, unit), (y0, h) in zip(bars, slots, strict=False):
        cax = fig.add_axes((0.88, y0, 0.015, h))
        fig.colorbar(im, cax=cax).set_label(unit, fontsize=7)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    return fig


def loss_curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]]) -> Figure:
    """Fig. 4C: reconstruction and drift loss against iteration, mean over folds, one line per model."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, folds in histories.items():
        if not folds:
            continue
        n = min(len(h) for h in folds)
        it = [folds[0][i]["iteration"] for i in range(n)]
        for ax, key in zip(axes, ("recon", "drift"), strict=True):
            vals = np.mean([[h[i][key] for i in range(n)] for h in folds], axis=0)
            ax.plot(it, vals, label=name)
    axes[0].set_title("reconstruction term (MSE+SSIM of post; MSE of noise for DDIM)", fontsize=8)
    axes[1].set_title("drift term (MSE of drift)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss (mean over folds)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def metric_points(rows: Sequence[Mapping[str, Any]], metric: str, ylabel: str) -> Figure:
    """Per-lesion values of ``metric`` by model (held-out lesions), with the median marked."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.3 * len(models) + 2, 3.2))
    rng = np.random.default_rng(0)
    for i, m in enumerate(models):
        v = np.asarray([r[metric] for r in rows if r["model"] == m], float)
        v = v[np.isfinite(v)]
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=8, alpha=0.6, label=None)
        if v.size:
            ax.plot([i - 0.3, i + 0.3], [np.median(v)] * 2, color="k", lw=2)
    ax.plot([], [], color="k", lw=2, label="median")
    ax.set_xticks(range(len(models)), models, rotation=20, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{metric} per held-out lesion (dots)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
