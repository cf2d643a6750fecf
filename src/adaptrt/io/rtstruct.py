"""RT Structure Sets (RTSTRUCT): read an ROI as a mask on an image series' grid, write masks as contours.

Reading rasterises the ROI's ``CLOSED_PLANAR`` contours slice by slice: each contour's points (LPS mm) are
mapped to continuous array indices of the image series, must lie on one of its slice planes, and are filled
at the pixel centres; several contours on one slice combine with the even-odd rule, so a contour inside
another one is a hole. A pixel whose centre lies on a contour edge (within :data:`ON_EDGE_TOLERANCE` of a
pixel) is inside: many mask-to-contour converters (rt-utils, OpenCV ``findContours``, AI segmentation
exports) trace the centres of the boundary pixels, often with float32 noise, and a half-open fill would drop
those pixels on one side or the other. Freehand contours are unaffected (their edges pass through pixel
centres only by chance, and then within the tolerance).

Writing traces every slice of each boolean mask with marching squares at level 0.5 on the zero-padded
slice. The traced boundary runs half-way between inside and outside pixel centres, so reading the file
back with the even-odd rule gives the same mask, holes included.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import re
import struct
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from skimage.measure import find_contours

from .. import __version__
from ..errors import InputError
from ..types import Volume
from .atomic import atomic_file, check_writable
from .dicom import DicomSeries, make_uid

__all__ = [
    "ON_EDGE_TOLERANCE",
    "ROI_PALETTE",
    "RT_STRUCTURE_SET_STORAGE",
    "Roi",
    "read_rtstruct",
    "rtstruct_roi_names",
    "write_rtstruct",
]

#: SOP Class UID of RT Structure Set Storage.
RT_STRUCTURE_SET_STORAGE = str(RTStructureSetStorage)

# Conventional ReferencedSOPClassUID of RTReferencedStudySequence items (the retired Detached Study
# Management SOP Class): what treatment planning systems write and expect there.
_STUDY_REFERENCE_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"

#: Colours given to ROIs without one, by position (RGB 0-255).
ROI_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0),
    (0, 200, 0),
    (0, 100, 255),
    (255, 200, 0),
    (255, 0, 255),
    (0, 220, 220),
    (255, 128, 0),
    (150, 80, 255),
    (128, 128, 0),
    (255, 128, 160),
)

# A contour whose points are further than this (in slices) from a slice plane is not on this series' grid.
_SLICE_TOL = 0.25
#: A pixel whose centre is within this distance (in pixels) of a contour edge is inside the ROI. Float32 noise
#: of pixel-centre contours is ~1e-6 pixel; the extra area given to a freehand contour is about
#: ``perimeter x tolerance`` (0.04 % of a disc of radius 10 pixels).
ON_EDGE_TOLERANCE = 2e-3
# Explicit VR DS elements have a 2-byte length.
_MAX_DS_ELEMENT_BYTES = 65534
_DS_MAX_CHARS = 16
_CONTOUR_DATA = Tag(0x3006, 0x0050)
_CS_PATTERN = re.compile(r"[A-Z0-9_ ]{0,16}")
_ROI_NAME_MAX = 64
_LABEL_MAX = 16
_DESCRIPTION_MAX = 1024
_SERIES_DESCRIPTION_MAX = 64
_SERIES_NUMBER_OFFSET = 1000
_IS_MAX = 2**31 - 1

# (keyword, copy when absent as an empty Type 2 attribute?)
_PATIENT_ATTRIBUTES: tuple[tuple[str, bool], ...] = (
    ("PatientName", True),
    ("PatientID", True),
    ("IssuerOfPatientID", False),
    ("PatientBirthDate", True),
    ("PatientSex", True),
    ("OtherPatientIDsSequence", False),
    ("PatientIdentityRemoved", False),
    ("DeidentificationMethod", False),
    ("PatientComments", False),
)
_STUDY_ATTRIBUTES: tuple[tuple[str, bool], ...] = (
    ("StudyDate", True),
    ("StudyTime", True),
    ("ReferringPhysicianName", True),
    ("StudyID", True),
    ("AccessionNumber", True),
    ("StudyDescription", False),
    # Patient Study module (optional)
    ("PatientAge", False),
    ("PatientSize", False),
    ("PatientWeight", False),
)


# ---------------------------------------------------------------------------------------------- record
@dataclass(frozen=True, eq=False)
class Roi:
    """One region of interest to write into an RT Structure Set.

    Parameters
    ----------
    name
        ROIName: non-empty, at most 64 characters, no backslash. Surrounding spaces are removed.
    mask
        Boolean :class:`~adaptrt.types.Volume` of shape ``(z, y, x)`` on the image series' grid.
    color
        ROIDisplayColor as RGB integers 0-255, or ``None`` for :data:`ROI_PALETTE` by the ROI's position.
    interpreted_type
        RTROIInterpretedType, a DICOM code string such as ``"GTV"``, ``"CTV"``, ``"PTV"``, ``"ORGAN"``,
        ``"EXTERNAL"``, ``"CONTROL"`` (upper case, at most 16 characters; may be empty).
    """

    name: str
    mask: Volume
    color: tuple[int, int, int] | None = None
    interpreted_type: str = "GTV"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"ROI name must be a string, got {type(self.name).__name__}")
        name = self.name.strip()
        if not name:
            raise ValueError("ROI name must not be empty")
        if len(name) > _ROI_NAME_MAX or "\\" in name or any(ord(ch) < 32 for ch in name):
            raise ValueError(
                f"ROI name {name!r} is not a valid DICOM ROIName (at most {_ROI_NAME_MAX} characters, "
                "no backslash or control characters)"
            )
        object.__setattr__(self, "name", name)
        if not isinstance(self.mask, Volume) or not self.mask.is_mask:
            got = (
                f"a Volume of dtype {self.mask.dtype}"
                if isinstance(self.mask, Volume)
                else repr(type(self.mask))
            )
            raise ValueError(f"ROI {name!r}: mask must be a boolean Volume, got {got}")
        if self.color is not None:
            rgb = tuple(self.color)
            if len(rgb) != 3 or not all(
                isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= int(c) <= 255
                for c in rgb
            ):
                raise ValueError(
                    f"ROI {name!r}: color must be three integers 0-255 (R, G, B), got {self.color!r}"
                )
            object.__setattr__(self, "color", (int(rgb[0]), int(rgb[1]), int(rgb[2])))
        kind = str(self.interpreted_type).strip().upper()
        if not _CS_PATTERN.fullmatch(kind):
            raise ValueError(
                f"ROI {name!r}: interpreted_type {self.interpreted_type!r} is not a DICOM code string "
                "(upper-case letters, digits, '_' or space, at most 16 characters), e.g. 'GTV', 'PTV', 'ORGAN'"
            )
        object.__setattr__(self, "interpreted_type", kind)


# ---------------------------------------------------------------------------------------------- reading
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class _Truncated(Exception):
    """The encoded dataset ends before an element, item or sequence that it declares."""


class _Walker:
    """Walk the encoding of a DICOM file, checking that every declared length and delimiter is there.

    pydicom stops quietly when a file ends at an element boundary inside a sequence, which turns an
    incomplete copy into a structure set with fewer contours; this walk finds such files.
    """

    def __init__(self, data: bytes, *, explicit: bool, little: bool) -> None:
        self.data = data
        self.explicit = explicit
        self.order = "<" if little else ">"

    def _unpack(self, fmt: str, pos: int, end: int) -> tuple[int, ...]:
        size = struct.calcsize(self.order + fmt)
        if pos + size > end:
            raise _Truncated(pos)
        return struct.unpack_from(self.order + fmt, self.data, pos)

    def dataset(self, pos: int, end: int, *, until_item_end: bool) -> int:
        """Walk elements from ``pos`` to ``end`` (or to an item delimiter); return the position after."""
        while pos < end or until_item_end:
            group, element = self._unpack("HH", pos, end)
            tag = (group << 16) | element
            if tag == _ITEM_END:
                return pos + 8
            vr = b""
            if self.explicit and group != 0xFFFE:
                vr = self.data[pos + 4 : pos + 6]
                if vr in _LONG_LENGTH_VRS:
                    (length,) = self._unpack("L", pos + 8, end)
                    pos += 12
                else:
                    (length,) = self._unpack("H", pos + 6, end)
                    pos += 8
            else:
                (length,) = self._unpack("L", pos + 4, end)
                pos += 8
            is_sequence = vr == b"SQ" or (not vr and _dictionary_vr(tag) == "SQ")
            if length == _UNDEFINED:
                pos = self.items(pos, end, defined=False)
            elif is_sequence:
                if pos + length > end:
                    raise _Truncated(pos)
                self.items(pos, pos + length, defined=True)
                pos += length
            else:
                if pos + length > end:
                    raise _Truncated(pos)
                pos += length
        return pos

    def items(self, pos: int, end: int, *, defined: bool) -> int:
        """Walk sequence items (or encapsulated fragments) from ``pos``; return the position after."""
        while pos < end or not defined:
            group, element = self._unpack("HH", pos, end)
            (length,) = self._unpack("L", pos + 4, end)
            tag = (group << 16) | element
            pos += 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise _Truncated(pos)
            if length == _UNDEFINED:
                pos = self.dataset(pos, end, until_item_end=True)
            else:
                if pos + length > end:
                    raise _Truncated(pos)
                first = self.data[pos : pos + 2]
                # an item of a sequence holds a dataset; a fragment of encapsulated data does not
                if length >= 8 and first != b"\xff\xd8":
                    with contextlib.suppress(_Truncated):
                        self.dataset(pos, pos + length, until_item_end=False)
                pos += length
        return pos


def _dictionary_vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _truncated_at(path: Path, ds: Dataset) -> int | None:
    """The byte offset at which ``path`` ends too early, or ``None`` when its encoding is complete."""
    syntax = str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", "") or "")
    if syntax == "1.2.840.10008.1.2.1.99":  # deflated: the compressed stream cannot be walked cheaply
        return None
    data = path.read_bytes()
    if data[128:132] != b"DICM" or not syntax:
        return None  # no file meta: the encoding is a guess, so only pydicom's own checks apply
    try:
        pos = 132
        meta = _Walker(data, explicit=True, little=True)  # the file meta group: explicit VR little endian
        while pos + 4 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
            pos = meta.dataset(pos, pos + 8 + _meta_element_length(data, pos), until_item_end=False)
        walker = _Walker(
            data,
            explicit=syntax not in ("", "1.2.840.10008.1.2"),
            little=syntax != "1.2.840.10008.1.2.2",
        )
        walker.dataset(pos, len(data), until_item_end=False)
    except _Truncated as exc:
        return int(exc.args[0])
    except struct.error:
        return len(data)
    return None


def _meta_element_length(data: bytes, pos: int) -> int:
    """Bytes after the 8-byte header of the file meta element at ``pos`` (explicit VR little endian)."""
    if pos + 12 > len(data):
        raise _Truncated(pos)
    if data[pos + 4 : pos + 6] in _LONG_LENGTH_VRS:
        return 4 + int(struct.unpack_from("<L", data, pos + 8)[0])
    return int(struct.unpack_from("<H", data, pos + 6)[0])


def _check_complete(path: Path, ds: Dataset) -> None:
    offset = _truncated_at(path, ds)
    size = path.stat().st_size
    problem = None
    if offset is not None:
        problem = (
            f"is incomplete: the data that starts at byte {offset} runs past the end of the file ({size} bytes), "
            "so contours are missing (an interrupted copy or download?)"
        )
    elif "StructureSetROISequence" in ds and "ROIContourSequence" not in ds:
        # ends at an element boundary after the ROI list: complete structure sets always hold the contours
        problem = (
            f"is incomplete: it ends ({size} bytes) before its ROIContourSequence, so the contours are missing "
            "(an interrupted copy or download?)"
        )
    if problem is not None:
        raise InputError(
            problem, path=path, fix="copy or export the structure set again and check that the copy finished"
        )


def _load(path: str | os.PathLike[str]) -> tuple[Path, Dataset]:
    """Read ``path`` and check that it is an RT Structure Set."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            "no such file" if not p.exists() else "is not a file",
            path=p,
            fix="give the path of an RT Structure Set (RTSTRUCT) DICOM file",
        )
    ds: Dataset | None
    try:
        ds = pydicom.dcmread(p)
    except InvalidDicomError:
        ds = None
    except Exception as exc:  # a damaged file can fail anywhere in pydicom's parser
        raise InputError(
            f"could not be read as DICOM ({type(exc).__name__}: {exc})",
            path=p,
            fix="check that the file is a complete RT Structure Set DICOM file",
        ) from exc
    if ds is None:
        # Files without the 128-byte preamble can still be DICOM; accept them only if they parse and
        # carry the attributes that identify an object.
        try:
            with warnings.catch_warnings():
                # pydicom's guesses about a preamble-less file are noise here; the checks below decide
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(p, force=True)
            if "SOPClassUID" not in ds and "Modality" not in ds:
                ds = None
        except Exception:
            ds = None
    if ds is None:
        raise InputError(
            "is not a DICOM file",
            path=p,
            fix="give the path of an RT Structure Set (RTSTRUCT) DICOM file",
        )
    _check_complete(p, ds)
    _check_is_rtstruct(ds, p)
    return p, ds


def _check_is_rtstruct(ds: Dataset, path: Path) -> None:
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    if not sop_class and getattr(ds, "file_meta", None) is not None:
        sop_class = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "").strip()
    modality = str(ds.get("Modality", "") or "").strip()
    if sop_class == RT_STRUCTURE_SET_STORAGE:
        return
    fix = "give the RT Structure Set (RTSTRUCT) file that holds the contours, not an image or another object"
    if sop_class:
        name = UID(sop_class).name
        raise InputError(
            f"is not an RT Structure Set: SOPClassUID is {sop_class} ({name}), Modality {modality or 'absent'}; "
            f"expected {RT_STRUCTURE_SET_STORAGE} (RT Structure Set Storage)",
            path=path,
            field="SOPClassUID",
            fix=fix,
        )
    if modality != "RTSTRUCT":
        raise InputError(
            f"is not an RT Structure Set: Modality is {modality or 'absent'}, expected RTSTRUCT",
            path=path,
            field="Modality",
            fix=fix,
        )


@dataclass(frozen=True)
class _RoiEntry:
    number: int
    name: str
    frame_of_reference_uid: str


def _roi_entries(ds: Dataset, path: Path) -> list[_RoiEntry]:
    if "StructureSetROISequence" not in ds:
        raise InputError(
            "has no StructureSetROISequence, so it defines no ROIs",
            path=path,
            field="StructureSetROISequence",
            fix="export the structure set again from the planning system",
        )
    frames = [
        str(item.get("FrameOfReferenceUID", "") or "")
        for item in ds.get("ReferencedFrameOfReferenceSequence", None) or []
    ]
    entries = []
    for pos, item in enumerate(ds.StructureSetROISequence, start=1):
        number = item.get("ROINumber", None)
        if number is None or str(number).strip() == "":
            raise InputError(
                f"item {pos} of StructureSetROISequence has no ROINumber",
                path=path,
                field="ROINumber",
                fix="export the structure set again from the planning system",
            )
        frame = str(item.get("ReferencedFrameOfReferenceUID", "") or "").strip()
        if not frame and len(set(frames)) == 1:
            frame = frames[0]  # Type 1, but some exporters leave it out when there is one frame
        entries.append(_RoiEntry(int(number), str(item.get("ROIName", "") or ""), frame))
    return entries


def rtstruct_roi_names(path: str | os.PathLike[str]) -> list[str]:
    """List the ROI names (ROIName of StructureSetROISequence) of an RT Structure Set, in file order.

    Parameters
    ----------
    path
        An RT Structure Set DICOM file.

    Returns
    -------
    list of str
        The names as written in the file (including any surrounding spaces).

    Raises
    ------
    InputError
        When the file is missing, not DICOM or not an RT Structure Set.
    """
    p, ds = _load(path)
    return [entry.name for entry in _roi_entries(ds, p)]


def _key(name: str) -> str:
    return name.strip().casefold()


def _find_roi(entries: Sequence[_RoiEntry], roi_name: str, path: Path) -> _RoiEntry:
    exact = [e for e in entries if e.name.strip() == roi_name.strip()]
    matches = exact or [e for e in entries if _key(e.name) == _key(roi_name)]
    names = ", ".join(repr(e.name) for e in entries) or "none"
    if not matches:
        raise InputError(
            f"has no ROI named {roi_name!r} (compared ignoring case); the ROIs are: {names}",
            path=path,
            field="ROIName",
            fix="use one of the listed names",
        )
    if len(matches) > 1:
        raise InputError(
            f"has {len(matches)} ROIs named {roi_name!r} (ROI numbers "
            f"{', '.join(str(e.number) for e in matches)}), so the name is ambiguous",
            path=path,
            field="ROIName",
            fix="rename the duplicate ROIs in the planning system and export again",
        )
    return matches[0]


def _contour_values(item: Dataset, pos: int, roi: _RoiEntry, path: Path) -> NDArray[np.float64]:
    raw = item.get_item(_CONTOUR_DATA)
    try:
        if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
            # Parse the text directly: converting to pydicom DSfloat objects is far slower.
            text = raw.value.replace(b"\0", b" ").strip()
            if not text:
                return np.empty(0)
            return np.asarray(text.split(b"\\"), dtype=np.float64)
        value = item.ContourData
        if value is None:
            return np.empty(0)
        values = list(value) if isinstance(value, Sequence | MultiValue) else [value]
        return np.asarray(values, dtype=np.float64)
    except ValueError as exc:
        raise InputError(
            f"contour {pos} of ROI {roi.name!r} has a ContourData value that is not a number ({exc})",
            path=path,
            field="ContourData",
            fix="export the structure set again from the planning system",
        ) from exc


def _contour_points(item: Dataset, pos: int, roi: _RoiEntry, path: Path) -> NDArray[np.float64]:
    """Points ``(N, 3)`` in LPS mm of one ContourSequence item."""
    if _CONTOUR_DATA not in item:
        raise InputError(
            f"contour {pos} of ROI {roi.name!r} has no ContourData",
            path=path,
            field="ContourData",
            fix="export the structure set again from the planning system",
        )
    data = _contour_values(item, pos, roi, path)
    if data.size % 3 or not np.all(np.isfinite(data)):
        raise InputError(
            f"contour {pos} of ROI {roi.name!r} has {data.size} ContourData values, which is not a whole "
            "number of finite (x, y, z) points",
            path=path,
            field="ContourData",
            fix="export the structure set again from the planning system",
        )
    return data.reshape(-1, 3)


def _scanline_crossings(
    rows_of_points: NDArray[np.float64], cols_of_points: NDArray[np.float64], ny: int, nx: int
) -> NDArray[np.int64]:
    """Where a closed polygon's edges cross the pixel-centre rows: flat indices into a ``(ny, nx + 1)`` grid.

    An edge crosses row ``r`` when ``min(y0, y1) <= r < max(y0, y1)`` (half-open, so a vertex on a row is
    counted once where the boundary passes through it); the crossing is recorded at the first column whose
    centre lies at or right of it, clipped to ``[0, nx]``.
    """
    y0, x0 = rows_of_points, cols_of_points
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    first = np.clip(np.ceil(np.minimum(y0, y1)), 0, ny).astype(np.int64)
    stop = np.clip(np.ceil(np.maximum(y0, y1)), 0, ny).astype(np.int64)
    count = np.maximum(stop - first, 0)
    edge = np.repeat(np.arange(len(y0)), count)
    if edge.size == 0:
        return edge
    rows = first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(count) - count, count))
    t = (rows - y0[edge]) / (y1[edge] - y0[edge])  # horizontal edges cross no row, so no division by 0
    cols = np.clip(np.ceil(x0[edge] + t * (x1[edge] - x0[edge])), 0, nx).astype(np.int64)
    return rows * (nx + 1) + cols


def _on_edge_major(
    a0: NDArray[np.float64], b0: NDArray[np.float64], a1: NDArray[np.float64], b1: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Integer points ``(a, b)`` within :data:`ON_EDGE_TOLERANCE` of segments whose major axis is ``a``.

    For every integer ``a`` along a segment (``|db| <= |da|``) only the nearest integer ``b`` can lie within
    the tolerance (< 0.35 pixel), so one candidate per column is tested with the exact point-segment distance.
    """
    tol = ON_EDGE_TOLERANCE
    first = np.ceil(np.minimum(a0, a1) - tol).astype(np.int64)
    stop = np.floor(np.maximum(a0, a1) + tol).astype(np.int64) + 1
    count = np.maximum(stop - first, 0)
    seg = np.repeat(np.arange(len(a0)), count)
    if seg.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    a = first[seg] + (np.arange(seg.size) - np.repeat(np.cumsum(count) - count, count))
    da, db = a1[seg] - a0[seg], b1[seg] - b0[seg]
    length2 = da * da + db * db
    safe = np.where(length2 > 0, length2, 1.0)
    # where the segment passes the integer a (|da| >= |db|, so da is 0 only for a zero-length segment)
    along = np.where(da != 0, (a - a0[seg]) / np.where(da != 0, da, 1.0), 0.0)
    b = np.rint(b0[seg] + np.clip(along, 0.0, 1.0) * db)
    # exact distance of (a, b) to the segment
    t = np.where(length2 > 0, ((a - a0[seg]) * da + (b - b0[seg]) * db) / safe, 0.0)
    t = np.clip(t, 0.0, 1.0)
    dist = np.hypot(a - (a0[seg] + t * da), b - (b0[seg] + t * db))
    keep = dist <= tol
    return a[keep], b[keep].astype(np.int64)


def _on_edge_pixels(
    rows_of_points: NDArray[np.float64], cols_of_points: NDArray[np.float64], ny: int, nx: int
) -> NDArray[np.int64]:
    """Pixels whose centre lies on a closed polygon's edges: flat indices into a ``(ny, nx)`` slice.

    A polygon of one or two points (a contour traced around a one- or two-pixel island) marks the pixels
    on its points and segment.
    """
    y0, x0 = rows_of_points, cols_of_points
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    flat = np.abs(x1 - x0) >= np.abs(y1 - y0)
    cols_a, rows_a = _on_edge_major(x0[flat], y0[flat], x1[flat], y1[flat])
    rows_b, cols_b = _on_edge_major(y0[~flat], x0[~flat], y1[~flat], x1[~flat])
    rows = np.concatenate([rows_a, rows_b])
    cols = np.concatenate([cols_a, cols_b])
    inside = (rows >= 0) & (rows < ny) & (cols >= 0) & (cols < nx)
    return np.asarray(rows[inside] * nx + cols[inside], dtype=np.int64)


def _rasterise(
    contours: Sequence[tuple[int, NDArray[np.float64]]], volume: Volume, roi: _RoiEntry, path: Path
) -> NDArray[np.bool_]:
    """Fill contours ``(position, points (N, 3) LPS mm)`` on ``volume``'s grid with the even-odd rule.

    A scanline fill at the pixel centres: every crossing of a contour with a row toggles inside/outside
    for the pixels right of it. Pooling the crossings of all contours on a slice before taking the parity
    is the even-odd rule across contours, so a contour inside another one cuts a hole. Pixels whose centre
    lies on an edge of any contour (within :data:`ON_EDGE_TOLERANCE`) are then added: the half-open fill
    alone would count them on one side of a contour only. Points outside the slice are clipped.
    """
    nz, ny, nx = volume.shape
    mask = np.zeros((nz, ny, nx), dtype=bool)
    crossings: dict[int, list[NDArray[np.int64]]] = {}
    on_edge: dict[int, list[NDArray[np.int64]]] = {}
    outside = 0
    for pos, points in contours:
        index = volume.world_to_index(points)
        k = index[:, 0]
        plane = round(float(np.median(k)))
        off = float(np.max(np.abs(k - plane)))
        if off > _SLICE_TOL:
            raise InputError(
                f"contour {pos} of ROI {roi.name!r} is not on this series' slice planes: its points lie at "
                f"slice index {k.min():.2f} to {k.max():.2f} (between slices or across several)",
                path=path,
                field="ContourData",
                fix="read the structure set with the image series it was drawn on (the same slice positions) "
                "and resample that mask onto this series",
            )
        if not 0 <= plane < nz:
            outside += 1
            continue
        if len(points) >= 3:
            crossings.setdefault(plane, []).append(_scanline_crossings(index[:, 1], index[:, 2], ny, nx))
        on_edge.setdefault(plane, []).append(_on_edge_pixels(index[:, 1], index[:, 2], ny, nx))
    for plane, parts in crossings.items():
        toggles = np.bincount(np.concatenate(parts), minlength=ny * (nx + 1)).reshape(ny, nx + 1)
        mask[plane] = (np.cumsum(toggles[:, :nx], axis=1) % 2).astype(bool)
    for plane, parts in on_edge.items():
        mask[plane].reshape(-1)[np.concatenate(parts)] = True
    if outside:
        warnings.warn(
            f"{path}: {outside} contour(s) of ROI {roi.name!r} lie on slices outside the image series "
            f"(which has {nz} slices) and were ignored",
            stacklevel=3,
        )
    return mask


def read_rtstruct(path: str | os.PathLike[str], roi_name: str, series: DicomSeries) -> Volume:
    """Read one ROI of an RT Structure Set as a boolean mask on an image series' grid.

    Parameters
    ----------
    path
        An RT Structure Set DICOM file.
    roi_name
        The ROI's name; compared ignoring case and surrounding spaces (an exact match wins).
    series
        The image series the structure set was drawn on; its frame of reference must match the ROI's.

    Returns
    -------
    Volume
        Boolean mask of shape ``series.volume.shape`` ``(z, y, x)`` with the series' geometry. An ROI
        without contours gives an all-False mask (the caller decides whether that is an error).

    Raises
    ------
    InputError
        When the file is not an RT Structure Set, has no such ROI (the message lists the names), belongs
        to another frame of reference, or has a contour that does not lie on one of the series' slices.

    Warns
    -----
    UserWarning
        For POINT / OPEN_PLANAR / OPEN_NONPLANAR contours and contours without points (ignored) and for
        contours on slices outside the series (ignored). Points outside a slice are clipped.

    Notes
    -----
    Pixel centres on a contour edge (within :data:`ON_EDGE_TOLERANCE` pixel) are inside, so contours
    traced through the centres of the boundary pixels (rt-utils, OpenCV) read back as the traced mask; a
    ``CLOSED_PLANAR`` contour of one or two points marks the pixel(s) it passes through.
    """
    p, ds = _load(path)
    roi = _find_roi(_roi_entries(ds, p), roi_name, p)
    if roi.frame_of_reference_uid != series.frame_of_reference_uid:
        raise InputError(
            f"ROI {roi.name!r} is defined in frame of reference {roi.frame_of_reference_uid or '(none)'}, but "
            f"the image series {series.series_instance_uid} has frame of reference "
            f"{series.frame_of_reference_uid}: the structure set belongs to another image series",
            path=p,
            field="ReferencedFrameOfReferenceUID",
            fix="pair the structure set with the image series it was drawn on",
        )
    contours: list[tuple[int, NDArray[np.float64]]] = []
    skipped: Counter[str] = Counter()
    pos = 0
    for rc in ds.get("ROIContourSequence", None) or []:
        number = rc.get("ReferencedROINumber", None)
        if number is None or str(number).strip() == "" or int(number) != roi.number:
            continue
        for item in rc.get("ContourSequence", None) or []:
            pos += 1
            kind = str(item.get("ContourGeometricType", "") or "").strip().upper()
            if kind != "CLOSED_PLANAR":
                skipped[kind or "no ContourGeometricType"] += 1
                continue
            points = _contour_points(item, pos, roi, p)
            if len(points) == 0:
                skipped["CLOSED_PLANAR without points"] += 1
                continue
            # one or two points: a contour traced through the centre(s) of a one- or two-pixel island,
            # which marks those pixels (see _on_edge_pixels)
            contours.append((pos, points))
    if skipped:
        what = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
        warnings.warn(
            f"{p}: ROI {roi.name!r}: ignored contours that do not enclose an area ({what})", stacklevel=2
        )
    mask = _rasterise(contours, series.volume, roi, p)
    return series.volume.with_array(mask)


# ---------------------------------------------------------------------------------------------- writing
def _format_ds(value: float, decimals: int) -> str:
    """``value`` as a DICOM DS string with at most ``decimals`` decimals, trailing zeros trimmed."""
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > _DS_MAX_CHARS:
        raise ValueError(f"the coordinate {value} mm does not fit in a 16-character DICOM decimal string")
    return text


def _contour_data(world: NDArray[np.float64]) -> list[str]:
    """ContourData strings for points ``(N, 3)`` in mm, as precise as the element's size limit allows."""
    if not np.all(np.isfinite(world)):
        raise ValueError("contour points must be finite")
    flat = world.ravel().tolist()
    texts: list[str] = []
    # Fewer decimals only for very long contours; 0.01 mm is still far below any voxel size.
    for decimals in (6, 4, 3, 2):
        texts = [_format_ds(v, decimals) for v in flat]
        if sum(len(t) for t in texts) + len(texts) - 1 <= _MAX_DS_ELEMENT_BYTES:
            return texts
    raise ValueError(
        f"a contour of {len(world)} points is too long for one ContourData element "
        f"({_MAX_DS_ELEMENT_BYTES} bytes)"
    )


def _drop_collinear(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Remove vertices that lie on a straight run of a closed polygon ``(N, 2)`` (same shape)."""
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = np.sum(before * after, axis=1)
    keep = ~((np.abs(cross) < 1e-9) & (dot > 0))
    return points[keep] if np.count_nonzero(keep) >= 3 else points


def _slice_contours(mask: NDArray[np.bool_]) -> list[tuple[int, NDArray[np.float64]]]:
    """Closed contours ``(slice k, (N, 2) array of continuous (row, col) indices)`` of a mask ``(z, y, x)``."""
    out = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        # Zero padding closes contours at the image edge; level 0.5 puts the boundary half-way between
        # inside and outside pixel centres, so filling at pixel centres reproduces the slice exactly.
        padded = np.pad(mask[k], 1).astype(np.float64)
        for contour in find_contours(padded, 0.5):
            if len(contour) > 1 and np.array_equal(contour[0], contour[-1]):
                contour = contour[:-1]
            if len(contour) < 3:
                continue
            out.append((int(k), _drop_collinear(contour) - 1.0))
    return out


def _header_value(header: Any, keyword: str) -> Any:
    if not isinstance(header, Dataset) or keyword not in header:
        return None
    return header[keyword]


def _copy_attributes(ds: Dataset, header: Any, attributes: Sequence[tuple[str, bool]]) -> None:
    for keyword, type2 in attributes:
        element = _header_value(header, keyword)
        if element is None or element.value is None:
            if type2:
                setattr(ds, keyword, "")
            continue
        if element.VR == "SQ":
            setattr(ds, keyword, DicomSequence([_copy_dataset(item) for item in element.value]))
        elif element.VR == "PN":
            # Re-create from text: the written file declares its own character set (UTF-8).
            setattr(ds, keyword, str(element.value))
        else:
            setattr(ds, keyword, element.value)


def _copy_dataset(item: Dataset) -> Dataset:
    new = Dataset()
    for element in item:
        if element.VR == "SQ":
            new.add_new(element.tag, "SQ", DicomSequence([_copy_dataset(i) for i in element.value]))
        elif element.VR == "PN":
            new.add_new(element.tag, "PN", str(element.value) if element.value is not None else "")
        else:
            new.add_new(element.tag, element.VR, element.value)
    return new


def _header_text(header: Any, keyword: str) -> str:
    element = _header_value(header, keyword)
    return "" if element is None or element.value is None else str(element.value).strip()


def _series_number(header: Any) -> int:
    text = _header_text(header, "SeriesNumber")
    try:
        number = int(text) + _SERIES_NUMBER_OFFSET
    except ValueError:
        return _SERIES_NUMBER_OFFSET
    return number if 0 <= number <= _IS_MAX else _SERIES_NUMBER_OFFSET


def _check_inputs(
    rois: Sequence[Roi], series: DicomSeries, label: str, description: str, target: Path
) -> None:
    if not rois:
        raise ValueError("write_rtstruct needs at least one Roi (an RT Structure Set must define an ROI)")
    for roi in rois:
        if not isinstance(roi, Roi):
            raise ValueError(f"write_rtstruct takes Roi records, got {type(roi).__name__}")
    seen: dict[str, str] = {}
    for roi in rois:
        key = _key(roi.name)
        if key in seen:
            raise ValueError(
                f"ROI names must be unique ignoring case: {seen[key]!r} and {roi.name!r} clash; rename one"
            )
        seen[key] = roi.name
    nz = series.volume.shape[0]
    if len(series.sop_instance_uids) != nz:
        raise ValueError(
            f"the series has {nz} slices but {len(series.sop_instance_uids)} SOPInstanceUIDs; "
            "every slice needs its SOPInstanceUID for the contour references"
        )
    for keyword in ("series_instance_uid", "study_instance_uid", "frame_of_reference_uid", "sop_class_uid"):
        if not str(getattr(series, keyword) or "").strip():
            raise ValueError(f"the series has no {keyword}; an RT Structure Set must reference it")
    for roi in rois:
        difference = series.volume.geometry_difference(roi.mask)
        if difference is not None:
            raise InputError(
                f"the mask of ROI {roi.name!r} is not on the image series' grid: {difference}",
                path=target,
                field="mask",
                fix="resample the mask onto the image series (nearest neighbour) before writing the structure set",
            )
    text = label.strip()
    if not text or len(text) > _LABEL_MAX or "\\" in text or any(ord(ch) < 32 for ch in text):
        raise ValueError(
            f"label {label!r} is not a valid StructureSetLabel (1 to {_LABEL_MAX} characters, no backslash)"
        )
    if len(description) > _DESCRIPTION_MAX or "\\" in description:
        raise ValueError(
            f"description must be at most {_DESCRIPTION_MAX} characters without backslash, "
            f"got {len(description)} characters"
        )


def _content_digest(rois: Sequence[Roi], label: str, description: str) -> str:
    """A digest of everything written, so seeded UIDs differ whenever the content differs."""
    digest = hashlib.sha256()
    for roi in rois:
        digest.update(f"{roi.name}\0{roi.color}\0{roi.interpreted_type}\0".encode())
        digest.update(np.packbits(roi.mask.array).tobytes())
    digest.update(f"{label}\0{description}".encode())
    return digest.hexdigest()


def _image_reference(series: DicomSeries, k: int) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = series.sop_class_uid
    item.ReferencedSOPInstanceUID = series.sop_instance_uids[k]
    return item


def _build_dataset(
    rois: Sequence[Roi],
    series: DicomSeries,
    label: str,
    description: str,
    sop_uid: str,
    series_uid: str,
    date: str,
    time: str,
) -> Dataset:
    header = series.header
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"

    # SOP Common
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = sop_uid
    if date:
        ds.InstanceCreationDate = date
    if time:
        ds.InstanceCreationTime = time

    # Patient, General Study (and Patient Study): copied from the image series
    _copy_attributes(ds, header, _PATIENT_ATTRIBUTES)
    ds.StudyInstanceUID = series.study_instance_uid
    _copy_attributes(ds, header, _STUDY_ATTRIBUTES)

    # RT Series
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = _series_number(header)
    ds.SeriesDescription = description if 0 < len(description) <= _SERIES_DESCRIPTION_MAX else label
    ds.OperatorsName = ""

    # General Equipment
    ds.Manufacturer = "adaptrt"
    ds.SoftwareVersions = str(__version__)

    # Frame of Reference
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = _header_text(header, "PositionReferenceIndicator")

    # Structure Set
    ds.StructureSetLabel = label
    ds.StructureSetName = label
    if description:
        ds.StructureSetDescription = description
    ds.InstanceNumber = 1
    ds.StructureSetDate = date
    ds.StructureSetTime = time
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series.series_instance_uid
    referenced_series.ContourImageSequence = DicomSequence(
        [_image_reference(series, k) for k in range(series.volume.shape[0])]
    )
    referenced_study = Dataset()
    referenced_study.ReferencedSOPClassUID = _STUDY_REFERENCE_SOP_CLASS
    referenced_study.ReferencedSOPInstanceUID = series.study_instance_uid
    referenced_study.RTReferencedSeriesSequence = DicomSequence([referenced_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([referenced_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    structure_rois, roi_contours, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = series.frame_of_reference_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = ""
        item.ROIGenerationDescription = "contours traced from a voxel mask by adaptrt"
        structure_rois.append(item)

        contour_item = Dataset()
        contour_item.ReferencedROINumber = number
        contour_item.ROIDisplayColor = list(roi.color or ROI_PALETTE[(number - 1) % len(ROI_PALETTE)])
        contours = []
        for contour_number, (k, rowcol) in enumerate(_slice_contours(roi.mask.array), start=1):
            index = np.column_stack([np.full(len(rowcol), float(k)), rowcol])
            contour = Dataset()
            contour.ContourNumber = contour_number
            contour.ContourImageSequence = DicomSequence([_image_reference(series, k)])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(rowcol)
            contour.ContourData = _contour_data(series.volume.index_to_world(index))
            contours.append(contour)
        if contours:
            contour_item.ContourSequence = DicomSequence(contours)
        roi_contours.append(contour_item)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = roi.interpreted_type
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(structure_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_STRUCTURE_SET_STORAGE)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_rtstruct(
    rois: Sequence[Roi],
    series: DicomSeries,
    path: str | os.PathLike[str],
    *,
    label: str = "adaptrt",
    description: str = "",
    uid_seed: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write boolean masks as an RT Structure Set referencing an image series.

    Each ROI's mask is traced slice by slice (marching squares at level 0.5 on the zero-padded slice,
    collinear points removed) into ``CLOSED_PLANAR`` contours on the series' slice planes; holes become
    separate contours, so :func:`read_rtstruct` (even-odd rule) gives back the same mask.

    Parameters
    ----------
    rois
        At least one :class:`Roi`; names unique ignoring case; masks boolean, on ``series.volume``'s grid
        (shape ``(z, y, x)`` and geometry). An empty mask gives an ROI without contours.
    series
        The image series the contours are drawn on: its Patient and General Study attributes are copied
        from ``series.header``, and every contour references its slice's SOPInstanceUID.
    path
        The output file (conventionally ``*.dcm``).
    label
        StructureSetLabel (1-16 characters); also the SeriesDescription when ``description`` is empty.
    description
        StructureSetDescription (and SeriesDescription when it fits in 64 characters).
    uid_seed
        When given, the new SOPInstanceUID and SeriesInstanceUID are derived from it, the series' UID and
        the content, and the structure set date/time are the study's: the same inputs give a
        byte-identical file. When ``None``, UIDs are random and the date/time is now.
    overwrite
        Replace an existing ``path``; otherwise an existing file is an error.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    InputError
        When ``path`` exists and ``overwrite`` is False, or a mask is not on the series' grid.
    ValueError
        For invalid ROIs (no ROI, duplicate names), label or description, or an inconsistent series.

    Notes
    -----
    SeriesNumber is the image series' SeriesNumber + 1000 (1000 when the header has none).
    ROIGenerationAlgorithm is left empty (Type 2): the writer cannot know how a mask was made.
    Contour coordinates are written with up to 6 decimals (mm), fewer only for contours too long for
    one ContourData element.
    """
    target = check_writable(path, overwrite=overwrite)
    rois = list(rois)
    _check_inputs(rois, series, label, description, target)
    label = label.strip()
    if uid_seed is not None:
        digest = _content_digest(rois, label, description)
        base = (str(uid_seed), series.series_instance_uid, digest, "rtstruct")
        sop_uid = make_uid(*base, "sop-instance")
        series_uid = make_uid(*base, "series")
        date = _header_text(series.header, "StudyDate")
        time = _header_text(series.header, "StudyTime")
    else:
        sop_uid = str(generate_uid())
        series_uid = str(generate_uid())
        now = _dt.datetime.now()
        date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds = _build_dataset(rois, series, label, description, sop_uid, series_uid, date, time)
    with atomic_file(target, overwrite=overwrite) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return target
