"""CTV export: NIfTI + RTSTRUCT per patient, dciodvfy-clean, read back voxel for voxel; bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.io.dicom import read_dicom_series, write_mr_series
from adaptrt.io.manifest import load_glioblastoma_patient, read_glioblastoma_manifest
from adaptrt.io.nifti import read_nifti, write_nifti
from adaptrt.io.rtstruct import read_rtstruct, rtstruct_roi_names
from adaptrt.simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort
from adaptrt.target.ctv import standard_ctvs
from adaptrt.target.export import export_ctvs, resample_mask_nearest, run_ctv_export
from adaptrt.types import Volume
from tests.dicom_check import dciodvfy_lines

SMALL = GlioblastomaConfig(n_patients=2, voxel_mm=4.0, shape=(30, 40, 34))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_glioblastoma_cohort(tmp_path_factory.mktemp("gbm") / "cohort", config=SMALL, seed=5)


@pytest.fixture(scope="module")
def run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_ctv_export(cohort, tmp_path_factory.mktemp("runs") / "ctv")


def _errors(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("Error")]


def test_run_folder_exports_every_patient(run: Path, cohort: Path) -> None:
    rows = list(csv.DictReader((run / "results" / "ctv_volumes.csv").open()))
    patients = read_glioblastoma_manifest(cohort).patients
    assert [r["patient_id"] for r in rows] == [p.patient_id for p in patients]
    assert (run / "report.html").is_file() and (run / "config.json").is_file()
    for p, row in zip(patients, rows, strict=True):
        maps, masks = load_glioblastoma_patient(p)
        ctvs = standard_ctvs(masks)
        folder = run / "exports" / p.patient_id
        series = read_dicom_series(folder / "MR")
        assert rtstruct_roi_names(folder / "RS_ctvs.dcm") == ["CTV_RTOG", "CTV_EORTC"]
        for name, c in ctvs.items():
            assert float(row[f"{name}_volume_cm3"]) == pytest.approx(c.volume_cm3, abs=1e-3)
            nii = read_nifti(folder / f"CTV_{name}.nii.gz", kind="mask")
            assert nii.same_geometry(masks["brain"])
            np.testing.assert_array_equal(nii.array, c.mask)
            # exact voxel match of the RTSTRUCT read back on the written nT1c series (same grid)
            back = read_rtstruct(folder / "RS_ctvs.dcm", f"CTV_{name}", series)
            assert back.same_geometry(masks["brain"])
            np.testing.assert_array_equal(back.array, c.mask)
        np.testing.assert_allclose(
            series.volume.array, maps["nT1c"].array, atol=1e-3 * np.ptp(maps["nT1c"].array)
        )


def test_rtstruct_and_series_pass_dciodvfy(run: Path) -> None:
    folder = next((run / "exports").iterdir())
    lines = dciodvfy_lines(folder / "RS_ctvs.dcm", "RTStructureSet")
    assert _errors(lines) == [], lines
    mr = sorted((folder / "MR").iterdir())[0]
    assert _errors(dciodvfy_lines(mr, "MRImage")) == []


def test_existing_run_folder_is_refused_before_any_work(run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="already exists"):
        run_ctv_export(tmp_path / "no-manifest.csv", run)


def _ref_series(cohort: Path, root: Path, *, shift_mm: float = 0.0, frame: str | None = None) -> Path:
    for p in read_glioblastoma_manifest(cohort).patients:
        maps, _ = load_glioblastoma_patient(p)
        v = maps["nT1c"]
        v = Volume(v.array, spacing=v.spacing, origin=(v.origin[0] + shift_mm, v.origin[1], v.origin[2]))
        write_mr_series(
            v,
            root / p.patient_id,
            patient_id=p.patient_id,
            uid_seed=f"plan/{p.patient_id}",
            frame_of_reference_uid=frame,
        )
    return root


def test_reference_series_is_used_and_checked(cohort: Path, tmp_path: Path) -> None:
    refs = _ref_series(cohort, tmp_path / "plan")
    out = run_ctv_export(cohort, tmp_path / "run", reference_series=refs)
    p = read_glioblastoma_manifest(cohort).patients[0]
    folder = out / "exports" / p.patient_id
    assert not (folder / "MR").exists()
    series = read_dicom_series(refs / p.patient_id)
    _, masks = load_glioblastoma_patient(p)
    rtog = standard_ctvs(masks)["RTOG"]
    back = read_rtstruct(folder / "RS_ctvs.dcm", "CTV_RTOG", series)
    np.testing.assert_array_equal(back.array, rtog.mask)

    far = _ref_series(cohort, tmp_path / "far", shift_mm=1000.0)
    with pytest.raises(InputError, match="does not overlap the patient's maps"):
        run_ctv_export(cohort, tmp_path / "run_far", reference_series=far)
    assert not (tmp_path / "run_far").exists()
    with pytest.raises(InputError, match="no planning-series folder for 2 patient"):
        run_ctv_export(cohort, tmp_path / "run_missing", reference_series=tmp_path / "plan" / p.patient_id)


def test_frame_of_reference_mismatch_names_the_series(cohort: Path, tmp_path: Path) -> None:
    p = read_glioblastoma_manifest(cohort).patients[0]
    maps, masks = load_glioblastoma_patient(p)
    ctvs = standard_ctvs(masks)
    series = write_mr_series(maps["nT1c"], tmp_path / "s", patient_id="x", frame_of_reference_uid="1.2.3.4")
    with pytest.raises(
        InputError, match=r"FrameOfReferenceUID 1\.2\.3\.4, but the manifest gives 1\.2\.3\.5"
    ) as e:
        export_ctvs(
            ctvs,
            masks["brain"],
            tmp_path / "o",
            patient_id=p.patient_id,
            reference_series=tmp_path / "s",
            expected_frame_of_reference="1.2.3.5",
        )
    assert str(tmp_path / "s") in str(e.value) and "Fix:" in str(e.value)
    assert not (tmp_path / "o").exists()
    ok = export_ctvs(
        ctvs,
        masks["brain"],
        tmp_path / "o",
        patient_id=p.patient_id,
        reference_series=series,
        expected_frame_of_reference="1.2.3.4",
    )
    assert ok.frame_of_reference_uid == "1.2.3.4" and not ok.resampled


def test_finer_reference_grid_gets_resampled_masks(cohort: Path, tmp_path: Path) -> None:
    p = read_glioblastoma_manifest(cohort).patients[0]
    _, masks = load_glioblastoma_patient(p)
    ctvs = standard_ctvs(masks)
    g = masks["brain"]
    # a 2 mm in-plane grid over the same field of view (voxel centres of the 4 mm grid shifted by 1 mm)
    fine = Volume(
        np.zeros((g.shape[0], g.shape[1] * 2, g.shape[2] * 2), dtype=np.float32) + 1.0,
        spacing=(g.spacing[0], g.spacing[1] / 2, g.spacing[2] / 2),
        origin=(g.origin[0] - 1.0, g.origin[1] - 1.0, g.origin[2]),
    )
    series = write_mr_series(fine, tmp_path / "fine", patient_id="x")
    exp = export_ctvs(ctvs, g, tmp_path / "o", patient_id=p.patient_id, reference_series=series)
    assert exp.resampled
    for name, c in ctvs.items():
        back = read_rtstruct(exp.rtstruct, f"CTV_{name}", series)
        want = resample_mask_nearest(g.with_array(c.mask), series.volume)
        np.testing.assert_array_equal(back.array, want)
        # every fine voxel is a quarter of a coarse one: same volume
        assert np.count_nonzero(want) == 4 * c.n_voxels


def _corrupt_copy(cohort: Path, tmp_path: Path, column: str, volume: Volume) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(cohort.parent, dst)
    p = read_glioblastoma_manifest(dst / "manifest.csv").patients[1]
    f = p.masks[column] if column in p.masks else p.maps[column]
    assert f is not None
    write_nifti(volume, f, overwrite=True)
    return dst / "manifest.csv"


def test_map_on_another_grid_is_refused_and_nothing_is_written(cohort: Path, tmp_path: Path) -> None:
    p = read_glioblastoma_manifest(cohort).patients[1]
    maps, _ = load_glioblastoma_patient(p)
    v = maps["nADC"]
    bad = Volume(v.array[:, :, :-1], spacing=v.spacing, origin=v.origin)
    manifest = _corrupt_copy(cohort, tmp_path, "nADC", bad)
    with pytest.raises(
        InputError,
        match=rf"(?s)manifest\.csv: 1 problem.*row 2.*map_nADC.*\[patient {p.patient_id}\].*not on the grid",
    ) as e:
        run_ctv_export(manifest, tmp_path / "run")
    assert "nADC.nii.gz" in str(e.value) and "fix" in str(e.value).lower()
    assert not (tmp_path / "run").exists()
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".run")]


def test_patient_without_a_t2_lesion_is_refused(cohort: Path, tmp_path: Path) -> None:
    p = read_glioblastoma_manifest(cohort).patients[1]
    _, masks = load_glioblastoma_patient(p)
    empty = masks["t2l_baseline"].with_array(np.zeros(masks["brain"].shape, dtype=bool))
    manifest = _corrupt_copy(cohort, tmp_path, "t2l_baseline", empty)
    with pytest.raises(
        InputError, match=rf"row 2.*patient {p.patient_id}: the t2l_baseline mask .* is empty"
    ):
        run_ctv_export(manifest, tmp_path / "run")
    assert not (tmp_path / "run").exists()
