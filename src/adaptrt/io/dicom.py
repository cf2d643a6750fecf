"""DICOM MR series: read a series from a folder into a :class:`~adaptrt.types.Volume`, write one.

Geometry follows :mod:`adaptrt.types`: the array is ``(z, y, x)`` = (slice, row, column); direction column 2
is the row cosine ``ImageOrientationPatient[:3]``, column 1 the column cosine ``ImageOrientationPatient[3:]``
and column 0 the unit slice normal ``row × column``. Slices are always sorted along that normal (by the
projection of ImagePositionPatient on it), so a series read from DICOM always has a left-handed direction
matrix; the writer re-orders a right-handed volume the same way, so writing and reading back give the same
:class:`DicomSeries`.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import struct
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from ..errors import InputError
from ..types import Volume
from .atomic import atomic_dir

__all__ = [
    "DicomSeries",
    "SeriesSummary",
    "list_series",
    "make_uid",
    "read_dicom_series",
    "write_mr_series",
]

#: SOP classes of enhanced (multi-frame, functional-group) images, which this reader refuses with a conversion
#: recipe. Other multi-frame objects (RT Dose, ultrasound cine, multi-frame secondary capture) are refused as
#: what they are.
_ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
_RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
# Elements larger than this are not read until used, so grouping a folder does not load every pixel.
_DEFER_BYTES = 1024
_UINT16_MAX = 65535
# Quantised float data use [_Q_MARGIN, 65535 - _Q_MARGIN], so the rounding of the DS-formatted slope and
# intercept can never push a value outside the 16-bit range.
_Q_MARGIN = 64
_ORIENTATION_TOL = 1e-4
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_NATIVE_LITTLE_ENDIAN = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A DICOM image series read from (or written to) a folder.

    Attributes
    ----------
    volume
        The voxel values after RescaleSlope/RescaleIntercept, float32, shape ``(z, y, x)``, slices sorted
        along the slice normal; geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing.
    series_instance_uid, study_instance_uid, frame_of_reference_uid, sop_class_uid
        The series' UIDs.
    sop_instance_uids
        SOPInstanceUID of every slice, in array axis-0 order (``sop_instance_uids[k]`` is slice ``k``).
    files
        The file of every slice, in array axis-0 order (empty for a series built in memory).
    patient_id, patient_name, modality, series_description
        As in the files.
    header
        The first slice's dataset without its pixel data (a ``pydicom.Dataset``), for copying the Patient
        and General Study modules into derived objects such as an RTSTRUCT. Treat it as read-only.
    """

    volume: Volume
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[Path, ...]
    patient_id: str
    patient_name: str
    modality: str
    series_description: str
    header: Any


@dataclass(frozen=True)
class SeriesSummary:
    """One DICOM series found in a folder (see :func:`list_series`).

    Attributes
    ----------
    series_instance_uid
        SeriesInstanceUID shared by the files.
    modality
        Modality of the first file (``"MR"``, ``"RTSTRUCT"``, ...); empty when absent.
    series_description
        SeriesDescription of the first file; empty when absent.
    n_files
        Number of files (slices for an image series).
    files
        The files, sorted by path.
    """

    series_instance_uid: str
    modality: str
    series_description: str
    n_files: int
    files: tuple[Path, ...]


# ====================================================================== UIDs and value formatting


def make_uid(*parts: str) -> str:
    """Return a deterministic DICOM UID derived from ``parts``.

    The same strings always give the same UID (a SHA-512 hash under pydicom's UID root), so outputs built
    with a seed are byte-identical from run to run.

    Parameters
    ----------
    *parts
        At least one string, e.g. ``make_uid("seed-7", "patient-003", "study")``.

    Returns
    -------
    str
        A valid UID of at most 64 characters.

    Examples
    --------
    >>> make_uid("a", "b") == make_uid("a", "b") != make_uid("a", "c")
    True
    """
    if not parts:
        raise ValueError("make_uid needs at least one string to derive the UID from")
    return str(generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[str(p) for p in parts]))


def _format_ds(value: float) -> str:
    """Format a finite float as a DICOM DS string of at most 16 characters, as precisely as fits."""
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"cannot write the non-finite value {v} as a DICOM decimal string")
    if v == 0.0:  # also turns -0.0 into "0"
        return "0"
    for precision in range(16, 0, -1):
        text = f"{v:.{precision}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {v} in 16 characters")  # pragma: no cover - %.1g always fits


def _fmt(values: NDArray[np.float64]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _rel(path: Path, folder: Path) -> str:
    """``path`` relative to the series folder, for messages that name several files of one folder."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def _clean_cosine(value: float) -> float:
    # rotation matrices carry 1e-17-sized noise; writing it as "6.123233995736766e-17" is legal but ugly
    return 0.0 if abs(value) < 1e-12 else float(value)


# ====================================================================== listing and grouping


def _iter_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        files.extend(Path(root) / n for n in sorted(names))
    return files


def _check_folder(folder: str | os.PathLike[str]) -> Path:
    path = Path(folder)
    if not path.exists():
        raise InputError(
            "the folder does not exist", path=path, fix="check the path of the DICOM series folder"
        )
    if not path.is_dir():
        raise InputError(
            "is a file, not a folder", path=path, fix="give the folder that holds the series' DICOM files"
        )
    return path


def _read_headers(folder: Path) -> list[tuple[Path, Dataset]]:
    """Every DICOM file under ``folder`` with its dataset (large values such as pixel data deferred)."""
    out: list[tuple[Path, Dataset]] = []
    for f in _iter_files(folder):
        try:
            ds = pydicom.dcmread(f, defer_size=_DEFER_BYTES)
        except InvalidDicomError:
            continue  # not a DICOM Part 10 file (a README, a .DS_Store, a NIfTI...): ignored by design
        except Exception as exc:
            raise InputError(
                f"looks like a DICOM file but could not be read ({type(exc).__name__}: {exc})",
                path=f,
                fix="replace the damaged file with a fresh export, or move it out of the folder",
            ) from exc
        out.append((f, ds))
    return out


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def list_series(folder: str | os.PathLike[str]) -> list[SeriesSummary]:
    """List the DICOM series in a folder and its sub-folders.

    Files that are not DICOM are skipped, as are DICOM objects without a SeriesInstanceUID (a DICOMDIR).
    Every other object is listed, images and non-images (RTSTRUCT, RTPLAN) alike.

    Parameters
    ----------
    folder
        Folder to search (recursively).

    Returns
    -------
    list of SeriesSummary
        One entry per SeriesInstanceUID, sorted by modality, description and UID.

    Raises
    ------
    InputError
        When the folder does not exist or a DICOM file in it is damaged.
    """
    path = _check_folder(folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for f, ds in _read_headers(path):
        uid = _str(ds, "SeriesInstanceUID")
        if uid:
            groups[uid].append((f, ds))
    return _summaries(groups)


def _summaries(groups: dict[str, list[tuple[Path, Dataset]]]) -> list[SeriesSummary]:
    out = []
    for uid, members in groups.items():
        first = members[0][1]
        out.append(
            SeriesSummary(
                series_instance_uid=uid,
                modality=_str(first, "Modality"),
                series_description=_str(first, "SeriesDescription"),
                n_files=len(members),
                files=tuple(sorted(f for f, _ in members)),
            )
        )
    return sorted(out, key=lambda s: (s.modality, s.series_description, s.series_instance_uid))


def _describe(summaries: Sequence[SeriesSummary]) -> str:
    return "; ".join(
        f"{s.series_instance_uid} ({s.modality or 'no modality'}, "
        f"{s.series_description or 'no description'!r}, {s.n_files} file{'s' * (s.n_files != 1)})"
        for s in summaries
    )


# ====================================================================== geometry (reader and writer)


@dataclass(frozen=True)
class _Geometry:
    order: NDArray[np.intp]  # file index of every slice, sorted along the normal
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: NDArray[np.float64]


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(
            "the attribute is missing, so the slice cannot be placed in space",
            path=path,
            field=keyword,
            fix="export the series as cross-sectional images (MR/CT Image Storage) with their geometry",
        )
    try:
        arr = np.asarray([float(v) for v in (value if isinstance(value, Sequence) else [value])])
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"holds {value!r}, which is not {n} numbers", path=path, field=keyword, fix="re-export the series"
        ) from exc
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(
            f"holds {value!r}; expected {n} finite numbers",
            path=path,
            field=keyword,
            fix="re-export the series",
        )
    return arr


def _frame(iop: NDArray[np.float64], path: Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Row and column cosines from ImageOrientationPatient, re-orthonormalised (files hold rounded values)."""
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if abs(nr - 1) > 1e-3 or abs(nc - 1) > 1e-3 or abs(float(row @ col)) > 1e-3:
        raise InputError(
            f"holds {_fmt(iop)}: the row and column cosines are not unit vectors at right angles",
            path=path,
            field="ImageOrientationPatient",
            fix="re-export the series; the orientation in this file is damaged",
        )
    row = row / nr
    col = col - (col @ row) * row
    return row, col / np.linalg.norm(col)


def _geometry(
    positions: NDArray[np.float64],
    iop: NDArray[np.float64],
    pixel_spacing: NDArray[np.float64],
    files: Sequence[Path],
    folder: Path,
) -> _Geometry:
    """Sort slices along the normal and check that they form a regular, untilted grid.

    ``positions`` is ``(n, 3)`` ImagePositionPatient in mm; ``files`` names the slices in messages.
    """
    n = positions.shape[0]
    if n < 2:
        raise InputError(
            "the series has a single slice, so its slice spacing cannot be known",
            path=files[0] if files else folder,
            field="ImagePositionPatient",
            fix="give a 3-D series of at least two slices",
        )
    row, col = _frame(iop, files[0])
    normal = np.cross(row, col)
    height = positions @ normal
    order = np.argsort(height, kind="stable")
    h = height[order]
    gaps = np.diff(h)
    mean_gap = float((h[-1] - h[0]) / (n - 1))
    tol = max(0.01 * abs(mean_gap), 0.01)
    same = np.flatnonzero(gaps <= tol)
    if same.size:
        k = int(same[0])
        raise InputError(
            f"two slices lie at the same position ({h[k]:.3f} mm along the slice normal): "
            f"{_rel(files[order[k]], folder)} and {_rel(files[order[k + 1]], folder)} "
            f"({same.size} such pair(s) in all)",
            path=folder,
            field="ImagePositionPatient",
            fix="the folder mixes acquisitions that share a SeriesInstanceUID (echoes, repeats or time "
            "points); put each acquisition in its own folder",
        )
    deviation = np.abs(h - (h[0] + mean_gap * np.arange(n)))
    if float(deviation.max()) > tol:
        typical = float(np.median(gaps))
        odd = np.flatnonzero(np.abs(gaps - typical) > tol)
        listed = ", ".join(
            f"{gaps[k]:.3f} mm between {_rel(files[order[k]], folder)} and "
            f"{_rel(files[order[k + 1]], folder)}"
            for k in odd[:5]
        )
        more = f" and {odd.size - 5} more" if odd.size > 5 else ""
        raise InputError(
            f"the slices are not evenly spaced: most gaps are {typical:.3f} mm but there are "
            f"{listed}{more} (a missing slice leaves a double gap)",
            path=folder,
            field="ImagePositionPatient",
            fix="export the complete series again, or resample it to a regular grid",
        )
    offsets = positions[order] - positions[order[0]]
    lateral = offsets - np.outer(offsets @ normal, normal)
    shift = np.linalg.norm(lateral, axis=1)
    lateral_tol = max(0.01 * float(min(pixel_spacing)), 0.01)
    if float(shift.max()) > lateral_tol:
        k = int(np.argmax(shift))
        angle = float(np.degrees(np.arctan2(shift[k], abs(offsets[k] @ normal))))
        raise InputError(
            f"the slices are not stacked along the slice normal (gantry tilt or a sheared stack, about "
            f"{angle:.2f} degrees): {_rel(files[order[k]], folder)} is shifted {shift[k]:.3f} mm within the "
            "slice plane",
            path=folder,
            field="ImagePositionPatient",
            fix="resample the series to an untilted grid first (e.g. dcm2niix, which corrects gantry tilt, "
            "or your planning system), or acquire/export without gantry tilt",
        )
    direction = np.column_stack([normal, col, row])
    p0 = positions[order[0]]
    return _Geometry(
        order=order,
        spacing=(mean_gap, float(pixel_spacing[0]), float(pixel_spacing[1])),
        origin=(float(p0[0]), float(p0[1]), float(p0[2])),
        direction=direction,
    )


# ====================================================================== reading


def _rescale(stored: NDArray[Any], slope: float, intercept: float) -> NDArray[np.float32]:
    """``stored * slope + intercept`` as float32, for a slice ``(y, x)`` or a stack ``(z, y, x)``.

    Computed in float64 and cast once, slice by slice, so that the writer's in-memory result is exactly
    what a reader computes from the files.
    """
    if slope == 1.0 and intercept == 0.0:
        return stored.astype(np.float32)  # exact for 16-bit integers, and equal to the float64 route
    if stored.ndim == 3:
        out = np.empty(stored.shape, dtype=np.float32)
        for k in range(stored.shape[0]):
            out[k] = _rescale(stored[k], slope, intercept)
        return out
    return (stored.astype(np.float64) * slope + intercept).astype(np.float32)


def _frames(ds: Dataset) -> int:
    try:
        return int(str(ds.get("NumberOfFrames", "") or "1").strip() or 1)
    except ValueError:
        return 1


def _sop_name(sop_class: str) -> str:
    name = UID(sop_class).name if sop_class else ""
    return name if name and name != sop_class else f"SOP class {sop_class or 'absent'}"


def _check_image(ds: Dataset, path: Path) -> None:
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    frames = _frames(ds)
    if sop_class in _ENHANCED_SOP_CLASSES:
        raise InputError(
            f"is an enhanced multi-frame image ({_sop_name(sop_class)}, {frames} frame"
            f"{'s' * (frames != 1)} in one file), which adaptrt does not read: it reads classic series of one "
            "file per slice",
            path=path,
            field="SOPClassUID",
            fix="convert it to one file per slice with dcm4che's `emf2sf --out-dir OUT FILE`, or to NIfTI with "
            "`dcm2niix -z y -o OUT FOLDER` and list the .nii.gz in the manifest; or export the series again "
            "with the scanner's 'classic (single-frame) DICOM' option",
        )
    if sop_class == _RT_DOSE_STORAGE:
        raise InputError(
            "is an RT Dose grid, not an MR image series",
            path=path,
            field="SOPClassUID",
            fix="move dose files out of the image series' folder and point the manifest at the MR series",
        )
    if frames > 1:
        raise InputError(
            f"is a multi-frame {_sop_name(sop_class)} object ({frames} frames in one file), not a series of "
            "MR slices",
            path=path,
            field="NumberOfFrames",
            fix="point the manifest at the folder of the MR series (one file per slice), or move this file "
            "out of it",
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(
            "is a colour image; only greyscale series are supported",
            path=path,
            field="SamplesPerPixel",
            fix="give the original greyscale MR series, not a screenshot or fused image",
        )


def _pixels(ds: Dataset, path: Path) -> NDArray[Any]:
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    if (
        syntax in _NATIVE_LITTLE_ENDIAN
        and ds.get("BitsAllocated") == 16
        and ds.get("BitsStored") == 16
        and ds.get("SamplesPerPixel", 1) == 1
    ):
        # the common case, without pydicom's generic decoder (a third of the reading time)
        raw = ds.PixelData
        rows, cols = int(ds.Rows), int(ds.Columns)
        if len(raw) >= 2 * rows * cols:
            dtype = "<i2" if ds.get("PixelRepresentation", 0) == 1 else "<u2"
            return np.frombuffer(raw, dtype=dtype, count=rows * cols).reshape(rows, cols)
    try:
        arr = ds.pixel_array
    except Exception as exc:
        raise InputError(
            f"the pixel data could not be decoded (transfer syntax "
            f"{ds.file_meta.get('TransferSyntaxUID', '?')}: {exc})",
            path=path,
            field="PixelData",
            fix="decompress the series first (e.g. `gdcmconv --raw` or `dcmdjpeg`), or install a pydicom "
            "pixel-data plugin such as pylibjpeg",
        ) from exc
    return np.asarray(arr)


def _rescale_of(ds: Dataset, path: Path) -> tuple[float, float]:
    out = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = ds.get(keyword)
        if value is None or value == "":
            out.append(default)
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v) or (keyword == "RescaleSlope" and v == 0):
            raise InputError(f"holds {value!r}", path=path, field=keyword, fix="re-export the series")
        out.append(v)
    return out[0], out[1]


def read_dicom_series(folder: str | os.PathLike[str], *, series_uid: str | None = None) -> DicomSeries:
    """Read one DICOM image series from a folder into a float32 :class:`~adaptrt.types.Volume`.

    Parameters
    ----------
    folder
        Folder holding the series' files (searched recursively). Files that are not DICOM and DICOM objects
        without pixel data (RTSTRUCT, RTPLAN, DICOMDIR) are ignored.
    series_uid
        SeriesInstanceUID to read when the folder holds more than one image series.

    Returns
    -------
    DicomSeries
        ``volume.array`` is float32, shape ``(z, y, x)`` = (slice, row, column), with RescaleSlope and
        RescaleIntercept applied; slices are sorted along the normal ``row cosine × column cosine`` by the
        projection of ImagePositionPatient (never by InstanceNumber or file name). ``volume.spacing`` is
        ``(slice spacing from the positions, PixelSpacing[0], PixelSpacing[1])`` in mm (SliceThickness is not
        used); ``volume.origin`` is ImagePositionPatient of slice 0.

    Raises
    ------
    InputError
        Missing folder; no image series; several image series and no ``series_uid``; a missing geometry
        attribute; orientation, matrix size or pixel spacing differing between slices; a single slice; two
        slices at one position; uneven slice spacing (a missing slice); a tilted or sheared stack;
        enhanced multi-frame objects; pixel data that cannot be decoded.
    """
    path = _check_folder(folder)
    groups: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    n_dicom = 0
    for f, ds in _read_headers(path):
        n_dicom += 1
        if "PixelData" not in ds:
            continue
        groups[_str(ds, "SeriesInstanceUID")].append((f, ds))
    if not groups:
        found = f"{n_dicom} DICOM object(s) without pixel data" if n_dicom else "no DICOM files"
        raise InputError(
            f"holds no DICOM image series ({found})",
            path=path,
            field="PixelData",
            fix="point to the folder that holds the MR series' image files (.dcm, one per slice)",
        )
    if series_uid is not None:
        if series_uid not in groups:
            raise InputError(
                f"no image series with SeriesInstanceUID {series_uid}; the folder holds: "
                f"{_describe(_summaries(groups))}",
                path=path,
                field="SeriesInstanceUID",
                fix="give one of the SeriesInstanceUIDs listed (the manifest's series_uid column)",
            )
        members = groups[series_uid]
    elif len(groups) > 1:
        raise InputError(
            f"holds {len(groups)} image series: {_describe(_summaries(groups))}",
            path=path,
            field="SeriesInstanceUID",
            fix="choose one with the manifest's series_uid column (docs/manifest.md; series_uid= in Python), "
            "or put each series in its own folder",
        )
    else:
        members = next(iter(groups.values()))
    return _assemble(members, path)


def _assemble(members: list[tuple[Path, Dataset]], folder: Path) -> DicomSeries:
    files = [f for f, _ in members]
    datasets = [ds for _, ds in members]
    for f, ds in members:
        _check_image(ds, f)
    f0, ds0 = members[0]
    iop0 = _floats(ds0, "ImageOrientationPatient", 6, f0)
    ps0 = _floats(ds0, "PixelSpacing", 2, f0)
    shape0 = (int(ds0.get("Rows", 0)), int(ds0.get("Columns", 0)))
    positions = np.empty((len(members), 3))
    for i, (f, ds) in enumerate(members):
        iop = _floats(ds, "ImageOrientationPatient", 6, f)
        if not np.allclose(iop, iop0, atol=_ORIENTATION_TOL):
            raise InputError(
                f"the orientation {_fmt(iop)} differs from {_fmt(iop0)} in {_rel(f0, folder)}; one series "
                "must have one orientation",
                path=f,
                field="ImageOrientationPatient",
                fix="the folder mixes slices of different orientations (e.g. localisers); keep only the "
                "slices of the 3-D series in the folder",
            )
        shape = (int(ds.get("Rows", 0)), int(ds.get("Columns", 0)))
        if shape != shape0:
            raise InputError(
                f"the slice is {shape[0]} x {shape[1]} pixels but {_rel(f0, folder)} is "
                f"{shape0[0]} x {shape0[1]}",
                path=f,
                field="Rows" if shape[0] != shape0[0] else "Columns",
                fix="keep only the slices of one 3-D series in the folder",
            )
        ps = _floats(ds, "PixelSpacing", 2, f)
        if not np.allclose(ps, ps0, rtol=1e-4, atol=1e-6):
            raise InputError(
                f"the pixel spacing {_fmt(ps)} mm differs from {_fmt(ps0)} mm in {_rel(f0, folder)}",
                path=f,
                field="PixelSpacing",
                fix="keep only the slices of one 3-D series in the folder, or resample it",
            )
        positions[i] = _floats(ds, "ImagePositionPatient", 3, f)
    if np.any(ps0 <= 0):
        raise InputError(f"holds {_fmt(ps0)}; spacings must be > 0 mm", path=f0, field="PixelSpacing")
    geom = _geometry(positions, iop0, ps0, files, folder)
    slices = []
    for idx in geom.order:
        f, ds = files[idx], datasets[idx]
        stored = _pixels(ds, f)
        if stored.shape != shape0:
            raise InputError(
                f"the pixel data has shape {stored.shape}, not Rows x Columns = {shape0}",
                path=f,
                field="PixelData",
                fix="re-export the series",
            )
        slope, intercept = _rescale_of(ds, f)
        slices.append(_rescale(stored, slope, intercept))
    array = np.stack(slices)
    array.flags.writeable = False  # Volume keeps a read-only array without copying it again
    volume = Volume(array, spacing=geom.spacing, origin=geom.origin, direction=geom.direction)
    first = int(geom.order[0])
    # a fresh header read, so the record never lazily re-opens a file that may have moved since
    header = pydicom.dcmread(files[first], stop_before_pixels=True)
    return DicomSeries(
        volume=volume,
        series_instance_uid=_str(header, "SeriesInstanceUID"),
        study_instance_uid=_str(header, "StudyInstanceUID"),
        frame_of_reference_uid=_str(header, "FrameOfReferenceUID"),
        sop_class_uid=_str(header, "SOPClassUID"),
        sop_instance_uids=tuple(_str(datasets[i], "SOPInstanceUID") for i in geom.order),
        files=tuple(files[i] for i in geom.order),
        patient_id=_str(header, "PatientID"),
        patient_name=_str(header, "PatientName"),
        modality=_str(header, "Modality"),
        series_description=_str(header, "SeriesDescription"),
        header=header,
    )


# ====================================================================== writing


@dataclass(frozen=True)
class _Quantised:
    stored: NDArray[Any]  # uint16 or int16, shape (z, y, x)
    slope: str  # DS text, "" when no rescale is written
    intercept: str


def _is_integral(array: NDArray[Any]) -> bool:
    if array.dtype.kind in "biu":
        return True
    # slice by slice: MR data usually shows a fraction in its first slices, which ends the scan early
    return all(np.array_equal(plane, np.rint(plane)) for plane in array)


def _quantise(array: NDArray[Any]) -> _Quantised:
    """Map a volume to 16-bit integers, exactly when the values are integers that fit."""
    if array.dtype == np.bool_:
        return _Quantised(array.astype(np.uint16), "", "")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise ValueError("the volume holds NaN or infinite values, which DICOM pixel data cannot store")
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= _UINT16_MAX and _is_integral(array):
        return _Quantised(array.astype(np.uint16), "", "")
    if lo >= -32768 and hi <= 32767 and _is_integral(array):
        return _Quantised(array.astype(np.int16), "", "")
    if hi == lo:
        return _Quantised(np.zeros(array.shape, dtype=np.uint16), "1", _format_ds(lo))
    slope_text = _format_ds((hi - lo) / (_UINT16_MAX - 2 * _Q_MARGIN))
    slope = float(slope_text)
    intercept_text = _format_ds(lo - _Q_MARGIN * slope)
    intercept = float(intercept_text)
    stored = np.empty(array.shape, dtype=np.uint16)
    buf = np.empty(array.shape[1:], dtype=np.float64)
    # one slice at a time in float64: exact enough for the slope/2 guarantee, and cache-sized buffers
    for k in range(array.shape[0]):
        np.subtract(array[k], intercept, out=buf, dtype=np.float64)
        np.divide(buf, slope, out=buf)
        np.rint(buf, out=buf)
        if buf.min() < 0 or buf.max() > _UINT16_MAX:  # pragma: no cover - ranges below DS precision only
            raise ValueError(
                f"the value range [{lo}, {hi}] is too narrow for its magnitude to be stored with a "
                "16-character RescaleIntercept; subtract an offset first"
            )
        stored[k] = buf
    return _Quantised(stored, slope_text, intercept_text)


def _canonical(volume: Volume) -> Volume:
    """The same voxels with slice order along ``row cosine × column cosine``, as every reader sorts them."""
    d = volume.direction
    normal = np.cross(d[:, 2], d[:, 1])
    if float(d[:, 0] @ normal) > 0:
        return volume
    last = volume.index_to_world((volume.shape[0] - 1, 0, 0))
    direction = d.copy()
    direction[:, 0] = -direction[:, 0]
    return Volume(
        volume.array[::-1],
        spacing=volume.spacing,
        origin=(float(last[0]), float(last[1]), float(last[2])),
        direction=direction,
    )


def _check_text(value: str, keyword: str, max_len: int) -> str:
    if len(value) > max_len or "\\" in value or any(ord(c) < 32 for c in value):
        raise InputError(
            f"{value!r} is not a valid DICOM value: at most {max_len} characters, no backslash or control "
            "characters",
            field=keyword,
            fix=f"shorten or clean the {keyword}",
        )
    return value


def _check_uid(value: str | None, keyword: str) -> str | None:
    if value is not None and not (len(value) <= 64 and _UID_PATTERN.fullmatch(value)):
        raise InputError(
            f"{value!r} is not a valid DICOM UID (digits and dots, at most 64 characters)",
            field=keyword,
            fix="pass a valid UID, or leave it out to have one generated",
        )
    return value


def _check_dt(value: str, keyword: str, n: int) -> str:
    if not (value.isdigit() and len(value) == n):
        raise InputError(
            f"{value!r} is not a DICOM {'date (YYYYMMDD)' if n == 8 else 'time (HHMMSS)'}",
            field=keyword,
            fix=f"pass {n} digits",
        )
    return value


def _template(
    *,
    quantised: _Quantised,
    volume: Volume,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    series_description: str,
    series_number: int,
    study_date: str,
    study_time: str,
    study_id: str,
) -> Dataset:
    """The dataset shared by every slice; the per-slice attributes are filled in by the caller."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID("1")  # set per slice
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    if any(ord(c) > 127 for c in patient_name + patient_id + series_description):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = "1"
    # General Study
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = ""
    ds.Modality = "MR"
    ds.Manufacturer = "adaptrt"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = "adaptrt"
    # Patient
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # MR Image
    ds.ScanningSequence = "RM"  # research mode: the image is synthetic or derived, not acquired
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SliceThickness = _format_ds(volume.spacing[0])
    ds.RepetitionTime = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    # adaptrt images brains: an unpaired body part, which also settles the Type 2C Laterality (absent)
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = ["0", "0", "0"]
    d = volume.direction
    ds.ImageOrientationPatient = [_format_ds(_clean_cosine(v)) for v in (*d[:, 2], *d[:, 1])]
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = "0"
    ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = volume.shape[1]
    ds.Columns = volume.shape[2]
    ds.PixelSpacing = [_format_ds(volume.spacing[1]), _format_ds(volume.spacing[2])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if quantised.stored.dtype == np.int16 else 0
    if quantised.slope:
        ds.RescaleIntercept = quantised.intercept
        ds.RescaleSlope = quantised.slope
    ds.add_new(0x7FE00010, "OW", b"")
    return ds


_PREAMBLE = b"\x00" * 128 + b"DICM"
_META_UID = Tag(0x0002, 0x0003)
#: Attributes that differ between the slices of a written series; everything else is encoded once.
_SLICE_TAGS = (
    Tag(0x0008, 0x0018),  # SOPInstanceUID
    Tag(0x0020, 0x0013),  # InstanceNumber
    Tag(0x0020, 0x0032),  # ImagePositionPatient
    Tag(0x0020, 0x1041),  # SliceLocation
    Tag(0x7FE0, 0x0010),  # PixelData
)


def _encode_runs(ds: Dataset, split: Sequence[BaseTag], encoding: str | list[str]) -> list[bytes]:
    """Encode ``ds`` (Explicit VR Little Endian) without the ``split`` tags, as ``len(split) + 1`` runs.

    Run ``i`` holds the elements between ``split[i - 1]`` and ``split[i]``, so a file is the runs
    interleaved with the encoded ``split`` elements.
    """
    bounds = [Tag(0x0000, 0x0000), *split, Tag(0xFFFF, 0xFFFF)]
    runs = []
    for lo, hi in itertools.pairwise(bounds):
        part = Dataset()
        for tag in ds.keys():
            if lo < tag < hi:
                part.add(ds[tag])
        fp = DicomBytesIO()
        fp.is_little_endian = True
        fp.is_implicit_VR = False
        write_dataset(fp, part, parent_encoding=encoding)
        runs.append(fp.getvalue())
    return runs


def _short(tag: BaseTag, vr: bytes, value: bytes, pad: bytes) -> bytes:
    # Explicit VR Little Endian element with a 2-byte length (UI, IS, DS); values have even length
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", tag.group, tag.element, vr, len(value)) + value


class _SliceEncoder:
    """Encode the slices of one series as DICOM Part 10 files, byte-identical to ``pydicom.dcmwrite``.

    ``dcmwrite`` costs milliseconds per file in Python bookkeeping; the simulator writes thousands of
    slices, so the invariant part of the file is encoded once and only the per-slice elements per file.
    """

    def __init__(self, template: Dataset) -> None:
        meta = copy.deepcopy(template.file_meta)
        validate_file_meta(meta, enforce_standard=True)  # adds what dcmwrite(enforce_file_format=True) adds
        if "FileMetaInformationGroupLength" in meta:
            del meta.FileMetaInformationGroupLength
        self._meta_runs = _encode_runs(meta, [_META_UID], "iso8859")
        encoding = template.get("SpecificCharacterSet", "iso8859")
        self._runs = _encode_runs(template, _SLICE_TAGS, encoding)

    def encode(
        self,
        *,
        sop_instance_uid: str,
        instance_number: int,
        position: Sequence[str],
        location: str,
        pixels: bytes,
    ) -> bytes:
        """Return the complete file of one slice (``pixels``: little-endian 16-bit values)."""
        uid = sop_instance_uid.encode("ascii")
        meta_uid = _short(_META_UID, b"UI", uid, b"\x00")
        meta_len = len(self._meta_runs[0]) + len(meta_uid) + len(self._meta_runs[1])
        group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, meta_len)
        ts = _SLICE_TAGS
        return b"".join(
            (
                _PREAMBLE,
                group_length,
                self._meta_runs[0],
                meta_uid,
                self._meta_runs[1],
                self._runs[0],
                _short(ts[0], b"UI", uid, b"\x00"),
                self._runs[1],
                _short(ts[1], b"IS", str(instance_number).encode("ascii"), b" "),
                self._runs[2],
                _short(ts[2], b"DS", "\\".join(position).encode("ascii"), b" "),
                self._runs[3],
                _short(ts[3], b"DS", location.encode("ascii"), b" "),
                self._runs[4],
                struct.pack("<HH2sHI", ts[4].group, ts[4].element, b"OW", 0, len(pixels)),
                pixels,
                self._runs[5],
            )
        )


def write_mr_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    patient_id: str,
    patient_name: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_description: str = "adaptrt",
    series_number: int = 1,
    study_date: str = "20000101",
    study_time: str = "000000",
    study_id: str = "1",
    uid_seed: str | None = None,
    overwrite: bool = False,
) -> DicomSeries:
    """Write a volume as a DICOM MR Image Storage series, one file per slice.

    Parameters
    ----------
    volume
        Image, shape ``(z, y, x)``, any orthonormal direction (oblique too), at least two slices. Boolean and
        integer volumes (also integral floats) within the 16-bit range are stored exactly; other values are
        quantised to 16 bits with RescaleSlope / RescaleIntercept so that reading back reproduces them to
        within ``RescaleSlope / 2``. A volume whose slice axis points against ``row × column`` (a
        right-handed direction matrix) is written in reverse slice order, as any reader will sort it; see
        the returned record.
    folder
        Output folder; created. Files are named ``MR_0001.dcm``, ... in slice order.
    patient_id, patient_name
        PatientID and PatientName (PatientName defaults to ``patient_id``).
    study_uid, series_uid, frame_of_reference_uid
        UIDs to use; those left out are derived from ``uid_seed`` with :func:`make_uid`, or random.
    series_description, series_number, study_date, study_time, study_id
        Values of SeriesDescription, SeriesNumber, StudyDate (YYYYMMDD), StudyTime (HHMMSS), StudyID.
    uid_seed
        Makes every generated UID deterministic: the same inputs give byte-identical files. The UIDs are
        ``make_uid(uid_seed, "study")``, ``make_uid(uid_seed, "series")``,
        ``make_uid(uid_seed, "frame_of_reference")`` and, for slice ``k`` (0-based, in written order),
        ``make_uid(uid_seed, series_instance_uid, "instance", str(k))``. So give every series of one study
        its own seed and pass the shared ``study_uid`` / ``frame_of_reference_uid`` explicitly. No
        wall-clock date or time is ever written.
    overwrite
        Replace an existing non-empty ``folder`` (its whole contents). The new series is written to a
        temporary folder and moved into place only when complete.

    Returns
    -------
    DicomSeries
        The series as :func:`read_dicom_series` would return it for ``folder`` (not re-read from disk).

    Raises
    ------
    InputError
        ``folder`` is a file, or non-empty and ``overwrite`` is False; an invalid UID, date, time or text.
    ValueError
        A single-slice volume, or NaN / infinite values.
    """
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise InputError(
            "is a file, not a folder", path=target, fix="choose a folder path for the DICOM series"
        )
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise InputError(
            "the folder already exists and is not empty",
            path=target,
            fix="choose another folder, empty it, or pass overwrite=True (--overwrite on the command line)",
        )
    if volume.shape[0] < 2:
        raise ValueError(
            f"a DICOM series needs at least two slices to be read back (got shape {volume.shape}): the "
            "slice spacing is taken from the slice positions"
        )
    if volume.shape[1] > _UINT16_MAX or volume.shape[2] > _UINT16_MAX:
        raise ValueError(
            f"slices of {volume.shape[1]} x {volume.shape[2]} pixels do not fit DICOM Rows/Columns"
        )
    if isinstance(series_number, bool) or not isinstance(series_number, int | np.integer):
        raise InputError(f"{series_number!r} is not an integer", field="SeriesNumber", fix="pass an integer")
    patient_id = _check_text(patient_id, "PatientID", 64)
    patient_name = _check_text(patient_id if patient_name is None else patient_name, "PatientName", 64)
    series_description = _check_text(series_description, "SeriesDescription", 64)
    study_id = _check_text(study_id, "StudyID", 16)
    study_date = _check_dt(study_date, "StudyDate", 8)
    study_time = _check_dt(study_time, "StudyTime", 6)

    def new_uid(keyword: str, given: str | None, *parts: str) -> str:
        if given is not None:
            return str(_check_uid(given, keyword))
        return make_uid(uid_seed, *parts) if uid_seed is not None else str(generate_uid())

    study = new_uid("StudyInstanceUID", study_uid, "study")
    series = new_uid("SeriesInstanceUID", series_uid, "series")
    frame = new_uid("FrameOfReferenceUID", frame_of_reference_uid, "frame_of_reference")
    n = volume.shape[0]
    # instance UIDs hang off the series UID, so two series written with one seed never share an instance UID
    sop_uids = [
        make_uid(uid_seed, series, "instance", str(k)) if uid_seed is not None else str(generate_uid())
        for k in range(n)
    ]

    vol = _canonical(volume)
    quantised = _quantise(np.asarray(vol.array))
    ds = _template(
        quantised=quantised,
        volume=vol,
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study,
        series_uid=series,
        frame_of_reference_uid=frame,
        series_description=series_description,
        series_number=int(series_number),
        study_date=study_date,
        study_time=study_time,
        study_id=study_id,
    )
    positions_text = [[_format_ds(c) for c in vol.index_to_world((k, 0, 0))] for k in range(n)]
    normal = vol.direction[:, 0]
    locations_text = [_format_ds(float(np.asarray(p, dtype=float) @ normal)) for p in positions_text]
    names = [f"MR_{k + 1:0{max(4, len(str(n)))}d}.dcm" for k in range(n)]
    stored = quantised.stored.astype(quantised.stored.dtype.newbyteorder("<"), copy=False)

    ds.SOPInstanceUID = sop_uids[0]
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uids[0])
    ds.ImagePositionPatient = positions_text[0]
    ds.SliceLocation = locations_text[0]
    # the geometry as a reader will derive it from the DS text, so both give identical records; checked
    # before anything is written
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    geom = _geometry(
        np.asarray(positions_text, dtype=float),
        iop,
        np.asarray([float(v) for v in ds.PixelSpacing]),
        [target / nm for nm in names],
        target,
    )
    header = copy.deepcopy(ds)
    del header.PixelData
    encoder = _SliceEncoder(ds)
    with atomic_dir(target, overwrite=True) as tmp:
        for k in range(n):
            data = encoder.encode(
                sop_instance_uid=sop_uids[k],
                instance_number=k + 1,
                position=positions_text[k],
                location=locations_text[k],
                pixels=stored[k].tobytes(),
            )
            (tmp / names[k]).write_bytes(data)

    slope = float(quantised.slope) if quantised.slope else 1.0
    intercept = float(quantised.intercept) if quantised.intercept else 0.0
    values = _rescale(quantised.stored[geom.order], slope, intercept)
    values.flags.writeable = False  # Volume keeps a read-only array without copying it again
    out = Volume(values, spacing=geom.spacing, origin=geom.origin, direction=geom.direction)
    return DicomSeries(
        volume=out,
        series_instance_uid=series,
        study_instance_uid=study,
        frame_of_reference_uid=frame,
        sop_class_uid=str(MRImageStorage),
        sop_instance_uids=tuple(sop_uids[i] for i in geom.order),
        files=tuple(target / names[i] for i in geom.order),
        patient_id=patient_id,
        patient_name=patient_name,
        modality="MR",
        series_description=series_description,
        header=header,
    )
