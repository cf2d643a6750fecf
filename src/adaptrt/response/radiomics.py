"""Standard radiomics of one GTV with PyRadiomics (Part I's first comparison model, ref. [8] of the paper).

Part I compares its CNN with "standard radiomics" from the GTV on the first MRI: first-order statistics,
texture matrices (GLCM, GLSZM, GLRLM, GLDM, NGTDM) and shape, on the original image and on its wavelet
decompositions; the two top features named by the paper are the first-order **kurtosis** and the GLSZM
**low gray-level zone emphasis** (LGLZE). This module wraps PyRadiomics (the ``pyradiomics-bhklab``
distribution, module ``radiomics``) and returns one flat ``{name: value}`` dict per lesion, with
PyRadiomics' own names, ``<image type>_<class>_<feature>``, e.g. ``original_firstorder_Kurtosis``,
``original_glszm_LowGrayLevelZoneEmphasis``, ``wavelet-LHL_glcm_Correlation``, ``original_shape_VoxelVolume``.

Processing of one lesion (:func:`radiomics_features`)
-----------------------------------------------------
1. The mask must lie on the image's grid (:meth:`Volume.same_geometry`) and hold at least one voxel.
2. ``normalize=True``: intensities become ``scale * (I - mean) / SD`` with mean and SD (``ddof=0``) over the
   **whole input image**, which is what PyRadiomics' own ``normalize`` setting does; it is done here, on the
   full image, before the crop of step 3, so that the crop does not change the statistics. MR intensities
   are in arbitrary units; without normalisation a fixed ``bin_width`` means different things on different
   scanners. The defaults (``normalize_scale=100``, ``bin_width=5``, a shift of 300 for the first-order
   energy features) are those of PyRadiomics' example settings for MR.
3. The image and mask are cropped to the GTV's bounding box plus a margin of at least 8 voxels (and 8 voxels
   of the resampled grid), enough for the wavelet filter (coif1, one level) to see no crop edge inside the
   GTV, and handed to PyRadiomics as SimpleITK images with their spacing, origin and direction
   (:func:`volume_to_sitk`).
4. PyRadiomics resamples (when ``resampled_spacing_mm`` is set: B-spline image, nearest-neighbour mask),
   discretises with a fixed ``bin_width`` and computes the enabled classes on the original image and, with
   ``wavelet=True``, on the 8 decompositions (LLH ... HHH, LLL) of one level of the stationary coif1
   wavelet transform. Shape features are computed once, from the mask.

Small GTVs
----------
PyRadiomics computes every class for any mask of two or more voxels (``minimumROIDimensions=1`` is set so
that a GTV one voxel thick in two directions is accepted); on a handful of voxels the texture values are
numbers with little meaning, and a feature whose computation fails or divides by zero (e.g. the robust
mean absolute deviation of 2 voxels) is ``NaN``. A GTV with fewer than ``label_min_voxels`` voxels (default
5), or one that resampling shrinks to a single voxel, gets **every feature NaN**, with the same keys as any
other lesion (:func:`radiomics_feature_names`), so that a cohort table stays aligned; the median imputer of
:func:`adaptrt.response.features.feature_model` then fills them inside each training split. An empty GTV
is an :class:`~adaptrt.errors.InputError`.

Side effects, all undone on return
----------------------------------
PyRadiomics logs INFO and WARNING messages for every lesion: the ``radiomics`` logger is set to ERROR for
the duration of the call (a failed feature is still logged) and restored after, and numpy's
``RuntimeWarning`` (0/0 in degenerate texture matrices) is silenced inside the call only. BLAS is limited to
one thread inside the call (:mod:`threadpoolctl`): GLCM's maximal correlation coefficient takes the
eigenvalues of one small matrix per direction, and multi-threaded BLAS made a whole extraction 3-4× slower. No
other logging or global configuration is touched (in particular not SimpleITK's global tolerances).

Cost
----
The texture matrices, GLCM's maximal correlation coefficient above all, grow with the cube of the number of
grey-level bins in the GTV: on one core, about 0.2 s per image for 128 bins, 1 s for 256, 8 s for 512 and
70 s for 1024. ``wavelet=True`` repeats the non-shape classes on 8 more images (and the LLL band spans
about 2.8 times the original range), so it costs roughly 10 times more. A GTV spanning more than
``max_bins`` bins (default 300) is refused with an :class:`~adaptrt.errors.InputError` that suggests a
bin width, rather than left to run for minutes. With the default normalisation a whole-head T1 image
(air and tissue, SD in the hundreds) puts a contrast-enhancing metastasis in some 30-130 bins.

Measured on one core for a synthetic 256 × 256 × 160 head at 1 mm (air, textured brain, an enhancing
spherical lesion; 80-100 bins): 0.1-0.2 s per lesion without wavelet and 0.8 s (1 cm³), 1.2 s (5 cm³),
1.9 s (20 cm³) with wavelet (107 and 851 features), the whole-image normalisation included.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..types import Volume
from ..validation import bad_parameter
from ..validation import is_real as _is_real

__all__ = [
    "FEATURE_CLASSES",
    "RadiomicsConfig",
    "radiomics_feature_names",
    "radiomics_features",
    "volume_to_sitk",
]

#: The PyRadiomics feature classes this module can compute (3-D only; ``shape2D`` is not offered).
FEATURE_CLASSES: tuple[str, ...] = ("firstorder", "glcm", "glszm", "glrlm", "gldm", "ngtdm", "shape")

# Crop margin around the GTV, in voxels of the original and of the resampled grid: the coif1 filter has 6
# taps, so 8 voxels keep the wavelet's circular padding away from every GTV voxel.
_CROP_MARGIN_VOXELS = 8
_MIN_ROI_VOXELS = 2  # PyRadiomics refuses a single voxel
# Messages of PyRadiomics' mask check (imageoperations.checkMask) that mean "too small after resampling".
_MASK_CHECK_MESSAGES = ("single voxel", "1 segmented voxel", "not present in mask", "too few dimensions")


@dataclass(frozen=True)
class RadiomicsConfig:
    """Settings of :func:`radiomics_features`. Every field is validated on construction.

    Attributes
    ----------
    bin_width
        Width of a grey-level bin (PyRadiomics ``binWidth``), in normalised units when ``normalize`` is True
        (``normalize_scale`` units per image SD), else in image units; > 0. The default, 5 on a scale of 100,
        gives 30-130 bins over a typical enhancing metastasis, as PyRadiomics recommends.
    wavelet
        Also compute every non-shape class on the 8 decompositions of a one-level coif1 wavelet transform.
    resampled_spacing_mm
        ``(z, y, x)`` spacing in mm to resample to before extraction, or None to keep the image's grid. A
        value of 0 keeps the original spacing along that axis (PyRadiomics' convention).
    classes
        Feature classes, a non-empty subset of :data:`FEATURE_CLASSES` without repeats.
    normalize
        z-score the image over all its voxels before extraction (see the module docstring).
    normalize_scale
        Factor applied after the z-score (PyRadiomics ``normalizeScale``); > 0.
    label_min_voxels
        GTVs with fewer voxels get every feature NaN (int >= 2; PyRadiomics cannot use a single voxel).
    max_bins
        Refuse a GTV whose intensities span more grey-level bins than this (int >= 2), see "Cost" in the
        module docstring: the cost of the texture matrices grows with the cube of the number of bins.

    Examples
    --------
    >>> RadiomicsConfig(wavelet=False).classes[:2]
    ('firstorder', 'glcm')
    """

    bin_width: float = 5.0
    wavelet: bool = True
    resampled_spacing_mm: tuple[float, float, float] | None = None
    classes: tuple[str, ...] = FEATURE_CLASSES
    normalize: bool = True
    normalize_scale: float = 100.0
    label_min_voxels: int = 5
    max_bins: int = 300

    def __post_init__(self) -> None:
        if not (_is_real(self.bin_width) and math.isfinite(self.bin_width) and self.bin_width > 0):
            raise bad_parameter("RadiomicsConfig", "bin_width", "a finite number > 0", self.bin_width)
        if not isinstance(self.wavelet, bool):
            raise bad_parameter("RadiomicsConfig", "wavelet", "true or false", self.wavelet)
        if not isinstance(self.normalize, bool):
            raise bad_parameter("RadiomicsConfig", "normalize", "true or false", self.normalize)
        sp = self.resampled_spacing_mm
        if sp is not None:
            if not (
                isinstance(sp, tuple | list)
                and len(sp) == 3
                and all(_is_real(s) and math.isfinite(s) and s >= 0 for s in sp)
                and any(s > 0 for s in sp)
            ):
                raise bad_parameter(
                    "RadiomicsConfig",
                    "resampled_spacing_mm",
                    "None or three spacings (z, y, x) in mm, >= 0",
                    sp,
                )
            object.__setattr__(self, "resampled_spacing_mm", tuple(float(s) for s in sp))
        cl = self.classes
        if (
            not isinstance(cl, tuple | list)
            or len(cl) == 0
            or not all(isinstance(c, str) and c in FEATURE_CLASSES for c in cl)
            or len(set(cl)) != len(cl)
        ):
            raise bad_parameter(
                "RadiomicsConfig",
                "classes",
                f"a non-empty list of distinct names from {list(FEATURE_CLASSES)}",
                cl,
            )
        object.__setattr__(self, "classes", tuple(cl))
        sc = self.normalize_scale
        if not (_is_real(sc) and math.isfinite(sc) and sc > 0):
            raise bad_parameter("RadiomicsConfig", "normalize_scale", "a finite number > 0", sc)
        mv = self.label_min_voxels
        if not (isinstance(mv, int | np.integer) and not isinstance(mv, bool) and mv >= _MIN_ROI_VOXELS):
            raise bad_parameter("RadiomicsConfig", "label_min_voxels", f"an integer >= {_MIN_ROI_VOXELS}", mv)
        nb = self.max_bins
        if not (isinstance(nb, int | np.integer) and not isinstance(nb, bool) and nb >= 2):
            raise bad_parameter("RadiomicsConfig", "max_bins", "an integer >= 2", nb)
        object.__setattr__(self, "max_bins", int(nb))
        object.__setattr__(self, "bin_width", float(self.bin_width))
        object.__setattr__(self, "normalize_scale", float(sc))
        object.__setattr__(self, "label_min_voxels", int(mv))


# ---------------------------------------------------------------------------------------------- helpers
def volume_to_sitk(volume: Volume) -> Any:
    """Convert a :class:`~adaptrt.types.Volume` to a ``SimpleITK.Image`` with the same geometry.

    SimpleITK indexes images ``(x, y, z)`` = array axes ``(2, 1, 0)``: the spacing is reversed, the origin
    (already LPS ``(x, y, z)`` mm, as in SimpleITK) is kept, and the direction's columns are reversed so that
    SimpleITK's column ``d`` is the world vector of its index axis ``d``. Boolean masks become ``uint8``
    labels (1 inside).

    Parameters
    ----------
    volume
        Image or mask, array ``(z, y, x)``.

    Returns
    -------
    SimpleITK.Image
        ``GetSize() == volume.shape[::-1]``; ``TransformIndexToPhysicalPoint((i, j, k))`` equals
        ``volume.index_to_world((k, j, i))``.
    """
    import SimpleITK as sitk

    arr = volume.array.astype(np.uint8) if volume.is_mask else volume.array
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    img.SetOrigin(tuple(float(o) for o in volume.origin))
    img.SetDirection(tuple(float(d) for d in volume.direction[:, ::-1].ravel()))
    return img


def _image_type_names(config: RadiomicsConfig) -> list[str]:
    names = ["original"]
    if config.wavelet:
        # the order in which PyRadiomics yields the decompositions of a 3-D image: the 7 detail bands, then LLL
        bands = ["".join(b) for b in itertools.product("LH", repeat=3)]
        names += [f"wavelet-{b}" for b in bands if b != "LLL"] + ["wavelet-LLL"]
    return names


def radiomics_feature_names(config: RadiomicsConfig | None = None) -> tuple[str, ...]:
    """Names of the features :func:`radiomics_features` returns for ``config``, in its order.

    Enumerated from PyRadiomics' feature classes (its non-deprecated features, which are the ones it
    computes by default), without computing anything: 107 names for the seven classes on the original
    image, 851 with the wavelet decompositions.
    """
    from radiomics import getFeatureClasses

    cfg = config or RadiomicsConfig()
    classes = getFeatureClasses()
    out: list[str] = []
    if "shape" in cfg.classes:
        out += [f"original_shape_{f}" for f in _enabled(classes["shape"])]
    for image_type in _image_type_names(cfg):
        for cls in cfg.classes:
            if cls != "shape":
                out += [f"{image_type}_{cls}_{f}" for f in _enabled(classes[cls])]
    return tuple(out)


def _enabled(feature_class: Any) -> list[str]:
    return [name for name, deprecated in feature_class.getFeatureNames().items() if not deprecated]


@contextlib.contextmanager
def _quiet_radiomics() -> Iterator[None]:
    """Mute PyRadiomics' INFO/WARNING chatter and numpy's 0/0 warnings; limit BLAS to one thread."""
    from threadpoolctl import threadpool_limits

    logger = logging.getLogger("radiomics")
    old_level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
            threadpool_limits(limits=1, user_api="blas"),
        ):
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        logger.setLevel(old_level)


def _crop_box(
    mask: NDArray[np.bool_], spacing: tuple[float, float, float], target: tuple[float, float, float] | None
) -> tuple[slice, slice, slice]:
    idx = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    box = []
    for a in range(3):
        step = spacing[a] if target is None or target[a] <= 0 else max(spacing[a], target[a])
        pad = math.ceil(_CROP_MARGIN_VOXELS * step / spacing[a] - 1e-9)
        box.append(slice(max(int(idx[a][0]) - pad, 0), min(int(idx[a][-1]) + 1 + pad, mask.shape[a])))
    return (box[0], box[1], box[2])


def _nan_features(config: RadiomicsConfig) -> dict[str, float]:
    return dict.fromkeys(radiomics_feature_names(config), math.nan)


def _extractor(config: RadiomicsConfig) -> Any:
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    settings: dict[str, Any] = {
        "binWidth": config.bin_width,
        "normalize": False,  # done on the full image by radiomics_features, before the crop
        "additionalInfo": False,
        "minimumROIDimensions": 1,
        "preCrop": True,
        "padDistance": _CROP_MARGIN_VOXELS,
        "label": 1,
        "voxelArrayShift": 3.0 * config.normalize_scale if config.normalize else 0.0,
    }
    if config.resampled_spacing_mm is not None:
        settings["resampledPixelSpacing"] = list(config.resampled_spacing_mm[::-1])
        settings["interpolator"] = "sitkBSpline"
    with _quiet_radiomics():
        ex = RadiomicsFeatureExtractor(**settings)
        ex.disableAllFeatures()
        for cls in config.classes:
            ex.enableFeatureClassByName(cls)
        ex.disableAllImageTypes()
        ex.enableImageTypeByName("Original")
        if config.wavelet:
            ex.enableImageTypeByName("Wavelet")
    return ex


# ---------------------------------------------------------------------------------------------- public
def radiomics_features(
    image: Volume, mask: Volume, config: RadiomicsConfig | None = None
) -> dict[str, float]:
    """PyRadiomics features of one GTV (see the module docstring for every step).

    Parameters
    ----------
    image
        The MR image, array ``(z, y, x)``, finite values in the GTV's neighbourhood.
    mask
        The GTV on the same grid: a boolean array, or integers where non-zero is inside.
    config
        Settings; ``RadiomicsConfig()`` when None.

    Returns
    -------
    dict[str, float]
        ``{"<image type>_<class>_<feature>": value}`` with exactly the keys of
        :func:`radiomics_feature_names` (shape features in mm / mm² / mm³). Values that could not be
        computed, and every value of a GTV smaller than ``config.label_min_voxels``, are NaN.

    Raises
    ------
    InputError
        When the mask is on another grid or empty, when the image has non-finite values near the GTV, when
        ``normalize`` is set and the image is constant, or when the GTV spans more than
        ``config.max_bins`` grey-level bins.

    Examples
    --------
    >>> f = radiomics_features(image, gtv, RadiomicsConfig(wavelet=False))  # doctest: +SKIP
    >>> f["original_firstorder_Kurtosis"], f["original_glszm_LowGrayLevelZoneEmphasis"]  # doctest: +SKIP
    """
    cfg = config or RadiomicsConfig()
    diff = image.geometry_difference(mask)
    if diff is not None:
        raise InputError(
            f"the GTV mask is not on the image's grid: {diff}",
            field="mask",
            fix="resample the mask onto the image grid (e.g. rasterise the RTSTRUCT on the image series)",
        )
    m = mask.array if mask.is_mask else mask.array != 0
    n_vox = int(np.count_nonzero(m))
    if n_vox == 0:
        raise InputError("the GTV mask is empty", field="mask", fix="check the GTV contour and its ROI name")
    if n_vox < cfg.label_min_voxels:
        return _nan_features(cfg)

    box = _crop_box(m, image.spacing, cfg.resampled_spacing_mm)
    crop = np.asarray(image.array[box], dtype=np.float64)
    if not np.all(np.isfinite(crop)):
        raise InputError(
            "the image has non-finite values (NaN or inf) near the GTV",
            field="image",
            fix="check the image file; replace missing values before extracting features",
        )
    if cfg.normalize:
        full = np.asarray(image.array, dtype=np.float64)
        mean, sd = float(np.mean(full)), float(np.std(full))
        if not (math.isfinite(sd) and sd > 0):
            raise InputError(
                f"the image is constant or not finite (mean {mean:g}, SD {sd:g}) and cannot be normalised",
                field="image",
                fix="check the image file, or set normalize to false",
            )
        crop = cfg.normalize_scale * (crop - mean) / sd
    gtv_values = crop[m[box]]
    n_bins = int(np.floor(gtv_values.max() / cfg.bin_width) - np.floor(gtv_values.min() / cfg.bin_width)) + 1
    if n_bins > cfg.max_bins:
        suggested = float(gtv_values.max() - gtv_values.min()) / 64.0
        raise InputError(
            f"the GTV's intensities span {n_bins} grey-level bins of width {cfg.bin_width:g} "
            f"(more than max_bins = {cfg.max_bins}); the texture matrices would take minutes per lesion",
            field="bin_width",
            fix=f"raise bin_width (e.g. to {suggested:.3g} for about 64 bins) for the whole cohort"
            + (
                "; with normalize the bins are in image SDs x normalize_scale, so an image of low overall "
                "contrast (e.g. skull-stripped and tightly cropped) needs a larger bin_width"
                if cfg.normalize
                else ""
            ),
        )
    o = image.index_to_world([b.start for b in box])
    origin = (float(o[0]), float(o[1]), float(o[2]))
    sitk_image = volume_to_sitk(Volume(crop.astype(np.float32), image.spacing, origin, image.direction))
    sitk_mask = volume_to_sitk(Volume(m[box], image.spacing, origin, image.direction))

    extractor = _extractor(cfg)
    try:
        with _quiet_radiomics():
            raw = extractor.execute(sitk_image, sitk_mask)
    except ValueError as exc:
        # only reachable when resampling leaves fewer than 2 GTV voxels: a too-small GTV, as above
        if any(msg in str(exc) for msg in _MASK_CHECK_MESSAGES):
            return _nan_features(cfg)
        raise
    out = _nan_features(cfg)
    for key, value in raw.items():
        if key in out:
            out[key] = float(value)
    return out
