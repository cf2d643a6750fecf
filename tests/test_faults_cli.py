"""Bad inputs and faults through the `adaptrt` command: exit 2 with the file named and nothing written, one
pass for every manifest problem, interrupted runs that leave nothing behind."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptrt.cli import main
from adaptrt.io.atomic import OWNER_FILE, atomic_dir
from adaptrt.simulate.phantom import PhantomConfig, write_phantom_cohort

SMALL = PhantomConfig(n_patients=2, shape=(16, 48, 48), spacing_mm=(2.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def cohort_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("dcm") / "cohort", config=SMALL, fmt="dicom", seed=1)


@pytest.fixture
def cohort(cohort_src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(cohort_src.parent, dst)
    return dst / "manifest.csv"


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_rows(manifest: Path, rows: list[dict[str, str]]) -> None:
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


# ---------------------------------------------------------------------------------------------- outputs
def test_output_under_a_regular_file_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cohort: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = str(blocker / "run")
    commands = [
        ["demo", "--out", out, "--quiet"],
        ["cohort", "check", str(cohort), "--out", out, "--quiet"],
        ["response", "run", "--manifest", str(cohort), "--out", out, "--quiet"],
        ["response", "predict", "--run", str(tmp_path), "--manifest", str(cohort), "--out", out, "--quiet"],
        [
            "response",
            "explain",
            "--model",
            str(tmp_path),
            "--manifest",
            str(cohort),
            "--lesion",
            "P001/1",
            "--out",
            out,
        ],
        ["simulate", "phantom", "--out", out],
        ["simulate", "metastases", "--out", out, "--quiet"],
        ["simulate", "glioblastoma", "--out", out, "--quiet"],
        ["simulate", "digits", "--out", out],
    ]
    for argv in commands:
        code, err = _run(capsys, *argv)
        assert code == 2, (argv, err)
        assert f"{blocker} is a file, not a folder" in err and "--out" in err, (argv, err)
    assert blocker.read_text() == "x"


def test_unwritable_output_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # what a read-only or immutable folder answers
    code, err = _run(capsys, "simulate", "phantom", "--out", str(tmp_path / "ro" / "x"))
    assert code == 2 and "is not writable (Permission denied)" in err
    assert not (tmp_path / "ro").exists()


# ---------------------------------------------------------------------------------------------- seeds, sizes, text
@pytest.mark.parametrize("kind", ["metastases", "glioblastoma", "phantom"])
def test_negative_seed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    code, err = _run(capsys, "simulate", kind, "--out", str(tmp_path / "o"), "--seed", "-3")
    assert code == 2 and "--seed" in err and "must be >= 0, got -3" in err
    assert not (tmp_path / "o").exists()


def test_digits_size_that_cannot_fit_is_refused_before_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(capsys, "simulate", "digits", "--out", str(tmp_path / "d"), "--size", "100000")
    assert code == 2 and "size = 100000 pixels need about" in err and "TB of memory" in err
    assert not (tmp_path / "d").exists()


def test_nifti_header_claiming_a_huge_volume_is_refused(tmp_path: Path) -> None:
    import gzip

    import nibabel as nib

    from adaptrt.errors import InputError
    from adaptrt.io.nifti import read_nifti

    img = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4))
    img.header.set_sform(np.eye(4), code=1)
    path = tmp_path / "huge.nii"
    nib.save(img, path)
    data = bytearray(path.read_bytes())
    data[42:48] = np.array([30000, 30000, 30000], dtype="<i2").tobytes()  # dim[1:4]; the data stay 64 voxels
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"claims 30000 x 30000 x 30000 voxels .* file holds only") as info:
        read_nifti(path)
    assert info.value.path == str(path)
    gz = tmp_path / "huge.nii.gz"  # compressed: the size is unknown before reading, the memory is the limit
    gz.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(InputError, match=r"claims 30000 x 30000 x 30000 voxels, which need 108 TB of memory"):
        read_nifti(gz)


def test_non_utf8_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.json"
    config.write_bytes('{"responder_share": 0.5} // é'.encode("latin-1"))
    code, err = _run(capsys, "simulate", "metastases", "--out", str(tmp_path / "m"), "--config", str(config))
    assert code == 2 and str(config) in err and "is not UTF-8" in err


# ---------------------------------------------------------------------------------------------- manifests
def test_cohort_check_on_a_folder_suggests_its_manifest(
    cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run(capsys, "cohort", "check", str(cohort.parent), "--quiet")
    assert code == 2 and f"Did you mean {cohort}?" in err


def test_non_utf8_manifest_in_cohort_check(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort.write_bytes(cohort.read_bytes().replace(b"P001", "Pé01".encode("latin-1")))
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert code == 2 and str(cohort) in err and "is not UTF-8" in err


def test_every_problem_of_one_pass_is_reported_together(
    cohort: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _rows(cohort)
    rows[1]["timepoint"] = "follow-up"  # a near-miss of followup (P001/1 has two rows then)
    rows[2]["mask"] = "images/missing.dcm"  # a row-level problem
    rows[3]["roi"] = "GTV_9"  # a file-level problem: no such ROI
    (cohort.parent / "images" / "P002" / "mri2" / "MR_0003.dcm").write_bytes(b"DICM" * 40)  # damaged slice
    _write_rows(cohort, rows)
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert code == 2
    assert "did you mean 'followup'?" in err
    assert "missing.dcm: mask not found" in err
    assert "has no ROI named 'GTV_9'" in err
    # the damaged image is shared by two lesions: reported once, with both rows
    damaged = [line for line in err.splitlines() if "MR_0003.dcm" in line or "P002/mri2" in line]
    assert len(damaged) == 1 and "rows 6, 7" in damaged[0], damaged
    assert "4 problems:" in err


def test_series_uid_column_picks_a_series(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pydicom

    from adaptrt.io.dicom import list_series, make_uid

    # put a second series (the mri2 images, with new UIDs) into the mri1 folder of P001
    mri1 = cohort.parent / "images" / "P001" / "mri1"
    for f in sorted((cohort.parent / "images" / "P001" / "mri2").iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = make_uid(ds.SeriesInstanceUID, "other")
        ds.SOPInstanceUID = make_uid(ds.SOPInstanceUID, "other")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(mri1 / f"other_{f.name}", enforce_file_format=True)
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert code == 2 and "holds 2 image series" in err and "series_uid column" in err
    uid = next(
        s.series_instance_uid for s in list_series(mri1) if s.modality == "MR" and s.files[0].name[0] == "M"
    )
    rows = _rows(cohort)
    for r in rows:
        r["series_uid"] = uid if r["image"] == "images/P001/mri1" else ""
    _write_rows(cohort, rows)
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert code == 0, err


def test_over_long_path_in_a_manifest_cell(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows(cohort)
    rows[0]["image"] = "images/" + "P001" * 200
    _write_rows(cohort, rows)
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert (
        code == 2 and "row 1 (line 2), column 'image'" in err and "cannot be used: File name too long" in err
    )


def test_truncated_rtstruct_through_cohort_check(cohort: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rs = cohort.parent / "images" / "P001_mri2_rtstruct.dcm"
    rs.write_bytes(rs.read_bytes()[: rs.stat().st_size * 2 // 3])
    code, err = _run(capsys, "cohort", "check", str(cohort), "--quiet")
    assert code == 2 and f"{rs}: is incomplete" in err


# ---------------------------------------------------------------------------------------------- interrupted runs
def test_stale_staging_folders_of_dead_processes_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "run"
    dead = tmp_path / ".run.dead1234.partial"
    dead.mkdir()
    (dead / "big.bin").write_bytes(b"0" * 1000)
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = {"host": socket.gethostname(), "pid": int(proc.stdout), "start": "1", "boot_id": ""}  # exited
    (dead / OWNER_FILE).write_text(json.dumps(owner))
    alive = tmp_path / ".run.live5678.partial"
    alive.mkdir()
    (alive / OWNER_FILE).write_text(json.dumps({**owner, "pid": os.getpid(), "start": ""}))
    unknown = tmp_path / ".run.unknown.partial"  # no owner file: never touched
    unknown.mkdir()
    other = tmp_path / ".other.dead1234.partial"  # another target's: not ours to clean
    shutil.copytree(dead, other)
    with atomic_dir(target) as tmp:
        (tmp / "x").write_text("done")
    assert not dead.exists() and alive.exists() and unknown.exists() and other.exists()
    assert sorted(p.name for p in target.iterdir()) == ["x"]  # the owner file is not committed


def test_sigterm_stops_cleanly_and_removes_the_staging_folder(tmp_path: Path) -> None:
    code = (
        "import os, signal, sys, time\n"
        "import adaptrt.cli as cli\n"
        "from adaptrt.io.atomic import atomic_dir\n"
        "def slow(args):\n"
        "    with atomic_dir(args.out) as tmp:\n"
        "        (tmp / 'partial.bin').write_bytes(b'0' * 100)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(10)\n"
        "    return 0\n"
        "cli._cmd_simulate_digits = slow  # build_parser looks the command up when main() builds it\n"
        f"sys.exit(cli.main(['simulate', 'digits', '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "stopped by SIGTERM" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
