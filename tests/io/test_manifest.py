"""Cohort manifests: reading, voxel checks, the summary, and one error listing every problem."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.io.loaders import clear_cache, image_ref, load_image, load_mask, mask_ref
from adaptrt.io.manifest import (
    GBM_COLUMNS,
    check_cohort,
    check_glioblastoma_cohort,
    load_glioblastoma_patient,
    read_glioblastoma_manifest,
    read_manifest,
    write_glioblastoma_manifest,
    write_manifest,
)
from adaptrt.io.nifti import write_nifti
from adaptrt.types import Volume

SHAPE = (10, 32, 32)
SPACING = (2.0, 1.0, 1.0)
ORIGIN = (-16.0, -16.0, -10.0)
VOXEL_MM3 = 2.0
TIMEPOINTS = ("mri1", "mri2", "followup")
# (patient, lesion) -> centre (k, j, i) and radius (mm) at each time point; 0 = gone
LESIONS: dict[tuple[str, str], tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    ("P1", "1"): ((4.5, 9.0, 9.0), (6.0, 6.0, 4.0)),  # shrinks: responder
    ("P1", "2"): ((4.5, 22.0, 22.0), (5.0, 5.5, 5.0)),  # stable: non-responder
    ("P2", "1"): ((4.5, 15.5, 15.5), (7.0, 5.0, 0.0)),  # disappears: complete response
}


def _sphere(
    centre: tuple[float, float, float], radius_mm: float, shape: tuple[int, int, int] = SHAPE
) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, SPACING, strict=True))
    return r2 <= radius_mm**2


def _grid(array: np.ndarray, origin: tuple[float, float, float] = ORIGIN) -> Volume:
    return Volume(array, spacing=SPACING, origin=origin)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def cohort_dir(tmp_path: Path) -> tuple[Path, list[dict[str, str]], dict[tuple[str, str, str], float]]:
    """Write the NIfTI cohort: one image per patient and time point, one mask per lesion and time point.

    Returns the folder, the manifest rows (ordered patient, time point, lesion: P1 rows 1-6, P2 rows 7-9)
    and the expected GTV volume (mm³) of each (patient, lesion, time point).
    """
    rows: list[dict[str, str]] = []
    expected: dict[tuple[str, str, str], float] = {}
    for pid in ("P1", "P2"):
        for t, tp in enumerate(TIMEPOINTS):
            image = np.full(SHAPE, 100.0, dtype=np.float32)
            masks = {}
            for (p, lid), (centre, radii) in LESIONS.items():
                if p != pid:
                    continue
                m = _sphere(centre, radii[t]) if radii[t] > 0 else np.zeros(SHAPE, bool)
                masks[lid] = m
                image[m] = 400.0
                expected[(pid, lid, tp)] = float(np.count_nonzero(m)) * VOXEL_MM3
            write_nifti(_grid(image), tmp_path / "images" / f"{pid}_{tp}.nii.gz")
            for lid, m in masks.items():
                write_nifti(_grid(m), tmp_path / "masks" / f"{pid}_{lid}_{tp}.nii.gz")
                rows.append(
                    {
                        "patient_id": pid,
                        "lesion_id": lid,
                        "timepoint": tp,
                        "image": f"images/{pid}_{tp}.nii.gz",
                        "mask": f"masks/{pid}_{lid}_{tp}.nii.gz",
                        "roi": "",
                        "age": "61" if pid == "P1" else "57",
                    }
                )
    return tmp_path, rows, expected


def _manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    return write_manifest(rows, folder / "manifest.csv", overwrite=True)


# ----------------------------------------------------------------------------- good cohort
def test_good_manifest_reads_and_checks(cohort_dir: Any) -> None:
    folder, rows, expected = cohort_dir
    path = _manifest(folder, rows)
    assert "images/P1_mri1.nii.gz" in path.read_text()  # relative paths kept as given
    cohort = read_manifest(path)
    assert [p.patient_id for p in cohort] == ["P1", "P2"]
    assert [les.key for les in cohort.lesions] == ["P1/1", "P1/2", "P2/1"]
    les = cohort.lesions[0]
    assert list(les.timepoints) == list(TIMEPOINTS)
    assert les["mri2"].row == 3
    assert les["mri1"].image.kind == "nifti" and les["mri1"].mask.kind == "nifti"
    assert les["mri1"].image.path == (folder / "images" / "P1_mri1.nii.gz").resolve()
    assert dict(les.clinical) == {"age": "61"}
    assert list(cohort.groups) == ["P1", "P1", "P2"]

    summary = check_cohort(cohort, threshold=0.2)
    assert (summary.n_patients, summary.n_lesions) == (2, 3)
    assert dict(summary.timepoints) == {"mri1": 3, "mri2": 3, "followup": 3}
    for ls in summary.lesions:
        for tp in TIMEPOINTS:
            assert ls.volumes_mm3[tp] == pytest.approx(expected[(ls.patient_id, ls.lesion_id, tp)])
        assert ls.shape == SHAPE
        assert ls.spacing_mm == SPACING
    labels = {f"{ls.patient_id}/{ls.lesion_id}": ls.response for ls in summary.lesions}
    assert labels["P1/1"] is not None and labels["P1/1"].responder
    assert labels["P1/2"] is not None and not labels["P1/2"].responder
    assert (
        labels["P2/1"] is not None and labels["P2/1"].responder and labels["P2/1"].volume_followup_mm3 == 0.0
    )
    assert (summary.n_responders, summary.n_non_responders, summary.n_unlabelled) == (2, 1, 0)

    table = summary.to_rows()
    assert table[0]["volume_mri1_mm3"] == pytest.approx(expected[("P1", "1", "mri1")])
    assert table[1]["responder"] is False
    assert table[0]["shape_mri1"] == "10 x 32 x 32"
    assert table[2]["age"] == "57"
    text = summary.to_text()
    assert "2 patients, 3 lesions" in text
    assert "2 responders, 1 non-responders, 0 unlabelled" in text


def test_lesion_without_followup_is_unlabelled(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    rows = [r for r in rows if not (r["patient_id"] == "P2" and r["timepoint"] == "followup")]
    summary = check_cohort(read_manifest(_manifest(folder, rows)))
    assert summary.n_unlabelled == 1
    assert summary.to_rows()[2]["volume_followup_mm3"] is None


def test_loaders_classify_and_cache(cohort_dir: Any) -> None:
    folder, _, _ = cohort_dir
    img = image_ref(folder / "images" / "P1_mri1.nii.gz")
    assert img.kind == "nifti"
    assert image_ref(folder / "images").kind == "dicom"
    clear_cache()
    first = load_image(img)
    assert load_image(img) is first  # second lesion of the patient: no second read
    mask = load_mask(mask_ref(folder / "masks" / "P1_1_mri1.nii.gz", ""), img)
    assert mask.is_mask and mask.same_geometry(first)
    with pytest.raises(InputError, match=r"field 'roi': an ROI name \('GTV'\) was given for a NIfTI mask"):
        mask_ref(folder / "masks" / "P1_1_mri1.nii.gz", "GTV")
    with pytest.raises(InputError, match=r"an image must be a DICOM series folder or a NIfTI file"):
        image_ref(_write_csv(folder / "x.csv", ["a"], []))


# ----------------------------------------------------------------------------- read_manifest problems
def test_duplicated_row_names_both_rows(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    path = _manifest(folder, [*rows, dict(rows[1])])
    with pytest.raises(
        InputError,
        match=r"1 problem:\n  row 10 \(line 11\): duplicates row 2 \(line 3\): patient 'P1', lesion '2', "
        r"timepoint 'mri1'.*docs/manifest\.md",
    ):
        read_manifest(path)


def test_missing_column_is_reported_alone(cohort_dir: Any) -> None:
    folder, _, _ = cohort_dir
    header = ["patient_id", "lesion_id", "timepoint", "Mask", "roi"]
    path = _write_csv(folder / "bad.csv", header, [["P1", "1", "mri1", "", ""], ["P1", "1", "mri1", "", ""]])
    with pytest.raises(
        InputError, match=r"1 problem:\n  missing required columns 'image', 'mask'.*'Mask' for 'mask'"
    ):
        read_manifest(path)


def test_roi_column_may_be_left_out_for_nifti_masks(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    header = ["patient_id", "lesion_id", "timepoint", "image", "mask"]
    path = _write_csv(folder / "no_roi.csv", header, [[r[c] for c in header] for r in rows])
    assert len(read_manifest(path).lesions) == 3


def test_lesion_without_mri1(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    path = _manifest(folder, [r for r in rows if not (r["patient_id"] == "P2" and r["timepoint"] == "mri1")])
    with pytest.raises(
        InputError,
        match=r"row 7 \(line 8\), column 'timepoint': patient 'P2', lesion '1' \(rows 7, 8\) has no 'mri1' row",
    ):
        read_manifest(path)


def test_missing_file(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    rows[2]["image"] = "images/absent.nii.gz"
    path = _manifest(folder, rows)
    with pytest.raises(
        InputError, match=r"row 3 \(line 4\), column 'image': .*absent\.nii\.gz: image not found"
    ):
        read_manifest(path)


def test_several_problems_reported_together(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    rows[0]["roi"] = "GTV"  # NIfTI mask with an ROI name
    rows[4]["mask"] = "masks/absent.nii.gz"
    rows[5]["patient_id"] = ""
    path = _manifest(folder, [*rows, dict(rows[7])])
    with pytest.raises(InputError) as info:
        read_manifest(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: 4 problems:")
    assert "4 problems:" in msg
    assert "row 1 (line 2), column 'roi': " in msg
    assert "row 5 (line 6), column 'mask': " in msg and "absent.nii.gz" in msg
    assert "row 6 (line 7), column 'patient_id': is empty" in msg
    assert "row 10 (line 11): duplicates row 8 (line 9)" in msg
    assert "Fix: correct the manifest" in msg


# ----------------------------------------------------------------------------- check_cohort problems
def _replace_mask(folder: Path, name: str, volume: Volume) -> None:
    write_nifti(volume, folder / "masks" / name, overwrite=True)


def test_mask_shape_differs_from_image(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    _replace_mask(folder, "P1_2_mri2.nii.gz", _grid(np.zeros((10, 32, 30), bool)))
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(
        InputError,
        match=r"row 4 \(line 5\), column 'mask' \[P1/2 mri2\]: .*P1_2_mri2\.nii\.gz: the mask's grid differs "
        r"from its image .*P1_mri2\.nii\.gz: shape 10 x 32 x 30 voxels \(z, y, x\) differs from 10 x 32 x 32; "
        r"fix: resample",
    ):
        check_cohort(cohort)


def test_mask_affine_differs_from_image(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    m = _sphere(LESIONS[("P2", "1")][0], 5.0)
    _replace_mask(folder, "P2_1_mri2.nii.gz", _grid(m, origin=(-16.0, -15.0, -10.0)))
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(InputError, match=r"row 8 \(line 9\), column 'mask' \[P2/1 mri2\]: .*origin"):
        check_cohort(cohort)


def test_mask_with_values_other_than_0_1(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    data = np.zeros(SHAPE[::-1], np.uint8)
    data[10:14, 10:14, 3:6] = 1
    data[12, 12, 4] = 3
    nib.save(
        nib.Nifti1Image(data, nib.load(folder / "masks" / "P1_1_mri1.nii.gz").affine), folder / "m.nii.gz"
    )
    rows[0]["mask"] = "m.nii.gz"
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(
        InputError, match=r"row 1 \(line 2\), column 'mask' \[P1/1 mri1\]: .*found values 0, 1, 3"
    ):
        check_cohort(cohort)


def test_empty_mask_at_mri1_is_an_error(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    _replace_mask(folder, "P1_1_mri1.nii.gz", _grid(np.zeros(SHAPE, bool)))
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(
        InputError, match=r"1 problem:\n  row 1 \(line 2\), column 'mask' \[P1/1 mri1\]: .*is empty"
    ):
        check_cohort(cohort)


def test_nan_in_image(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    image = np.full(SHAPE, 100.0, np.float32)
    image[0, 0, :5] = np.nan
    # P2's mri2 image serves one lesion (row 8); both its image and its mask are reported only once
    data = image.transpose(2, 1, 0)
    affine = nib.load(folder / "images" / "P2_mri2.nii.gz").affine
    nib.save(nib.Nifti1Image(data, affine), folder / "images" / "P2_mri2.nii.gz")
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(InputError) as info:
        check_cohort(cohort)
    msg = str(info.value)
    assert "1 problem:" in msg
    assert (
        "row 8 (line 9), column 'image' [P2/1 mri2]: " in msg
        and "5 of 10240 voxels are NaN or infinite" in msg
    )


def test_check_problems_reported_together(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    _replace_mask(folder, "P1_1_mri1.nii.gz", _grid(np.zeros(SHAPE, bool)))
    _replace_mask(folder, "P2_1_mri2.nii.gz", _grid(np.zeros((4, 4, 4), bool)))
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(
        InputError, match=r"2 problems:\n  row 1 \(line 2\).*is empty.*\n  row 8 \(line 9\).*shape"
    ):
        check_cohort(cohort)


def test_bad_threshold(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    with pytest.raises(InputError, match=r"field 'threshold': threshold must be in \(0, 1\), got 20"):
        check_cohort(read_manifest(_manifest(folder, rows)), threshold=20)


# ----------------------------------------------------------------------------- DICOM + RTSTRUCT
def test_dicom_rtstruct_cohort(tmp_path: Path) -> None:
    from adaptrt.io import loaders
    from adaptrt.io.dicom import write_mr_series
    from adaptrt.io.rtstruct import Roi, write_rtstruct

    rows = []
    expected = {}
    for t, tp in enumerate(TIMEPOINTS):
        image = np.full(SHAPE, 100.0, dtype=np.float32)
        rois = []
        for (pid, lid), (centre, radii) in LESIONS.items():
            if pid != "P1":
                continue
            m = _sphere(centre, radii[t])
            image[m] = 400.0
            rois.append(Roi(f"GTV_{lid}", _grid(m)))
            expected[(lid, tp)] = float(np.count_nonzero(m)) * VOXEL_MM3
            rows.append(
                {
                    "patient_id": "P1",
                    "lesion_id": lid,
                    "timepoint": tp,
                    "image": f"dicom/{tp}",
                    "mask": f"dicom/{tp}_rs.dcm",
                    "roi": f"GTV_{lid}",
                }
            )
        series = write_mr_series(_grid(image), tmp_path / "dicom" / tp, patient_id="P1", uid_seed=f"t-{tp}")
        write_rtstruct(rois, series, tmp_path / "dicom" / f"{tp}_rs.dcm", uid_seed=f"t-{tp}-rs")
    cohort = read_manifest(write_manifest(rows, tmp_path / "manifest.csv"))
    assert cohort.lesions[0]["mri1"].image.kind == "dicom"
    assert cohort.lesions[0]["mri1"].mask.kind == "rtstruct"
    clear_cache()
    summary = check_cohort(cohort)
    for ls in summary.lesions:
        for tp in TIMEPOINTS:
            assert ls.volumes_mm3[tp] == pytest.approx(expected[(ls.lesion_id, tp)])
    assert [ls.response is not None and ls.response.responder for ls in summary.lesions] == [True, False]
    # two lesions on each of three series: each series read once
    assert loaders._series_cached.cache_info().misses == 3


def test_rtstruct_needs_roi_and_dicom_image(cohort_dir: Any) -> None:
    folder, rows, _ = cohort_dir
    rs = folder / "rs.dcm"
    rs.write_bytes(b"\0" * 200)
    rows[0]["mask"] = "rs.dcm"  # an RTSTRUCT without its ROI name
    with pytest.raises(InputError, match=r"row 1 \(line 2\), column 'roi': .*needs the name of the ROI"):
        read_manifest(_manifest(folder, rows))
    rows[0]["roi"] = "GTV_1"
    cohort = read_manifest(_manifest(folder, rows))
    with pytest.raises(InputError, match=r"row 1 \(line 2\), column 'mask'.*needs a DICOM image series"):
        check_cohort(cohort)


# ----------------------------------------------------------------------------- glioblastoma manifest
GBM_SHAPE = (12, 16, 16)
GBM_SPACING = (3.0, 3.0, 3.0)


def _gbm_sphere(radius_mm: float, centre: tuple[float, float, float] = (5.5, 7.5, 7.5)) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in GBM_SHAPE], indexing="ij")
    r2 = sum(((g - c) * 3.0) ** 2 for g, c in zip(grids, centre, strict=True))
    return r2 <= radius_mm**2


@pytest.fixture
def gbm_dir(tmp_path: Path) -> tuple[Path, list[dict[str, Any]], dict[tuple[str, str], float]]:
    """Two patients on a 3 mm grid; P2 has no CNI map and no CEL at progression."""
    rows: list[dict[str, Any]] = []
    volumes_ml: dict[tuple[str, str], float] = {}
    radii = {
        "brain": 20.0,
        "cavity": 4.0,
        "cel_baseline": 7.0,
        "t2l_baseline": 10.0,
        "cel_progression": 8.0,
        "t2l_progression": 13.0,
    }
    rng = np.random.default_rng(1)
    for pid, treatment, ttp in (("P1", "soc", 6.5), ("P2", "antiangiogenic", 11.0)):
        row: dict[str, Any] = {"patient_id": pid, "treatment": treatment, "ttp_months": ttp}
        for name, radius in radii.items():
            m = (
                _gbm_sphere(radius)
                if not (pid == "P2" and name == "cel_progression")
                else np.zeros(GBM_SHAPE, bool)
            )
            rel = f"{pid}/{name}.nii.gz"
            write_nifti(Volume(m, spacing=GBM_SPACING), tmp_path / rel)
            row[name] = rel
            volumes_ml[(pid, name)] = np.count_nonzero(m) * 27.0 / 1000.0
        for name in ("nADC", "CNI"):
            if pid == "P2" and name == "CNI":
                row[f"map_{name}"] = None
                continue
            rel = f"{pid}/{name}.nii.gz"
            write_nifti(Volume(rng.random(GBM_SHAPE).astype(np.float32), spacing=GBM_SPACING), tmp_path / rel)
            row[f"map_{name}"] = rel
        rows.append(row)
    return tmp_path, rows, volumes_ml


def test_glioblastoma_good_manifest(gbm_dir: Any) -> None:
    folder, rows, volumes_ml = gbm_dir
    cohort = read_glioblastoma_manifest(write_glioblastoma_manifest(rows, folder / "gbm.csv"))
    assert cohort.map_names == ("nADC", "CNI")
    p1, p2 = cohort.patients
    assert (p1.patient_id, p1.treatment, p1.ttp_months, p1.row) == ("P1", "soc", 6.5, 1)
    assert p2.maps["CNI"] is None and p2.missing_maps == ("CNI",)
    maps, masks = load_glioblastoma_patient(p1)
    assert set(maps) == {"nADC", "CNI"} and maps["nADC"].dtype == np.float32
    assert set(masks) == set(GBM_COLUMNS[3:]) and all(m.is_mask for m in masks.values())

    summary = check_glioblastoma_cohort(cohort)
    assert summary.n_patients == 2
    assert dict(summary.treatments) == {"soc": 1, "antiangiogenic": 1}
    assert dict(summary.map_counts) == {"nADC": 2, "CNI": 1}
    for ps in summary.patients:
        for name in ("cel_baseline", "t2l_baseline", "cel_progression", "t2l_progression"):
            assert ps.volumes_ml[name] == pytest.approx(volumes_ml[(ps.patient_id, name)])
        assert ps.spacing_mm == GBM_SPACING
    assert summary.patients[1].volumes_ml["cel_progression"] == 0.0
    table = summary.to_rows()
    assert table[1]["missing_maps"] == "CNI" and table[0]["ttp_months"] == 6.5
    assert "Treatments: soc 1, antiangiogenic 1" in summary.to_text()


def test_glioblastoma_missing_column(gbm_dir: Any) -> None:
    folder, rows, _ = gbm_dir
    header = [c for c in rows[0] if c != "cavity"]
    path = _write_csv(
        folder / "gbm.csv", header, [["" if r[c] is None else str(r[c]) for c in header] for r in rows]
    )
    with pytest.raises(InputError, match=r"gbm\.csv: 1 problem:\n  missing required column 'cavity'"):
        read_glioblastoma_manifest(path)


def test_glioblastoma_bad_values_reported_together(gbm_dir: Any) -> None:
    folder, rows, _ = gbm_dir
    rows[0]["ttp_months"] = "soon"
    rows[1]["ttp_months"] = -2
    rows[1]["map_nADC"] = "P2/absent.nii.gz"
    path = write_glioblastoma_manifest([*rows, dict(rows[0], ttp_months=3)], folder / "gbm.csv")
    with pytest.raises(InputError) as info:
        read_glioblastoma_manifest(path)
    msg = str(info.value)
    assert "4 problems:" in msg
    assert "row 1 (line 2), column 'ttp_months': 'soon' is not a number of months" in msg
    assert "row 2 (line 3), column 'ttp_months': must be a number of months > 0, got '-2'" in msg
    assert "row 2 (line 3), column 'map_nADC': file not found" in msg
    assert "row 3 (line 4), column 'patient_id': patient 'P1' duplicates row 1 (line 2)" in msg


def test_glioblastoma_grids_differ(gbm_dir: Any) -> None:
    folder, rows, _ = gbm_dir
    write_nifti(
        Volume(np.ones((8, 11, 11), np.float32), spacing=(4.5, 4.5, 4.5)),
        folder / "P2" / "nADC.nii.gz",
        overwrite=True,
    )
    cohort = read_glioblastoma_manifest(write_glioblastoma_manifest(rows, folder / "gbm.csv"))
    with pytest.raises(
        InputError,
        match=r"1 problem:\n  row 2 \(line 3\), column 'map_nADC' \[patient P2\]: .*nADC\.nii\.gz is not on the "
        r"grid of 'brain' .*shape 8 x 11 x 11 voxels \(z, y, x\) differs from 12 x 16 x 16",
    ):
        check_glioblastoma_cohort(cohort)
    with pytest.raises(InputError, match=r"\[patient P2\].*is not on the grid of 'brain'"):
        load_glioblastoma_patient(cohort.patients[1])
