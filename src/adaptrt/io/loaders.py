"""Load the images and masks that a cohort refers to, whatever their format.

:class:`~adaptrt.cohort.ImageRef` and :class:`~adaptrt.cohort.MaskRef` say where an image or a mask lives; the
functions here turn them into Volumes:

* an image is a DICOM series folder or a NIfTI file, read as float32 (every value must be finite);
* a mask is one ROI of an RTSTRUCT file (rasterised on its DICOM image's grid) or a NIfTI mask file (which
  must already lie on its image's grid), read as bool.

Caching
-------
Several lesions of one patient usually share one image (one DICOM series per time point). So that a cohort
check or a study does not read the same series once per lesion, the last few images read (and the DICOM
series behind them) are kept in a small least-recently-used cache of :data:`CACHE_SIZE` entries per kind. The
key is the resolved path together with the modification times and sizes of the file or of the files of the
folder, so an image changed on disk is read again. The cached Volumes are read-only, so sharing them is
safe. :func:`clear_cache` empties it (e.g. to free memory after a large cohort).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..cohort import ImageRef, MaskRef
from ..errors import InputError
from ..types import Volume
from .nifti import is_nifti_path, read_nifti

if TYPE_CHECKING:
    from .dicom import DicomSeries

__all__ = [
    "CACHE_SIZE",
    "SeriesRef",
    "clear_cache",
    "geometry_difference_text",
    "image_ref",
    "load_image",
    "load_mask",
    "mask_ref",
]

#: Entries kept by each of the image caches (a brain MR series is typically 10–200 MB as float32).
CACHE_SIZE = 4

_Stamp = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class SeriesRef(ImageRef):
    """An image that is one series of a DICOM folder holding several: ``series_uid`` picks it.

    The manifest's ``series_uid`` column makes these (see ``docs/manifest.md``).
    """

    series_uid: str | None = None


def _series_uid_of(ref: ImageRef) -> str | None:
    return ref.series_uid if isinstance(ref, SeriesRef) else None


def _exists(p: Path, what: str) -> bool:
    """``p.exists()``, with the operating system's refusals (a name too long...) as an InputError."""
    try:
        return p.exists()
    except OSError as exc:
        shown = str(p) if len(str(p)) <= 200 else f"{str(p)[:120]}…{str(p)[-60:]} ({len(str(p))} characters)"
        raise InputError(
            f"the {what} path cannot be used: {exc.strerror or exc}",
            path=shown,
            fix="check the path in the manifest (a cell pasted twice or a missing separator makes a path far too "
            "long); file names are limited to 255 bytes",
        ) from exc


def image_ref(path: str | os.PathLike[str], series_uid: str | None = None) -> ImageRef:
    """Classify an image path: a folder is a DICOM series, a ``.nii`` / ``.nii.gz`` file is NIfTI.

    Parameters
    ----------
    path
        A DICOM series folder or a NIfTI file.
    series_uid
        For a folder that holds several image series: the SeriesInstanceUID of the one to read.

    Raises
    ------
    InputError
        The path does not exist or cannot be used, is a file that is not NIfTI, or has a ``series_uid`` but is
        not a DICOM folder.
    """
    p = Path(path)
    uid = (series_uid or "").strip() or None
    if not _exists(p, "image"):
        raise InputError(
            "image not found", path=p, fix="check the path to the DICOM series folder or NIfTI file"
        )
    if p.is_dir():
        return ImageRef(p, "dicom") if uid is None else SeriesRef(p, "dicom", uid)
    if uid is not None:
        raise InputError(
            f"a series_uid ({uid}) was given for an image that is not a DICOM folder",
            path=p,
            field="series_uid",
            fix="leave series_uid empty for NIfTI images (it picks one series of a DICOM folder)",
        )
    if is_nifti_path(p):
        return ImageRef(p, "nifti")
    raise InputError(
        "an image must be a DICOM series folder or a NIfTI file (.nii / .nii.gz)",
        path=p,
        fix="point to the folder holding the series' DICOM files, or to a .nii/.nii.gz file",
    )


def mask_ref(path: str | os.PathLike[str], roi: str | None) -> MaskRef:
    """Classify a mask path: a ``.nii`` / ``.nii.gz`` file is a NIfTI mask, any other file an RTSTRUCT.

    Parameters
    ----------
    path
        The mask file.
    roi
        ROI name inside the RTSTRUCT; required for an RTSTRUCT, must be empty (None or "") for NIfTI.

    Raises
    ------
    InputError
        The file does not exist or is a folder; an RTSTRUCT without ``roi``; a NIfTI mask with ``roi``.
    """
    p = Path(path)
    roi_name = (roi or "").strip() or None
    if not _exists(p, "mask"):
        raise InputError("mask not found", path=p, fix="check the path to the RTSTRUCT or NIfTI mask file")
    if p.is_dir():
        raise InputError(
            "a mask must be a file (an RTSTRUCT .dcm or a NIfTI mask), not a folder",
            path=p,
            fix="point to the RTSTRUCT file or to the .nii/.nii.gz mask",
        )
    if is_nifti_path(p):
        if roi_name is not None:
            raise InputError(
                f"an ROI name ({roi_name!r}) was given for a NIfTI mask, which holds one structure",
                path=p,
                field="roi",
                fix="leave roi empty for NIfTI masks (ROI names are for RTSTRUCT files)",
            )
        return MaskRef(p, "nifti")
    if roi_name is None:
        raise InputError(
            "an RTSTRUCT mask needs the name of the ROI to use",
            path=p,
            field="roi",
            fix="give the ROI name (e.g. GTV_1); adaptrt.io.rtstruct.rtstruct_roi_names(path) lists those in the file",
        )
    return MaskRef(p, "rtstruct", roi_name)


def _numbers(values: object) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in np.asarray(values, dtype=float).ravel()) + ")"


def geometry_difference_text(reference: Volume, other: Volume, *, atol_mm: float = 1e-3) -> str | None:
    """How ``other``'s grid differs from ``reference``'s, in plain numbers (mm), or ``None`` when they match.

    The same test as :meth:`adaptrt.types.Volume.geometry_difference`, worded for messages to users:
    ``"origin (-12.6, 3, 40) mm differs from (-12.5, 3, 40) mm"``.
    """
    if reference.geometry_difference(other, atol_mm=atol_mm) is None:
        return None
    if other.shape != reference.shape:
        shape, ref = " x ".join(map(str, other.shape)), " x ".join(map(str, reference.shape))
        return f"shape {shape} voxels (z, y, x) differs from {ref}"
    for name in ("spacing", "origin"):
        a, b = np.asarray(getattr(reference, name)), np.asarray(getattr(other, name))
        if not np.allclose(a, b, atol=atol_mm, rtol=0.0):
            return f"{name} {_numbers(b)} mm differs from {_numbers(a)} mm"
    rows = "; ".join(_numbers(r) for r in other.direction)
    ref_rows = "; ".join(_numbers(r) for r in reference.direction)
    return f"direction (rows) {rows} differs from {ref_rows}"


def _stamp(path: Path) -> _Stamp:
    """Modification time and size of a file, or of every file in a folder: changes when the data do."""
    if path.is_dir():
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        items = []
        for e in entries:
            if e.is_file():
                st = e.stat()
                items.append((e.name, st.st_mtime_ns, st.st_size))
        return tuple(items)
    st = path.stat()
    return ((path.name, st.st_mtime_ns, st.st_size),)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _series_cached(path: str, stamp: _Stamp, series_uid: str | None = None) -> DicomSeries:
    from .dicom import read_dicom_series

    return read_dicom_series(path, series_uid=series_uid)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _nifti_cached(path: str, stamp: _Stamp) -> Volume:
    # non-finite values are reported by load_image, so that a mask can still be checked against the grid
    return read_nifti(path, kind="image", allow_nonfinite=True)


def _read_series(path: Path, series_uid: str | None = None) -> DicomSeries:
    """The DICOM series in folder ``path`` (the one of ``series_uid`` when given; cached)."""
    resolved = path.resolve()
    return _series_cached(str(resolved), _stamp(resolved), series_uid)


def clear_cache() -> None:
    """Forget the cached images and DICOM series."""
    _series_cached.cache_clear()
    _nifti_cached.cache_clear()


def _image_volume(ref: ImageRef) -> Volume:
    """The image without the finiteness check (for a mask's reference grid)."""
    if not ref.path.exists():
        raise InputError("image not found", path=ref.path, fix="check the path to the image")
    if ref.kind == "dicom":
        return _read_series(ref.path, _series_uid_of(ref)).volume
    if ref.kind == "nifti":
        resolved = ref.path.resolve()
        return _nifti_cached(str(resolved), _stamp(resolved))
    raise ValueError(f"unknown image kind {ref.kind!r}")


def load_image(ref: ImageRef) -> Volume:
    """Read an image as a float32 Volume, shape ``(z, y, x)``, spacing in mm.

    Recently read images are cached (see the module notes).

    Raises
    ------
    InputError
        The image cannot be read, or holds NaN or infinite values.
    """
    vol = _image_volume(ref)
    if vol.dtype != np.float32:
        vol = vol.with_array(vol.array.astype(np.float32))
    n_bad = int(np.count_nonzero(~np.isfinite(vol.array)))
    if n_bad:
        raise InputError(
            f"{n_bad} of {vol.array.size} voxels are NaN or infinite",
            path=ref.path,
            fix="re-export the series; check its RescaleSlope/RescaleIntercept"
            if ref.kind == "dicom"
            else "replace them with finite values (e.g. 0 outside the imaged region) or re-export the image",
        )
    return vol


def load_mask(ref: MaskRef, image: ImageRef) -> Volume:
    """Read a mask as a boolean Volume on ``image``'s grid.

    Parameters
    ----------
    ref
        The mask: a NIfTI mask file, or one ROI of an RTSTRUCT file.
    image
        The image the mask belongs to. An RTSTRUCT is rasterised on this DICOM series' grid; a NIfTI mask
        must already have the image's shape and affine (within 1e-3 mm).

    Returns
    -------
    Volume
        Boolean, shape ``(z, y, x)`` of the image.

    Raises
    ------
    InputError
        Unreadable mask; values other than 0/1; a NIfTI mask on a different grid from the image; an RTSTRUCT
        over a NIfTI image; an ROI that is not in the RTSTRUCT.
    """
    if ref.kind == "nifti":
        mask = read_nifti(ref.path, kind="mask")
        grid = _image_volume(image)
        diff = geometry_difference_text(grid, mask, atol_mm=1e-3)
        if diff is not None:
            raise InputError(
                f"the mask's grid differs from its image {image.path}: {diff}",
                path=ref.path,
                fix="resample the mask onto the image grid (nearest neighbour) or point to the matching image",
            )
        return mask
    if ref.kind == "rtstruct":
        if image.kind != "dicom":
            raise InputError(
                f"an RTSTRUCT mask needs a DICOM image series, but its image {image.path} is NIfTI",
                path=ref.path,
                fix="use the DICOM series the RTSTRUCT was drawn on as the image, or export the mask as NIfTI",
            )
        if not ref.roi:
            raise InputError(
                "an RTSTRUCT mask needs an ROI name", path=ref.path, field="roi", fix="give the ROI name"
            )
        from .rtstruct import read_rtstruct

        mask = read_rtstruct(ref.path, ref.roi, _read_series(image.path, _series_uid_of(image)))
        if not mask.is_mask:
            mask = mask.with_array(mask.array != 0)
        return mask
    raise ValueError(f"unknown mask kind {ref.kind!r}")
