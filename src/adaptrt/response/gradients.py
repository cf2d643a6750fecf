"""Gradient features of one GTV: gradient magnitude and radial gradient in the lesion core and margin.

Part I's second comparison model (ref. [9] of the paper, after Tunali et al. 2017): "gradient magnitude
quantifies the rate of intensity change at each voxel ... Radial gradient measures the alignment of the
gradient vector with the radial direction from the center of mass to the voxel", summarised "for both core
and margin". Everything here is in 3-D and in millimetres, so the numbers do not depend on the voxel size or
on the grid's anisotropy.

Definitions
-----------
Smoothing
    With ``smoothing_mm > 0`` the image is first smoothed by a Gaussian of that standard deviation in mm
    (``sigma = smoothing_mm / spacing`` voxels per axis, ``mode="nearest"``). Differentiation amplifies
    noise; the default 1 mm (about one voxel of a 1 mm MRI) removes most of it and barely widens a sharp
    edge, which the 2-3 mm shells below still resolve. ``0`` disables it.
Gradient ``g``
    ``numpy.gradient`` with the voxel spacing in mm: central differences inside the image, one-sided ones on
    its faces; intensity units per mm, one component per array axis. The array axes are orthonormal in the
    world (:class:`~adaptrt.types.Volume`'s direction is orthonormal), so lengths and dot products computed
    in the array frame are the world's.
Gradient magnitude (``magnitude``)
    ``|g|``, intensity/mm, >= 0.
Radial gradient (``radial``)
    ``g . r_hat`` with ``r_hat`` the unit vector from the GTV's centre of mass (the unweighted centroid of its
    voxel centres, in mm) to the voxel: signed, intensity/mm; > 0 where intensity rises outward (a bright
    rim seen from inside), < 0 where it falls outward (the edge of an enhancing lesion on darker brain). For
    ``I = f(r)`` it is ``f'(r)``. Set to 0 at a voxel whose centre is the centroid (``r_hat`` undefined).
Radial deviation (``deviation``)
    The angle in degrees between the gradient's line and the radial line, ``arccos(|g . r_hat| / |g|)``, in
    [0, 90]: 0 when the intensity changes purely radially (inward or outward: the sign is the radial
    gradient's), 90 when it changes along the surface. Undefined (NaN, left out of the summaries) where
    ``|g| = 0`` or at the centroid.

Regions (:func:`gradient_regions`)
----------------------------------
Distances are Euclidean, in mm, between voxel centres (``scipy.ndimage.distance_transform_edt`` with
``sampling = spacing``): ``depth`` of a GTV voxel = distance to the nearest voxel outside the GTV (the first
layer inside the boundary has depth = one spacing), ``distance`` of an outside voxel = distance to the
nearest GTV voxel. The array's faces count as "outside" for the depth (a GTV cut by the image edge ends
there).

* ``core``: GTV voxels with ``depth > core_margin_mm`` (the GTV eroded by ``core_margin_mm``; the whole GTV
  when it is 0). On a 1 mm grid the default 2 mm removes two voxel layers.
* ``shell_inner``: GTV voxels with ``depth <= shell_inner_mm`` (the band just inside the boundary).
* ``shell_outer``: voxels outside the GTV with ``distance <= shell_outer_mm`` (the band just outside; it
  holds peritumoral oedema or brain, and is cut where it leaves the image).
* ``margin`` = ``shell_inner | shell_outer``: the band straddling the boundary, about
  ``shell_inner_mm + shell_outer_mm`` thick, where the edge of the lesion is.

With the defaults (2 mm, 2 mm, 3 mm) ``core`` and ``shell_inner`` partition the GTV. A small GTV may have an
empty core: its core summaries are NaN (imputed downstream inside each training split).

Features (:func:`gradient_features`)
------------------------------------
For each map (``magnitude``, ``radial``, ``deviation``) and region (``core``, ``margin``): ``mean``,
``std`` (population, ``ddof=0``), percentiles ``p10``, ``p50``, ``p90`` (linear interpolation) and
``skewness`` (the population moment ratio ``m3 / m2**1.5``; 0 for a constant region), named
``"<map>_<region>_<stat>"``, e.g. ``magnitude_margin_mean``: 36 features. Only a crop around the GTV plus the
outer shell and the smoothing's reach is processed, which gives the same values as the full image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import InputError
from ..types import Volume
from ..validation import is_real as _is_real

__all__ = [
    "MAPS",
    "REGIONS",
    "STATS",
    "GradientConfig",
    "gradient_feature_names",
    "gradient_features",
    "gradient_maps",
    "gradient_regions",
    "radial_deviation",
]

#: Maps summarised by :func:`gradient_features`.
MAPS: tuple[str, ...] = ("magnitude", "radial", "deviation")
#: Regions summarised by :func:`gradient_features` (see :func:`gradient_regions` for all regions).
REGIONS: tuple[str, ...] = ("core", "margin")
#: Summary statistics of each map in each region.
STATS: tuple[str, ...] = ("mean", "std", "p10", "p50", "p90", "skewness")

_GAUSS_TRUNCATE = 4.0  # scipy's default: the kernel reaches 4 sigma
_CENTRE_EPS_MM = 1e-9


@dataclass(frozen=True)
class GradientConfig:
    """Settings of the gradient features, in mm. Every field is validated on construction.

    Attributes
    ----------
    core_margin_mm
        Erosion of the GTV that defines the core (>= 0).
    shell_inner_mm
        Width of the margin band inside the GTV boundary (>= 0).
    shell_outer_mm
        Width of the margin band outside the GTV boundary (>= 0); ``shell_inner_mm + shell_outer_mm > 0``.
    smoothing_mm
        Standard deviation in mm of the Gaussian applied before differentiation (>= 0; 0 = none).

    Examples
    --------
    >>> GradientConfig(smoothing_mm=0).smoothing_mm
    0.0
    """

    core_margin_mm: float = 2.0
    shell_inner_mm: float = 2.0
    shell_outer_mm: float = 3.0
    smoothing_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("core_margin_mm", "shell_inner_mm", "shell_outer_mm", "smoothing_mm"):
            value = getattr(self, name)
            if not (_is_real(value) and math.isfinite(value) and value >= 0):
                raise InputError(
                    f"GradientConfig.{name} must be a finite number of mm >= 0, got {value!r}",
                    field=name,
                    fix=f"set {name} to a distance in mm, e.g. 2",
                )
            object.__setattr__(self, name, float(value))
        if self.shell_inner_mm + self.shell_outer_mm <= 0:
            raise InputError(
                "the margin shell is empty: shell_inner_mm and shell_outer_mm are both 0",
                field="shell_outer_mm",
                fix="give the shell a width, e.g. shell_inner_mm = 2 and shell_outer_mm = 3",
            )


# ---------------------------------------------------------------------------------------------- helpers
def _checked_mask(image: Volume, mask: Volume) -> NDArray[np.bool_]:
    diff = image.geometry_difference(mask)
    if diff is not None:
        raise InputError(
            f"the GTV mask is not on the image's grid: {diff}",
            field="mask",
            fix="resample the mask onto the image grid (e.g. rasterise the RTSTRUCT on the image series)",
        )
    m = mask.array if mask.is_mask else mask.array != 0
    if not m.any():
        raise InputError("the GTV mask is empty", field="mask", fix="check the GTV contour and its ROI name")
    return np.asarray(m, dtype=bool)


def _centroid_mm(mask: NDArray[np.bool_], spacing: tuple[float, float, float]) -> NDArray[np.float64]:
    """Centroid of the mask's voxel centres in array-frame mm ``(z, y, x)``."""
    idx = np.argwhere(mask).astype(np.float64)
    return idx.mean(axis=0) * np.asarray(spacing)


def _maps_arrays(
    image: NDArray[Any], mask: NDArray[np.bool_], spacing: tuple[float, float, float], smoothing_mm: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Magnitude, radial gradient and radial deviation (degrees, NaN where undefined) on one array."""
    img = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(img)):
        raise InputError(
            "the image has non-finite values (NaN or inf) near the GTV",
            field="image",
            fix="check the image file; replace missing values before extracting features",
        )
    if smoothing_mm > 0:
        sigma = [smoothing_mm / s for s in spacing]
        img = ndimage.gaussian_filter(img, sigma=sigma, mode="nearest", truncate=_GAUSS_TRUNCATE)
    # np.gradient needs >= 2 samples along an axis; a 1-voxel-thick axis has no derivative along it
    grads = [
        np.gradient(img, spacing[a], axis=a) if img.shape[a] > 1 else np.zeros_like(img) for a in range(3)
    ]
    magnitude = np.sqrt(grads[0] ** 2 + grads[1] ** 2 + grads[2] ** 2)

    centre = _centroid_mm(mask, spacing)
    coords = [(np.arange(n, dtype=np.float64) * spacing[a] - centre[a]) for a, n in enumerate(img.shape)]
    rz, ry, rx = coords[0][:, None, None], coords[1][None, :, None], coords[2][None, None, :]
    r = np.sqrt(rz**2 + ry**2 + rx**2)
    at_centre = r < _CENTRE_EPS_MM
    inv_r = np.where(at_centre, 0.0, 1.0 / np.where(at_centre, 1.0, r))
    radial = (grads[0] * rz + grads[1] * ry + grads[2] * rx) * inv_r
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.abs(radial) / magnitude
    deviation = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    deviation[(magnitude == 0) | at_centre] = np.nan
    return magnitude, radial, deviation


def _regions_arrays(
    mask: NDArray[np.bool_], spacing: tuple[float, float, float], config: GradientConfig
) -> dict[str, NDArray[np.bool_]]:
    # one voxel of "outside" around the array so that a GTV touching the array's face ends there
    padded = np.pad(mask, 1, constant_values=False)
    depth = ndimage.distance_transform_edt(padded, sampling=spacing)[1:-1, 1:-1, 1:-1]
    distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    tol = 1e-6  # distances of exactly shell width (k * spacing) belong to the shell
    core = mask & (depth > config.core_margin_mm + tol)
    inner = mask & (depth <= config.shell_inner_mm + tol)
    outer = ~mask & (distance <= config.shell_outer_mm + tol)
    return {"core": core, "shell_inner": inner, "shell_outer": outer, "margin": inner | outer}


def _crop_box(
    mask: NDArray[np.bool_], spacing: tuple[float, float, float], config: GradientConfig
) -> tuple[slice, slice, slice]:
    idx = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    box = []
    for a in range(3):
        # the outer shell, plus the Gaussian's reach, plus one voxel for the central difference, plus one spare
        reach = math.ceil(config.shell_outer_mm / spacing[a] + 1e-9)
        reach += int(_GAUSS_TRUNCATE * config.smoothing_mm / spacing[a] + 0.5) + 2
        box.append(slice(max(int(idx[a][0]) - reach, 0), min(int(idx[a][-1]) + 1 + reach, mask.shape[a])))
    return (box[0], box[1], box[2])


def _summary(values: NDArray[np.float64]) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return dict.fromkeys(STATS, math.nan)
    mean = float(v.mean())
    centred = v - mean
    m2 = float(np.mean(centred**2))
    # a region of (numerically) constant values has no asymmetry: skewness 0 rather than 0/0
    scale = max(abs(mean), float(np.max(np.abs(v))), 1e-300)
    skew = 0.0 if m2 <= (1e-12 * scale) ** 2 else float(np.mean(centred**3)) / m2**1.5
    p10, p50, p90 = (float(p) for p in np.percentile(v, [10.0, 50.0, 90.0]))
    return {"mean": mean, "std": math.sqrt(m2), "p10": p10, "p50": p50, "p90": p90, "skewness": skew}


# ---------------------------------------------------------------------------------------------- public
def radial_deviation(image: Volume, mask: Volume, config: GradientConfig | None = None) -> Volume:
    """Radial deviation map: angle in degrees in [0, 90] between the gradient and the radial line.

    NaN where the gradient is 0 or at the centroid; see the module docstring. Same geometry as ``image``.
    """
    cfg = config or GradientConfig()
    m = _checked_mask(image, mask)
    _, _, dev = _maps_arrays(image.array, m, image.spacing, cfg.smoothing_mm)
    return image.with_array(dev)


def gradient_maps(image: Volume, mask: Volume, config: GradientConfig | None = None) -> tuple[Volume, Volume]:
    """Gradient magnitude and radial gradient of ``image`` over its whole grid.

    Parameters
    ----------
    image
        The MR image, array ``(z, y, x)``, finite.
    mask
        The GTV on the same grid (boolean, or integers with non-zero inside); only its centroid is used.
    config
        ``smoothing_mm`` is used; ``GradientConfig()`` when None.

    Returns
    -------
    magnitude, radial
        Float64 volumes on ``image``'s grid: ``|grad I|`` (intensity/mm, >= 0) and ``grad I . r_hat``
        (intensity/mm, signed; 0 at the centroid). See the module docstring.

    Raises
    ------
    InputError
        When the mask is on another grid or empty, or the image has non-finite values.
    """
    cfg = config or GradientConfig()
    m = _checked_mask(image, mask)
    mag, rad, _ = _maps_arrays(image.array, m, image.spacing, cfg.smoothing_mm)
    return image.with_array(mag), image.with_array(rad)


def gradient_regions(mask: Volume, config: GradientConfig | None = None) -> dict[str, Volume]:
    """The GTV's ``core``, ``shell_inner``, ``shell_outer`` and ``margin`` as boolean volumes (mm rules above).

    Parameters
    ----------
    mask
        The GTV (boolean, or integers with non-zero inside), array ``(z, y, x)``.
    config
        ``core_margin_mm``, ``shell_inner_mm`` and ``shell_outer_mm`` are used; ``GradientConfig()`` when
        None.
    """
    cfg = config or GradientConfig()
    m = np.asarray(mask.array if mask.is_mask else mask.array != 0, dtype=bool)
    return {k: mask.with_array(v) for k, v in _regions_arrays(m, mask.spacing, cfg).items()}


def gradient_feature_names() -> tuple[str, ...]:
    """The 36 names returned by :func:`gradient_features`, in its order (``"<map>_<region>_<stat>"``)."""
    return tuple(f"{mp}_{rg}_{st}" for mp in MAPS for rg in REGIONS for st in STATS)


def gradient_features(image: Volume, mask: Volume, config: GradientConfig | None = None) -> dict[str, float]:
    """Summaries of the gradient magnitude, radial gradient and radial deviation in the GTV core and margin.

    Parameters
    ----------
    image
        The MR image, array ``(z, y, x)``, finite near the GTV.
    mask
        The GTV on the same grid (boolean, or integers with non-zero inside).
    config
        Region widths and smoothing; ``GradientConfig()`` when None.

    Returns
    -------
    dict[str, float]
        The keys of :func:`gradient_feature_names`; magnitudes and radial gradients in intensity/mm,
        deviations in degrees. NaN for the summaries of an empty region (e.g. the core of a small GTV).

    Raises
    ------
    InputError
        When the mask is on another grid or empty, or the image has non-finite values near the GTV.

    Examples
    --------
    >>> f = gradient_features(image, gtv)  # doctest: +SKIP
    >>> f["magnitude_margin_mean"], f["radial_margin_p50"]  # doctest: +SKIP
    """
    cfg = config or GradientConfig()
    m = _checked_mask(image, mask)
    box = _crop_box(m, image.spacing, cfg)
    mc = m[box]
    maps = dict(zip(MAPS, _maps_arrays(image.array[box], mc, image.spacing, cfg.smoothing_mm), strict=True))
    regions = _regions_arrays(mc, image.spacing, cfg)
    out: dict[str, float] = {}
    for mp in MAPS:
        for rg in REGIONS:
            for st, value in _summary(maps[mp][regions[rg]]).items():
                out[f"{mp}_{rg}_{st}"] = value
    return out
