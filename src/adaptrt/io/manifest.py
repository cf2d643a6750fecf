"""Cohort manifests: the CSV files that list a cohort's images and masks (format: ``docs/manifest.md``).

Two layouts:

* the **lesion manifest** (response and drift studies): one row per lesion and time point, read into a
  :class:`~adaptrt.cohort.Cohort` by :func:`read_manifest` and checked voxel by voxel by :func:`check_cohort`;
* the **glioblastoma manifest** (target study): one row per patient with co-registered NIfTI masks and
  parameter maps, read by :func:`read_glioblastoma_manifest` and checked by :func:`check_glioblastoma_cohort`.

Validation reports every problem of a file at once, in one :class:`~adaptrt.errors.InputError` whose message
lists them one per line as ``row R (line L), column 'C': what is wrong``. Rows are the 1-based data rows (the
header is row 0); ``line`` is the line of the file (the header is line 1), which is what a text editor or a
spreadsheet shows.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from tqdm import tqdm

from ..cohort import (
    FIRST_TIMEPOINT,
    FOLLOWUP_TIMEPOINT,
    SECOND_TIMEPOINT,
    Cohort,
    ImageRef,
    Lesion,
    MaskRef,
    Patient,
    ResponseLabel,
    Timepoint,
    mask_volume_mm3,
    response_label,
)
from ..errors import InputError
from ..types import Volume
from .atomic import atomic_file, check_writable
from .loaders import _image_volume, geometry_difference_text, image_ref, mask_ref
from .nifti import is_nifti_path, read_nifti

__all__ = [
    "GBM_COLUMNS",
    "GBM_MAP_PREFIX",
    "GBM_MASK_COLUMNS",
    "KNOWN_MAP_NAMES",
    "MANIFEST_COLUMNS",
    "SERIES_UID_COLUMN",
    "CohortSummary",
    "GlioblastomaCohort",
    "GlioblastomaPatient",
    "GlioblastomaPatientSummary",
    "GlioblastomaSummary",
    "LesionSummary",
    "check_cohort",
    "check_glioblastoma_cohort",
    "check_manifest",
    "load_glioblastoma_patient",
    "read_glioblastoma_manifest",
    "read_manifest",
    "write_glioblastoma_manifest",
    "write_manifest",
]

#: Columns of the lesion manifest, in the order :func:`write_manifest` writes them. ``roi`` may be left out
#: of a manifest whose masks are all NIfTI; any further column is an optional clinical column.
MANIFEST_COLUMNS: tuple[str, ...] = ("patient_id", "lesion_id", "timepoint", "image", "mask", "roi")
_LESION_REQUIRED: tuple[str, ...] = MANIFEST_COLUMNS[:5]
#: Optional column of the lesion manifest: the SeriesInstanceUID of the image series to read when the
#: image's DICOM folder holds several series (empty: the folder's only image series).
SERIES_UID_COLUMN = "series_uid"
_NOT_CLINICAL = (*MANIFEST_COLUMNS, SERIES_UID_COLUMN)

#: Mask columns of the glioblastoma manifest (co-registered NIfTI masks, one file each).
GBM_MASK_COLUMNS: tuple[str, ...] = (
    "brain",
    "cavity",
    "cel_baseline",
    "t2l_baseline",
    "cel_progression",
    "t2l_progression",
)
#: Required columns of the glioblastoma manifest, besides at least one ``map_<NAME>`` column.
GBM_COLUMNS: tuple[str, ...] = ("patient_id", "treatment", "ttp_months", *GBM_MASK_COLUMNS)
#: Prefix of the parameter-map columns of the glioblastoma manifest.
GBM_MAP_PREFIX = "map_"
#: Parameter maps of the glioblastoma study (other names are accepted).
KNOWN_MAP_NAMES: tuple[str, ...] = (
    "nT1c",
    "nT1",
    "nFLAIR",
    "nADC",
    "nFA",
    "nCho",
    "nCre",
    "nNAA",
    "nLac",
    "nLip",
    "CNI",
    "CCrI",
    "CrNI",
)

_DOCS_FIX = "correct the manifest (its format is described in docs/manifest.md) and run the check again"
_CANONICAL_ORDER = (FIRST_TIMEPOINT, SECOND_TIMEPOINT, FOLLOWUP_TIMEPOINT)
#: at most this many problems are spelled out in one error; the rest are counted
_MAX_LISTED = 50


# ============================================================================ shared helpers
def _where(row: int | None, column: str | None = None, what: str | None = None) -> str:
    parts = []
    if row == 0:
        parts.append("header (line 1)")
    elif row is not None:
        parts.append(f"row {row} (line {row + 1})")
    if column is not None:
        parts.append(f"column {column!r}")
    text = ", ".join(parts)
    if what:
        text = f"{text} [{what}]" if text else f"[{what}]"
    return text


class _Problems:
    """Collects every problem of a file, to raise them together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(
        self, message: str, row: int | None = None, column: str | None = None, what: str | None = None
    ) -> None:
        where = _where(row, column, what)
        text = " ".join(message.split("\n"))
        self.items.append(f"{where}: {text}" if where else text)

    def add_rows(self, message: str, rows: Sequence[int], column: str, what: Sequence[str]) -> None:
        """One problem shared by several rows (an image several lesions use): reported once."""
        if len(rows) == 1:
            self.add(message, rows[0] or None, column, what[0])
            return
        shown = ", ".join(str(r) for r in rows[:10]) + (
            f" and {len(rows) - 10} more" if len(rows) > 10 else ""
        )
        lines = ", ".join(str(r + 1) for r in rows[:10]) + (" …" if len(rows) > 10 else "")
        text = " ".join(message.split("\n"))
        self.items.append(
            f"rows {shown} (lines {lines}), column {column!r} [{', '.join(what[:3])}"
            f"{' …' if len(what) > 3 else ''}]: {text}"
        )

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self, path: Path | None, fix: str = _DOCS_FIX) -> None:
        n = len(self.items)
        if n == 0:
            return
        shown = self.items[:_MAX_LISTED]
        lines = [f"{n} problem{'s' if n != 1 else ''}:", *(f"  {s.rstrip('.')}" for s in shown)]
        if n > len(shown):
            lines.append(f"  … and {n - len(shown)} more")
        raise InputError("\n".join(lines), path=path, fix=fix)


def _error_text(exc: InputError, column: str | None = None) -> str:
    """An InputError as one problem line: file, what is wrong, the fix (its field unless it is ``column``)."""
    text = exc.problem.rstrip(".")
    if exc.path is not None:
        text = f"{exc.path}: {text}"
    if exc.field is not None and exc.field != column:
        text += f" (field {exc.field!r})"
    if exc.fix:
        text += f"; fix: {exc.fix.rstrip('.')}"
    return text


@dataclass(frozen=True)
class _Csv:
    header: tuple[str, ...]
    rows: tuple[tuple[int, dict[str, str]], ...]  # (row number, values by column)


def _read_csv(path: Path, problems: _Problems) -> _Csv:
    """Read a CSV with a header; rows are numbered by file line (row = line - 1), blank lines skipped."""
    if not path.exists():
        raise InputError("manifest not found", path=path, fix="check the path to the CSV file")
    if not path.is_file():
        raise InputError(
            "the manifest must be a CSV file, not a folder", path=path, fix="point to the CSV file"
        )
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            raw_header = next(reader, None)
            if raw_header is None or not any(h.strip() for h in raw_header):
                raise InputError(
                    "the manifest is empty or has no header line",
                    path=path,
                    fix="add the header line; " + _DOCS_FIX,
                )
            header = tuple(h.strip() for h in raw_header)
            prev_line = reader.line_num
            for record in reader:
                row = prev_line  # first line of this record minus one (the header is line 1, row 0)
                prev_line = reader.line_num
                if not any(c.strip() for c in record):
                    continue
                if len(record) > len(header):
                    problems.add(
                        f"{len(record)} cells but the header has {len(header)} columns "
                        "(a comma inside a value must be quoted)",
                        row,
                    )
                rows.append(
                    (row, {h: (record[i].strip() if i < len(record) else "") for i, h in enumerate(header)})
                )
    except UnicodeDecodeError as exc:
        raise InputError(
            f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=path,
            fix="save the manifest as CSV in UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)",
        ) from exc
    except csv.Error as exc:
        raise InputError(f"is not a valid CSV file ({exc})", path=path, fix="save it again as CSV") from exc
    return _Csv(header, tuple(rows))


def _check_header(csvf: _Csv, required: Sequence[str], problems: _Problems) -> list[str]:
    """Problems of the header; returns the missing required columns."""
    seen: set[str] = set()
    for i, h in enumerate(csvf.header):
        if not h:
            problems.add(f"the header's column {i + 1} has no name", 0)
        elif h in seen:
            problems.add(f"column {h!r} appears twice in the header", 0)
        seen.add(h)
    missing = [c for c in required if c not in seen]
    if missing:
        lowered = {h.lower().replace(" ", "_"): h for h in csvf.header}
        hints = [f"{lowered[c]!r} for {c!r}" for c in missing if c in lowered]
        hint = f" (column names are case-sensitive: found {', '.join(hints)})" if hints else ""
        problems.add(
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(repr(c) for c in missing)}; "
            f"the header has {', '.join(repr(h) for h in csvf.header)}{hint}"
        )
    return missing


def _resolve(value: str, base: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _write_csv(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    leading: Sequence[str],
    required: Sequence[str],
    *,
    overwrite: bool,
) -> Path:
    p = check_writable(path, overwrite=overwrite)
    materialised = [dict(r) for r in rows]
    columns = list(leading)
    for i, r in enumerate(materialised, start=1):
        missing = [c for c in required if c not in r]
        if missing:
            raise InputError(
                f"manifest row {i} has no value for {', '.join(repr(c) for c in missing)}",
                path=p,
                row=i,
                fix=f"give every row the columns {', '.join(required)}",
            )
        columns.extend(k for k in r if k not in columns)
    with atomic_file(p, overwrite=overwrite) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for r in materialised:
            writer.writerow({k: "" if r.get(k) is None else str(r[k]) for k in columns})
    return p


def _fmt_triple(values: Sequence[float] | Sequence[int], sep: str = " x ") -> str:
    return sep.join(f"{v:g}" for v in values)


def _fmt_number(v: float) -> str:
    """Four significant digits without scientific notation: 35,174 / 1,146 / 16 / 0.0813."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    digits = max(0, 3 - math.floor(math.log10(abs(v))))
    return f"{round(v, digits):,.{digits}f}"


def _fmt_range(values: Sequence[float], unit: str) -> str:
    if not values:
        return "none"
    return (
        f"{_fmt_number(min(values))} – {_fmt_number(max(values))} {unit} "
        f"(median {_fmt_number(statistics.median(values))} {unit}, n = {len(values)})"
    )


# ============================================================================ lesion manifest
def _near_miss(name: str) -> str | None:
    """The known time point that ``name`` is a likely typo of (``follow-up``, ``MRI1``, ``fllowup``), or None."""
    import difflib

    known = _CANONICAL_ORDER
    if name in known:
        return None
    squeezed = "".join(ch for ch in name.casefold() if ch.isalnum())
    for k in known:
        if squeezed == k or (squeezed in {"followup", "fu", "follow"} and k == FOLLOWUP_TIMEPOINT):
            return k
    close = difflib.get_close_matches(squeezed, known, n=1, cutoff=0.75)
    return close[0] if close else None


def read_manifest(path: str | os.PathLike[str]) -> Cohort:
    """Read and validate a lesion manifest (one row per lesion and time point).

    Only cheap checks are made here (columns, values, that the files exist, mask kind versus ``roi``); no
    pixel data are read: :func:`check_cohort` does that.

    Parameters
    ----------
    path
        The CSV file. Relative image and mask paths in it are resolved against its folder.

    Returns
    -------
    Cohort
        Patients and lesions in order of first appearance; each lesion's time points in the order ``mri1``,
        ``mri2``, ``followup``, then any other names in order of appearance. ``clinical`` holds the extra
        columns of the lesion's ``mri1`` row.

    Raises
    ------
    InputError
        Listing every problem found: missing required columns (reported alone), empty required values,
        repeated (patient_id, lesion_id, timepoint), paths that do not exist, an RTSTRUCT mask without ``roi``
        or a NIfTI mask with one, a lesion without an ``mri1`` row.
    """
    mpath = Path(path)
    problems = _Problems()
    cohort = _read_lesion_manifest(mpath, problems)
    problems.raise_if_any(mpath)
    return cohort


def _read_lesion_manifest(mpath: Path, problems: _Problems) -> Cohort:
    """Read the rows, adding their problems to ``problems``; the cohort holds the lesions read whole."""
    csvf = _read_csv(mpath, problems)
    if _check_header(csvf, _LESION_REQUIRED, problems):
        problems.raise_if_any(mpath)
    base = mpath.resolve().parent
    clinical_cols = [h for h in csvf.header if h and h not in _NOT_CLINICAL]
    if not csvf.rows:
        problems.add("the manifest has a header but no data rows")

    seen: dict[tuple[str, str, str], int] = {}
    # per lesion: rows, time-point names (even of rows with bad paths), usable time points, clinical values
    lesion_rows: dict[tuple[str, str], list[int]] = {}
    lesion_names: dict[tuple[str, str], list[str]] = {}
    lesion_tps: dict[tuple[str, str], list[Timepoint]] = {}
    lesion_clinical: dict[tuple[str, str], dict[str, str]] = {}
    patient_order: dict[str, list[str]] = {}

    for row, vals in csvf.rows:
        for col in _LESION_REQUIRED:
            if not vals[col]:
                problems.add("is empty", row, col)
        pid, lid, tp = vals["patient_id"], vals["lesion_id"], vals["timepoint"]
        image: ImageRef | None = None
        mask: MaskRef | None = None
        typo = _near_miss(tp) if tp else None
        if typo is not None:
            problems.add(
                f"{tp!r} is not one of the known time points ({', '.join(_CANONICAL_ORDER)}); did you mean "
                f"{typo!r}? (time-point names are case-sensitive; a lesion's response is measured from "
                f"{FIRST_TIMEPOINT!r} to {FOLLOWUP_TIMEPOINT!r})",
                row,
                "timepoint",
            )
        if vals["image"]:
            try:
                image = image_ref(_resolve(vals["image"], base), vals.get(SERIES_UID_COLUMN, ""))
            except InputError as exc:
                column = SERIES_UID_COLUMN if exc.field == SERIES_UID_COLUMN else "image"
                problems.add(_error_text(exc, column), row, column)
        if vals["mask"]:
            try:
                mask = mask_ref(_resolve(vals["mask"], base), vals.get("roi", ""))
            except InputError as exc:
                problems.add(_error_text(exc, exc.field or "mask"), row, exc.field or "mask")
        if not (pid and lid and tp) or typo is not None:
            continue
        key = (pid, lid, tp)
        if key in seen:
            first = seen[key]
            problems.add(
                f"duplicates row {first} (line {first + 1}): patient {pid!r}, lesion {lid!r}, timepoint {tp!r} "
                "appear twice",
                row,
            )
            continue
        seen[key] = row
        lkey = (pid, lid)
        lids = patient_order.setdefault(pid, [])
        if lid not in lids:
            lids.append(lid)
        lesion_rows.setdefault(lkey, []).append(row)
        lesion_names.setdefault(lkey, []).append(tp)
        if tp == FIRST_TIMEPOINT:
            lesion_clinical[lkey] = {c: vals[c] for c in clinical_cols}
        if image is not None and mask is not None:
            lesion_tps.setdefault(lkey, []).append(Timepoint(tp, image, mask, row))

    for (pid, lid), names in lesion_names.items():
        if FIRST_TIMEPOINT not in names:
            rows = lesion_rows[(pid, lid)]
            problems.add(
                f"patient {pid!r}, lesion {lid!r} (row{'s' if len(rows) > 1 else ''} "
                f"{', '.join(str(r) for r in rows)}) has no {FIRST_TIMEPOINT!r} row (found "
                f"{', '.join(repr(n) for n in names)}); every lesion needs its first MRI "
                "(time-point names are case-sensitive)",
                rows[0],
                "timepoint",
            )

    patients = []
    for pid, lids in patient_order.items():
        lesions = []
        for lid in lids:
            tps = lesion_tps.get((pid, lid), [])
            if not any(t.name == FIRST_TIMEPOINT for t in tps):
                continue  # its problems are listed; the files of the other lesions are still checked
            rank = {n: i for i, n in enumerate(_CANONICAL_ORDER)}
            ordered = sorted(enumerate(tps), key=lambda it: (rank.get(it[1].name, len(rank)), it[0]))
            lesions.append(
                Lesion(
                    pid,
                    lid,
                    {t.name: t for _, t in ordered},
                    clinical=lesion_clinical.get((pid, lid), {}),
                )
            )
        if lesions:
            patients.append(Patient(pid, tuple(lesions)))
    return Cohort(tuple(patients), source=mpath.resolve())


def write_manifest(
    rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a lesion manifest atomically.

    Parameters
    ----------
    rows
        One mapping per lesion and time point with at least ``patient_id``, ``lesion_id``, ``timepoint``,
        ``image`` and ``mask`` (``roi`` defaults to empty); further keys become clinical columns. Values are
        written with ``str()`` (``None`` as empty); paths are written as given, so relative paths stay relative
        to the manifest's folder.
    path
        The CSV file to write.
    overwrite
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.
    """
    return _write_csv(rows, path, MANIFEST_COLUMNS, _LESION_REQUIRED, overwrite=overwrite)


@dataclass(frozen=True)
class LesionSummary:
    """What :func:`check_cohort` found for one lesion.

    Attributes
    ----------
    volumes_mm3
        GTV volume (mm³) at each time point, in the lesion's time-point order.
    shape, spacing_mm
        Image shape ``(z, y, x)`` and voxel spacing in mm ``(z, y, x)`` at ``mri1``.
    response
        The response label from ``mri1`` to ``followup``; ``None`` without a follow-up.
    rows
        Manifest rows of the lesion.
    """

    patient_id: str
    lesion_id: str
    volumes_mm3: Mapping[str, float]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    response: ResponseLabel | None
    rows: tuple[int, ...] = ()
    clinical: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "volumes_mm3", MappingProxyType(dict(self.volumes_mm3)))
        object.__setattr__(self, "clinical", MappingProxyType(dict(self.clinical)))


@dataclass(frozen=True)
class CohortSummary:
    """Result of :func:`check_cohort`.

    Attributes
    ----------
    n_patients, n_lesions
        Counts.
    timepoints
        Number of lesions seen at each time point, in first-seen order (``mri1`` first).
    lesions
        One :class:`LesionSummary` per lesion, in cohort order.
    threshold
        Fractional shrinkage that defines response.
    source
        The manifest, when known.
    """

    n_patients: int
    n_lesions: int
    timepoints: Mapping[str, int]
    lesions: tuple[LesionSummary, ...]
    threshold: float
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "timepoints", MappingProxyType(dict(self.timepoints)))

    @property
    def n_responders(self) -> int:
        return sum(1 for les in self.lesions if les.response is not None and les.response.responder)

    @property
    def n_non_responders(self) -> int:
        return sum(1 for les in self.lesions if les.response is not None and not les.response.responder)

    @property
    def n_unlabelled(self) -> int:
        return sum(1 for les in self.lesions if les.response is None)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per lesion, for a CSV or an HTML table.

        Keys: ``patient_id``, ``lesion_id``, ``volume_<timepoint>_mm3`` for every time point of the cohort
        (``None`` where the lesion lacks it), ``shape_mri1`` (``"z x y x x"``), ``spacing_mri1_mm``,
        ``volume_ratio`` (follow-up / mri1), ``responder`` (``True``/``False``/``None``), then the clinical
        columns.
        """
        out: list[dict[str, Any]] = []
        for les in self.lesions:
            r: dict[str, Any] = {"patient_id": les.patient_id, "lesion_id": les.lesion_id}
            for t in self.timepoints:
                v = les.volumes_mm3.get(t)
                r[f"volume_{t}_mm3"] = None if v is None else round(v, 3)
            r["shape_mri1"] = _fmt_triple(les.shape)
            r["spacing_mri1_mm"] = _fmt_triple(les.spacing_mm)
            r["volume_ratio"] = None if les.response is None else round(les.response.ratio, 4)
            r["responder"] = None if les.response is None else les.response.responder
            r.update(les.clinical)
            out.append(r)
        return out

    def to_text(self) -> str:
        """A few lines for a person: counts, response labels, volume range, grids."""
        src = f" ({self.source})" if self.source is not None else ""
        tps = ", ".join(f"{n} {c}" for n, c in self.timepoints.items())
        first = [
            les.volumes_mm3[FIRST_TIMEPOINT] for les in self.lesions if FIRST_TIMEPOINT in les.volumes_mm3
        ]
        spacings = sorted({les.spacing_mm for les in self.lesions})
        if len(spacings) == 1:
            grid = f"{_fmt_triple(spacings[0])} mm (all lesions)"
        else:
            grid = f"{len(spacings)} different spacings, e.g. " + "; ".join(
                _fmt_triple(s) for s in spacings[:3]
            )
        lines = [
            f"Cohort{src}: {self.n_patients} patient{'s' if self.n_patients != 1 else ''}, "
            f"{self.n_lesions} lesion{'s' if self.n_lesions != 1 else ''}",
            f"Time points (lesions): {tps}",
            f"Response (GTV shrinkage >= {self.threshold:.0%} from {FIRST_TIMEPOINT} to {FOLLOWUP_TIMEPOINT}): "
            f"{self.n_responders} responders, {self.n_non_responders} non-responders, "
            f"{self.n_unlabelled} unlabelled (no {FOLLOWUP_TIMEPOINT})",
            f"GTV volume at {FIRST_TIMEPOINT}: {_fmt_range(first, 'mm³')}",
            f"Voxel spacing at {FIRST_TIMEPOINT} (z x y x x): {grid}",
        ]
        return "\n".join(lines)


def check_cohort(cohort: Cohort, *, threshold: float = 0.2, progress: bool = False) -> CohortSummary:
    """Load every image and mask of a cohort, check them, and summarise the cohort.

    Checks: every image is readable with finite values; every mask is readable, holds only 0/1 and lies on
    its image's grid (NIfTI) or rasterises on its DICOM series (RTSTRUCT); the mask is not empty at ``mri1``
    or ``mri2`` (an empty mask at ``followup`` is a complete response and is allowed).

    Parameters
    ----------
    cohort
        From :func:`read_manifest` (or built in code).
    threshold
        Fractional shrinkage from ``mri1`` to ``followup`` that defines a responder, in (0, 1).
    progress
        Show a progress bar.

    Returns
    -------
    CohortSummary

    Raises
    ------
    InputError
        Listing every problem found, each with its manifest row.
    """
    problems = _Problems()
    summary = _check_files(cohort, threshold, progress, problems)
    problems.raise_if_any(cohort.source)
    assert summary is not None  # without problems there is a summary
    return summary


def check_manifest(
    path: str | os.PathLike[str], *, threshold: float = 0.2, progress: bool = False
) -> CohortSummary:
    """Read a lesion manifest and check every file it lists, reporting all problems of both together.

    :func:`read_manifest` followed by :func:`check_cohort`, in one pass: the files of the rows that could be
    read are loaded even when other rows have problems, so one run lists every row-level and file-level
    problem (``adaptrt cohort check``).

    Raises
    ------
    InputError
        Listing every problem found, each with its manifest row.
    """
    mpath = Path(path)
    problems = _Problems()
    cohort = _read_lesion_manifest(mpath, problems)
    summary = _check_files(cohort, threshold, progress, problems)
    problems.raise_if_any(mpath)
    assert summary is not None  # without problems there is a summary
    return summary


def _check_files(
    cohort: Cohort, threshold: float, progress: bool, problems: _Problems
) -> CohortSummary | None:
    """:func:`check_cohort`'s work, adding the problems to ``problems``; the summary, or None with problems."""
    if not 0.0 < threshold < 1.0:
        raise InputError(
            f"threshold must be in (0, 1), got {threshold}",
            field="threshold",
            fix="give a fraction such as 0.2",
        )
    volumes: dict[str, dict[str, float]] = {}
    # an image that fails is reported once, with every row that uses it
    image_failures: dict[str, tuple[list[int], list[str]]] = {}
    grids: dict[str, tuple[tuple[int, int, int], tuple[float, float, float]]] = {}
    counts: dict[str, int] = {}
    scans = [(les, tp) for les in cohort.lesions for tp in les.timepoints.values()]
    for les, tp in tqdm(scans, desc="checking cohort", unit="scan", disable=not progress):
        what = f"{les.key} {tp.name}"
        image: Volume | None = None
        try:
            readable = _image_volume(tp.image)
        except InputError as exc:
            # the mask is read on the image's grid, so it would only repeat the image's problem
            rows, whats = image_failures.setdefault(_error_text(exc), ([], []))
            rows.append(tp.row)
            whats.append(what)
            continue
        try:
            image = tp.load_image()
        except InputError as exc:
            problems.add(_error_text(exc), tp.row or None, "image", what)
            image = readable
        try:
            mask = tp.load_mask()
        except InputError as exc:
            problems.add(_error_text(exc), tp.row or None, "mask", what)
            continue
        vol = mask_volume_mm3(mask)
        if vol == 0.0 and tp.name in (FIRST_TIMEPOINT, SECOND_TIMEPOINT):
            problems.add(
                f"the mask {tp.mask.path}{f' (ROI {tp.mask.roi!r})' if tp.mask.roi else ''} is empty at "
                f"{tp.name}; a lesion must be visible on its first and second MRI "
                "(only a follow-up mask may be empty: a complete response)",
                tp.row or None,
                "mask",
                what,
            )
        volumes.setdefault(les.key, {})[tp.name] = vol
        counts[tp.name] = counts.get(tp.name, 0) + 1
        if tp.name == FIRST_TIMEPOINT or les.key not in grids:
            # the mri1 grid; a cohort built in code without mri1 falls back to its first time point
            ref = image if image is not None else mask
            grids[les.key] = (ref.shape, ref.spacing)
    for text, (rows, whats) in image_failures.items():
        problems.add_rows(text, rows, "image", whats)
    if len(problems):
        return None

    summaries = []
    for les in cohort.lesions:
        vols = volumes[les.key]
        label = None
        if FOLLOWUP_TIMEPOINT in vols and FIRST_TIMEPOINT in vols:
            label = response_label(vols[FIRST_TIMEPOINT], vols[FOLLOWUP_TIMEPOINT], threshold)
        shape, spacing = grids[les.key]
        summaries.append(
            LesionSummary(
                les.patient_id,
                les.lesion_id,
                vols,
                shape,
                spacing,
                label,
                rows=tuple(t.row for t in les.timepoints.values()),
                clinical=les.clinical,
            )
        )
    rank = {n: i for i, n in enumerate(_CANONICAL_ORDER)}
    ordered = dict(sorted(counts.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return CohortSummary(
        n_patients=len(cohort.patients),
        n_lesions=len(summaries),
        timepoints=ordered,
        lesions=tuple(summaries),
        threshold=threshold,
        source=cohort.source,
    )


# ============================================================================ glioblastoma manifest
@dataclass(frozen=True)
class GlioblastomaPatient:
    """One patient of the glioblastoma manifest: co-registered NIfTI masks and parameter maps.

    Attributes
    ----------
    patient_id, treatment
        As written in the manifest.
    ttp_months
        Time to progression in months, > 0.
    masks
        Mask file of each of :data:`GBM_MASK_COLUMNS`.
    maps
        File of each parameter map (key: the name after ``map_``), ``None`` where the map is missing.
    row
        1-based data row of the manifest (0 when built in code).
    clinical
        Any further columns, as written.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    masks: Mapping[str, Path]
    maps: Mapping[str, Path | None]
    row: int = 0
    clinical: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "masks", MappingProxyType(dict(self.masks)))
        object.__setattr__(self, "maps", MappingProxyType(dict(self.maps)))
        object.__setattr__(self, "clinical", MappingProxyType(dict(self.clinical)))

    @property
    def available_maps(self) -> tuple[str, ...]:
        """Names of the maps this patient has."""
        return tuple(n for n, p in self.maps.items() if p is not None)

    @property
    def missing_maps(self) -> tuple[str, ...]:
        """Names of the maps this patient lacks."""
        return tuple(n for n, p in self.maps.items() if p is None)


@dataclass(frozen=True)
class GlioblastomaCohort:
    """The patients of a glioblastoma manifest, in manifest order; ``map_names`` in column order."""

    patients: tuple[GlioblastomaPatient, ...]
    source: Path | None = None
    map_names: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[GlioblastomaPatient]:
        return iter(self.patients)

    def __len__(self) -> int:
        return len(self.patients)


def _map_columns(header: Sequence[str]) -> list[str]:
    return [h for h in header if h.startswith(GBM_MAP_PREFIX)]


def read_glioblastoma_manifest(path: str | os.PathLike[str]) -> GlioblastomaCohort:
    """Read and validate a glioblastoma manifest (one row per patient).

    Only cheap checks are made (columns, values, that the files exist and are NIfTI); no pixel data are
    read: :func:`check_glioblastoma_cohort` does that.

    Parameters
    ----------
    path
        The CSV file. Relative paths in it are resolved against its folder.

    Returns
    -------
    GlioblastomaCohort

    Raises
    ------
    InputError
        Listing every problem: missing required columns or no ``map_<NAME>`` column (reported alone), empty
        values, a ``ttp_months`` that is not a number > 0, a repeated ``patient_id``, files that do not exist or
        are not NIfTI. An empty map cell is allowed (the map is missing for that patient).
    """
    mpath = Path(path)
    problems = _Problems()
    csvf = _read_csv(mpath, problems)
    missing = _check_header(csvf, GBM_COLUMNS, problems)
    map_cols = _map_columns(csvf.header)
    if not map_cols:
        problems.add(
            f"no parameter-map column: add at least one column named {GBM_MAP_PREFIX}<NAME> "
            f"(e.g. {GBM_MAP_PREFIX}nADC, {GBM_MAP_PREFIX}CNI)"
        )
    for c in map_cols:
        if c == GBM_MAP_PREFIX:
            problems.add(
                f"a map column needs a name after {GBM_MAP_PREFIX!r} (e.g. {GBM_MAP_PREFIX}nFA)", 0, c
            )
    if missing or not map_cols:
        problems.raise_if_any(mpath)
    base = mpath.resolve().parent
    extra = [h for h in csvf.header if h and h not in GBM_COLUMNS and h not in map_cols]
    if not csvf.rows:
        problems.add("the manifest has a header but no data rows")

    def file_of(value: str, row: int, col: str, *, required: bool) -> Path | None:
        if not value:
            if required:
                problems.add(
                    "is empty (give a NIfTI mask; an all-zero mask where the structure is absent)", row, col
                )
            return None
        p = _resolve(value, base)
        if not p.exists():
            problems.add(f"file not found: {p}", row, col)
        elif not p.is_file() or not is_nifti_path(p):
            problems.add(f"must be a NIfTI file (.nii or .nii.gz): {p}", row, col)
        return p

    seen: dict[str, int] = {}
    patients = []
    for row, vals in csvf.rows:
        pid, treatment = vals["patient_id"], vals["treatment"]
        if not pid:
            problems.add("is empty", row, "patient_id")
        elif pid in seen:
            problems.add(
                f"patient {pid!r} duplicates row {seen[pid]} (line {seen[pid] + 1})", row, "patient_id"
            )
        else:
            seen[pid] = row
        if not treatment:
            problems.add("is empty (e.g. soc, antiangiogenic)", row, "treatment")
        ttp = math.nan
        try:
            ttp = float(vals["ttp_months"])
        except ValueError:
            problems.add(f"{vals['ttp_months']!r} is not a number of months", row, "ttp_months")
        else:
            if not (math.isfinite(ttp) and ttp > 0):
                problems.add(f"must be a number of months > 0, got {vals['ttp_months']!r}", row, "ttp_months")
        masks = {c: file_of(vals[c], row, c, required=True) for c in GBM_MASK_COLUMNS}
        maps = {c[len(GBM_MAP_PREFIX) :]: file_of(vals[c], row, c, required=False) for c in map_cols}
        mask_paths = {k: v for k, v in masks.items() if v is not None}
        if pid and len(mask_paths) == len(GBM_MASK_COLUMNS):
            patients.append(
                GlioblastomaPatient(
                    pid, treatment, ttp, mask_paths, maps, row=row, clinical={c: vals[c] for c in extra}
                )
            )
    problems.raise_if_any(mpath)
    return GlioblastomaCohort(
        tuple(patients),
        source=mpath.resolve(),
        map_names=tuple(c[len(GBM_MAP_PREFIX) :] for c in map_cols),
    )


def write_glioblastoma_manifest(
    rows: Iterable[Mapping[str, Any]], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a glioblastoma manifest atomically.

    Parameters
    ----------
    rows
        One mapping per patient with the keys of :data:`GBM_COLUMNS` and ``map_<NAME>`` keys (``None`` or
        ``""`` for a missing map); further keys become extra columns. Values are written with ``str()``;
        paths as given (relative paths stay relative to the manifest's folder).
    path
        The CSV file to write.
    overwrite
        Replace an existing file.
    """
    materialised = [dict(r) for r in rows]
    maps: list[str] = []
    for r in materialised:
        maps.extend(k for k in r if k.startswith(GBM_MAP_PREFIX) and k not in maps)
    if not maps:
        raise InputError(
            "the rows have no parameter-map key",
            path=path,
            field=f"{GBM_MAP_PREFIX}<NAME>",
            fix=f"give each row at least one {GBM_MAP_PREFIX}<NAME> entry (e.g. {GBM_MAP_PREFIX}nADC)",
        )
    return _write_csv(materialised, path, [*GBM_COLUMNS, *maps], GBM_COLUMNS, overwrite=overwrite)


def _load_gbm(
    p: GlioblastomaPatient, problems: _Problems, what: str | None = None
) -> tuple[dict[str, Volume], dict[str, Volume]]:
    """Read a patient's maps and masks, adding every problem (with the patient's row) to ``problems``."""
    masks: dict[str, Volume] = {}
    maps: dict[str, Volume] = {}
    files: dict[str, Path] = {}
    for col, mp in p.masks.items():
        try:
            masks[col] = read_nifti(mp, kind="mask")
            files[col] = mp
        except InputError as exc:
            problems.add(_error_text(exc), p.row or None, col, what)
    for name, fp in p.maps.items():
        if fp is None:
            continue
        col = GBM_MAP_PREFIX + name
        try:
            maps[name] = read_nifti(fp, kind="image")
            files[col] = fp
        except InputError as exc:
            problems.add(_error_text(exc), p.row or None, col, what)
    # the reference grid: the brain mask's, else the first volume read
    everything: list[tuple[str, Volume]] = [
        *masks.items(),
        *((GBM_MAP_PREFIX + n, v) for n, v in maps.items()),
    ]
    if everything:
        ref_col, ref = next(((c, v) for c, v in everything if c == "brain"), everything[0])
        for col, vol in everything:
            if col == ref_col:
                continue
            diff = geometry_difference_text(ref, vol, atol_mm=1e-3)
            if diff is not None:
                problems.add(
                    f"{files[col]} is not on the grid of {ref_col!r} ({files[ref_col]}): {diff}; "
                    f"fix: resample every map and mask of the patient onto one grid (co-registered)",
                    p.row or None,
                    col,
                    what,
                )
    return maps, masks


def load_glioblastoma_patient(p: GlioblastomaPatient) -> tuple[dict[str, Volume], dict[str, Volume]]:
    """Read one patient's parameter maps and masks and check that they share one grid.

    Returns
    -------
    maps
        Float32 Volume of each available map (key: map name, e.g. ``"nADC"``); missing maps are absent.
    masks
        Boolean Volume of each of :data:`GBM_MASK_COLUMNS`.

    Raises
    ------
    InputError
        Listing every problem: unreadable files, NaN in a map, mask values other than 0/1, a file on a
        different grid from the brain mask.
    """
    problems = _Problems()
    maps, masks = _load_gbm(p, problems, f"patient {p.patient_id}")
    problems.raise_if_any(None, fix="correct the files listed (see docs/manifest.md)")
    return maps, masks


@dataclass(frozen=True)
class GlioblastomaPatientSummary:
    """What :func:`check_glioblastoma_cohort` found for one patient.

    ``volumes_ml`` holds the volume (mL) of every mask of :data:`GBM_MASK_COLUMNS`; ``shape`` and
    ``spacing_mm`` (``(z, y, x)``) are the patient's common grid.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    volumes_ml: Mapping[str, float]
    missing_maps: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    row: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "volumes_ml", MappingProxyType(dict(self.volumes_ml)))


@dataclass(frozen=True)
class GlioblastomaSummary:
    """Result of :func:`check_glioblastoma_cohort`.

    Attributes
    ----------
    treatments
        Number of patients per treatment.
    map_counts
        Number of patients that have each map, in column order.
    patients
        One :class:`GlioblastomaPatientSummary` per patient.
    """

    n_patients: int
    treatments: Mapping[str, int]
    map_counts: Mapping[str, int]
    patients: tuple[GlioblastomaPatientSummary, ...]
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "treatments", MappingProxyType(dict(self.treatments)))
        object.__setattr__(self, "map_counts", MappingProxyType(dict(self.map_counts)))

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per patient: id, treatment, ttp, CEL/T2L volumes (mL), brain volume, missing maps, grid."""
        out: list[dict[str, Any]] = []
        for p in self.patients:
            r: dict[str, Any] = {
                "patient_id": p.patient_id,
                "treatment": p.treatment,
                "ttp_months": p.ttp_months,
            }
            for col in (
                "cel_baseline",
                "t2l_baseline",
                "cel_progression",
                "t2l_progression",
                "cavity",
                "brain",
            ):
                r[f"{col}_ml"] = round(p.volumes_ml[col], 3)
            r["missing_maps"] = " ".join(p.missing_maps)
            r["shape"] = _fmt_triple(p.shape)
            r["spacing_mm"] = _fmt_triple(p.spacing_mm)
            out.append(r)
        return out

    def to_text(self) -> str:
        """A few lines for a person: counts, treatments, maps, volume ranges, time to progression."""
        src = f" ({self.source})" if self.source is not None else ""
        treat = ", ".join(f"{t} {n}" for t, n in self.treatments.items())
        maps = ", ".join(f"{m} {n}/{self.n_patients}" for m, n in self.map_counts.items())
        ttp = [p.ttp_months for p in self.patients]
        lines = [
            f"Glioblastoma cohort{src}: {self.n_patients} patient{'s' if self.n_patients != 1 else ''}",
            f"Treatments: {treat}",
            f"Parameter maps (patients with the map): {maps}",
            f"Time to progression: {_fmt_range(ttp, 'months')}",
        ]
        for col, label in (
            ("cel_baseline", "CEL at baseline"),
            ("t2l_baseline", "T2L at baseline"),
            ("cel_progression", "CEL at progression"),
            ("t2l_progression", "T2L at progression"),
        ):
            lines.append(f"{label}: {_fmt_range([p.volumes_ml[col] for p in self.patients], 'mL')}")
        spacings = sorted({p.spacing_mm for p in self.patients})
        lines.append("Voxel spacing (z x y x x mm): " + "; ".join(_fmt_triple(s) for s in spacings))
        return "\n".join(lines)


def check_glioblastoma_cohort(cohort: GlioblastomaCohort, *, progress: bool = False) -> GlioblastomaSummary:
    """Load every map and mask of a glioblastoma cohort, check them, and summarise the cohort.

    Checks: every file readable; maps finite; masks only 0/1; all files of a patient on one grid (that of
    the brain mask, within 1e-3 mm); the brain and baseline T2-lesion masks not empty; at least one of the
    progression masks (CEL, T2L) not empty. Empty cavity and CEL-baseline masks are allowed.

    Returns
    -------
    GlioblastomaSummary

    Raises
    ------
    InputError
        Listing every problem found, each with its manifest row.
    """
    problems = _Problems()
    summaries = []
    for p in tqdm(cohort.patients, desc="checking cohort", unit="patient", disable=not progress):
        what = f"patient {p.patient_id}"
        n_before = len(problems)
        _maps, masks = _load_gbm(p, problems, what)
        for col in ("brain", "t2l_baseline"):
            if col in masks and not np.any(masks[col].array):
                problems.add(f"the mask {p.masks[col]} is empty", p.row or None, col, what)
        prog = [c for c in ("cel_progression", "t2l_progression") if c in masks]
        if len(prog) == 2 and not any(np.any(masks[c].array) for c in prog):
            problems.add(
                "both progression masks (cel_progression, t2l_progression) are empty, but the patient has a "
                "time to progression; at least one must show the progressed lesion",
                p.row or None,
                "cel_progression",
                what,
            )
        if len(problems) > n_before:
            continue
        ref = masks["brain"]
        summaries.append(
            GlioblastomaPatientSummary(
                p.patient_id,
                p.treatment,
                p.ttp_months,
                {c: mask_volume_mm3(masks[c]) / 1000.0 for c in GBM_MASK_COLUMNS},
                p.missing_maps,
                ref.shape,
                ref.spacing,
                row=p.row,
            )
        )
    problems.raise_if_any(cohort.source)
    treatments: dict[str, int] = {}
    for p in cohort.patients:
        treatments[p.treatment] = treatments.get(p.treatment, 0) + 1
    map_counts = {m: sum(1 for p in cohort.patients if p.maps.get(m) is not None) for m in cohort.map_names}
    return GlioblastomaSummary(
        n_patients=len(cohort.patients),
        treatments=treatments,
        map_counts=map_counts,
        patients=tuple(summaries),
        source=cohort.source,
    )
