"""Uncertainty from K DDIM samples, and its calibration (issue 11; beyond Part II).

Part II proposes averaging several DDIM samples "to produce a more robust prediction" and reading their spread
as confidence. :func:`sample_stats` draws ``K`` samples of each pre image in one batch (``K`` copies with
different starting noise; with ``eta > 0`` the reverse steps also add noise) and returns the per-pixel mean
and standard deviation (ddof 1) of the predicted post image and drift.

Calibration treats the per-pixel prediction as Gaussian ``N(mean, (s·SD)²)``:

* :func:`coverage`: the share of pixels whose error is within ``±z·SD`` (nominal 68.3 % for ``z = 1``,
  95.4 % for ``z = 2``);
* :func:`calibration_curve`: pixels binned by SD (quantile bins); per bin the root mean variance
  ``RMV = sqrt(mean SD²)`` (the error a calibrated model expects) against the observed ``RMSE``;
  :func:`ence` is the mean of ``|RMV - RMSE| / RMV`` over bins (0 = calibrated);
* :func:`fit_sigma_scale`: sigma scaling, the single factor ``s`` that maximises the Gaussian likelihood of
  the errors, ``s² = mean(err² / SD²)``, fitted on validation lesions only and then applied to test lesions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..validation import bad_parameter, is_int, is_real

__all__ = [
    "NOMINAL",
    "SampleStats",
    "calibration_curve",
    "check_samples",
    "coverage",
    "ence",
    "fit_sigma_scale",
    "sample_stats",
]

#: Nominal Gaussian coverage of ±1 and ±2 SD.
NOMINAL = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}
#: SD floor (normalised intensity) against division by zero where all samples agree.
SD_FLOOR = 1e-6


@dataclass(frozen=True)
class SampleStats:
    """Per-pixel statistics of ``K`` samples of ``b`` images.

    Attributes
    ----------
    post_mean, post_sd, drift_mean, drift_sd
        ``(b, h, w)`` float32, normalised intensity units (SD with ddof 1).
    post_first, drift_first
        ``(b, h, w)`` float32: the first sample alone (what a single-sample prediction gives).
    k, eta
        Number of samples and the DDIM eta used.
    """

    post_mean: NDArray[np.float32]
    post_sd: NDArray[np.float32]
    drift_mean: NDArray[np.float32]
    drift_sd: NDArray[np.float32]
    post_first: NDArray[np.float32]
    drift_first: NDArray[np.float32]
    k: int
    eta: float


def check_samples(k: Any, eta: Any, *, owner: str = "sample_stats") -> tuple[int, float]:
    """Validate the number of samples (an int >= 2) and eta (a finite float >= 0)."""
    if not (is_int(k) and int(k) >= 2):
        raise bad_parameter(owner, "samples", "an int >= 2 (a spread needs two samples)", k)
    if not (is_real(eta) and math.isfinite(float(eta)) and float(eta) >= 0.0):
        raise bad_parameter(owner, "eta", "a finite float >= 0", eta)
    return int(k), float(eta)


def sample_stats(
    model: Any,
    pre: NDArray[Any],
    k: int,
    *,
    seed: int = 0,
    eta: float = 0.0,
    label: int | None = None,
    batch_size: int = 512,
) -> SampleStats:
    """``K`` samples of a fitted :class:`~adaptrt.drift.methods.DriftModel` per pre image, in one batch.

    Parameters
    ----------
    model
        A fitted drift model (Method 2 samples from different starting noise; Method 1 from differently
        noised inputs; the regression baseline has no randomness and gives SD 0).
    pre
        ``(b, h, w)`` pre images on the lesion's [0, 1] scale.
    k
        Samples per image (>= 2).
    seed
        Seed of every noise draw (the same seed gives the same samples).
    eta
        DDIM eta (>= 0; 0 = deterministic reverse steps, the samples differ by their starting noise only).
    label
        Class of a conditional network (None: unconditional).
    batch_size
        Images per forward pass (a multiple of ``k`` keeps one image's samples in one pass).
    """
    k, eta = check_samples(k, eta)
    x = np.asarray(pre, np.float32)
    if x.ndim != 3:
        raise ValueError(f"pre must be (b, h, w), got {x.shape}")
    b = x.shape[0]
    rep = np.repeat(x, k, axis=0)  # (b * k, h, w): image-major
    bs = max(k, (batch_size // k) * k)
    pred = model.predict(rep, seed=seed, eta=eta, label=label, batch_size=bs)
    post = pred.post.reshape(b, k, *x.shape[1:])
    drift = pred.drift.reshape(b, k, *x.shape[1:])
    return SampleStats(
        post_mean=post.mean(axis=1).astype(np.float32),
        post_sd=post.std(axis=1, ddof=1).astype(np.float32),
        drift_mean=drift.mean(axis=1).astype(np.float32),
        drift_sd=drift.std(axis=1, ddof=1).astype(np.float32),
        post_first=post[:, 0].astype(np.float32),
        drift_first=drift[:, 0].astype(np.float32),
        k=k,
        eta=eta,
    )


def _flat(err: NDArray[Any], sd: NDArray[Any]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    e = np.abs(np.asarray(err, np.float64)).ravel()
    s = np.maximum(np.asarray(sd, np.float64).ravel(), SD_FLOOR)
    if e.shape != s.shape:
        raise ValueError(f"errors {e.shape} and SDs {s.shape} differ in size")
    return e, s


def coverage(err: NDArray[Any], sd: NDArray[Any], z: float, scale: float = 1.0) -> float:
    """Share of pixels with ``|err| <= z · scale · SD`` (NaN for no pixels)."""
    e, s = _flat(err, sd)
    return float(np.mean(e <= z * scale * s)) if e.size else math.nan


def fit_sigma_scale(err: NDArray[Any], sd: NDArray[Any]) -> float:
    """Sigma scaling: the maximum-likelihood factor ``s`` of ``err ~ N(0, (s·SD)²)``, ``sqrt(mean(err²/SD²))``.

    Parameters
    ----------
    err, sd
        Errors (prediction − truth) and predicted SDs of the validation pixels, any matching shape.
    """
    e, s = _flat(err, sd)
    if e.size == 0:
        raise ValueError("no validation pixels to fit the sigma scale on")
    return float(math.sqrt(float(np.mean((e / s) ** 2))))


def calibration_curve(
    err: NDArray[Any], sd: NDArray[Any], *, n_bins: int = 10, scale: float = 1.0
) -> list[dict[str, float]]:
    """Expected vs observed error by SD bin (equal-count bins of ``scale · SD``).

    Returns
    -------
    list of dict
        Per bin: ``sd_low``, ``sd_high``, ``rmv`` (sqrt of the mean predicted variance: the expected RMS
        error), ``rmse`` (observed), ``n`` (pixels).
    """
    if not (is_int(n_bins) and n_bins >= 1):
        raise bad_parameter("calibration_curve", "n_bins", "an int >= 1", n_bins)
    e, s = _flat(err, sd)
    s = s * scale
    if e.size == 0:
        return []
    order = np.argsort(s, kind="stable")
    out = []
    for chunk in np.array_split(order, min(n_bins, e.size)):
        if chunk.size == 0:
            continue
        out.append(
            {
                "sd_low": float(s[chunk].min()),
                "sd_high": float(s[chunk].max()),
                "rmv": float(np.sqrt(np.mean(s[chunk] ** 2))),
                "rmse": float(np.sqrt(np.mean(e[chunk] ** 2))),
                "n": float(chunk.size),
            }
        )
    return out


def ence(curve: list[dict[str, float]]) -> float:
    """Expected normalised calibration error of a :func:`calibration_curve`: mean ``|RMV - RMSE| / RMV``."""
    if not curve:
        return math.nan
    return float(np.mean([abs(c["rmv"] - c["rmse"]) / max(c["rmv"], SD_FLOOR) for c in curve]))
