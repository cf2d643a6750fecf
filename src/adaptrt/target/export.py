"""Export of CTVs for treatment planning: NIfTI on the maps' grid and one RTSTRUCT per patient.

``adaptrt target ctv --manifest M --out DIR [--reference-series DICOM_DIR]`` is :func:`run_ctv_export`:
for every patient of a glioblastoma manifest it builds the RTOG and EORTC CTVs
(:func:`adaptrt.target.ctv.standard_ctvs`) and writes them with :func:`export_ctvs` into a run folder::

    DIR/config.json, run.json, report.html
    DIR/results/ctv_volumes.csv              one row per patient: volume (cm³) and voxels of each CTV
    DIR/exports/<patient>/CTV_<name>.nii.gz  each CTV on the maps' grid (uint8 0/1)
    DIR/exports/<patient>/RS_ctvs.dcm        one RT Structure Set, one ROI (type CTV) per CTV
    DIR/exports/<patient>/MR/                the series the RTSTRUCT references, written from the patient's
                                             nT1c when no reference series is given
    DIR/exports/<patient>/export.json        what was written and checked

Which DICOM series the RTSTRUCT is drawn on
-------------------------------------------
* **The user's planning series** (``--reference-series DIR``: ``DIR/<patient_id>/`` holds the patient's
  series). NIfTI files carry no DICOM Frame of Reference, so what is checked is:

  1. when the manifest has a ``frame_of_reference_uid`` column (kept in ``GlioblastomaPatient.clinical``),
     the series' FrameOfReferenceUID must equal it;
  2. geometry: when the series' grid is the maps' grid (shape and affine within 1e-3 mm) the CTVs are used
     as they are; otherwise they are resampled onto the series' grid by nearest neighbour (each series voxel
     takes the value of the maps' voxel whose centre is nearest its centre), which needs the two to share a
     patient coordinate system. Every CTV voxel's centre must then lie inside the series' field of view
     (else the CTV would be cut), and the maps must overlap the series at all (else the series is in
     another frame of reference or of another patient). Both are :class:`~adaptrt.errors.InputError`\\ s
     naming the series and the fix.

* **Otherwise** an MR series written from the patient's ``nT1c`` map with
  :func:`adaptrt.io.dicom.write_mr_series` (deterministic UIDs from the patient id), on the maps' grid.

The RTSTRUCT is written by :func:`adaptrt.io.rtstruct.write_rtstruct` and reads back with
:func:`adaptrt.io.rtstruct.read_rtstruct` to **exactly** the mask written (voxel for voxel on the series'
grid: the original CTV when the grids match, the resampled one otherwise); the tests check this and run
``dciodvfy``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from ..config import to_jsonable
from ..errors import InputError
from ..io.atomic import atomic_dir, check_writable
from ..io.dicom import DicomSeries, read_dicom_series, write_mr_series
from ..io.manifest import GlioblastomaPatient, load_glioblastoma_patient, read_glioblastoma_manifest
from ..io.nifti import read_nifti, write_nifti
from ..io.rtstruct import Roi, write_rtstruct
from ..types import Volume
from .ctv import CTV, CTV_COLOURS, EORTC_MARGIN_MM, RTOG_MARGIN_MM, standard_ctvs

__all__ = [
    "CRITICAL_PREFIX",
    "FRAME_OF_REFERENCE_COLUMN",
    "CtvExport",
    "CtvExportConfig",
    "export_ctvs",
    "resample_mask_nearest",
    "run_ctv_export",
]

#: Extra manifest columns ``critical_<NAME>`` hold NIfTI masks of critical structures removed from every CTV.
CRITICAL_PREFIX = "critical_"
#: Extra manifest column holding the FrameOfReferenceUID the planning series must have.
FRAME_OF_REFERENCE_COLUMN = "frame_of_reference_uid"
_IMAGE_MAP = "nT1c"
_RTSTRUCT_NAME = "RS_ctvs.dcm"


@dataclass(frozen=True)
class CtvExport:
    """What :func:`export_ctvs` wrote for one patient (paths inside ``folder``).

    Attributes
    ----------
    folder
        The patient's export folder.
    nifti
        CTV name -> NIfTI file.
    rtstruct
        The RT Structure Set file.
    series_folder
        The MR series written from nT1c, or None when a reference series was used.
    series_instance_uid, frame_of_reference_uid
        Of the series the RTSTRUCT references.
    roi_names
        CTV name -> ROI name in the RTSTRUCT.
    resampled
        True when the CTVs were resampled onto a reference series' grid.
    """

    folder: Path
    nifti: Mapping[str, Path]
    rtstruct: Path
    series_folder: Path | None
    series_instance_uid: str
    frame_of_reference_uid: str
    roi_names: Mapping[str, str]
    resampled: bool


def roi_name(ctv: CTV) -> str:
    """The ROI name of a CTV in the RTSTRUCT: ``CTV_<name>``."""
    return f"CTV_{ctv.name}"


def _series_label(series: DicomSeries) -> str:
    return ", ".join(str(f.parent) for f in series.files[:1]) or series.series_instance_uid


def resample_mask_nearest(mask: Volume, target: Volume) -> NDArray[np.bool_]:
    """A boolean mask resampled onto ``target``'s grid by nearest neighbour (bool array of ``target.shape``).

    Each target voxel takes the value of the source voxel whose index is nearest (rounded) to its centre
    mapped through both affines; target voxels outside the source grid are False. Where the voxel centres
    of the two grids coincide (same grid, or one a flip / permutation of the other) the result is exact.
    """
    src = np.asarray(mask.array, dtype=bool)
    nz, ny, nx = target.shape
    out = np.zeros(target.shape, dtype=bool)
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    plane = np.stack([np.zeros(jj.size), jj.ravel(), ii.ravel()], axis=1)
    upper = np.asarray(src.shape)[None, :]
    for k in range(nz):
        plane[:, 0] = k
        idx = np.rint(mask.world_to_index(target.index_to_world(plane))).astype(np.int64)
        inside = np.all((idx >= 0) & (idx < upper), axis=1)
        vals = np.zeros(idx.shape[0], dtype=bool)
        vals[inside] = src[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
        out[k] = vals.reshape(ny, nx)
    return out


def _inside_fov(grid: Volume, mask: NDArray[np.bool_], series: Volume) -> int:
    """Number of ``mask`` voxels (on ``grid``) whose centres fall outside ``series``' field of view."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return 0
    s = series.world_to_index(grid.index_to_world(idx.astype(np.float64)))
    upper = np.asarray(series.shape, dtype=np.float64) - 0.5
    ok = np.all((s >= -0.5) & (s <= upper[None, :]), axis=1)
    return int(np.count_nonzero(~ok))


def _on_series(
    ctvs: Sequence[CTV], grid: Volume, series: DicomSeries, patient_id: str
) -> tuple[dict[str, Volume], bool]:
    """The CTV masks as Volumes on the series' grid (resampled when the grids differ), checked."""
    sv = series.volume
    where = _series_label(series)
    if sv.same_geometry(grid):
        return {c.name: grid.with_array(c.mask) for c in ctvs}, False
    corners = np.array(
        [
            [k, j, i]
            for k in (0, grid.shape[0] - 1)
            for j in (0, grid.shape[1] - 1)
            for i in (0, grid.shape[2] - 1)
        ]
    )
    s = sv.world_to_index(grid.index_to_world(corners.astype(np.float64)))
    lo, hi = s.min(axis=0), s.max(axis=0)
    upper = np.asarray(sv.shape, dtype=np.float64) - 0.5
    if np.any(hi < -0.5) or np.any(lo > upper):
        raise InputError(
            f"patient {patient_id}: the reference series does not overlap the patient's maps at all "
            f"(the maps span series indices {np.round(lo, 1).tolist()} to {np.round(hi, 1).tolist()}, the series "
            f"has shape {list(sv.shape)}): it is in another frame of reference or of another patient",
            path=where,
            field="FrameOfReferenceUID",
            fix="give the planning series the maps were registered to (same frame of reference), or register "
            "the maps to it first",
        )
    out: dict[str, Volume] = {}
    for c in ctvs:
        lost = _inside_fov(grid, c.mask, sv)
        if lost:
            raise InputError(
                f"patient {patient_id}: {lost} of {c.n_voxels} voxels of the {c.name} CTV lie outside the "
                "reference series' field of view, so its contours would be cut",
                path=where,
                field="ImagePositionPatient",
                fix="give a planning series that covers the whole brain",
            )
        out[c.name] = sv.with_array(resample_mask_nearest(grid.with_array(c.mask), sv))
    return out, True


def export_ctvs(
    ctvs: Iterable[CTV] | Mapping[str, CTV],
    grid: Volume,
    out_dir: str | os.PathLike[str],
    *,
    patient_id: str,
    image: Volume | None = None,
    reference_series: DicomSeries | str | os.PathLike[str] | None = None,
    expected_frame_of_reference: str | None = None,
    uid_seed: str | None = "adaptrt-target-ctv",
    overwrite: bool = False,
) -> CtvExport:
    """Write one patient's CTVs as NIfTI files and one RTSTRUCT (one ROI ``CTV_<name>`` each), atomically.

    Parameters
    ----------
    ctvs
        The CTVs (unique names, e.g. RTOG, EORTC and later DL), masks on ``grid``.
    grid
        A Volume on the maps' grid (e.g. the brain mask): gives the NIfTI geometry.
    out_dir
        The folder to create (see the module docstring for its contents).
    patient_id
        PatientID of a written series; used in messages and UIDs.
    image
        The image to write as the MR series when no reference series is given (the nT1c map), on ``grid``.
    reference_series
        The planning series (a :class:`~adaptrt.io.dicom.DicomSeries` or its folder). What is checked: see
        the module docstring.
    expected_frame_of_reference
        FrameOfReferenceUID the reference series must have (None: not checked).
    uid_seed
        Seed of the deterministic UIDs of the written series and RTSTRUCT (with the patient id); None for
        random UIDs and the current date.
    overwrite
        Replace an existing ``out_dir``.

    Returns
    -------
    CtvExport

    Raises
    ------
    InputError
        ``out_dir`` exists; no image and no reference series; a CTV not on ``grid``; a reference series of
        another frame of reference, not overlapping the maps, or not covering a CTV.
    """
    target = check_writable(out_dir, overwrite=overwrite)
    items = list(ctvs.values()) if isinstance(ctvs, Mapping) else list(ctvs)
    if not items:
        raise ValueError("export_ctvs needs at least one CTV")
    names = [c.name for c in items]
    if len({n.casefold() for n in names}) != len(names):
        raise ValueError(f"CTV names must be unique ignoring case, got {names}")
    for c in items:
        if c.mask.shape != grid.shape or not np.allclose(c.spacing_mm, grid.spacing, atol=1e-3):
            raise InputError(
                f"patient {patient_id}: the {c.name} CTV (shape {c.mask.shape}, spacing {c.spacing_mm}) is not on "
                f"the maps' grid (shape {grid.shape}, spacing {grid.spacing})",
                field=c.name,
                fix="build the CTV from the patient's own masks",
            )
    series: DicomSeries | None = None
    if reference_series is not None:
        if isinstance(reference_series, DicomSeries):
            series = reference_series
        else:
            series = read_dicom_series(reference_series)
        if (
            expected_frame_of_reference
            and series.frame_of_reference_uid != expected_frame_of_reference.strip()
        ):
            raise InputError(
                f"patient {patient_id}: the reference series {series.series_instance_uid} has "
                f"FrameOfReferenceUID {series.frame_of_reference_uid}, but the manifest gives "
                f"{expected_frame_of_reference.strip()}",
                path=_series_label(series),
                field="FrameOfReferenceUID",
                fix="give the planning series in the frame of reference the maps were registered to, or "
                f"correct the manifest's {FRAME_OF_REFERENCE_COLUMN} column",
            )
        on_series, resampled = _on_series(items, grid, series, patient_id)
    else:
        if image is None:
            raise InputError(
                f"patient {patient_id}: no image to write the RTSTRUCT's series from and no reference series",
                field=f"map_{_IMAGE_MAP}",
                fix=f"add the patient's map_{_IMAGE_MAP} to the manifest or give --reference-series",
            )
        diff = grid.geometry_difference(image)
        if diff is not None:
            raise InputError(
                f"patient {patient_id}: the image is not on the maps' grid: {diff}",
                field=f"map_{_IMAGE_MAP}",
                fix="resample every map and mask of the patient onto one grid",
            )
        on_series, resampled = {}, False

    seed = None if uid_seed is None else f"{uid_seed}/{patient_id}"
    nifti: dict[str, Path] = {}
    rois: dict[str, str] = {}
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for c in items:
            name = f"CTV_{c.name}.nii.gz"
            write_nifti(grid.with_array(c.mask), tmp / name)
            nifti[c.name] = target / name
        series_folder: Path | None = None
        if series is None:
            assert image is not None  # checked above
            series = write_mr_series(
                image,
                tmp / "MR",
                patient_id=patient_id,
                series_description=f"{_IMAGE_MAP} for CTVs",
                uid_seed=seed,
            )
            series_folder = target / "MR"
            # the writer may reverse the slice order (left-handed grids): map the CTVs exactly onto its grid
            on_series = {
                c.name: (
                    grid.with_array(c.mask)
                    if series.volume.same_geometry(grid)
                    else series.volume.with_array(
                        resample_mask_nearest(grid.with_array(c.mask), series.volume)
                    )
                )
                for c in items
            }
        roi_list = []
        for c in items:
            rois[c.name] = roi_name(c)
            roi_list.append(
                Roi(roi_name(c), on_series[c.name], color=CTV_COLOURS.get(c.name), interpreted_type="CTV")
            )
        description = (
            "adaptrt CTVs: "
            + "; ".join(f"{c.name} = {c.definition}" for c in items)
            + ". Research output for review by a physicist; anatomical barriers not modelled."
        ).replace("\\", "/")
        write_rtstruct(
            roi_list,
            series,
            tmp / _RTSTRUCT_NAME,
            label="adaptrt CTVs",
            description=description[:1024],
            uid_seed=seed,
        )
        record = {
            "patient_id": patient_id,
            "ctvs": [
                {
                    "name": c.name,
                    "roi_name": rois[c.name],
                    "definition": c.definition,
                    "margin_mm": c.margin_mm,
                    "critical_removed": list(c.critical_removed),
                    "n_voxels": c.n_voxels,
                    "volume_cm3": c.volume_cm3,
                    "nifti": f"CTV_{c.name}.nii.gz",
                }
                for c in items
            ],
            "rtstruct": _RTSTRUCT_NAME,
            "series": {
                "written_from": None if series_folder is None else _IMAGE_MAP,
                "folder": None if series_folder is None else "MR",
                "series_instance_uid": series.series_instance_uid,
                "frame_of_reference_uid": series.frame_of_reference_uid,
                "resampled_to_series_grid": resampled,
            },
        }
        (tmp / "export.json").write_text(json.dumps(to_jsonable(record), indent=2) + "\n")
    return CtvExport(
        folder=target,
        nifti=nifti,
        rtstruct=target / _RTSTRUCT_NAME,
        series_folder=series_folder,
        series_instance_uid=series.series_instance_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
        roi_names=rois,
        resampled=resampled,
    )


# ------------------------------------------------------------------------------------ the command
@dataclass(frozen=True)
class CtvExportConfig:
    """The settings of :func:`run_ctv_export` (saved as the run's ``config.json``)."""

    manifest: str
    reference_series: str | None
    rtog_margin_mm: float = RTOG_MARGIN_MM
    eortc_margin_mm: float = EORTC_MARGIN_MM
    image_map: str = _IMAGE_MAP


def _critical_masks(p: GlioblastomaPatient, base: Path, grid: Volume) -> dict[str, Volume]:
    out: dict[str, Volume] = {}
    for col, value in p.clinical.items():
        if not col.startswith(CRITICAL_PREFIX) or not value.strip():
            continue
        path = Path(value.strip()).expanduser()
        path = path if path.is_absolute() else base / path
        vol = read_nifti(path, kind="mask")
        diff = grid.geometry_difference(vol)
        if diff is not None:
            raise InputError(
                f"patient {p.patient_id}: the critical structure is not on the grid of the brain mask: {diff}",
                path=path,
                row=p.row or None,
                field=col,
                fix="resample the critical-structure mask onto the patient's grid",
            )
        out[col[len(CRITICAL_PREFIX) :] or col] = vol
    return out


def _check_patient(p: GlioblastomaPatient, masks: Mapping[str, Volume], manifest: Path) -> None:
    for col in ("brain", "t2l_baseline"):
        if not np.any(masks[col].array):
            raise InputError(
                f"patient {p.patient_id}: the {col} mask {p.masks[col]} is empty; the RTOG CTV needs a T2 lesion "
                "inside a brain mask",
                path=manifest,
                row=p.row or None,
                field=col,
                fix=f"give the patient's {col} mask (NIfTI, 0/1, on the patient's grid)",
            )


def _folder_name(p: GlioblastomaPatient, manifest: Path) -> str:
    pid = p.patient_id.strip()
    if pid in ("", ".", "..") or any(ch in pid for ch in "/\\:") or any(ord(ch) < 32 for ch in pid):
        raise InputError(
            f"patient_id {p.patient_id!r} cannot name an export folder",
            path=manifest,
            row=p.row or None,
            field="patient_id",
            fix="use patient ids without path separators (/, \\, :) or control characters",
        )
    return pid


def _reference_folders(ref: Path, patients: Sequence[GlioblastomaPatient]) -> dict[str, Path]:
    if not ref.is_dir():
        raise InputError(
            "the reference-series folder does not exist" if not ref.exists() else "is not a folder",
            path=ref,
            field="--reference-series",
            fix="give a folder holding one sub-folder per patient (named by patient_id) with the planning series",
        )
    out = {p.patient_id: ref / p.patient_id for p in patients}
    missing = [pid for pid, f in out.items() if not f.is_dir()]
    if missing:
        raise InputError(
            f"no planning-series folder for {len(missing)} patient(s): {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else ""),
            path=ref,
            field="--reference-series",
            fix="put each patient's planning series in <reference-series>/<patient_id>/",
        )
    return out


def run_ctv_export(
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    reference_series: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """``adaptrt target ctv``: RTOG and EORTC CTVs of every patient as NIfTI and RTSTRUCT, in a run folder.

    Parameters
    ----------
    manifest
        A glioblastoma manifest (``docs/manifest.md``). Optional extra columns: ``critical_<NAME>`` (a NIfTI
        mask of a critical structure, removed from every CTV) and ``frame_of_reference_uid`` (the
        FrameOfReferenceUID the planning series must have).
    out
        The run folder to create (layout in the module docstring).
    reference_series
        A folder with one sub-folder per patient (``<reference_series>/<patient_id>/``) holding the planning
        series the RTSTRUCT is drawn on; default: a series written from each patient's nT1c.
    overwrite
        Replace an existing run folder (only once the new one is complete).
    progress
        A progress bar over patients.

    Returns
    -------
    Path
        The run folder.

    Raises
    ------
    InputError
        Before any work: ``out`` exists; the manifest is invalid; a patient's reference-series folder is
        missing. During the work (nothing is left behind): a patient's maps or masks of different shape or
        affine, an empty brain or baseline T2-lesion mask, no nT1c map and no reference series, a reference
        series of another frame of reference (each message names the patient, the file and the fix).
    """
    from ..report.run import RunFolder, command_line

    target = check_writable(out, overwrite=overwrite)
    mpath = Path(manifest)
    cohort = read_glioblastoma_manifest(mpath)
    refs = _reference_folders(Path(reference_series), cohort.patients) if reference_series is not None else {}
    cfg = CtvExportConfig(
        manifest=str(mpath.resolve()),
        reference_series=None if reference_series is None else str(Path(reference_series).resolve()),
    )
    base = mpath.resolve().parent
    rows: list[dict[str, Any]] = []
    patients: Iterable[GlioblastomaPatient] = cohort.patients
    if progress:
        patients = tqdm(cohort.patients, desc="CTV export", unit="patient")
    call = f"run_ctv_export({str(mpath)!r}, {str(target)!r})"
    with RunFolder(
        target,
        command=command_line(call),
        config=cfg,
        seed=None,
        title="adaptrt target ctv",
        overwrite=overwrite,
    ) as run:
        for p in patients:
            try:
                maps, masks = load_glioblastoma_patient(p)
            except InputError as exc:
                if exc.path is not None:
                    raise
                raise InputError(exc.problem, path=mpath, row=exc.row, field=exc.field, fix=exc.fix) from exc
            _check_patient(p, masks, mpath)
            grid = masks["brain"]
            critical = _critical_masks(p, base, grid)
            ctvs = standard_ctvs(masks, critical=critical or None)
            image = maps.get(_IMAGE_MAP)
            if p.patient_id in refs:
                ref: str | Path | None = refs[p.patient_id]
            else:
                ref = None
            if ref is None and image is None:
                raise InputError(
                    f"patient {p.patient_id} has no {_IMAGE_MAP} map to write the RTSTRUCT's series from",
                    path=mpath,
                    row=p.row or None,
                    field=f"map_{_IMAGE_MAP}",
                    fix=f"add the patient's map_{_IMAGE_MAP} or give --reference-series",
                )
            exp = export_ctvs(
                ctvs,
                grid,
                run.stage / "exports" / _folder_name(p, mpath),
                patient_id=p.patient_id,
                image=image,
                reference_series=ref,
                expected_frame_of_reference=p.clinical.get(FRAME_OF_REFERENCE_COLUMN) or None,
                overwrite=True,
            )
            row: dict[str, Any] = {"patient_id": p.patient_id, "treatment": p.treatment}
            for name, c in ctvs.items():
                row[f"{name}_volume_cm3"] = round(c.volume_cm3, 3)
                row[f"{name}_voxels"] = c.n_voxels
            row["critical_removed"] = " ".join(critical)
            row["series"] = "nT1c (written)" if exp.series_folder is not None else "reference"
            row["resampled"] = exp.resampled
            row["rtstruct"] = f"exports/{exp.folder.name}/{exp.rtstruct.name}"
            rows.append(row)
        run.write_csv("results/ctv_volumes.csv", rows)
        with run.section("CTV export") as s:
            s.text(
                f"{len(rows)} patients from {mpath}. RTOG = (T2L ∪ CEL) + {RTOG_MARGIN_MM:g} mm; EORTC = "
                f"(CEL ∪ cavity) + {EORTC_MARGIN_MM:g} mm, oedema not included; both Euclidean in mm on the "
                "grid's spacing, clipped to the brain, critical structures (manifest columns critical_<NAME>) "
                "removed. Anatomical barriers (falx, tentorium) are not modelled."
            )
            s.text(
                "Each patient's folder under exports/ holds the CTVs as NIfTI on the maps' grid and one "
                "RTSTRUCT with one ROI per CTV, on "
                + ("the planning series given." if refs else "an MR series written from the patient's nT1c.")
            )
            s.table(rows, caption="CTV volumes per patient (cm³)")
    return target
