"""Core data types: :class:`Volume`, an image or mask with its geometry in the patient coordinate system.

Conventions (used everywhere in adaptrt)
----------------------------------------
* Arrays are indexed ``(z, y, x)``: axis 0 runs across slices, axis 1 down the rows of a slice, axis 2 along
  the columns. This is numpy's natural order for a stack of DICOM slices (``pixel_array`` is ``(rows, cols)``).
* ``spacing`` is in millimetres, in the same ``(z, y, x)`` order.
* World coordinates are DICOM patient coordinates, **LPS** (x to the patient's left, y posterior, z
  superior), in mm. NIfTI's RAS+ is converted on reading and writing.
* ``origin`` is the world position (x, y, z) of the *centre* of voxel ``[0, 0, 0]`` (DICOM
  ImagePositionPatient of the first slice).
* ``direction`` is a 3×3 matrix whose column ``a`` is the unit world vector along array axis ``a``, so
  ``world = origin + direction @ (spacing * index)`` with ``index = (k, j, i)`` in array order. For a plain
  axial DICOM series column 2 (x, along a row) is ImageOrientationPatient[:3], column 1 (y, down a column)
  is ImageOrientationPatient[3:], column 0 is the slice normal in the direction of increasing slice index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AXIAL_DIRECTION", "Volume"]

#: Direction of a plain axial stack: x along +L, y along +P, slices along +S (array axes z, y, x).
AXIAL_DIRECTION: NDArray[np.float64] = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
AXIAL_DIRECTION.flags.writeable = False

_ORTHO_TOL = 1e-4


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    if a.flags.writeable or not a.flags.owndata:
        a = a.copy()
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D image or mask with its geometry.

    Parameters
    ----------
    array
        Voxel values, shape ``(z, y, x)``. Stored as a read-only copy. Masks are ``bool`` arrays.
    spacing
        Voxel size in mm, ``(z, y, x)``; every entry finite and > 0.
    origin
        World (LPS) position in mm of the centre of voxel ``[0, 0, 0]``, as ``(x, y, z)``.
    direction
        ``(3, 3)`` orthonormal matrix; column ``a`` is the world unit vector of array axis ``a``.
        Defaults to :data:`AXIAL_DIRECTION`.

    Examples
    --------
    >>> v = Volume(np.zeros((4, 8, 8), dtype=np.float32), spacing=(2.0, 1.0, 1.0))
    >>> v.shape, v.voxel_volume_mm3
    ((4, 8, 8), 2.0)
    """

    array: NDArray[Any]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: NDArray[np.float64] = field(default_factory=lambda: AXIAL_DIRECTION.copy())

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise ValueError(f"Volume array must be 3-D (z, y, x), got {arr.ndim}-D with shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"Volume array must not be empty, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"Volume array must be boolean, integer or float, got dtype {arr.dtype}")
        spacing = tuple(float(s) for s in np.asarray(self.spacing, dtype=float).ravel())
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three finite values > 0 mm (z, y, x), got {self.spacing}")
        origin = tuple(float(o) for o in np.asarray(self.origin, dtype=float).ravel())
        if len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin must be three finite values in mm (x, y, z), got {self.origin}")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite 3x3 matrix, got shape {direction.shape}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHO_TOL):
            raise ValueError(
                f"direction must be orthonormal (columns are unit vectors at right angles); got\n{direction}"
            )
        object.__setattr__(self, "array", _readonly(arr))
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", _readonly(direction))

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        s = self.array.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    @property
    def is_mask(self) -> bool:
        """True for a boolean array."""
        return self.array.dtype == np.bool_

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing))

    @property
    def affine(self) -> NDArray[np.float64]:
        """``(4, 4)`` matrix mapping homogeneous array index ``(k, j, i, 1)`` to world LPS ``(x, y, z, 1)`` mm."""
        a = np.eye(4)
        a[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    @classmethod
    def from_affine(cls, array: ArrayLike, affine: ArrayLike) -> Volume:
        """Build a Volume from an array and an index-to-LPS affine (see :attr:`affine`)."""
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got shape {aff.shape}")
        lin = aff[:3, :3]
        spacing = np.linalg.norm(lin, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"affine has a zero-length axis: {spacing}")
        return cls(
            np.asarray(array),
            spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            origin=(float(aff[0, 3]), float(aff[1, 3]), float(aff[2, 3])),
            direction=lin / spacing[None, :],
        )

    # ------------------------------------------------------------------ coordinates
    def index_to_world(self, index: ArrayLike) -> NDArray[np.float64]:
        """Map continuous array indices ``(..., 3)`` in ``(k, j, i)`` order to world LPS mm ``(..., 3)``."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ (self.direction * np.asarray(self.spacing)[None, :]).T + np.asarray(self.origin)

    def world_to_index(self, points: ArrayLike) -> NDArray[np.float64]:
        """Map world LPS points ``(..., 3)`` in mm to continuous array indices ``(..., 3)`` (``k, j, i``)."""
        p = np.asarray(points, dtype=np.float64) - np.asarray(self.origin)
        return (p @ self.direction) / np.asarray(self.spacing)

    # ------------------------------------------------------------------ derived volumes
    def with_array(self, array: ArrayLike) -> Volume:
        """Return a Volume with the same geometry and a new array of the same shape."""
        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise ValueError(f"new array shape {arr.shape} differs from the volume's shape {self.shape}")
        return Volume(arr, spacing=self.spacing, origin=self.origin, direction=self.direction)

    def same_geometry(self, other: Volume, *, atol_mm: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and places every voxel within ``atol_mm`` of ``self``."""
        if self.shape != other.shape:
            return False
        return bool(np.allclose(self.affine, other.affine, atol=atol_mm, rtol=0.0))

    def geometry_difference(self, other: Volume, *, atol_mm: float = 1e-3) -> str | None:
        """Describe how ``other``'s geometry differs from ``self``'s, or ``None`` when they match."""
        if self.shape != other.shape:
            return f"shape {other.shape} differs from {self.shape}"
        for name in ("spacing", "origin"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if not np.allclose(a, b, atol=atol_mm, rtol=0.0):
                return f"{name} {_numbers(b)} mm differs from {_numbers(a)} mm"
        if not np.allclose(self.direction, other.direction, atol=1e-4):
            return (
                f"direction (columns: unit vectors of the array axes) {_numbers(other.direction)} "
                f"differs from {_numbers(self.direction)}"
            )
        return None

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:g}" for s in self.spacing)
        og = ", ".join(f"{o:g}" for o in self.origin)
        return f"Volume(shape={self.shape}, dtype={self.dtype}, spacing_mm=({sp}), origin_mm=({og}))"


def _numbers(values: ArrayLike) -> str:
    """Plain numbers for messages: ``(1.5, -12.6, 0)``, rows of a matrix as nested parentheses.

    ``repr`` of numpy scalars prints ``np.float64(-12.6)`` (numpy >= 2), which a user should never see.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return f"{0.0 if v == 0 else v:.4g}"
    return "(" + ", ".join(_numbers(row) for row in arr) + ")"
