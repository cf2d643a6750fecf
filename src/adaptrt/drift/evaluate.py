"""Quantitative evaluation of drift predictions on held-out lesions (what Part II did not yet do).

Per sample (a 64×64 slice of a lesion, angle 0 only: the rotated copies are augmentations of the same pixels),
then averaged per lesion:

* post image: MAE, PSNR (data range 1: images are on the lesion's [0, 1] scale) and SSIM over the whole box;
  MAE inside the region of interest ``roi = pre GTV ∪ post GTV ∪ {|true drift| >= drift_roi}``;
* drift: Pearson r and MAE of predicted vs true drift over the box (r is undefined for a constant map: NaN,
  counted and reported, never dropped silently); on the simulator also against the noise-free truth drift;
* predicted post GTV: the pixels of the predicted post image at or above an intensity threshold, inside the
  pre GTV dilated by ``gtv_dilation_px``; the threshold is fitted on the **training** lesions' true post images
  against their post GTVs (the value that maximises their mean Dice): "the intensity that reproduces the
  contoured GTV". Dice against the true post GTV;
* predicted change: the predicted post GTV area over the pre GTV area on the lesion's slices (a proxy for the
  volume ratio on three slices), and ``1 - ratio`` as a response score (AUC for the >= 20 % label).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, stats

from ..metrics.segmentation import dice

__all__ = [
    "GTV_DILATION_PX",
    "fit_gtv_threshold",
    "lesion_metrics",
    "predicted_gtv",
    "psnr",
    "ssim_np",
]

#: Dilation of the pre GTV (pixels of the 64×64 crop) inside which the predicted post GTV is looked for.
GTV_DILATION_PX = 4
#: |true drift| at or above this (normalised units) counts as the drift region of the ROI.
DRIFT_ROI = 0.1


def psnr(pred: NDArray[Any], true: NDArray[Any], data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim_np(pred: NDArray[Any], true: NDArray[Any], data_range: float = 1.0) -> float:
    """SSIM of two 2-D images (:func:`adaptrt.nn.ssim.ssim`, Gaussian window 11, sigma 1.5)."""
    import torch

    from ..nn.ssim import ssim

    a = torch.as_tensor(np.asarray(pred, np.float64))[None, None]
    b = torch.as_tensor(np.asarray(true, np.float64))[None, None]
    return float(ssim(a, b, data_range=data_range)[0])


def _pearson(a: NDArray[Any], b: NDArray[Any]) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.std() == 0 or b.std() == 0:
        return math.nan
    return float(stats.pearsonr(a, b)[0])


def predicted_gtv(
    image: NDArray[Any], pre_mask: NDArray[np.bool_], threshold: float, dilation_px: int = GTV_DILATION_PX
) -> NDArray[np.bool_]:
    """Pixels of ``image`` >= ``threshold`` inside the pre GTV dilated by ``dilation_px`` (per 2-D slice).

    Parameters
    ----------
    image, pre_mask
        ``(n, h, w)`` or ``(h, w)``.
    """
    img = np.asarray(image)
    m = np.asarray(pre_mask, bool)
    st = np.zeros((3,) * m.ndim, bool)
    if m.ndim == 3:
        st[1] = ndimage.generate_binary_structure(2, 1)
    else:
        st = ndimage.generate_binary_structure(2, 1)
    region = ndimage.binary_dilation(m, st, iterations=dilation_px) if dilation_px > 0 else m
    return np.asarray(region & (img >= threshold), dtype=bool)


def fit_gtv_threshold(
    post: NDArray[Any], post_mask: NDArray[np.bool_], pre_mask: NDArray[np.bool_], lesion: NDArray[Any]
) -> float:
    """The intensity threshold that best reproduces the post GTVs of training samples (mean Dice per lesion).

    Parameters
    ----------
    post, post_mask, pre_mask
        ``(n, h, w)`` true post images, post GTVs and pre GTVs of the training samples.
    lesion
        ``(n,)`` lesion index of each sample (the Dice is averaged per lesion, then over lesions).
    """
    grid = np.linspace(0.05, 0.95, 37)
    lesion = np.asarray(lesion)
    best, best_t = -1.0, 0.5
    for thr in grid:
        pg = predicted_gtv(post, pre_mask, float(thr))
        per = [
            float(np.mean([dice(pg[i], post_mask[i]) for i in np.flatnonzero(lesion == le)]))
            for le in np.unique(lesion)
        ]
        score = float(np.mean(per))
        if score > best:
            best, best_t = score, float(thr)
    return best_t


def lesion_metrics(
    pred_post: NDArray[Any],
    pred_drift: NDArray[Any],
    pre: NDArray[Any],
    post: NDArray[Any],
    pre_mask: NDArray[np.bool_],
    post_mask: NDArray[np.bool_],
    gtv_threshold: float,
    truth_drift: NDArray[Any] | None = None,
) -> dict[str, float]:
    """Metrics of one lesion's samples (``(n, h, w)`` arrays, angle-0 slices), averaged over its slices.

    Returns
    -------
    dict
        ``mae``, ``psnr``, ``ssim``, ``mae_roi``, ``drift_r``, ``drift_mae``, ``drift_r_truth`` (NaN without
        truth), ``dice_post_gtv``, ``area_ratio_pred``, ``area_ratio_true``, ``response_score``
        (``1 - area_ratio_pred``).
    """
    pred_post = np.asarray(pred_post, np.float64)
    pred_drift = np.asarray(pred_drift, np.float64)
    pre = np.asarray(pre, np.float64)
    post = np.asarray(post, np.float64)
    true_drift = post - pre
    rows: list[dict[str, float]] = []
    for i in range(pre.shape[0]):
        roi = pre_mask[i] | post_mask[i] | (np.abs(true_drift[i]) >= DRIFT_ROI)
        r: dict[str, float] = {
            "mae": float(np.mean(np.abs(pred_post[i] - post[i]))),
            "psnr": psnr(pred_post[i], post[i]),
            "ssim": ssim_np(pred_post[i], post[i]),
            "mae_roi": float(np.mean(np.abs(pred_post[i] - post[i])[roi])) if roi.any() else math.nan,
            "drift_r": _pearson(pred_drift[i], true_drift[i]),
            "drift_mae": float(np.mean(np.abs(pred_drift[i] - true_drift[i]))),
            "drift_r_truth": _pearson(pred_drift[i], truth_drift[i]) if truth_drift is not None else math.nan,
        }
        rows.append(r)
    out = {
        k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else math.nan
        for k in rows[0]
    }
    pg = predicted_gtv(pred_post, pre_mask, gtv_threshold)
    out["dice_post_gtv"] = dice(pg, np.asarray(post_mask, bool))
    pre_area = max(int(np.asarray(pre_mask).sum()), 1)
    out["area_ratio_pred"] = int(pg.sum()) / pre_area
    out["area_ratio_true"] = int(np.asarray(post_mask).sum()) / pre_area
    out["response_score"] = 1.0 - out["area_ratio_pred"]
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, SD (ddof 1) and count of the finite values."""
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)
