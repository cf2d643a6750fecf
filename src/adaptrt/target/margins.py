"""Margins in millimetres on the voxel grid's own spacing.

A margin counted in voxels is wrong on anisotropic grids (a 2 cm margin on a 1 x 1 x 3 mm grid is 20 voxels
in-plane but under 7 slices). Here a voxel is inside the expansion when the Euclidean distance between its
centre and the centre of the nearest mask voxel, in mm, is at most the margin.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["distance_mm", "expand_mm"]


def _check(mask: NDArray[np.bool_], spacing_mm: Sequence[float]) -> tuple[float, ...]:
    if mask.ndim != len(spacing_mm):
        raise ValueError(f"mask has {mask.ndim} dimensions but {len(spacing_mm)} spacings were given")
    sp = tuple(float(s) for s in spacing_mm)
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be positive and finite, got {sp}")
    return sp


def distance_mm(mask: NDArray[np.bool_], spacing_mm: Sequence[float]) -> NDArray[np.float64]:
    """Distance in mm from every voxel centre to the nearest voxel centre of ``mask``.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x) (or any dimension)
    spacing_mm : sequence of float, one per axis, in mm

    Returns
    -------
    ndarray of float64, same shape: 0 inside the mask; ``inf`` everywhere when the mask is empty.
    """
    m = np.asarray(mask, dtype=bool)
    sp = _check(m, spacing_mm)
    if not m.any():
        return np.full(m.shape, np.inf)
    return np.asarray(ndimage.distance_transform_edt(~m, sampling=sp), dtype=np.float64)


def expand_mm(mask: NDArray[np.bool_], spacing_mm: Sequence[float], margin_mm: float) -> NDArray[np.bool_]:
    """Isotropic Euclidean expansion of ``mask`` by ``margin_mm`` on an anisotropic grid.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
    spacing_mm : sequence of 3 float, voxel spacing (z, y, x) in mm
    margin_mm : float, >= 0, margin in mm

    Returns
    -------
    ndarray of bool, same shape: voxels whose centre lies within ``margin_mm`` of a mask voxel centre
    (the mask itself included). An empty mask gives an empty expansion.
    """
    m = np.asarray(mask, dtype=bool)
    sp = _check(m, spacing_mm)
    if not (np.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm must be finite and >= 0, got {margin_mm}")
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    # work on the bounding box grown by the margin: the distance transform is O(voxels)
    pad = [int(np.ceil(margin_mm / s)) + 1 for s in sp]
    idx = np.nonzero(m)
    lo = [max(int(i.min()) - p, 0) for i, p in zip(idx, pad, strict=True)]
    hi = [min(int(i.max()) + p + 1, n) for i, p, n in zip(idx, pad, m.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    d = ndimage.distance_transform_edt(~m[box], sampling=sp)
    out = np.zeros(m.shape, dtype=bool)
    out[box] = d <= margin_mm + 1e-9
    return out
