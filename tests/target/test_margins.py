"""Margins in mm on anisotropic grids: known answers for ``expand_mm`` and ``distance_mm``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from adaptrt.target.margins import distance_mm, expand_mm


def _extent(mask: np.ndarray) -> tuple[int, ...]:
    idx = np.nonzero(mask)
    return tuple(int(i.max() - i.min() + 1) for i in idx)


def test_single_voxel_on_a_3x1x1_grid_grows_into_an_ellipsoid() -> None:
    m = np.zeros((9, 17, 17), dtype=bool)
    m[4, 8, 8] = True
    out = expand_mm(m, (3.0, 1.0, 1.0), 6.0)
    # slices at 0, ±3, ±6 mm: 5 slices; 13 voxels in-plane
    assert _extent(out) == (5, 13, 13)
    # slice 0: j² + i² <= 36 -> 113 lattice points; slices ±1: j² + i² <= 27 -> 89; slices ±2: the axis only
    per_slice = out.sum(axis=(1, 2))
    assert per_slice[2:7].tolist() == [1, 89, 113, 89, 1]
    assert int(out.sum()) == 293
    # a margin counted in voxels (6 voxels along z too) would reach 13 slices: the known bug
    assert _extent(out)[0] != 13


def test_margin_boundary_is_inclusive_and_euclidean() -> None:
    m = np.zeros((1, 1, 12), dtype=bool)
    m[0, 0, 0] = True
    out = expand_mm(m, (1.0, 1.0, 2.5), 5.0)
    assert np.flatnonzero(out[0, 0]).tolist() == [0, 1, 2]  # 0, 2.5, 5.0 mm (5.0 included)
    d = distance_mm(m, (1.0, 1.0, 2.5))
    assert d[0, 0, 3] == pytest.approx(7.5)


def test_zero_margin_and_empty_mask() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((6, 7, 8)) > 0.8
    np.testing.assert_array_equal(expand_mm(m, (3.0, 1.0, 1.0), 0.0), m)
    empty = np.zeros((4, 4, 4), dtype=bool)
    assert not expand_mm(empty, (1, 1, 1), 10.0).any()
    assert np.all(np.isinf(distance_mm(empty, (1, 1, 1))))


def test_cropped_expansion_equals_the_full_grid_distance_transform() -> None:
    rng = np.random.default_rng(1)
    m = np.zeros((20, 30, 30), dtype=bool)
    m[8:11, 10:14, 12:15] = rng.random((3, 4, 3)) > 0.3
    sp = (3.0, 0.9, 1.1)
    full = ndimage.distance_transform_edt(~m, sampling=sp) <= 12.0
    np.testing.assert_array_equal(expand_mm(m, sp, 12.0), full)
    np.testing.assert_allclose(distance_mm(m, sp), ndimage.distance_transform_edt(~m, sampling=sp))


def test_expansion_is_clipped_by_the_array_border() -> None:
    m = np.zeros((3, 5, 5), dtype=bool)
    m[0, 0, 0] = True
    out = expand_mm(m, (1.0, 1.0, 1.0), 100.0)
    assert out.all()  # every voxel is within 100 mm; nothing breaks at the border


@pytest.mark.parametrize(
    ("spacing", "margin", "match"),
    [
        ((1.0, 1.0), 1.0, "3 dimensions but 2 spacings"),
        ((1.0, 0.0, 1.0), 1.0, "spacing must be positive"),
        ((1.0, 1.0, 1.0), -1.0, "margin_mm must be finite and >= 0"),
        ((1.0, 1.0, 1.0), math.inf, "margin_mm must be finite"),
    ],
)
def test_bad_arguments_raise(spacing: tuple[float, ...], margin: float, match: str) -> None:
    m = np.ones((2, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match=match):
        expand_mm(m, spacing, margin)
