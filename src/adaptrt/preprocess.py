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

Pairs (Part II's drift study, and any later time point of a lesion)
--------------------------------------------------------------------
:func:`prepare_pair` cuts a lesion's first and later co-registered image with ONE box (covering both GTVs
and the region of drift), the SAME slices and rotations and ONE intensity scale (from the first image), so
that drift = post - pre is a change of the tissue, not of the crop or of the normalisation.
:func:`prepare_lesion` takes an explicit ``box=`` (and ``slices=``) to cut a later time point with the first
MRI's box. :func:`sample_like` carries other volumes (truth maps) into a lesion's or pair's frame and
:func:`paste_back` puts 2-D predictions back onto the source grid.

Everything is deterministic numpy / :mod:`scipy.ndimage`; a lesion with 3 slices and 6 angles takes a few ms.

Conventions: arrays are ``(z, y, x)`` (slices, rows, columns) as in :class:`adaptrt.types.Volume`; 2-D
stacks are ``(n, rows, cols)``. A positive rotation angle turns the slice counter-clockwise as displayed
with row 0 at the top, the same sense as :func:`numpy.rot90` with ``k = 1``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from .errors import InputError
from .types import Volume
from .validation import bad_parameter
from .validation import is_int as _is_int
from .validation import is_real as _is_real

__all__ = [
    "DRIFT_THRESHOLD",
    "MIN_SLICE_VOXELS",
    "PART1_ANGLES",
    "PART2_ANGLES",
    "Box",
    "LesionPair",
    "LesionSlices",
    "PreprocessConfig",
    "crop_to_gtv",
    "downsample_mask",
    "exclusion_reason",
    "normalise",
    "paste_back",
    "prepare_lesion",
    "prepare_pair",
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

#: A source index box ``(z0, z1, y0, y1, x0, x1)``, half-open; in-plane it may reach outside the image.
Box = tuple[int, int, int, int, int, int]


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
    scale
        ``(low, high)`` in source intensity units: the image was normalised as ``clip((x - low) / (high -
        low), 0, 1)`` (see :func:`normalise`); None when unknown (a record built by hand).
    """

    image: NDArray[np.float32]
    mask: NDArray[np.bool_]
    mask_bottleneck: NDArray[np.bool_]
    slice_index: NDArray[np.int64]
    angle_deg: NDArray[np.float64]
    pixel_mm: float
    box: Box
    touches_border: bool
    scale: tuple[float, float] | None = None

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
    low, high = _reference_range(ref, method, percentiles)
    if not high > low:
        return np.zeros(a.shape, dtype=np.float32)
    out = (a - low) / (high - low)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _reference_range(
    ref: NDArray[np.float64], method: Normalisation, percentiles: tuple[float, float]
) -> tuple[float, float]:
    """``(low, high)`` of :func:`normalise` from the reference values ``ref`` (1-D)."""
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
    return low, high


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
    "image is constant": "check the image file: a constant image holds no lesion (a failed export, an empty "
    "series or the wrong file)",
}


def prepare_lesion(
    image: Volume,
    mask: Volume,
    config: PreprocessConfig | None = None,
    *,
    box: Sequence[int] | None = None,
    slices: ArrayLike | None = None,
) -> LesionSlices:
    """Crop, normalise, select slices, resample and rotate one lesion (see the module docstring).

    Parameters
    ----------
    image
        ``(z, y, x)`` MR image (any real dtype), spacing in mm.
    mask
        ``(z, y, x)`` boolean GTV on the image's grid.
    config
        Settings; ``PreprocessConfig()`` when None.
    box
        The crop box ``(z0, z1, y0, y1, x0, x1)`` (source indices, half-open) to use instead of the one
        fitted to this GTV, e.g. the :attr:`LesionSlices.box` of the lesion's first MRI, so that a later,
        co-registered time point is cut exactly like the first (the same-box rule: a box refitted to a
        shrunken GTV rescales and re-centres the crop in a way that goes with the outcome). ``z0 >= 0`` and
        ``z1 <= `` the number of slices; in-plane it may reach outside the image (padded). The intensity
        statistics come from this box.
    slices
        Source slice indices (axis 0) to sample, each inside ``box``'s slices, e.g. the first MRI's
        ``np.unique(slice_index)``; ``config.n_slices`` is then ignored. None: :func:`select_slices` on the
        GTV inside the box.

    Returns
    -------
    LesionSlices
        ``n = min(n_slices, GTV slices) * len(angles_deg)`` samples of ``size × size`` pixels (with
        ``slices``: ``len(slices) * len(angles_deg)``).

    Raises
    ------
    InputError
        When :func:`exclusion_reason` gives a reason (``problem`` is that reason); a ``box`` outside the
        image's slices or without GTV in it (when ``slices`` is None); ``slices`` outside the box.

    Examples
    --------
    >>> import numpy as np
    >>> zz, yy, xx = np.mgrid[:6, :40, :40]
    >>> gtv = (zz - 2.5) ** 2 * 4 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 36
    >>> ls = prepare_lesion(Volume(gtv * 100.0 + yy, (2.0, 1.0, 1.0)), Volume(gtv, (2.0, 1.0, 1.0)),
    ...                     PreprocessConfig(angles_deg=(0.0, 90.0)))
    >>> ls.image.shape, ls.mask_bottleneck.shape, ls.slice_index.tolist()
    ((6, 64, 64), (6, 16, 16), [1, 1, 2, 2, 3, 3])
    >>> same = prepare_lesion(Volume(gtv * 100.0 + yy, (2.0, 1.0, 1.0)), Volume(gtv, (2.0, 1.0, 1.0)),
    ...                       PreprocessConfig(angles_deg=(0.0, 90.0)), box=ls.box, slices=[1, 2, 3])
    >>> bool(np.array_equal(same.image, ls.image))
    True
    """
    cfg = PreprocessConfig() if config is None else config
    reason, gtv = _check(image, mask)
    if reason is not None or gtv is None:
        reason = reason or "empty GTV"
        fix = next((f for k, f in _FIXES.items() if reason.startswith(k)), None)
        raise InputError(reason, fix=fix)
    m = _as_bool(mask)
    cut_box = _crop_box(gtv, image.spacing, cfg.margin_mm) if box is None else _valid_box(box, image.shape)
    crop_img, crop_mask = _crop_volumes(image, m, cut_box)
    # statistics from the source voxels inside the image; padding maps to 0 as it equals the crop minimum
    crop = np.asarray(crop_img.array, dtype=np.float64)
    low, high = _reference_range(crop[_inside(image.shape, cut_box)], cfg.normalisation, cfg.percentiles)
    # normalise()'s mapping, with the statistics computed once
    norm = (
        np.clip((crop - low) / (high - low), 0.0, 1.0).astype(np.float32)
        if high > low
        else np.zeros(crop.shape, dtype=np.float32)
    )
    if slices is not None:
        sel = _valid_slices(slices, cut_box)
    elif not crop_mask.array.any():
        raise InputError(
            f"the GTV has no voxel inside the given box {tuple(cut_box)}",
            field="box",
            fix="give the box of an earlier time point of the same, co-registered lesion, or no box",
        )
    else:
        sel = select_slices(crop_mask.array, cfg.n_slices)
    img2d = _resample_image_array(norm[sel], cfg.size, order=1)
    msk2d = _resample_mask_array(crop_mask.array[sel], cfg.size)
    images, masks, angles = rotate_slices(img2d, msk2d, cfg.angles_deg)
    n_ang = len(cfg.angles_deg)
    return LesionSlices(
        image=np.clip(images, 0.0, 1.0),
        mask=masks,
        mask_bottleneck=downsample_mask(masks, cfg.bottleneck),
        slice_index=np.repeat(sel + cut_box[0], n_ang).astype(np.int64),
        angle_deg=angles,
        pixel_mm=_pixel_mm(cut_box, image.spacing, cfg.size),
        box=cut_box,
        touches_border=_on_face(gtv, image.shape),
        scale=(low, high),
    )


def _pixel_mm(box: Box, spacing: tuple[float, float, float], size: int) -> float:
    """Geometric mean of the output pixel's two sides in mm (see :attr:`LesionSlices.pixel_mm`)."""
    _, _, y0, y1, x0, x1 = box
    py = (y1 - y0) * spacing[1] / size
    px = (x1 - x0) * spacing[2] / size
    return float(math.sqrt(py * px))


def _on_face(bbox: Box, shape: tuple[int, int, int]) -> bool:
    """True when the half-open index box ``bbox`` touches a face of an array of ``shape``."""
    return bool(
        bbox[0] == 0
        or bbox[2] == 0
        or bbox[4] == 0
        or bbox[1] == shape[0]
        or bbox[3] == shape[1]
        or bbox[5] == shape[2]
    )


def _valid_box(box: Sequence[int], shape: tuple[int, int, int]) -> Box:
    """``box`` as a tuple of 6 ints, checked: non-empty on every axis, its slices inside the image."""
    vals = list(box) if isinstance(box, Sequence | np.ndarray) else []
    if len(vals) != 6 or not all(_is_int(v) for v in vals):
        raise InputError(
            f"box must be six integers (z0, z1, y0, y1, x0, x1), got {box!r}",
            field="box",
            fix="pass the box of a prepared lesion (LesionSlices.box or LesionPair.box)",
        )
    z0, z1, y0, y1, x0, x1 = (int(v) for v in vals)
    if not (z1 > z0 and y1 > y0 and x1 > x0):
        raise InputError(
            f"box {tuple(vals)} is empty along an axis (needs z0 < z1, y0 < y1, x0 < x1)", field="box"
        )
    if z0 < 0 or z1 > shape[0]:
        raise InputError(
            f"box slices {z0}-{z1 - 1} are outside the image's {shape[0]} slices",
            field="box",
            fix="use a box from an image on the same grid (co-registered and resampled onto it)",
        )
    return (z0, z1, y0, y1, x0, x1)


def _valid_slices(slices: ArrayLike, box: Box) -> NDArray[np.int64]:
    """Source slice indices -> ascending unique indices relative to ``box``'s first slice."""
    arr = np.asarray(slices)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(
            f"slices must be a non-empty 1-D sequence of slice indices, got {slices!r}", field="slices"
        )
    sel = np.unique(arr.astype(np.int64))
    if sel[0] < box[0] or sel[-1] >= box[1]:
        raise InputError(
            f"slices {sel.tolist()} are not all inside the box's slices {box[0]}-{box[1] - 1}",
            field="slices",
        )
    return sel - box[0]


def _frame(ref: LesionSlices | LesionPair) -> tuple[int, int, NDArray[np.int64], NDArray[np.float64]]:
    """``(n, size, slice_index, angle_deg)`` of a prepared lesion or pair."""
    first = ref.image if isinstance(ref, LesionSlices) else ref.pre
    return int(first.shape[0]), int(first.shape[1]), ref.slice_index, ref.angle_deg


def sample_like(
    volume: Volume, ref: LesionSlices | LesionPair, *, kind: Literal["mask", "image"]
) -> NDArray[Any]:
    """Put another volume on the pixels of an already prepared lesion or pair.

    Applies ``ref``'s crop box, slices, in-plane resampling and rotations to ``volume`` (on the same grid
    as the lesion's image), without any intensity normalisation. Used to carry ground-truth sub-regions,
    voxel maps (e.g. gradient magnitude) and true drift maps into the frame of the 2-D samples.

    Parameters
    ----------
    volume
        ``(z, y, x)`` volume on the grid of the image ``ref`` was prepared from.
    ref
        The prepared lesion (:class:`LesionSlices`) or pair (:class:`LesionPair`).
    kind
        ``"mask"``: boolean, resampled by area coverage >= 0.5 and rotated like the GTV; ``"image"``: float,
        bilinear, rotated like the image (outside the crop and outside the source image: 0).

    Returns
    -------
    ndarray
        ``(n, size, size)``: bool for masks, float32 for images, in ``ref``'s sample order.
    """
    n, size, slice_index, angle_deg = _frame(ref)
    n_ang = max(1, int(np.sum(slice_index == slice_index[0]))) if n else 1
    angles = angle_deg[:n_ang]
    slices = slice_index[::n_ang] - ref.box[0]
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


# ---------------------------------------------------------------------------------------------- pairs
@dataclass(frozen=True, eq=False)
class LesionPair:
    """The 2-D samples of one lesion at two time points, cut the same way (see :func:`prepare_pair`).

    Samples are ordered slice-major as in :class:`LesionSlices`: for each selected slice (ascending
    ``slice_index``), one sample per angle. Sample ``i`` of every array below shows the same pixels.

    Attributes
    ----------
    pre, post
        ``(n, size, size)`` float32, the first and the later image on ONE intensity scale:
        ``(x - scale[0]) / (scale[1] - scale[0])``, not clipped (values beyond [0, 1] are kept, so a
        brightening is never cut off); pixels rotated in from outside the crop are 0 in both.
    drift
        ``(n, size, size)`` float32, exactly ``post - pre`` (eq. 1 of Part II on the normalised scale; the
        drift in source units is ``drift * (scale[1] - scale[0])``).
    pre_mask, post_mask
        ``(n, size, size)`` bool, the GTV at each time point on the same pixels.
    region
        ``(n, size, size)`` bool, the GTVs of both time points and the drift region (see
        :func:`prepare_pair`): where a prediction of the change is scored.
    slice_index
        ``(n,)`` int64, the source slice of each sample.
    angle_deg
        ``(n,)`` float64, the rotation of each sample in degrees.
    pixel_mm
        In-plane size of one output pixel in mm (as :attr:`LesionSlices.pixel_mm`).
    box
        The source index box ``(z0, z1, y0, y1, x0, x1)``, half-open, shared by both time points.
    scale
        ``(low, high)`` in source intensity units, from the first image alone (see :func:`prepare_pair`).
    drift_threshold
        The ``|post - pre|`` (source units) from which a voxel near the GTVs belongs to the drift region.
    touches_border
        True when either GTV has voxels on a face of the source image (see :attr:`LesionSlices`).
    """

    pre: NDArray[np.float32]
    post: NDArray[np.float32]
    drift: NDArray[np.float32]
    pre_mask: NDArray[np.bool_]
    post_mask: NDArray[np.bool_]
    region: NDArray[np.bool_]
    slice_index: NDArray[np.int64]
    angle_deg: NDArray[np.float64]
    pixel_mm: float
    box: Box
    scale: tuple[float, float]
    drift_threshold: float
    touches_border: bool

    def __post_init__(self) -> None:
        shape = self.pre.shape
        if len(shape) != 3:
            raise ValueError(f"pre must be (n, size, size), got {shape}")
        for name in ("post", "drift", "pre_mask", "post_mask", "region"):
            if getattr(self, name).shape != shape:
                raise ValueError(f"{name} {getattr(self, name).shape} must have pre's shape {shape}")
        n = shape[0]
        if self.slice_index.shape != (n,) or self.angle_deg.shape != (n,):
            raise ValueError(
                f"slice_index {self.slice_index.shape} and angle_deg {self.angle_deg.shape} must be ({n},)"
            )
        if not self.scale[1] > self.scale[0]:
            raise ValueError(f"scale must be (low, high) with high > low, got {self.scale}")

    def __len__(self) -> int:
        """Number of samples ``n``."""
        return int(self.pre.shape[0])

    def unrotated(self) -> LesionPair:
        """The pair restricted to its angle-0 samples (one per slice), e.g. to :func:`paste_back` them."""
        keep = np.flatnonzero(np.mod(self.angle_deg, 360.0) == 0.0)
        arrays = ("pre", "post", "drift", "pre_mask", "post_mask", "region", "slice_index", "angle_deg")
        return dataclasses.replace(self, **{name: getattr(self, name)[keep] for name in arrays})


#: Default of :func:`prepare_pair`'s ``drift_threshold``: a fraction of the first image's robust intensity
#: range near the lesion. Measured on the default simulated cohort (seed 0, first 7 lesions, mri1 -> mri2):
#: at 0.15 the drift region adds at most 8 voxels to the two GTVs and the box grows by at most 2 voxels over
#: the first GTV's box; at 0.10 the image noise of two scans forms pieces of >= 4 voxels next to small
#: lesions and stretches their boxes by up to 7 mm. Real changes of enhancing tissue (lesion vs. white
#: matter, about a quarter of that range) lie well above 0.15.
DRIFT_THRESHOLD: float = 0.15

_NOT_REGISTERED_FIX = (
    "register the later MRI to the first one (rigid registration), resample it and its GTV onto the first "
    "MRI's grid, and list the resampled files in the manifest"
)


def _pair_error(which: str, problem: str) -> InputError:
    fix = next((f for k, f in _FIXES.items() if problem.startswith(k)), None)
    return InputError(f"{_WHICH[which]}: {problem}", field=which, fix=fix)


_WHICH = {"pre": "first image (pre)", "post": "later image (post)"}


def _grid_difference(first: Volume, later: Volume) -> str:
    """How ``later``'s grid differs from ``first``'s, in plain numbers (mm, degrees)."""

    def fmt(values: ArrayLike) -> str:
        return "(" + ", ".join(f"{float(v):.4g}" for v in np.asarray(values, dtype=np.float64).ravel()) + ")"

    if later.shape != first.shape:
        return f"shape {later.shape} (z, y, x) differs from the first's {first.shape}"
    if not np.allclose(later.spacing, first.spacing, atol=1e-3, rtol=0.0):
        return f"spacing {fmt(later.spacing)} mm (z, y, x) differs from the first's {fmt(first.spacing)} mm"
    if not np.allclose(later.origin, first.origin, atol=1e-3, rtol=0.0):
        shift = float(np.linalg.norm(np.subtract(later.origin, first.origin)))
        return (
            f"origin {fmt(later.origin)} mm differs from the first's {fmt(first.origin)} mm "
            f"(a shift of {shift:.4g} mm)"
        )
    cos = np.clip((np.trace(first.direction.T @ later.direction) - 1.0) / 2.0, -1.0, 1.0)
    return f"axes are rotated by {math.degrees(math.acos(float(cos))):.3g} degrees against the first's"


def _finite_in(array: NDArray[Any], box: Box) -> bool:
    z0, z1, y0, y1, x0, x1 = box
    a = array[max(z0, 0) : z1, max(y0, 0) : y1, max(x0, 0) : x1]
    return bool(a.dtype.kind != "f" or np.isfinite(a).all())


def _drift_region(
    pre: NDArray[Any],
    post: NDArray[Any],
    union: NDArray[np.bool_],
    union_box: Box,
    spacing: tuple[float, float, float],
    search_mm: float,
    fraction: float,
    percentiles: tuple[float, float],
) -> tuple[NDArray[np.bool_], float, Box]:
    """The drift region near the GTVs (full-size bool), its threshold (source units) and the search box."""
    shape = union.shape
    pad = [math.ceil(search_mm / s) for s in spacing]
    z0, z1, y0, y1, x0, x1 = union_box
    sb: Box = (
        max(z0 - pad[0], 0),
        min(z1 + pad[0], shape[0]),
        max(y0 - pad[1], 0),
        min(y1 + pad[1], shape[1]),
        max(x0 - pad[2], 0),
        min(x1 + pad[2], shape[2]),
    )
    sl = (slice(sb[0], sb[1]), slice(sb[2], sb[3]), slice(sb[4], sb[5]))
    u = union[sl]
    # Euclidean distance in mm from the GTV union; the search region is the union dilated by search_mm
    search = ndimage.distance_transform_edt(~u, sampling=spacing) <= search_mm + 1e-9
    a = np.asarray(pre[sl], dtype=np.float64)
    b = np.asarray(post[sl], dtype=np.float64)
    lo, hi = np.percentile(a[search], percentiles)
    threshold = fraction * float(hi - lo)
    region = np.zeros(shape, dtype=np.bool_)
    if threshold > 0:
        cand = search & (np.abs(b - a) >= threshold)
        labels, n = ndimage.label(cand, structure=_FACES)
        if n:
            sizes = np.bincount(labels.ravel(), minlength=n + 1)
            keep = sizes >= MIN_SLICE_VOXELS
            keep[0] = False
            region[sl] = keep[labels]
    return region, threshold, sb


# 6-connectivity (voxels sharing a face) for the pieces of the drift region
_FACES = ndimage.generate_binary_structure(3, 1)


def prepare_pair(
    pre_image: Volume,
    pre_mask: Volume,
    post_image: Volume,
    post_mask: Volume,
    config: PreprocessConfig | None = None,
    *,
    drift_threshold: float | None = None,
    reference: Literal["both", "pre"] = "both",
    all_slices: bool = False,
    allow_empty_post: bool = False,
) -> LesionPair:
    """Cut one lesion at two co-registered time points with ONE box, ONE set of slices and ONE scale.

    Part II's pairs: "a bounding box was used to first mask the GTV and drift regions and then rescaled to a
    standard size"; drift = post - pre (eq. 1). The steps:

    1. **Checks** (each an :class:`InputError` whose ``field`` is ``"pre"`` or ``"post"``): the two images
       on one grid (:meth:`Volume.geometry_difference`; otherwise the pair is not co-registered, and the
       message gives the difference and says what to do); each mask on its image's grid; the rules of
       :func:`exclusion_reason` for the first image and GTV; a non-empty later GTV (unless
       ``allow_empty_post``: a follow-up with a complete response); neither GTV on an in-plane edge; finite
       values in both images over the search region and the box; neither image constant over the box.
    2. **Drift region**: the voxels within ``config.margin_mm`` (Euclidean, in mm) of the union of the two
       GTVs where ``|post - pre| >= drift_threshold × (p_high - p_low)``, with ``p_low``, ``p_high`` the
       ``config.percentiles`` of the first image over that same search region (its robust intensity range
       near the lesion); face-connected pieces of fewer than :data:`MIN_SLICE_VOXELS` voxels (noise) are
       dropped. Restricting the search to the neighbourhood of the GTVs keeps a change elsewhere in the head
       (a vessel, a ventricle) from stretching the box.
    3. **Box**: with ``reference="both"`` (the paper's rule), the box of :func:`crop_to_gtv` (square in mm,
       ``config.margin_mm`` on each side) fitted to the union of both GTVs and the drift region; along z the
       slices that hold any of them. With ``reference="pre"``, the box of the first GTV alone, exactly the
       box of :func:`prepare_lesion`: nothing about the crop then depends on the later image, as at
       prediction time for a new lesion (a box fitted to the later GTV is larger for a lesion that grew and
       so tells a model about the outcome). Both images are cut with this box and padded outside the image
       with the same value (the first image's minimum in the box), so the drift is 0 there.
    4. **One intensity scale, from the first image alone**: ``low, high`` = the ``config.normalisation``
       statistics (percentiles or min/max) of the first image's voxels in the box; both images are mapped
       with ``(x - low) / (high - low)`` and are **not clipped** (a brightening beyond the first image's
       range stays visible as drift). Why the first image alone: statistics from both crops would make the
       normalised *first* image depend on the later one (a lesion that brightens would darken its own
       input), which leaks the outcome into the model's input, and they cannot be computed for a new lesion
       that has only its first MRI. Separate scales per image would turn any global change of intensity into
       drift 0 (an artefact of normalisation).
    5. **Slices**: :func:`select_slices` with ``config.n_slices`` on the union of both GTVs (on the first GTV
       with ``reference="pre"``), rotated by ``config.angles_deg`` (Part II: :data:`PART2_ANGLES`); with
       ``all_slices``, every slice of the box at angle 0 only (for predicting and pasting back a whole
       lesion with :func:`paste_back`).
    6. **Resampling**: each slice of both images and masks to ``size × size`` exactly as in
       :func:`prepare_lesion`; drift = post - pre is computed last, on the float32 samples, so it is exactly
       ``post - pre``.

    A lesion that has only its first MRI (prediction): pass the first image and GTV twice; the box, the
    slices and the scale are then those of the first image, the drift is 0.

    Parameters
    ----------
    pre_image, pre_mask
        ``(z, y, x)`` first MRI and its GTV (bool), spacing in mm.
    post_image, post_mask
        ``(z, y, x)`` later MRI (co-registered: on the first image's grid) and its GTV.
    config
        Size, margin, slices, angles, normalisation; ``PreprocessConfig()`` when None. Part II:
        ``PreprocessConfig(n_slices=3, angles_deg=PART2_ANGLES)``.
    drift_threshold
        Fraction (> 0) of the first image's robust range near the lesion from which a change counts as
        drift (step 2); :data:`DRIFT_THRESHOLD` when None.
    reference
        ``"both"`` (box and slices from both time points and the drift region) or ``"pre"`` (from the first
        time point alone).
    all_slices
        Every slice of the box, unrotated, instead of ``n_slices`` representative slices × angles.
    allow_empty_post
        Accept an empty later GTV (a complete response at follow-up).

    Returns
    -------
    LesionPair

    Raises
    ------
    InputError
        See step 1; a bad ``drift_threshold`` or ``reference``.
    """
    cfg = PreprocessConfig() if config is None else config
    frac = DRIFT_THRESHOLD if drift_threshold is None else drift_threshold
    if not (_is_real(frac) and math.isfinite(frac) and frac > 0):
        raise InputError(
            f"drift_threshold must be a finite number > 0 (a fraction of the image's intensity range), "
            f"got {frac!r}",
            field="drift_threshold",
        )
    if reference not in ("both", "pre"):
        raise InputError(f"reference must be 'both' or 'pre', got {reference!r}", field="reference")
    if pre_image.geometry_difference(post_image) is not None:
        raise InputError(
            "the pre and post images are not co-registered: the later image's "
            + _grid_difference(pre_image, post_image)
            + "; the two must share one grid, voxel for voxel",
            field="post",
            fix=_NOT_REGISTERED_FIX,
        )
    reason, gtv_pre = _check(pre_image, pre_mask)
    if reason is not None or gtv_pre is None:
        raise _pair_error("pre", reason or "empty GTV")
    diff = post_image.geometry_difference(post_mask)
    if diff is not None:
        raise _pair_error("post", f"mask and image grids differ ({' '.join(diff.split())})")
    m_pre, m_post = _as_bool(pre_mask), _as_bool(post_mask)
    if _bbox(m_post) is None and not allow_empty_post:
        raise _pair_error("post", "empty GTV (the mask has no voxel inside)")
    union = m_pre | m_post
    # not empty: the union holds the first GTV, checked above
    union_box = cast(Box, _bbox(union))
    ny, nx = pre_image.shape[1:]
    if union_box[2] == 0 or union_box[4] == 0 or union_box[3] == ny or union_box[5] == nx:
        raise _pair_error(
            "post", "GTV on the image border (it reaches the edge of a slice, so it may be cut off)"
        )
    a_pre, a_post = pre_image.array, post_image.array
    spacing = pre_image.spacing
    pad = [math.ceil(cfg.margin_mm / s) for s in spacing]
    search_box: Box = (
        union_box[0] - pad[0],
        union_box[1] + pad[0],
        union_box[2] - pad[1],
        union_box[3] + pad[1],
        union_box[4] - pad[2],
        union_box[5] + pad[2],
    )
    for which, arr in (("pre", a_pre), ("post", a_post)):
        if not _finite_in(arr, search_box):
            raise _pair_error(which, "image has non-finite values (NaN or infinity) near the lesion")
    region, threshold, _ = _drift_region(
        a_pre, a_post, union, union_box, spacing, cfg.margin_mm, float(frac), cfg.percentiles
    )
    if reference == "both":
        fit = cast(Box, _bbox(union | region))
        sel_mask = union
    else:
        fit, sel_mask = gtv_pre, m_pre
    box = _crop_box(fit, spacing, cfg.margin_mm)
    for which, arr in (("pre", a_pre), ("post", a_post)):
        if not _finite_in(arr, box):
            raise _pair_error(which, "image has non-finite values (NaN or infinity) in the lesion box")
    inside = _inside(pre_image.shape, box)
    fill = float(np.min(_cut(a_pre, box, 0)[inside]))
    c_pre = _cut(np.asarray(a_pre, dtype=np.float64), box, fill)
    c_post = _cut(np.asarray(a_post, dtype=np.float64), box, fill)
    low, high = _reference_range(c_pre[inside], cfg.normalisation, cfg.percentiles)
    if not high > low:
        raise _pair_error(
            "pre", f"image is constant over the lesion box (its intensity range there is {low:g} to {high:g})"
        )
    if np.ptp(c_post[inside]) == 0:
        raise _pair_error(
            "post", f"image is constant over the lesion box (every voxel is {c_post[inside][0]:g})"
        )
    if all_slices:
        sel = np.arange(box[1] - box[0], dtype=np.int64)
        angles: tuple[float, ...] = (0.0,)
    else:
        sel = select_slices(_cut(sel_mask, box, False), cfg.n_slices)
        angles = cfg.angles_deg
    k = sel.size
    span = high - low
    imgs = np.concatenate(
        [(c_pre[sel] - low) / span, (c_post[sel] - low) / span, np.zeros((k, *c_pre.shape[1:]))]
    )
    masks = np.concatenate(
        [_cut(m_pre, box, False)[sel], _cut(m_post, box, False)[sel], _cut(union | region, box, False)[sel]]
    )
    img2d = _resample_image_array(imgs, cfg.size, order=1)
    msk2d = _resample_mask_array(masks, cfg.size)
    r_img, r_msk, r_ang = rotate_slices(img2d, msk2d, angles)
    n = k * len(angles)
    pre_s, post_s = r_img[:n], r_img[n : 2 * n]
    return LesionPair(
        pre=pre_s,
        post=post_s,
        drift=post_s - pre_s,
        pre_mask=r_msk[:n],
        post_mask=r_msk[n : 2 * n],
        region=r_msk[2 * n :],
        slice_index=np.repeat(sel + box[0], len(angles)).astype(np.int64),
        angle_deg=r_ang[:n],
        pixel_mm=_pixel_mm(box, spacing, cfg.size),
        box=box,
        scale=(low, high),
        drift_threshold=threshold,
        touches_border=_on_face(union_box, pre_image.shape),
    )


def paste_back(
    maps: ArrayLike,
    ref: LesionSlices | LesionPair,
    like: Volume,
    *,
    kind: Literal["image", "drift", "mask"],
    to_source_units: bool = False,
    fill: float = 0.0,
) -> Volume:
    """Put per-sample 2-D maps back on the grid of the volume a lesion (or pair) was prepared from.

    The inverse of the preprocessing for unrotated samples: each ``(size, size)`` map is resampled to the
    crop box's in-plane size (outer pixel edges aligned, as in :func:`resample_inplane`) and placed on slice
    ``ref.slice_index[i]`` inside ``ref.box``; the parts of the box outside the volume are dropped and every
    other voxel is ``fill`` (False for masks).

    Parameters
    ----------
    maps
        ``(n, size, size)`` finite values, one per sample of ``ref`` in its order (e.g. a model's prediction
        on a pair prepared with ``all_slices=True``).
    ref
        The prepared lesion or pair; every sample must be unrotated (angle 0) and on its own slice.
    like
        A Volume on the grid ``ref`` was prepared from; the output has its shape and geometry.
    kind
        ``"image"`` and ``"drift"``: bilinear interpolation at the box's pixel centres (edge values
        replicated), float32; they differ only in ``to_source_units``. ``"mask"``: a box pixel is inside
        when at least half of its area is covered by inside map pixels (pixels as boxes, the rule of the
        preprocessing's mask resampling), bool.
    to_source_units
        Undo ``ref.scale = (low, high)``: an image becomes ``x * (high - low) + low``, a drift ``x * (high -
        low)`` (a difference has no offset). Not for masks. (A :class:`LesionSlices` image was clipped to
        [0, 1] by the preprocessing: what was clipped stays clipped.)
    fill
        Value of the voxels outside the pasted samples (``"image"`` / ``"drift"``), e.g. ``numpy.nan`` to
        tell "not predicted" from "predicted 0". It is not converted by ``to_source_units``.

    Returns
    -------
    Volume
        ``like``'s shape ``(z, y, x)`` and geometry; float32 (``"image"``, ``"drift"``) or bool (``"mask"``).

    Raises
    ------
    ValueError
        A rotated sample, two samples on one slice, a slice outside ``like``, a shape mismatch, non-finite
        values, an unknown ``kind``, ``to_source_units`` for a mask or without a scale.

    Examples
    --------
    >>> back = paste_back(sample_like(vol, ref, kind="image"), ref, vol, kind="image")   # doctest: +SKIP
    """
    if kind not in ("image", "drift", "mask"):
        raise ValueError(f"kind must be 'image', 'drift' or 'mask', got {kind!r}")
    m = np.asarray(maps)
    n, size, slice_index, angle_deg = _frame(ref)
    if m.shape != (n, size, size):
        raise ValueError(f"maps must have shape ({n}, {size}, {size}) (one per sample of ref), got {m.shape}")
    if m.dtype.kind not in "biuf" or (m.dtype.kind == "f" and not np.all(np.isfinite(m))):
        raise ValueError("maps must hold finite numbers")
    if np.any(np.mod(angle_deg, 360.0) != 0.0):
        raise ValueError(
            "paste_back inverts only unrotated samples; prepare the lesion with angles_deg=(0.0,) "
            f"(got angles {sorted(set(angle_deg.tolist()))})"
        )
    if np.unique(slice_index).size != n:
        raise ValueError("paste_back needs one sample per slice; ref has several samples on one slice")
    scale = ref.scale
    if to_source_units and (kind == "mask" or scale is None):
        raise ValueError("to_source_units needs an image or drift map and a ref with a scale")
    nz, ny, nx = like.shape
    if n and (slice_index.min() < 0 or slice_index.max() >= nz):
        raise ValueError(f"ref's slices {slice_index.tolist()} do not fit a volume of {nz} slices")
    _, _, y0, y1, x0, x1 = ref.box
    h, w = y1 - y0, x1 - x0
    out: NDArray[Any]
    if kind == "mask":
        block: NDArray[Any] = (
            _coverage_matrix(size, h) @ (m != 0).astype(np.float64) @ _coverage_matrix(size, w).T
        )
        block = block >= _HALF
        out = np.zeros(like.shape, dtype=np.bool_)
    else:
        # output pixel q (edges aligned) has its centre at input coordinate (q + 0.5) * size / h - 0.5
        zoom = np.array([1.0, size / h, size / w])
        offset = np.array([0.0, 0.5 * zoom[1] - 0.5, 0.5 * zoom[2] - 0.5])
        block = ndimage.affine_transform(
            np.asarray(m, dtype=np.float64),
            zoom,
            offset=offset,
            output_shape=(n, h, w),
            order=1,
            mode="nearest",
        )
        if to_source_units and scale is not None:
            block = block * (scale[1] - scale[0]) + (scale[0] if kind == "image" else 0.0)
        block = block.astype(np.float32)
        out = np.full(like.shape, fill, dtype=np.float32)
    # the box may reach outside the volume (padding in the preprocessing): keep the part inside
    ly, hy = max(y0, 0), min(y1, ny)
    lx, hx = max(x0, 0), min(x1, nx)
    if hy > ly and hx > lx:
        for i, k in enumerate(slice_index.tolist()):
            out[k, ly:hy, lx:hx] = block[i, ly - y0 : hy - y0, lx - x0 : hx - x0]
    return like.with_array(out)
