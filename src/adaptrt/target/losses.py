"""Differentiable losses of the target study's 3D U-Net (Tran et al. 2025, "Loss function modifications").

Every loss takes the network's logits ``(b, 1, z, y, x)``, the reference lesion ``(b, 1, z, y, x)`` (0/1) and
the brain mask ``(b, 1, z, y, x)`` (0/1), and is computed **per patient** (each batch element) and then
averaged over the batch. With ``p = sigmoid(logits)`` and the sums over the voxels inside the brain mask:

    TP = Σ p t,   FP = Σ p (1 - t),   FN = Σ (1 - p) t

* ``dice``: ``1 - 2 TP / (2 TP + FP + FN)``;
* ``tversky``: ``1 - TP / (TP + α FP + β FN)`` (α weighs false positives, β false negatives);
* ``pcc``: the Tversky loss with the paper's personalised weights (eq. 1), ``f = Σ t / Σ brain``,
  ``β = 1 / (f + 1)``, ``α = 1 - β`` — per patient, from the reference lesion's share of the brain;
* ``pcc+bce``, ``pcc+0.5bce``: PCC plus 1 or 0.5 times the mean binary cross-entropy over the brain voxels.

A small ``smooth`` (1e-6) is added to numerator and denominator, so two empty masks give a loss of 0 (the
metrics' "1.0 when both are empty"). On binary predictions the coefficients equal
:mod:`adaptrt.metrics.segmentation`'s ``dice``, ``tversky`` and ``pcc`` when the prediction lies inside the
brain (the tests check this); voxels outside the brain mask are ignored by the loss (the CTV is clipped to
the brain anyway), while the metrics count false positives anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from ..metrics.segmentation import TVERSKY_ALPHA, TVERSKY_BETA

__all__ = [
    "LOSSES",
    "LossName",
    "bce_loss",
    "dice_loss",
    "make_loss",
    "pcc_loss",
    "soft_counts",
    "tversky_loss",
]

LossName = Literal["dice", "tversky", "pcc", "pcc+bce", "pcc+0.5bce"]
#: The losses compared (Supplementary Fig. 3), in the paper's order.
LOSSES: tuple[str, ...] = ("dice", "tversky", "pcc", "pcc+bce", "pcc+0.5bce")
_SMOOTH = 1e-6
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _check(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> None:
    if logits.ndim != 5 or logits.shape[1] != 1:
        raise ValueError(f"logits must be (b, 1, z, y, x), got {tuple(logits.shape)}")
    if target.shape != logits.shape or brain.shape != logits.shape:
        raise ValueError(
            f"logits, target and brain must share a shape, got {tuple(logits.shape)}, {tuple(target.shape)}, "
            f"{tuple(brain.shape)}"
        )


def soft_counts(
    logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft ``(TP, FP, FN)`` per patient, each ``(b,)``, over the brain voxels (see the module docstring)."""
    _check(logits, target, brain)
    p = torch.sigmoid(logits) * brain  # (b, 1, z, y, x), 0 outside the brain
    t = target * brain
    dims = (1, 2, 3, 4)
    tp = (p * t).sum(dims)
    fp = (p * (1 - t)).sum(dims)
    fn = ((1 - p) * t).sum(dims)
    return tp, fp, fn


def _tversky_index(
    tp: torch.Tensor,
    fp: torch.Tensor,
    fn: torch.Tensor,
    alpha: torch.Tensor | float,
    beta: torch.Tensor | float,
) -> torch.Tensor:
    return (tp + _SMOOTH) / (tp + alpha * fp + beta * fn + _SMOOTH)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """``1 - Dice`` per patient, averaged over the batch (a 0-d tensor)."""
    tp, fp, fn = soft_counts(logits, target, brain)
    return (1 - _tversky_index(tp, fp, fn, 0.5, 0.5)).mean()


def tversky_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    brain: torch.Tensor,
    alpha: float = TVERSKY_ALPHA,
    beta: float = TVERSKY_BETA,
) -> torch.Tensor:
    """``1 - Tversky(α, β)`` per patient, averaged over the batch (α on false positives, β on false negatives)."""
    tp, fp, fn = soft_counts(logits, target, brain)
    return (1 - _tversky_index(tp, fp, fn, alpha, beta)).mean()


def pcc_loss(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """``1 - PCC`` per patient (eq. 1: ``f = Σ t / Σ brain``, ``β = 1/(f + 1)``, ``α = 1 - β``), batch mean."""
    tp, fp, fn = soft_counts(logits, target, brain)
    dims = (1, 2, 3, 4)
    n_brain = brain.sum(dims).clamp_min(1.0)
    f = (target * brain).sum(dims) / n_brain
    beta = 1.0 / (f + 1.0)
    return (1 - _tversky_index(tp, fp, fn, 1.0 - beta, beta)).mean()


def bce_loss(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy, mean over each patient's brain voxels, then over the batch."""
    _check(logits, target, brain)
    per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * brain
    dims = (1, 2, 3, 4)
    return (per_voxel.sum(dims) / brain.sum(dims).clamp_min(1.0)).mean()


def make_loss(name: str, *, alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA) -> LossFn:
    """The loss called ``name`` (one of :data:`LOSSES`); ``alpha`` / ``beta`` are the Tversky loss's weights.

    Raises
    ------
    ValueError
        An unknown name.
    """
    if name == "dice":
        return dice_loss
    if name == "tversky":
        a, b = float(alpha), float(beta)

        def tversky(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
            return tversky_loss(logits, target, brain, a, b)

        return tversky
    if name == "pcc":
        return pcc_loss
    if name in ("pcc+bce", "pcc+0.5bce"):
        w = 1.0 if name == "pcc+bce" else 0.5

        def compound(logits: torch.Tensor, target: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
            return pcc_loss(logits, target, brain) + w * bce_loss(logits, target, brain)

        return compound
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
