"""Preprocessing of one lesion for the 2-D lesion models of the response (Part I) and drift (Part II) studies.

What the papers say, and what this module adds where they are silent
--------------------------------------------------------------------
* Part I (response, autoencoder + classifier): 64×64×1 lesion images; the GTV mask is multiplied into the
  16×16 bottleneck; augmentation by rotating the raw image by 10°, 15°, 30°, 45° and 90° plus the original
  (69 lesions × 6 = 414 samples, i.e. one slice per lesion). See :data:`PART1_ANGLES`.
* Part II (drift, diffusion U-Net): "a bounding box was used to first mask the GTV ... and then rescaled to
  a standard size for all lesions"; three representative slices per lesion, rotated by 0°, 90°, 180°,
  270° (69 × 3 × 4 = 828 samples). See :data:`PART2_ANGLES`.

The pipeline of :func:`prepare_lesion`, each step a public function:

1. :func:`exclusion_reason` -- lesions that cannot be preprocessed (empty GTV, GTV too small, GTV cut by the
   in-plane edge of the image, mask on another grid, non-finite values) are refused with a one-line reason.
2. :func:`crop_to_gtv` -- a box square in mm, centred on the GTV's in-plane bounding box, side = the larger
   in-plane extent of the GTV + 2 × margin; along z, the slices that hold the GTV. Parts outside the image
   are padded.
3. :func:`normalise` -- intensities to [0, 1] from the statistics of the crop's voxels that lie inside the
   source image (padding excluded), computed on the source voxels before any interpolation.
4. :func:`select_slices` -- the slice of largest GTV area and its GTV-holding neighbours.
5. :func:`resample_inplane` -- each selected slice to ``size × size`` (bilinear image; the mask by
   fractional area coverage >= 0.5, so thin shapes keep their area).
6. :func:`rotate_slices` -- rotation augmentation about the image centre (exact for multiples of 90°).
7. :func:`downsample_mask` -- the mask for the network's bottleneck (block average >= 0.5).

Everything is deterministic numpy / :mod:`scipy.ndimage`; a lesion with 3 slices and 6 angles takes a few ms.

Conventions: arrays are ``(z, y, x)`` (slices, rows, columns) as in :class:`adaptrt.types.Volume`; 2-D
stacks are ``(n, rows, cols)``. A positive rotation angle turns the slice counter-clockwise as displayed
with row 0 at the top, the same sense as :func:`numpy.rot90` with ``k = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .errors import InputError
from .types import Volume
from .validation import bad_parameter
from .validation import is_int as _is_int
from .validation import is_real as _is_real

__all__ = [
    "MIN_SLICE_VOXELS",
    "PART1_ANGLES",
    "PART2_ANGLES",
    "LesionSlices",
    "PreprocessConfig",
    "crop_to_gtv",
    "downsample_mask",
    "exclusion_reason",
    "normalise",
    "prepare_lesion",
    "resample_inplane",
    "rotate_slices",
    "sample_like",
    "select_slices",
]

#: Part I augmentation: the original plus rotations by 10, 15, 30, 45 and 90 degrees.
PART1_ANGLES: tuple[float, ...] = (0.0, 10.0, 15.0, 30.0, 45.0, 90.0)
#: Part II augmentation: rotations by 0, 90, 180 and 270 degrees.
PART2_ANGLES: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
#: A GTV whose largest slice holds fewer voxels than this is "smaller than one slice" and excluded: with
#: 1-3 voxels there is no in-plane shape to learn and its centre and extent are ill-defined.
MIN_SLICE_VOXELS: int = 4

Normalisation = Literal["minmax", "percentile"]
_NORMALISATIONS: tuple[str, ...] = ("minmax", "percentile")
# Fractions computed from sums of floats may land a hair below an exact 0.5; count those as 0.5.
_HALF = 0.5 - 1e-9


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PreprocessConfig:
    """Settings of :func:`prepare_lesion`. Every field is validated on construction.

    Attributes
    ----------
    size
        Output in-plane size in pixels (int >= 8); both papers use 64.
    margin_mm
        Margin in mm added on each side of the GTV's in-plane bounding box (float >= 0).
    n_slices
        Number of slices per lesion (odd int >= 1): the slice of largest GTV area and ``(n_slices - 1) / 2``
        GTV-holding neighbours on each side; fewer when the GTV spans fewer slices (see
        :func:`select_slices`). Part II uses 3; Part I's sample count (69 × 6) implies 1.
    angles_deg
        Rotations applied to every slice, in degrees, counter-clockwise as displayed (0 = the original);
        non-empty, finite, no repeats. See :data:`PART1_ANGLES` and :data:`PART2_ANGLES`.
    bottleneck
        Size of the mask given to a network's bottleneck (int >= 1 that divides ``size``); 16 in Part I.
    normalisation
        ``"percentile"``: the ``percentiles`` of the crop's in-image voxels map to 0 and 1 and values beyond
        are clipped; ``"minmax"``: their minimum and maximum map to 0 and 1. See :func:`normalise`.
    percentiles
        Lower and upper percentile (``0 <= low < high <= 100``) for ``"percentile"`` normalisation.

    Examples
    --------
    >>> PreprocessConfig(angles_deg=PART2_ANGLES).angles_deg
    (0.0, 90.0, 180.0, 270.0)
    """

    size: int = 64
    margin_mm: float = 10.0
    n_slices: int = 3
    angles_deg: tuple[float, ...] = (0.0,)
    bottleneck: int = 16
    normalisation: Normalisation = "percentile"
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        if not (_is_int(self.size) and self.size >= 8):
            raise bad_parameter("PreprocessConfig", "size", "an int >= 8", self.size)
        if not (_is_real(self.margin_mm) and math.isfinite(self.margin_mm) and self.margin_mm >= 0):
            raise bad_parameter("PreprocessConfig", "margin_mm", "a finite float >= 0 (mm)", self.margin_mm)
        if not (_is_int(self.n_slices) and self.n_slices >= 1 and self.n_slices % 2 == 1):
            raise bad_parameter("PreprocessConfig", "n_slices", "an odd int >= 1", self.n_slices)
        angles = self.angles_deg
        if (
            not isinstance(angles, tuple | list)
            or len(angles) == 0
            or not all(_is_real(a) and math.isfinite(a) for a in angles)
            or len({float(a) for a in angles}) != len(angles)
        ):
            raise bad_parameter(
                "PreprocessConfig",
                "angles_deg",
                "a non-empty tuple of distinct finite angles in degrees",
                angles,
            )
        if not (_is_int(self.bottleneck) and self.bottleneck >= 1 and self.size % self.bottleneck == 0):
            raise bad_parameter(
                "PreprocessConfig",
                "bottleneck",
                f"an int >= 1 that divides size ({self.size})",
                self.bottleneck,
            )
        if self.normalisation not in _NORMALISATIONS:
            raise bad_parameter(
                "PreprocessConfig", "normalisation", f"one of {list(_NORMALISATIONS)}", self.normalisation
            )
        p = self.percentiles
        if not (
            isinstance(p, tuple | list)
            and len(p) == 2
            and all(_is_real(v) for v in p)
            and 0.0 <= p[0] < p[1] <= 100.0
        ):
            raise bad_parameter(
                "PreprocessConfig", "percentiles", "two numbers (low, high) with 0 <= low < high <= 100", p
            )
        object.__setattr__(self, "margin_mm", float(self.margin_mm))
        object.__setattr__(self, "angles_deg", tuple(float(a) for a in angles))
        object.__setattr__(self, "percentiles", (float(p[0]), float(p[1])))


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class LesionSlices:
    """The 2-D samples of one lesion, ready for a lesion model.

    Samples are ordered slice-major: for each selected slice (ascending ``slice_index``), one sample per
    angle in the order of ``PreprocessConfig.angles_deg``; ``n = n_selected_slices * len(angles_deg)``.

    Attributes
    ----------
    image
        ``(n, size, size)`` float32 in [0, 1]; pixels rotated in from outside the crop are 0.
    mask
        ``(n, size, size)`` bool, the GTV on the same pixels.
    mask_bottleneck
        ``(n, bottleneck, bottleneck)`` bool, :func:`downsample_mask` of ``mask``.
    slice_index
        ``(n,)`` int64, the source slice (axis 0 of the input Volume) of each sample.
    angle_deg
        ``(n,)`` float64, the rotation of each sample in degrees.
    pixel_mm
        In-plane size of one output pixel in mm. When the source's row and column spacings differ the two
        pixel sides differ slightly (by less than one source voxel over the box); this is then their
        geometric mean, so that ``mask.sum() * pixel_mm**2`` is an area in mm².
    box
        The source index box ``(z0, z1, y0, y1, x0, x1)``, half-open; it may reach outside the image
        (negative or beyond the shape) where the crop was padded.
    touches_border
        True when the GTV itself (not the margin) has voxels on a face of the source image. Lesions on an
        in-plane edge are excluded, so for a prepared lesion this means the GTV is on the first or last
        slice and its extent along z may be truncated.
    """

    image: NDArray[np.float32]
    mask: NDArray[np.bool_]
    mask_bottleneck: NDArray[np.bool_]
    slice_index: NDArray[np.int64]
    angle_deg: NDArray[np.float64]
    pixel_mm: float
    box: tuple[int, int, int, int, int, int]
    touches_border: bool

    def __post_init__(self) -> None:
        n = self.image.shape[0]
        if self.image.ndim != 3 or self.mask.shape != self.image.shape:
            raise ValueError(
                f"image {self.image.shape} and mask {self.mask.shape} must both be (n, size, size)"
            )
        if self.mask_bottleneck.ndim != 3 or self.mask_bottleneck.shape[0] != n:
            raise ValueError(f"mask_bottleneck must be (n={n}, b, b), got {self.mask_bottleneck.shape}")
        if self.slice_index.shape != (n,) or self.angle_deg.shape != (n,):
            raise ValueError(
                f"slice_index {self.slice_index.shape} and angle_deg {self.angle_deg.shape} must be ({n},)"
            )

    def __len__(self) -> int:
        """Number of samples ``n``."""
        return int(self.image.shape[0])


# ---------------------------------------------------------------------------------------------- helpers
def _as_bool(mask: Volume) -> NDArray[np.bool_]:
    a = mask.array
    return a if a.dtype == np.bool_ else a != 0


def _bbox(mask: NDArray[np.bool_]) -> tuple[int, int, int, int, int, int] | None:
    """Half-open index box ``(z0, z1, y0, y1, x0, x1)`` of a 3-D boolean array, or None when it is empty."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    z0, z1 = int(zs[0]), int(zs[-1]) + 1
    # only the GTV's slices are scanned for the in-plane extent: a full 3-D pass is the expensive part
    sub = mask[z0:z1]
    ys = np.flatnonzero(sub.any(axis=(0, 2)))
    xs = np.flatnonzero(sub.any(axis=(0, 1)))
    return (z0, z1, int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)


def _crop_box(
    gtv: tuple[int, int, int, int, int, int], spacing: tuple[float, float, float], margin_mm: float
) -> tuple[int, int, int, int, int, int]:
    """The crop box of :func:`crop_to_gtv` from the GTV's box (see there for the rule)."""
    z0, z1, gy0, gy1, gx0, gx1 = gtv
    sy, sx = spacing[1], spacing[2]
    side_mm = max((gy1 - gy0) * sy, (gx1 - gx0) * sx) + 2.0 * margin_mm
    out = [z0, z1]
    for lo, hi, s in ((gy0, gy1, sy), (gx0, gx1, sx)):
        n = max(math.ceil(side_mm / s - 1e-9), hi - lo)
        # start = round(centre - (n - 1) / 2), rounding halves up; centre = (lo + hi - 1) / 2
        start = (lo + hi - n + 1) // 2
        out += [start, start + n]
    return (out[0], out[1], out[2], out[3], out[4], out[5])


def _cut(array: NDArray[Any], box: tuple[int, int, int, int, int, int], fill: Any) -> NDArray[Any]:
    """``array[box]`` with the parts of ``box`` outside ``array`` set to ``fill``."""
    z0, z1, y0, y1, x0, x1 = box
    out = np.full((z1 - z0, y1 - y0, x1 - x0), fill, dtype=array.dtype)
    lo = np.maximum([z0, y0, x0], 0)
    hi = np.minimum([z1, y1, x1], array.shape)
    if np.all(hi > lo):
        out[lo[0] - z0 : hi[0] - z0, lo[1] - y0 : hi[1] - y0, lo[2] - x0 : hi[2] - x0] = array[
            lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]
        ]
    return out


def _inside(shape: tuple[int, ...], box: tuple[int, int, int, int, int, int]) -> NDArray[np.bool_]:
    """Boolean array over ``box``: True where the box lies inside an array of ``shape`` ``(z, y, x)``."""
    z0, z1, y0, y1, x0, x1 = box
    ok = [
        (np.arange(a, b) >= 0) & (np.arange(a, b) < n)
        for (a, b), n in zip(((z0, z1), (y0, y1), (x0, x1)), shape[:3], strict=True)
    ]
    return ok[0][:, None, None] & ok[1][None, :, None] & ok[2][None, None, :]


def _coverage_matrix(n_in: int, n_out: int) -> NDArray[np.float64]:
    """``(n_out, n_in)`` fraction of each output pixel's length covered by each input pixel (edges aligned)."""
    scale = n_in / n_out
    out_lo = np.arange(n_out)[:, None] * scale
    in_lo = np.arange(n_in)[None, :].astype(np.float64)
    overlap = np.minimum(out_lo + scale, in_lo + 1.0) - np.maximum(out_lo, in_lo)
    return np.clip(overlap, 0.0, None) / scale


def _resample_mask_array(mask: NDArray[np.bool_], size: int) -> NDArray[np.bool_]:
    """``(k, h, w)`` -> ``(k, size, size)`` by fractional area coverage >= 0.5 (pixels as boxes)."""
    wy = _coverage_matrix(mask.shape[1], size)
    wx = _coverage_matrix(mask.shape[2], size)
    cover = wy @ mask.astype(np.float64) @ wx.T  # (k, size, size), separable because pixels are boxes
    return cover >= _HALF


def _resample_image_array(image: NDArray[Any], size: int, order: int) -> NDArray[np.float64]:
    """``(k, h, w)`` -> ``(k, size, size)``, spline of ``order``, pixel edges aligned, edges replicated."""
    h, w = image.shape[1], image.shape[2]
    scale = np.array([1.0, h / size, w / size])
    # output pixel p (edges aligned) has its centre at input coordinate (p + 0.5) * scale - 0.5
    offset = np.array([0.0, 0.5 * scale[1] - 0.5, 0.5 * scale[2] - 0.5])
    return ndimage.affine_transform(
        np.asarray(image, dtype=np.float64),
        scale,
        offset=offset,
        output_shape=(image.shape[0], size, size),
        order=order,
        mode="nearest",
    )


# ---------------------------------------------------------------------------------------------- public API
def exclusion_reason(image: Volume, mask: Volume) -> str | None:
    """Why a lesion cannot be preprocessed, or None when it can.

    The checks, in order (the first that fails is reported):

    * ``"mask and image grids differ (...)"`` -- the mask is not on the image's grid (shape, spacing, origin
      or direction; tolerance 1e-3 mm).
    * ``"empty GTV (...)"`` -- the mask has no voxel (non-boolean masks: non-zero is inside).
    * ``"GTV smaller than one slice (...)"`` -- its largest slice holds fewer than :data:`MIN_SLICE_VOXELS`
      voxels.
    * ``"GTV on the image border (...)"`` -- the GTV has voxels in the first or last row or column of a
      slice, so the lesion is probably cut by the field of view and its in-plane box cannot be trusted. A GTV
      on the first or last *slice* is accepted (reported by :attr:`LesionSlices.touches_border`).
    * ``"image has non-finite values (...)"`` -- NaN or infinity in the slices that hold the GTV.

    Parameters
    ----------
    image
        The MR image, ``(z, y, x)``.
    mask
        The GTV, ``(z, y, x)`` boolean, on the same grid.

    Returns
    -------
    str or None
        A one-line reason, starting with one of the phrases above, or None.
    """
    reason, _ = _check(image, mask)
    return reason


def _check(image: Volume, mask: Volume) -> tuple[str | None, tuple[int, int, int, int, int, int] | None]:
    diff = image.geometry_difference(mask)
    if diff is not None:
        return f"mask and image grids differ ({' '.join(diff.split())})", None
    m = _as_bool(mask)
    box = _bbox(m)
    if box is None:
        return "empty GTV (the mask has no voxel inside)", None
    z0, z1, y0, y1, x0, x1 = box
    largest = int(m[z0:z1].sum(axis=(1, 2)).max())
    if largest < MIN_SLICE_VOXELS:
        return (
            f"GTV smaller than one slice (its largest slice holds {largest} voxel(s); "
            f"at least {MIN_SLICE_VOXELS} are needed)"
        ), box
    ny, nx = image.shape[1], image.shape[2]
    if y0 == 0 or x0 == 0 or y1 == ny or x1 == nx:
        return "GTV on the image border (it reaches the edge of a slice, so it may be cut off)", box
    if image.dtype.kind == "f" and not np.isfinite(image.array[z0:z1]).all():
        return (
            f"image has non-finite values (NaN or infinity) in slices {z0}-{z1 - 1}, which hold the GTV",
            box,
        )
    return None, box


def crop_to_gtv(image: Volume, mask: Volume, margin_mm: float) -> tuple[Volume, Volume]:
    """Crop an image and its GTV to a box around the GTV.

    The box is square in mm in-plane: centred on the GTV's in-plane bounding box (voxel edges), with side
    ``max(row extent, column extent) + 2 * margin_mm``, rounded up to whole voxels on each axis. Its start
    index is ``round(centre - (n - 1) / 2)`` (halves up), so the box centre lies within half a voxel of the
    GTV's box centre. Along z the box holds the slices that contain the GTV. Parts of the box outside the
    image are padded with the minimum of the image values inside the box (so padding never widens the
    crop's intensity range) and with False in the mask.

    Parameters
    ----------
    image, mask
        ``(z, y, x)`` Volumes on the same grid; the mask must not be empty.
    margin_mm
        Margin in mm (>= 0) on each side of the GTV's in-plane bounding box.

    Returns
    -------
    (Volume, Volume)
        The cropped image (its dtype) and mask (bool), same spacing and direction; the origin is the world
        position of the crop's voxel [0, 0, 0] (which may lie outside the source image).

    Raises
    ------
    ValueError
        When the mask is empty, the grids differ or ``margin_mm`` is negative.
    """
    if not (math.isfinite(margin_mm) and margin_mm >= 0):
        raise ValueError(f"margin_mm must be a finite number >= 0, got {margin_mm}")
    diff = image.geometry_difference(mask)
    if diff is not None:
        raise ValueError(f"mask and image grids differ: {diff}")
    m = _as_bool(mask)
    gtv = _bbox(m)
    if gtv is None:
        raise ValueError("the mask is empty: there is no GTV to crop around")
    box = _crop_box(gtv, image.spacing, margin_mm)
    return _crop_volumes(image, m, box)


def _crop_volumes(
    image: Volume, mask: NDArray[np.bool_], box: tuple[int, int, int, int, int, int]
) -> tuple[Volume, Volume]:
    z0, z1, y0, y1, x0, x1 = box
    inner = image.array[
        max(z0, 0) : z1, max(y0, 0) : min(y1, image.shape[1]), max(x0, 0) : min(x1, image.shape[2])
    ]
    img = _cut(image.array, box, inner.min())
    msk = _cut(mask, box, False)
    origin = image.index_to_world([z0, y0, x0])
    org = (float(origin[0]), float(origin[1]), float(origin[2]))
    return (
        Volume(img, spacing=image.spacing, origin=org, direction=image.direction),
        Volume(msk, spacing=image.spacing, origin=org, direction=image.direction),
    )


def resample_inplane(volume: Volume, size: int, *, order: int) -> Volume:
    """Resample every slice of a Volume to ``size × size`` pixels, keeping its field of view.

    The slice's outer pixel edges map onto the output's outer edges, so output pixel ``p`` covers input
    coordinates ``[p, p + 1) * h / size`` (rows; columns likewise) and the output spacing is
    ``spacing * h / size``. Slices are not mixed.

    * Non-boolean volumes: spline interpolation of ``order`` (1 = bilinear) at the output pixel centres,
      edge values replicated beyond the outermost input centres. Returned as float32.
    * Boolean volumes (masks): an output pixel is inside when at least half of its area (ties included) is
      covered by inside input pixels, pixels treated as boxes; ``order`` is ignored. The area is kept to
      within the boundary pixels (about 1-2 % for a lesion that fills a fifth of the box), where
      nearest-neighbour sampling drops or doubles whole rows of thin shapes depending on where its sample
      points fall.

    Parameters
    ----------
    volume
        ``(z, h, w)`` Volume.
    size
        Output rows and columns (>= 1).
    order
        Spline order 0-5 for non-boolean volumes.

    Returns
    -------
    Volume
        ``(z, size, size)``, same direction; spacing and origin updated so that every output pixel centre
        sits at its correct world position.
    """
    if not (_is_int(size) and size >= 1):
        raise ValueError(f"size must be an int >= 1, got {size!r}")
    if not (_is_int(order) and 0 <= order <= 5):
        raise ValueError(f"order must be an int from 0 to 5, got {order!r}")
    _, h, w = volume.shape
    if volume.is_mask:
        arr: NDArray[Any] = _resample_mask_array(volume.array, size)
    else:
        arr = _resample_image_array(volume.array, size, order).astype(np.float32)
    sy, sx = h / size, w / size
    origin = volume.index_to_world([0.0, 0.5 * sy - 0.5, 0.5 * sx - 0.5])
    return Volume(
        arr,
        spacing=(volume.spacing[0], volume.spacing[1] * sy, volume.spacing[2] * sx),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=volume.direction,
    )


def normalise(
    array: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    method: Normalisation = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> NDArray[np.float32]:
    """Map intensities linearly to [0, 1].

    Reference values are ``array[mask]`` (or all of ``array`` when ``mask`` is None). ``low`` and ``high``
    are their minimum and maximum (``"minmax"``) or their ``percentiles`` (``"percentile"``, numpy's
    linear interpolation between order statistics). The output is ``clip((array - low) / (high - low), 0,
    1)`` over the whole array. When ``high <= low`` (a constant reference) the output is all zeros; it is
    never NaN for finite input.

    Parameters
    ----------
    array
        Values of any shape.
    mask
        Boolean array of the same shape selecting the reference voxels (e.g. those inside the source image);
        must select at least one voxel.
    method
        ``"percentile"`` or ``"minmax"``.
    percentiles
        ``(low, high)`` in [0, 100] for ``"percentile"``.

    Returns
    -------
    numpy.ndarray
        float32, the shape of ``array``, in [0, 1].
    """
    a = np.asarray(array, dtype=np.float64)
    if mask is None:
        ref = a.ravel()
    else:
        m = np.asarray(mask, dtype=np.bool_)
        if m.shape != a.shape:
            raise ValueError(f"mask shape {m.shape} differs from the array's shape {a.shape}")
        ref = a[m]
    if ref.size == 0:
        raise ValueError(
            "normalise needs at least one reference value (the array or mask selection is empty)"
        )
    if method == "percentile":
        p_lo, p_hi = percentiles
        if not 0.0 <= p_lo < p_hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
        low, high = (float(v) for v in np.percentile(ref, [p_lo, p_hi]))
    elif method == "minmax":
        low, high = float(ref.min()), float(ref.max())
    else:
        raise ValueError(f"method must be one of {list(_NORMALISATIONS)}, got {method!r}")
    if not high > low:
        return np.zeros(a.shape, dtype=np.float32)
    out = (a - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def select_slices(mask: NDArray[np.bool_], n: int) -> NDArray[np.int64]:
    """Choose up to ``n`` slices of a 3-D GTV mask for the 2-D models.

    The central slice is the one of largest GTV area (ties: the one nearest the GTV's centroid along z, then
    the lower index). The others are the GTV-holding slices nearest to it (ties: the larger GTV area, then
    the lower index), so the choice is ``centre ± (n - 1) / 2`` when the GTV reaches that far on both sides,
    shifts to the other side when it does not, and holds every GTV slice when there are fewer than ``n``.
    Slices without GTV are never chosen.

    Parameters
    ----------
    mask
        ``(z, y, x)`` boolean GTV (non-boolean: non-zero is inside); not empty.
    n
        Number of slices wanted (>= 1).

    Returns
    -------
    numpy.ndarray
        ``(min(n, number of GTV slices),)`` int64 slice indices along axis 0, ascending.
    """
    m = np.asarray(mask)
    if m.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x), got shape {m.shape}")
    if not (_is_int(n) and n >= 1):
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    area = (m != 0).sum(axis=(1, 2)).astype(np.int64)
    total = int(area.sum())
    if total == 0:
        raise ValueError("the mask is empty: there is no GTV slice to select")
    z = np.arange(area.size)
    centroid = float((z * area).sum()) / total
    # lexsort sorts by the last key first
    centre = int(np.lexsort((z, np.abs(z - centroid), -area))[0])
    cand = np.flatnonzero(area > 0)
    order = np.lexsort((cand, -area[cand], np.abs(cand - centre)))
    return np.sort(cand[order[:n]]).astype(np.int64)


def rotate_slices(
    images: ArrayLike, masks: ArrayLike, angles_deg: ArrayLike
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.float64]]:
    """Rotate each slice by each angle about the image centre.

    Positive angles turn the slice counter-clockwise as displayed with row 0 at the top (the sense of
    :func:`numpy.rot90`). Rotations by multiples of 90° of square slices are exact (:func:`numpy.rot90`).
    Other angles: bilinear interpolation about the centre ``((h - 1) / 2, (w - 1) / 2)``, pixels whose
    source lies outside the slice (the corners) set to 0; the mask is rotated as a float and thresholded at
    0.5, which keeps its area to within the boundary pixels.

    Parameters
    ----------
    images
        ``(n, h, w)`` float images.
    masks
        ``(n, h, w)`` boolean masks.
    angles_deg
        ``(a,)`` angles in degrees.

    Returns
    -------
    images : numpy.ndarray
        ``(n * a, h, w)`` float32, slice-major: sample ``i * a + j`` is slice ``i`` rotated by angle ``j``.
    masks : numpy.ndarray
        ``(n * a, h, w)`` bool, in the same order.
    angles : numpy.ndarray
        ``(n * a,)`` float64, the angle of each sample.
    """
    img = np.asarray(images, dtype=np.float64)
    msk = np.asarray(masks)
    ang = np.asarray(angles_deg, dtype=np.float64).ravel()
    if img.ndim != 3 or msk.shape != img.shape:
        raise ValueError(f"images {img.shape} and masks {msk.shape} must both be (n, h, w)")
    if ang.size == 0 or not np.all(np.isfinite(ang)):
        raise ValueError(f"angles_deg must be a non-empty sequence of finite angles, got {ang}")
    n, h, w = img.shape
    # images and masks go through one transform as one stack
    both = np.concatenate([img, msk.astype(np.float64)], axis=0)
    out = np.empty((ang.size, 2 * n, h, w), dtype=np.float64)
    centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    for j, a in enumerate(ang):
        quarter = a / 90.0
        if h == w and abs(quarter - round(quarter)) < 1e-9:
            out[j] = np.rot90(both, k=round(quarter) % 4, axes=(1, 2))
            continue
        t = np.deg2rad(a)
        c, s = np.cos(t), np.sin(t)
        # output (row, col) relative to the centre samples the input at [[c, s], [-s, c]] @ (row, col)
        rot = np.array([[c, s], [-s, c]])
        offset = centre - rot @ centre
        # one 2-D transform per slice: a 3-D transform would also interpolate along z, for nothing
        for i in range(2 * n):
            ndimage.affine_transform(
                both[i], rot, offset=offset, output=out[j, i], order=1, mode="constant", cval=0.0
            )
    # (a, 2n, h, w) -> slice-major (n * a, h, w)
    out_img = out[:, :n].transpose(1, 0, 2, 3).reshape(n * ang.size, h, w)
    out_msk = out[:, n:].transpose(1, 0, 2, 3).reshape(n * ang.size, h, w) >= _HALF
    return out_img.astype(np.float32), out_msk, np.tile(ang, n)


def downsample_mask(mask: ArrayLike, size: int) -> NDArray[np.bool_]:
    """Downsample masks to ``size × size`` by block averaging: a block is inside when >= half of it is.

    Parameters
    ----------
    mask
        ``(..., h, w)`` boolean; ``size`` must divide ``h`` and ``w``.
    size
        Output rows and columns.

    Returns
    -------
    numpy.ndarray
        ``(..., size, size)`` bool.
    """
    m = np.asarray(mask)
    if m.ndim < 2:
        raise ValueError(f"mask must have at least 2 dimensions (h, w), got shape {m.shape}")
    h, w = m.shape[-2:]
    if not (_is_int(size) and size >= 1 and h % size == 0 and w % size == 0):
        raise ValueError(f"size must be an int >= 1 that divides the mask's size {h}×{w}, got {size!r}")
    blocks = m.reshape(*m.shape[:-2], size, h // size, size, w // size)
    return blocks.mean(axis=(-3, -1), dtype=np.float64) >= _HALF


_FIXES = {
    "mask and image grids differ": "export the mask from the image's own series, or resample it onto the "
    "image grid (nearest neighbour) before running",
    "empty GTV": "check the mask file or the RTSTRUCT ROI name for this lesion, or remove the lesion from the "
    "manifest",
    "GTV smaller than one slice": "remove the lesion from the manifest (it is too small for a 2-D slice model)",
    "GTV on the image border": "use an image whose field of view holds the whole lesion, or remove the "
    "lesion from the manifest",
    "image has non-finite values": "fix or re-export the image (its GTV slices hold NaN or infinity)",
}


def prepare_lesion(image: Volume, mask: Volume, config: PreprocessConfig | None = None) -> LesionSlices:
    """Crop, normalise, select slices, resample and rotate one lesion (see the module docstring).

    Parameters
    ----------
    image
        ``(z, y, x)`` MR image (any real dtype), spacing in mm.
    mask
        ``(z, y, x)`` boolean GTV on the image's grid.
    config
        Settings; ``PreprocessConfig()`` when None.

    Returns
    -------
    LesionSlices
        ``n = min(n_slices, GTV slices) * len(angles_deg)`` samples of ``size × size`` pixels.

    Raises
    ------
    InputError
        When :func:`exclusion_reason` gives a reason; ``problem`` is that reason.

    Examples
    --------
    >>> import numpy as np
    >>> zz, yy, xx = np.mgrid[:6, :40, :40]
    >>> gtv = (zz - 2.5) ** 2 * 4 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 36
    >>> ls = prepare_lesion(Volume(gtv * 100.0 + yy, (2.0, 1.0, 1.0)), Volume(gtv, (2.0, 1.0, 1.0)),
    ...                     PreprocessConfig(angles_deg=(0.0, 90.0)))
    >>> ls.image.shape, ls.mask_bottleneck.shape, ls.slice_index.tolist()
    ((6, 64, 64), (6, 16, 16), [1, 1, 2, 2, 3, 3])
    """
    cfg = PreprocessConfig() if config is None else config
    reason, gtv = _check(image, mask)
    if reason is not None or gtv is None:
        reason = reason or "empty GTV"
        fix = next((f for k, f in _FIXES.items() if reason.startswith(k)), None)
        raise InputError(reason, fix=fix)
    m = _as_bool(mask)
    box = _crop_box(gtv, image.spacing, cfg.margin_mm)
    crop_img, crop_mask = _crop_volumes(image, m, box)
    # statistics from the source voxels inside the image; padding maps to 0 as it equals the crop minimum
    norm = normalise(
        crop_img.array,
        _inside(image.shape, box),
        method=cfg.normalisation,
        percentiles=cfg.percentiles,
    )
    sel = select_slices(crop_mask.array, cfg.n_slices)
    img2d = _resample_image_array(norm[sel], cfg.size, order=1)
    msk2d = _resample_mask_array(crop_mask.array[sel], cfg.size)
    images, masks, angles = rotate_slices(img2d, msk2d, cfg.angles_deg)
    n_ang = len(cfg.angles_deg)
    z0, _, y0, y1, x0, x1 = box
    py = (y1 - y0) * image.spacing[1] / cfg.size
    px = (x1 - x0) * image.spacing[2] / cfg.size
    return LesionSlices(
        image=np.clip(images, 0.0, 1.0),
        mask=masks,
        mask_bottleneck=downsample_mask(masks, cfg.bottleneck),
        slice_index=np.repeat(sel + z0, n_ang).astype(np.int64),
        angle_deg=angles,
        pixel_mm=float(math.sqrt(py * px)),
        box=box,
        touches_border=bool(
            gtv[0] == 0
            or gtv[2] == 0
            or gtv[4] == 0
            or gtv[1] == image.shape[0]
            or gtv[3] == image.shape[1]
            or gtv[5] == image.shape[2]
        ),
    )


def sample_like(volume: Volume, ref: LesionSlices, *, kind: Literal["mask", "image"]) -> NDArray[Any]:
    """Put another volume on the pixels of an already prepared lesion.

    Applies ``ref``'s crop box, slices, in-plane resampling and rotations to ``volume`` (on the same grid
    as the lesion's image), without any intensity normalisation. Used to carry ground-truth sub-regions
    and voxel maps (e.g. gradient magnitude) into the frame of the 2-D lesion samples.

    Parameters
    ----------
    volume
        ``(z, y, x)`` volume on the grid of the image ``ref`` was prepared from.
    ref
        The prepared lesion.
    kind
        ``"mask"``: boolean, resampled by area coverage >= 0.5 and rotated like the GTV; ``"image"``: float,
        bilinear, rotated like the image (outside the crop: 0).

    Returns
    -------
    ndarray
        ``(n, size, size)``: bool for masks, float32 for images, in ``ref``'s sample order.
    """
    n = len(ref)
    size = int(ref.image.shape[1])
    n_ang = max(1, int(np.sum(ref.slice_index == ref.slice_index[0]))) if n else 1
    angles = ref.angle_deg[:n_ang]
    slices = ref.slice_index[::n_ang] - ref.box[0]
    if kind == "mask":
        cut = _cut(np.asarray(volume.array) != 0, ref.box, False)
        m2d = _resample_mask_array(cut[slices], size)
        _, masks, _ = rotate_slices(np.zeros(m2d.shape, np.float32), m2d, angles)
        return masks
    if kind == "image":
        cut_f = _cut(np.asarray(volume.array, dtype=np.float64), ref.box, 0.0)
        i2d = _resample_image_array(cut_f[slices], size, order=1)
        images, _, _ = rotate_slices(i2d, np.zeros(i2d.shape, bool), angles)
        return images.astype(np.float32)
    raise ValueError(f"kind must be 'mask' or 'image', got {kind!r}")
