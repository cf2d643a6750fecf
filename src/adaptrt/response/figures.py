"""Figures of the response study (the paper's Fig. 4, 5 and 6, and the CAM scores on known truth)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..report.figures import plt

__all__ = ["cam_examples", "cam_gallery", "feature_maps", "reconstructions", "training_curves"]

_METHOD_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "pixelwise": "pixel-wise CAM"}


def training_curves(history: Sequence[Mapping[str, Any]]) -> Any:
    """Fig. 4B: loss and accuracy per epoch, training vs test (second MRI) samples."""
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    for key, label in (("train_loss", "train"), ("val_loss", "test (mri2)")):
        vals = [h.get(key) for h in history]
        if any(v is not None for v in vals):
            a.plot(ep, [np.nan if v is None else v for v in vals], label=label)
    for key, label in (("train_acc", "train"), ("val_acc", "test (mri2)")):
        vals = [h.get(key) for h in history]
        if any(v is not None for v in vals):
            b.plot(ep, [np.nan if v is None else v for v in vals], label=label)
    a.set(xlabel="epoch", ylabel="loss (reconstruction + classifier)", title="Loss")
    b.set(xlabel="epoch", ylabel="accuracy (samples)", title="Accuracy", ylim=(0, 1.02))
    a.legend(fontsize=8)
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reconstructions(images: NDArray[Any], recons: NDArray[Any], titles: Sequence[str]) -> Any:
    """Fig. 4A: input slices (top) and the autoencoder's reconstructions (bottom)."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.0), squeeze=False)
    for j in range(n):
        for i, (arr, what) in enumerate(((images[j], "input"), (recons[j], "reconstruction"))):
            ax = axes[i, j]
            ax.imshow(arr, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{titles[j]}\n{what}" if i == 0 else what, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    return fig


def feature_maps(image: NDArray[Any], maps: NDArray[Any], grads: NDArray[Any], title: str) -> Any:
    """Fig. 5A: the bottleneck's feature maps (masked) and the gradient of the class score w.r.t. them."""
    k = maps.shape[0]
    fig, axes = plt.subplots(2, k + 1, figsize=(1.8 * (k + 1), 3.8), squeeze=False)
    axes[0, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title(title, fontsize=7)
    for j in range(k):
        im = axes[0, j + 1].imshow(maps[j], cmap="viridis")
        _colorbar(fig, im, axes[0, j + 1])
        empty = " (all 0)" if not np.any(maps[j]) else ""
        axes[0, j + 1].set_title(f"feature map {j + 1}{empty}", fontsize=7)
        lim = float(np.max(np.abs(grads[j]))) or 1.0
        im = axes[1, j + 1].imshow(grads[j], cmap="RdBu_r", vmin=-lim, vmax=lim)
        _colorbar(fig, im, axes[1, j + 1])
        axes[1, j + 1].set_title(f"∂y/∂A {j + 1}", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    return fig


def _colorbar(fig: Any, mappable: Any, ax: Any, label: str | None = None) -> Any:
    cb = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    cb.ax.tick_params(labelsize=5)
    if label:
        cb.set_label(label, fontsize=5)
    return cb


def _cam_overlay(fig: Any, ax: Any, cam: NDArray[Any]) -> bool:
    """Overlay a normalised CAM (jet, 0-1) with a colour bar; return False when the CAM is all zero."""
    im = ax.imshow(np.ma.masked_where(cam <= 0, cam), cmap="jet", vmin=0, vmax=1, alpha=0.55)
    _colorbar(fig, im, ax, "CAM / max")
    return bool(np.any(cam > 0))


def cam_examples(
    rows: Sequence[tuple[str, NDArray[Any], NDArray[np.bool_], Mapping[tuple[str, str], NDArray[Any]]]],
) -> Any:
    """Fig. 5B: for each lesion, the three CAM variants for the true class (POS) and the other class (NEG)."""
    cols = [(m, t) for t in ("true", "other") for m in ("gradcam", "gradcam++", "pixelwise")]
    n = len(rows)
    fig, axes = plt.subplots(
        max(n, 1), len(cols) + 1, figsize=(1.75 * (len(cols) + 1), 1.95 * max(n, 1)), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for r, (title, image, gtv, cams) in enumerate(rows):
        axes[r, 0].imshow(image, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].contour(gtv.astype(float), levels=[0.5], colors="red", linewidths=0.6)
        axes[r, 0].set_title(title, fontsize=6)
        for c, (m, t) in enumerate(cols):
            ax = axes[r, c + 1]
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            why = ""
            if (m, t) in cams:
                if not _cam_overlay(fig, ax, cams[(m, t)]):
                    why = "\nall 0: no evidence for this class"
            else:
                why = "\nnot computed"
            ax.set_title(
                f"{_METHOD_TITLES[m]}\n{'POS (true)' if t == 'true' else 'NEG (other)'}{why}", fontsize=6
            )
    fig.tight_layout()
    return fig


def cam_gallery(
    items: Sequence[tuple[str, NDArray[Any], NDArray[np.bool_], NDArray[Any], NDArray[np.bool_] | None]],
    *,
    ncols: int = 6,
) -> Any:
    """Fig. 6: pixel-wise CAMs (true class) of several lesions, GTV in red, true resistant region in cyan."""
    n = len(items)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.0 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, gtv, cam, truth) in zip(axes.ravel(), items, strict=False):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        has = _cam_overlay(fig, ax, cam)
        ax.contour(gtv.astype(float), levels=[0.5], colors="red", linewidths=0.6)
        if truth is not None and truth.any():
            ax.contour(truth.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(title + ("" if has else "\nCAM all 0: no evidence for its class"), fontsize=6)
    fig.tight_layout()
    return fig
