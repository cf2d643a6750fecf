"""Loading a glioblastoma cohort for the target study: checks, exclusions, PRESS box."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.io.manifest import read_glioblastoma_manifest
from adaptrt.io.nifti import read_nifti, write_nifti
from adaptrt.simulate.glioblastoma import MRSI_MAP_NAMES, GlioblastomaConfig, write_glioblastoma_cohort
from adaptrt.target.data import check_cohort_design, iter_patients, load_patient
from adaptrt.types import Volume

SMALL = GlioblastomaConfig(n_patients=6, voxel_mm=4.0, shape=(30, 40, 34))


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gbm") / "cohort"
    write_glioblastoma_cohort(out, config=SMALL, seed=3)
    return out


@pytest.fixture
def copy(cohort_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(cohort_dir, dst)
    return dst


def test_clean_cohort_loads_with_press_box_from_its_column(cohort_dir: Path) -> None:
    cohort = read_glioblastoma_manifest(cohort_dir / "manifest.csv")
    got = list(iter_patients(cohort))
    assert len(got) == 6
    for vols, notes in got:
        assert vols is not None and vols.voxel_usable and not [n for n in notes if n.scope != "note"]
        box = read_nifti(cohort_dir / "patients" / vols.patient_id / "press_box.nii.gz", kind="mask").array
        assert np.array_equal(vols.press_box, box & vols.brain)
        # MRSI maps are zero outside the box: the data agree with the mask
        assert not np.any(vols.maps["CNI"][~vols.press_box])
        assert set(vols.maps) == set(cohort.map_names)
        assert vols.spacing_mm == (4.0, 4.0, 4.0)


def test_press_box_inferred_from_the_mrsi_maps_without_the_column(cohort_dir: Path) -> None:
    cohort = read_glioblastoma_manifest(cohort_dir / "manifest.csv")
    p = cohort.patients[0]
    p2 = replace(p, clinical={})
    vols, _ = load_patient(p2, map_names=cohort.map_names)
    assert vols is not None
    inferred = np.zeros(vols.shape, dtype=bool)
    for m in MRSI_MAP_NAMES:
        inferred |= vols.maps[m] != 0
    assert np.array_equal(vols.press_box, inferred & vols.brain)
    written = read_nifti(p.masks["brain"].parent / "press_box.nii.gz", kind="mask").array
    assert vols.press_box.any() and not np.any(vols.press_box & ~written)


def test_nan_in_a_map_is_an_input_error_naming_the_patient_and_file(copy: Path) -> None:
    f = copy / "patients" / "GBM002" / "nADC.nii.gz"
    v = read_nifti(f)
    arr = np.array(v.array)
    arr[5, 5, 5] = np.nan
    # write_nifti refuses nothing: the NaN reaches the file as a user's file would
    write_nifti(Volume(arr, spacing=v.spacing, origin=v.origin), f, overwrite=True)
    cohort = read_glioblastoma_manifest(copy / "manifest.csv")
    with pytest.raises(InputError, match=r"(?s)GBM002.*nADC.*(NaN|finite)"):
        list(iter_patients(cohort))


def test_map_on_another_grid_is_an_input_error(copy: Path) -> None:
    f = copy / "patients" / "GBM003" / "nFA.nii.gz"
    v = read_nifti(f)
    write_nifti(Volume(np.array(v.array), spacing=(4.0, 4.0, 4.5), origin=v.origin), f, overwrite=True)
    cohort = read_glioblastoma_manifest(copy / "manifest.csv")
    with pytest.raises(InputError, match=r"(?s)GBM003.*nFA.*grid"):
        list(iter_patients(cohort))


def test_lesion_outside_the_brain_is_an_input_error_and_a_small_spill_is_clipped(copy: Path) -> None:
    pdir = copy / "patients" / "GBM001"
    brain = read_nifti(pdir / "brain.nii.gz", kind="mask").array
    t2l = read_nifti(pdir / "t2l_baseline.nii.gz", kind="mask")
    outside = np.argwhere(~brain)
    spill = np.array(t2l.array)
    k = max(1, int(0.005 * spill.sum()))  # 0.5 % of the lesion: clipped with a note
    spill[tuple(outside[:k].T)] = True
    write_nifti(
        Volume(spill, spacing=t2l.spacing, origin=t2l.origin), pdir / "t2l_baseline.nii.gz", overwrite=True
    )
    cohort = read_glioblastoma_manifest(copy / "manifest.csv")
    vols, notes = load_patient(cohort.patients[0], map_names=cohort.map_names, base_dir=copy)
    assert vols is not None and not np.any(vols.t2l_baseline & ~vols.brain)
    assert any(n.scope == "note" and "outside the brain mask" in n.reason for n in notes)
    big = np.array(t2l.array)
    big[tuple(outside[: int(0.2 * big.sum()) + 1].T)] = True
    write_nifti(
        Volume(big, spacing=t2l.spacing, origin=t2l.origin), pdir / "t2l_baseline.nii.gz", overwrite=True
    )
    with pytest.raises(InputError, match=r"GBM001.*outside the brain mask.*Fix: check that the brain mask"):
        load_patient(cohort.patients[0], map_names=cohort.map_names, base_dir=copy)


def test_empty_mrsi_is_a_voxel_exclusion_and_no_progression_excludes_the_patient(copy: Path) -> None:
    for m in MRSI_MAP_NAMES:
        f = copy / "patients" / "GBM004" / f"{m}.nii.gz"
        v = read_nifti(f)
        write_nifti(
            Volume(np.zeros(v.shape, np.float32), spacing=v.spacing, origin=v.origin), f, overwrite=True
        )
    for m in ("cel_progression", "t2l_progression"):
        f = copy / "patients" / "GBM005" / f"{m}.nii.gz"
        v = read_nifti(f, kind="mask")
        write_nifti(Volume(np.zeros(v.shape, bool), spacing=v.spacing, origin=v.origin), f, overwrite=True)
    cohort = read_glioblastoma_manifest(copy / "manifest.csv")
    got = {p.patient_id: r for p, r in zip(cohort.patients, iter_patients(cohort), strict=True)}
    vols4, notes4 = got["GBM004"]
    assert vols4 is not None and not vols4.voxel_usable
    assert [n.scope for n in notes4] == ["voxel"] and "zero everywhere" in notes4[0].reason
    vols5, notes5 = got["GBM005"]
    assert vols5 is None and notes5[-1].scope == "all" and "no progression" in notes5[-1].text()


def test_cohort_design_one_treatment_group_is_a_note_and_too_few_patients_an_error(cohort_dir: Path) -> None:
    cohort = read_glioblastoma_manifest(cohort_dir / "manifest.csv")
    one = replace(cohort, patients=tuple(replace(p, treatment="soc") for p in cohort.patients))
    notes = check_cohort_design(one, n_folds=5)
    assert len(notes) == 1 and "one treatment group" in notes[0]
    assert check_cohort_design(cohort, n_folds=5) == []
    with pytest.raises(InputError, match="fewer than the 5 cross-validation folds"):
        check_cohort_design(replace(cohort, patients=cohort.patients[:3]), n_folds=5)


def test_manifest_rows_are_named_in_errors(copy: Path) -> None:
    # a map file replaced by one of another shape: the message names the row and the fix
    f = copy / "patients" / "GBM006" / "nT1.nii.gz"
    write_nifti(Volume(np.ones((8, 8, 8), np.float32), spacing=(4.0, 4.0, 4.0)), f, overwrite=True)
    cohort = read_glioblastoma_manifest(copy / "manifest.csv")
    with pytest.raises(InputError, match=r"(?s)row 6.*map_nT1.*Fix: correct the files listed"):
        list(iter_patients(cohort))
    with (copy / "manifest.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6
