"""End-to-end tests of the `adaptrt` command: the demo, `cohort check`, and every bad-input case of the
foundation issue (exit code 2, a message naming the file / row and the fix, nothing written)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adaptrt.cli import main
from adaptrt.simulate.phantom import PhantomConfig, write_phantom_cohort

SMALL = PhantomConfig(n_patients=2, shape=(16, 48, 48), spacing_mm=(2.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def dicom_cohort_src(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("dcm") / "cohort", config=SMALL, fmt="dicom", seed=1)


@pytest.fixture(scope="module")
def nifti_cohort_src(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("nii") / "cohort", config=SMALL, fmt="nifti", seed=1)


def _copy(manifest: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(manifest.parent, dst)
    return dst / "manifest.csv"


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(manifest: Path, rows: list[dict[str, str]], fields: list[str] | None = None) -> None:
    fields = fields or list(rows[0])
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def _check(manifest: Path, tmp_path: Path, capsys) -> tuple[int, str, Path]:
    out = tmp_path / "run"
    code = main(["cohort", "check", str(manifest), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    return code, err, out


def _assert_bad(manifest: Path, tmp_path: Path, capsys, *needles: str) -> str:
    code, err, out = _check(manifest, tmp_path, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert "Fix:" in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no staging left behind
    return err


# ------------------------------------------------------------------------------------------ good paths
def test_demo_writes_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--patients",
                "2",
                "--no-response",
                "--no-drift",
                "--no-target",
                "--quiet",
            ]
        )
        == 0
    )
    for name in (
        "report.html",
        "config.json",
        "run.json",
        "results/cohort_summary.csv",
        "cohort/manifest.csv",
    ):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "Cohort" in html and "data:image/png;base64," in html
    # no temporary staging path in what the run keeps
    assert ".partial" not in html and ".partial" not in (out / "results" / "cohort_summary.json").read_text()
    # a second run without --overwrite is refused and changes nothing
    before = (out / "run.json").read_text()
    assert (
        main(
            [
                "demo",
                "--out",
                str(out),
                "--patients",
                "2",
                "--no-response",
                "--no-drift",
                "--no-target",
                "--quiet",
            ]
        )
        == 2
    )
    assert "already exists" in capsys.readouterr().err
    assert (out / "run.json").read_text() == before


@pytest.mark.parametrize("fmt", ["dicom", "nifti"])
def test_cohort_check_good(fmt, dicom_cohort_src, nifti_cohort_src, tmp_path, capsys):
    manifest = dicom_cohort_src if fmt == "dicom" else nifti_cohort_src
    code, err, out = _check(manifest, tmp_path, capsys)
    assert code == 0, err
    rows = _rows(out / "results" / "cohort_summary.csv")
    truth = _rows(manifest.parent / "truth" / "lesions.csv")
    assert len(rows) == len(truth)
    assert (out / "report.html").is_file()


# ------------------------------------------------------------------------------------------ bad input
def test_missing_manifest(tmp_path, capsys):
    _assert_bad(tmp_path / "nope.csv", tmp_path, capsys, "nope.csv")


def test_missing_image_file(nifti_cohort_src, tmp_path, capsys):
    m = _copy(nifti_cohort_src, tmp_path)
    rows = _rows(m)
    rows[1]["image"] = "images/does_not_exist.nii.gz"
    _write_rows(m, rows)
    _assert_bad(m, tmp_path, capsys, "row 2", "does_not_exist.nii.gz")


def test_two_series_in_folder(dicom_cohort_src, tmp_path, capsys):
    m = _copy(dicom_cohort_src, tmp_path)
    rows = _rows(m)
    folder = m.parent / rows[0]["image"]
    other = m.parent / "images" / rows[0]["patient_id"] / "mri2"
    for f in sorted(other.iterdir())[:3]:
        shutil.copy(f, folder / f"extra_{f.name}")
    _assert_bad(m, tmp_path, capsys, str(Path(rows[0]["image"])), "series")


def test_missing_slice(dicom_cohort_src, tmp_path, capsys):
    m = _copy(dicom_cohort_src, tmp_path)
    rows = _rows(m)
    folder = m.parent / rows[0]["image"]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    import pydicom

    # delete the file of a middle slice (by position, not by name)
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    files[int(np.argsort(z)[len(z) // 2])].unlink()
    _assert_bad(m, tmp_path, capsys, "spac")


def test_rtstruct_of_other_frame_of_reference(dicom_cohort_src, tmp_path, capsys):
    m = _copy(dicom_cohort_src, tmp_path)
    rows = _rows(m)
    p1, p2 = (
        rows[0]["patient_id"],
        next(r["patient_id"] for r in rows if r["patient_id"] != rows[0]["patient_id"]),
    )
    r2 = next(r for r in rows if r["patient_id"] == p2 and r["timepoint"] == rows[0]["timepoint"])
    rows[0]["mask"] = r2["mask"]
    rows[0]["roi"] = r2["roi"]
    _write_rows(m, rows)
    err = _assert_bad(m, tmp_path, capsys, "row 1")
    assert "rame" in err  # Frame of reference
    assert p1 != p2


def test_unknown_roi_name(dicom_cohort_src, tmp_path, capsys):
    m = _copy(dicom_cohort_src, tmp_path)
    rows = _rows(m)
    rows[0]["roi"] = "GTV_nonexistent"
    _write_rows(m, rows)
    _assert_bad(m, tmp_path, capsys, "GTV_nonexistent", "GTV_1")


def _edit_nifti(path: Path, fn) -> None:
    img = nib.load(str(path))
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), str(path))


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("shape", "shape"),
        ("affine", "origin"),
        ("values", "0/1"),
        ("empty", "empty"),
        ("nan", "NaN"),
    ],
)
def test_bad_nifti(case, needle, nifti_cohort_src, tmp_path, capsys):
    m = _copy(nifti_cohort_src, tmp_path)
    rows = _rows(m)
    row = rows[0]
    mask_path, image_path = m.parent / row["mask"], m.parent / row["image"]
    if case == "shape":
        _edit_nifti(mask_path, lambda d, a: (d[:, :, :-1], a))
    elif case == "affine":
        _edit_nifti(mask_path, lambda d, a: (d, a + np.array([[0, 0, 0, 5.0]] * 3 + [[0, 0, 0, 0]])))
    elif case == "values":
        _edit_nifti(mask_path, lambda d, a: (d.astype(np.uint8) * 2, a))
    elif case == "empty":
        _edit_nifti(mask_path, lambda d, a: (np.zeros_like(d), a))
    elif case == "nan":
        _edit_nifti(image_path, lambda d, a: (np.where(d > d.max() * 0.9, np.nan, d).astype(np.float32), a))
    err = _assert_bad(m, tmp_path, capsys, "row 1")
    assert needle.lower() in err.lower()


def test_manifest_duplicate_row(nifti_cohort_src, tmp_path, capsys):
    m = _copy(nifti_cohort_src, tmp_path)
    rows = _rows(m)
    _write_rows(m, [*rows, rows[0]])
    _assert_bad(m, tmp_path, capsys, "duplicate", f"row {len(rows) + 1}")


def test_manifest_missing_column(nifti_cohort_src, tmp_path, capsys):
    m = _copy(nifti_cohort_src, tmp_path)
    rows = _rows(m)
    _write_rows(m, rows, fields=[c for c in rows[0] if c != "timepoint"])
    _assert_bad(m, tmp_path, capsys, "timepoint")


def test_manifest_lesion_without_first_mri(nifti_cohort_src, tmp_path, capsys):
    m = _copy(nifti_cohort_src, tmp_path)
    rows = _rows(m)
    first = rows[0]
    kept = [
        r
        for r in rows
        if not (
            r["patient_id"] == first["patient_id"]
            and r["lesion_id"] == first["lesion_id"]
            and r["timepoint"] == "mri1"
        )
    ]
    _write_rows(m, kept)
    _assert_bad(m, tmp_path, capsys, "mri1", first["patient_id"])


def test_bad_threshold_and_config(nifti_cohort_src, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["cohort", "check", str(nifti_cohort_src), "--threshold", "1.5", "--out", str(out)]) == 2
    assert "threshold" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--patients", "0"]) == 2
    assert "n_patients" in capsys.readouterr().err
    assert not out.exists()


def test_simulate_glioblastoma_and_digits(tmp_path, capsys):
    g = tmp_path / "gbm"
    assert main(["simulate", "glioblastoma", "--out", str(g), "--patients", "2", "--quiet"]) == 0
    assert main(["cohort", "check", str(g / "manifest.csv"), "--quiet"]) == 0
    assert "2 patients" in capsys.readouterr().out
    assert main(["simulate", "glioblastoma", "--out", str(g), "--patients", "2", "--quiet"]) == 2
    assert main(["simulate", "glioblastoma", "--out", str(tmp_path / "x"), "--patients", "-1"]) == 2
    assert "n_patients" in capsys.readouterr().err
    d = tmp_path / "digits"
    assert main(["simulate", "digits", "--out", str(d), "--n", "5"]) == 0
    data = np.load(d / "zero_digit_pairs.npz")
    np.testing.assert_allclose(data["drift"], data["post"] - data["pre"])
    assert (d / "preview.png").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--patients", "2", "--lesions", "9"], "n_lesions"),
        (["--responder-share", "1.5"], "responder_share"),
        (["--signature-strength", "-1"], "signature_strength"),
    ],
)
def test_simulate_metastases_bad_parameters(args, needle, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["simulate", "metastases", "--out", str(out), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_simulate_metastases_refuses_existing_cohort(tmp_path, capsys):
    out = tmp_path / "m"
    cfg = tmp_path / "small.json"
    cfg.write_text('{"n_patients": 1, "n_lesions": 1, "fov": [40, 128, 128], "volume_range_mm3": [50, 2000]}')
    assert main(["simulate", "metastases", "--out", str(out), "--config", str(cfg), "--quiet"]) == 0
    assert (out / "manifest.csv").is_file() and (out / "truth" / "lesions.csv").is_file()
    before = (out / "manifest.csv").read_bytes()
    assert main(["simulate", "metastases", "--out", str(out), "--config", str(cfg), "--quiet"]) == 2
    assert "already" in capsys.readouterr().err
    assert (out / "manifest.csv").read_bytes() == before
