"""The zero-digit toy of Part II: pre/post pairs where a "lesion" (a hand-written 0) shrinks or grows.

Part II (Peng, Jiang & Timmerman) tests its diffusion models first on MNIST zeros scaled isotropically to
mimic lesion shrinkage or growth. MNIST is a download; the 8×8 digits that scikit-learn ships with its package
(1,797 images, 178 of them zeros) are not, so adaptrt uses those: each zero is upsampled (cubic spline) to
``size``×``size``, then scaled isotropically about the image centre by a drawn factor to give the
post-treatment image. The drift is ``post - pre`` (the paper's definition).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..io.memory import format_bytes, physical_memory_bytes
from ..seeding import SeedLike, as_generator

__all__ = ["DigitPairs", "zero_digit_pairs"]


@dataclass(frozen=True)
class DigitPairs:
    """Pre/post pairs of the zero-digit toy.

    Attributes
    ----------
    pre, post, drift
        ``(n, size, size)`` float32; images in [0, 1]; ``drift = post - pre``.
    scale
        ``(n,)`` isotropic linear scale factor applied to make ``post`` (< 1 shrinks, > 1 grows).
    area_ratio
        ``(n,)`` area of the digit (pixels > 0.5) in ``post`` over ``pre``.
    source_index
        ``(n,)`` index of the digit in :func:`sklearn.datasets.load_digits`.
    """

    pre: NDArray[np.float32]
    post: NDArray[np.float32]
    drift: NDArray[np.float32]
    scale: NDArray[np.float64]
    area_ratio: NDArray[np.float64]
    source_index: NDArray[np.int64]


def _scale_about_centre(img: NDArray[np.float64], s: float) -> NDArray[np.float64]:
    """Scale a 2-D image by ``s`` about its centre (bilinear; outside -> 0)."""
    c = (np.asarray(img.shape, dtype=float) - 1.0) / 2.0
    # output pixel x samples input at c + (x - c) / s
    matrix = np.eye(2) / s
    offset = c - matrix @ c
    return ndimage.affine_transform(img, matrix, offset=offset, order=1, mode="constant", cval=0.0)


def zero_digit_pairs(
    n: int = 178,
    *,
    size: int = 32,
    scale_range: tuple[float, float] = (0.6, 1.25),
    seed: SeedLike = 0,
) -> DigitPairs:
    """Make ``n`` pre/post pairs from scikit-learn's bundled zeros (no download).

    Parameters
    ----------
    n
        Number of pairs (>= 1). With ``n`` larger than the 178 zeros, zeros are reused with other scales.
    size
        Output size in pixels (>= 8). The 8×8 digit is upsampled to ``size`` then the pre image is scaled by
        0.75 so that growth stays inside the frame.
    scale_range
        Range of the isotropic linear scale of post vs pre (uniform), ``0 < low <= high``.
    seed
        Seed of the draws.
    """
    from sklearn.datasets import load_digits

    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"n must be an int >= 1, got {n}")
    if not (isinstance(size, int) and size >= 8):
        raise ValueError(f"size must be an int >= 8, got {size}")
    # pre, post, drift and a working copy, float32: refused before allocating when it cannot fit
    needed = 4 * 4 * n * size * size
    memory = physical_memory_bytes()
    if memory and needed > memory // 2:
        raise ValueError(
            f"n = {n} pairs of size = {size} pixels need about {format_bytes(needed)} of memory, more than half "
            f"of this machine's {format_bytes(memory)}; use a smaller --size or --n"
        )
    lo, hi = scale_range
    if not (0 < lo <= hi):
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    rng = as_generator(seed)
    digits = load_digits()
    zeros = np.flatnonzero(digits.target == 0)
    pick = np.concatenate([rng.permutation(zeros) for _ in range(int(np.ceil(n / zeros.size)))])[:n]
    scales = rng.uniform(lo, hi, size=n)
    pre = np.empty((n, size, size), dtype=np.float32)
    post = np.empty_like(pre)
    for i, (idx, s) in enumerate(zip(pick, scales, strict=True)):
        img8 = digits.images[idx] / 16.0
        big = np.clip(ndimage.zoom(img8, size / 8.0, order=3), 0.0, 1.0)
        base = _scale_about_centre(big, 0.75)
        pre[i] = base
        post[i] = np.clip(_scale_about_centre(base, float(s)), 0.0, 1.0)
    area_pre = (pre > 0.5).sum(axis=(1, 2)).astype(float)
    area_post = (post > 0.5).sum(axis=(1, 2)).astype(float)
    return DigitPairs(
        pre=pre,
        post=post,
        drift=post - pre,
        scale=scales,
        area_ratio=area_post / np.maximum(area_pre, 1.0),
        source_index=pick.astype(np.int64),
    )
