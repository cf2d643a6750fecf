"""NIfTI-1 images and masks: read into a :class:`~adaptrt.types.Volume`, write one.

Conversion
----------
NIfTI stores data indexed ``(i, j, k)`` and an affine from ``(i, j, k, 1)`` to world **RAS+** mm. A Volume
holds the array in ``(z, y, x)`` order and an affine from ``(k, j, i, 1)`` to world **LPS** mm (see
:mod:`adaptrt.types`). Reading therefore transposes the data ``data.transpose(2, 1, 0)``, reverses the first
three columns of the affine and flips the signs of its x and y rows (``LPS = diag(-1, -1, 1) · RAS``);
writing does the exact inverse, so a round trip preserves the values and the affine (to the float32
precision of the NIfTI header).

The orientation comes from the sform when its code is > 0, else from the qform when its code is > 0; a file
with neither (both codes 0) has no defined position in the patient and is refused.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from numpy.typing import NDArray

from ..errors import InputError
from ..types import Volume
from .atomic import atomic_file, check_writable
from .memory import format_bytes, physical_memory_bytes

__all__ = ["NIFTI_SUFFIXES", "is_nifti_path", "read_nifti", "write_nifti"]

#: File name endings recognised as NIfTI.
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

# (k, j, i) <-> (i, j, k) column permutation and RAS <-> LPS flip; both are their own inverse
_PERMUTE = np.array([2, 1, 0, 3])
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

_READ_FIX = "check that the path points to a NIfTI-1 file (.nii or .nii.gz) and that it was copied completely"


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _ras_to_lps_volume_affine(affine_ras: NDArray[np.float64]) -> NDArray[np.float64]:
    """NIfTI affine ``(i, j, k) -> RAS`` to Volume affine ``(k, j, i) -> LPS``."""
    return _FLIP @ np.asarray(affine_ras, dtype=np.float64)[:, _PERMUTE]


def _lps_volume_to_ras_affine(affine_lps: NDArray[np.float64]) -> NDArray[np.float64]:
    """Volume affine ``(k, j, i) -> LPS`` to NIfTI affine ``(i, j, k) -> RAS``."""
    return (_FLIP @ np.asarray(affine_lps, dtype=np.float64))[:, _PERMUTE]


def _describe_values(values: NDArray[Any], limit: int = 5) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit].tolist())
    more = f", … ({values.size} distinct values)" if values.size > limit else ""
    return shown + more


def _check_size(p: Path, img: Any, shape: tuple[int, ...]) -> None:
    """Refuse, before reading the data, a header whose size the file or the memory cannot hold."""
    n_voxels = math.prod(shape)
    stored = n_voxels * int(np.dtype(img.get_data_dtype()).itemsize)
    dims = " x ".join(str(n) for n in shape)
    if not str(p).lower().endswith(".gz"):
        offset = int(img.header.get("vox_offset", 352) or 352)
        if offset + stored > p.stat().st_size:
            raise InputError(
                f"the header claims {dims} voxels ({format_bytes(stored)} of data) but the file holds only "
                f"{format_bytes(p.stat().st_size)}: it is truncated or its header is damaged",
                path=p,
                field="dim",
                fix="copy or export the image again",
            )
    memory = physical_memory_bytes()
    needed = 4 * n_voxels  # read as float32 (or bool) at least
    if memory and needed > memory // 2:
        raise InputError(
            f"the header claims {dims} voxels, which need {format_bytes(needed)} of memory to read, more than "
            f"half of this machine's {format_bytes(memory)}",
            path=p,
            field="dim",
            fix="check the file (a damaged header?) or crop/resample the image before using it",
        )


def read_nifti(
    path: str | os.PathLike[str], *, kind: Literal["image", "mask"] = "image", allow_nonfinite: bool = False
) -> Volume:
    """Read a NIfTI-1 file (``.nii`` or ``.nii.gz``) as a Volume.

    Parameters
    ----------
    path
        The file. A 4-D file whose extra dimensions are all 1 (``(X, Y, Z, 1)``) is read as 3-D.
    kind
        ``"image"``: values as float32 after the header's scaling; every value must be finite.
        ``"mask"``: every value must be exactly 0 or 1; returns a boolean Volume.
    allow_nonfinite
        For an image, accept NaN and infinite values instead of raising (the caller checks them, or they
        mark voxels without data).

    Returns
    -------
    Volume
        Array ``(z, y, x)`` (``data.transpose(2, 1, 0)``), spacing in mm, geometry in LPS.

    Raises
    ------
    InputError
        The file is missing, unreadable or not NIfTI; it has no orientation (sform and qform codes both 0);
        it is not 3-D; its affine has shear; an image has NaN or infinite values; a mask has values other
        than 0 and 1.
    """
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    p = Path(path)
    if not p.exists():
        raise InputError(
            "file not found",
            path=p,
            fix="check the path (relative paths in a manifest resolve against its folder)",
        )
    if not p.is_file():
        raise InputError("is not a file", path=p, fix="point to a NIfTI file (.nii or .nii.gz), not a folder")
    try:
        img = nib.load(p)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(f"cannot be read as NIfTI ({exc})", path=p, fix=_READ_FIX) from exc
    if not isinstance(img, nib.Nifti1Image):
        raise InputError(
            f"is a {type(img).__name__}, not a NIfTI file",
            path=p,
            fix="convert it to NIfTI (.nii or .nii.gz), e.g. with nibabel or dcm2niix",
        )
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        raise InputError(
            f"has {len(shape)}-D data of shape {shape}; a 3-D volume is expected",
            path=p,
            field="dim",
            fix="save one 3-D volume per file (split 4-D series, e.g. with fslsplit or nibabel)",
        )
    _check_size(p, img, shape)

    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    if scode is not None and int(scode) > 0 and sform is not None:
        affine_ras, source = np.asarray(sform, dtype=np.float64), "sform"
    elif qcode is not None and int(qcode) > 0 and qform is not None:
        affine_ras, source = np.asarray(qform, dtype=np.float64), "qform"
    else:
        raise InputError(
            "has no orientation: sform_code and qform_code are both 0, so its position in the patient is unknown",
            path=p,
            field="sform_code/qform_code",
            fix="re-export it with its orientation (e.g. from the DICOM with dcm2niix) or copy the header of the "
            "image it belongs to",
        )

    try:
        if kind == "image":
            data: NDArray[Any] = img.get_fdata(dtype=np.float32, caching="unchanged")
        else:
            data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(f"its voxel data cannot be read ({exc})", path=p, fix=_READ_FIX) from exc
    data = data.reshape(shape[:3])

    if kind == "image" and allow_nonfinite:
        array = data.transpose(2, 1, 0)
    elif kind == "image":
        bad = ~np.isfinite(data)
        n_bad = int(np.count_nonzero(bad))
        if n_bad:
            raise InputError(
                f"{n_bad} of {data.size} voxels are NaN or infinite",
                path=p,
                fix="replace them with finite values (e.g. 0 outside the imaged region) or re-export the image",
            )
        array = data.transpose(2, 1, 0)
    else:
        bad = (data != 0) & (data != 1)
        if np.any(bad):
            found = np.unique(data)
            raise InputError(
                f"mask values must be exactly 0/1, found values {_describe_values(found)} "
                f"({int(np.count_nonzero(bad))} voxels not 0 or 1)",
                path=p,
                fix="binarise the mask (e.g. label == k for one label of a label map) and save it again",
            )
        array = (data != 0).transpose(2, 1, 0)

    try:
        return Volume.from_affine(array, _ras_to_lps_volume_affine(affine_ras))
    except ValueError as exc:
        raise InputError(
            f"its {source} affine is not a rotation and a scaling ({exc})",
            path=p,
            field=source,
            fix="resample it onto a grid without shear (e.g. with ANTs or SimpleITK) and save it again",
        ) from exc


def write_nifti(volume: Volume, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a Volume as a NIfTI-1 file (``.nii`` or ``.nii.gz``), atomically.

    Parameters
    ----------
    volume
        The image or mask. Boolean masks are stored as uint8 (0/1), everything else as float32.
    path
        Target file; the ending selects compression.
    overwrite
        Replace an existing file; otherwise an existing file raises :class:`InputError`.

    Returns
    -------
    Path
        ``path``.

    Notes
    -----
    sform and qform are both set (code 1, scanner anatomical) to the same affine, and the spatial unit to mm.
    """
    p = Path(path)
    if not is_nifti_path(p):
        raise InputError(
            "a NIfTI file name must end in .nii or .nii.gz", path=p, fix="add .nii.gz to the file name"
        )
    check_writable(p, overwrite=overwrite)
    if volume.is_mask:
        data: NDArray[Any] = volume.array.astype(np.uint8)
        dtype: type[np.generic] = np.uint8
    else:
        data = volume.array.astype(np.float32)
        dtype = np.float32
    affine_ras = _lps_volume_to_ras_affine(volume.affine)
    img = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), affine_ras)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units(xyz="mm")
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    if volume.is_mask:
        # no scaling for a mask: its stored values must read back as exactly 0 and 1
        img.header.set_slope_inter(1.0, 0.0)
    with atomic_file(p, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    return p
