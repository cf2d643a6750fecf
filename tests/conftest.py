"""Shared test helpers: tiny deterministic phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from adaptrt.types import Volume


def sphere_volume(
    shape: tuple[int, int, int] = (12, 24, 24),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    radius_mm: float = 6.0,
    centre_index: tuple[float, float, float] | None = None,
) -> tuple[Volume, Volume]:
    """A smooth image and a boolean sphere mask of radius ``radius_mm`` (in mm) on one grid."""
    c = np.asarray(centre_index if centre_index is not None else [(n - 1) / 2 for n in shape], dtype=float)
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - ci) * s) ** 2 for g, ci, s in zip(grids, c, spacing, strict=True)))
    mask = r <= radius_mm
    image = (100.0 + 50.0 * np.cos(r / 3.0) + 200.0 * mask).astype(np.float32)
    return Volume(image, spacing=spacing), Volume(mask, spacing=spacing)


@pytest.fixture
def sphere() -> tuple[Volume, Volume]:
    return sphere_volume()
