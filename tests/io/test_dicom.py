"""Tests of adaptrt.io.dicom: MR series round trips, ordering, determinism, and every refusal."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, RTStructureSetStorage

from adaptrt.errors import InputError
from adaptrt.io.dicom import (
    DicomSeries,
    list_series,
    make_uid,
    read_dicom_series,
    write_mr_series,
)
from adaptrt.types import AXIAL_DIRECTION, Volume
from tests.dicom_check import dciodvfy_lines

SHAPE = (7, 20, 16)  # (z, y, x): a few slices, non-square slices so row/column mix-ups show


def _phantom(direction: NDArray[np.float64] = AXIAL_DIRECTION) -> Volume:
    """A bright sphere on a smooth gradient, float values that need quantising."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    sphere = (z - 3) ** 2 + ((y - 9) * 0.8) ** 2 + ((x - 7) * 0.9) ** 2 <= 3.5**2
    values = 50.0 + 3.3 * x - 1.7 * y + 0.25 * z + 400.0 * sphere
    return Volume(
        values.astype(np.float32), spacing=(2.5, 0.8, 0.9), origin=(-12.5, 30.25, -7.0), direction=direction
    )


def _oblique(left_handed: bool) -> NDArray[np.float64]:
    """An oblique direction: rotations about two axes; column 0 = ±(column 2 × column 1)."""
    a, b = np.radians(20.0), np.radians(-35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rot = rz @ rx
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    return np.column_stack([normal if left_handed else -normal, col, row])


def _max_error(series: DicomSeries) -> float:
    """What reading back may differ by: half a quantisation step plus float32 rounding."""
    slope = float(series.header.get("RescaleSlope", 1.0))
    return slope / 2 + 1e-6 * float(np.abs(series.volume.array).max())


def _write(volume: Volume, folder: Path, **kwargs: Any) -> DicomSeries:
    return write_mr_series(volume, folder, patient_id="P001", uid_seed="test", **kwargs)


def _edit(path: Path, **values: object) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)


# ====================================================================== UIDs


def test_make_uid_is_deterministic_valid_and_distinct() -> None:
    uid = make_uid("seed", "study")
    assert uid == make_uid("seed", "study")
    assert uid != make_uid("seed", "series")
    assert UID(uid).is_valid and len(uid) <= 64


# ====================================================================== round trips


@pytest.mark.parametrize("direction", [AXIAL_DIRECTION, _oblique(left_handed=True)], ids=["axial", "oblique"])
def test_round_trip_geometry_and_values(tmp_path: Path, direction: NDArray[np.float64]) -> None:
    vol = _phantom(direction)
    written = _write(vol, tmp_path / "mr")
    read = read_dicom_series(tmp_path / "mr")

    assert read.volume.array.dtype == np.float32
    assert read.volume.shape == vol.shape
    np.testing.assert_allclose(read.volume.affine, vol.affine, atol=1e-6)
    assert np.abs(read.volume.array - vol.array).max() <= _max_error(read)
    assert float(read.header.RescaleSlope) < 1e-2  # float data were quantised with a fine step
    # the returned record is what reading gives, without re-reading
    assert np.array_equal(written.volume.array, read.volume.array)
    assert np.array_equal(written.volume.affine, read.volume.affine)
    assert written.files == read.files and written.sop_instance_uids == read.sop_instance_uids
    assert (written.series_instance_uid, written.study_instance_uid, written.frame_of_reference_uid) == (
        read.series_instance_uid,
        read.study_instance_uid,
        read.frame_of_reference_uid,
    )
    assert (read.patient_id, read.patient_name, read.modality, read.sop_class_uid) == (
        "P001",
        "P001",
        "MR",
        "1.2.840.10008.5.1.4.1.1.4",
    )
    assert "PixelData" not in read.header and read.header.SeriesInstanceUID == read.series_instance_uid


def test_right_handed_volume_comes_back_in_normal_order(tmp_path: Path) -> None:
    vol = _phantom(_oblique(left_handed=False))
    written = _write(vol, tmp_path / "mr")
    read = read_dicom_series(tmp_path / "mr")
    # slices are sorted along row × column, so the array is reversed but every voxel keeps its place
    assert np.array_equal(written.volume.array, read.volume.array)
    assert np.abs(read.volume.array - vol.array[::-1]).max() <= _max_error(read)
    last = np.array([SHAPE[0] - 1, 0, 0])
    np.testing.assert_allclose(read.volume.index_to_world([0, 0, 0]), vol.index_to_world(last), atol=1e-6)
    np.testing.assert_allclose(read.volume.direction[:, 0], -vol.direction[:, 0], atol=1e-9)


def test_integer_and_boolean_volumes_stay_exact(tmp_path: Path) -> None:
    ints = np.arange(np.prod(SHAPE), dtype=np.int32).reshape(SHAPE) % 3000 - 1000
    read = read_dicom_series(_write(Volume(ints, spacing=(1, 1, 1)), tmp_path / "int").files[0].parent)
    assert np.array_equal(read.volume.array, ints) and "RescaleSlope" not in read.header

    mask = _phantom().array > 300
    back = _write(Volume(mask, spacing=(1, 1, 1)), tmp_path / "mask")
    assert np.array_equal(read_dicom_series(tmp_path / "mask").volume.array, mask.astype(np.float32))
    assert back.header.PixelRepresentation == 0


def test_shuffled_file_names_read_in_slice_order(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    order = np.random.default_rng(3).permutation(len(written.files))
    (tmp_path / "mr" / "sub").mkdir()
    for k, f in enumerate(written.files):
        # reversed names, partly in a sub-folder: neither names nor InstanceNumber may decide the order
        target = tmp_path / "mr" / ("sub" if k % 2 else "") / f"x{order[k]:02d}"
        f.rename(target)
    (tmp_path / "mr" / "README.txt").write_text("not DICOM")
    read = read_dicom_series(tmp_path / "mr")
    assert np.array_equal(read.volume.array, written.volume.array)
    assert np.array_equal(read.volume.affine, written.volume.affine)
    assert read.sop_instance_uids == written.sop_instance_uids


def test_writer_matches_pydicom_encoding(tmp_path: Path) -> None:
    written = _write(_phantom(_oblique(left_handed=True)), tmp_path / "mr")
    path = written.files[2]
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, pydicom.dcmread(path), enforce_file_format=True)
    assert buf.getvalue() == path.read_bytes()


# ====================================================================== determinism


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = _write(_phantom(), tmp_path / "a")
    b = _write(_phantom(), tmp_path / "b")
    assert [f.name for f in a.files] == [f.name for f in b.files]
    assert all(fa.read_bytes() == fb.read_bytes() for fa, fb in zip(a.files, b.files, strict=True))

    other = write_mr_series(_phantom(), tmp_path / "c", patient_id="P001", uid_seed="other")
    fresh = write_mr_series(_phantom(), tmp_path / "d", patient_id="P001")
    uids = {a.series_instance_uid, other.series_instance_uid, fresh.series_instance_uid}
    assert len(uids) == 3
    assert not set(a.sop_instance_uids) & set(fresh.sop_instance_uids)


def test_explicit_uids_are_used(tmp_path: Path) -> None:
    study, frame = make_uid("s", "study"), make_uid("s", "for")
    a = write_mr_series(
        _phantom(),
        tmp_path / "a",
        patient_id="P1",
        study_uid=study,
        frame_of_reference_uid=frame,
        uid_seed="1",
    )
    b = write_mr_series(
        _phantom(),
        tmp_path / "b",
        patient_id="P1",
        study_uid=study,
        frame_of_reference_uid=frame,
        uid_seed="2",
    )
    assert a.study_instance_uid == b.study_instance_uid == study
    assert a.frame_of_reference_uid == frame and a.series_instance_uid != b.series_instance_uid
    with pytest.raises(InputError, match=r"SeriesInstanceUID.*not a valid DICOM UID"):
        write_mr_series(_phantom(), tmp_path / "c", patient_id="P1", series_uid="1.2.abc")


# ====================================================================== folders with other content


def _rtstruct_like(path: Path, referenced: DicomSeries) -> None:
    """A DICOM object without pixel data in the series folder, as users' exports often have."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = UID(make_uid("rt", "sop"))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = make_uid("rt", "series")
    ds.StudyInstanceUID = referenced.study_instance_uid
    ds.save_as(path, enforce_file_format=True)


def test_objects_without_pixels_are_ignored_and_listed(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    _rtstruct_like(tmp_path / "mr" / "RS.dcm", written)
    read = read_dicom_series(tmp_path / "mr")
    assert read.volume.shape == SHAPE
    summaries = list_series(tmp_path / "mr")
    assert [(s.modality, s.n_files) for s in summaries] == [("MR", SHAPE[0]), ("RTSTRUCT", 1)]
    assert summaries[0].series_instance_uid == written.series_instance_uid
    assert summaries[0].series_description == "adaptrt"


def test_two_series_need_series_uid(tmp_path: Path) -> None:
    a = _write(_phantom(), tmp_path / "a", series_description="T1c")
    b = write_mr_series(
        _phantom(), tmp_path / "b", patient_id="P001", uid_seed="b", series_description="FLAIR"
    )
    for f in b.files:
        shutil.move(f, tmp_path / "a" / f"b_{f.name}")
    with pytest.raises(InputError, match="2 image series") as info:
        read_dicom_series(tmp_path / "a")
    message = str(info.value)
    assert a.series_instance_uid in message and b.series_instance_uid in message
    assert "'T1c'" in message and "'FLAIR'" in message and "series_uid" in message
    chosen = read_dicom_series(tmp_path / "a", series_uid=b.series_instance_uid)
    assert chosen.series_description == "FLAIR" and len(chosen.files) == SHAPE[0]
    with pytest.raises(InputError, match=r"no image series with SeriesInstanceUID 1\.2\.3"):
        read_dicom_series(tmp_path / "a", series_uid="1.2.3")


# ====================================================================== refusals


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_dicom_series(tmp_path / "nowhere")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"no DICOM image series \(no DICOM files\)"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        list_series(tmp_path / "nowhere")


def test_missing_slice_reports_the_gap(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    written.files[3].unlink()
    with pytest.raises(
        InputError, match=r"not evenly spaced: most gaps are 2\.500 mm but there are 5\.000 mm"
    ):
        read_dicom_series(tmp_path / "mr")


def test_duplicate_position(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    ds = pydicom.dcmread(written.files[2])
    ds.SOPInstanceUID = make_uid("dup")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(tmp_path / "mr" / "copy.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="two slices lie at the same position"):
        read_dicom_series(tmp_path / "mr")


def test_tilted_stack(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    for k, f in enumerate(written.files):
        x, y, z = (float(v) for v in pydicom.dcmread(f).ImagePositionPatient)
        _edit(f, ImagePositionPatient=[x, y + 0.4 * k, z])  # 0.4 mm per 2.5 mm slice: about 9 degrees
    with pytest.raises(InputError, match=r"gantry tilt.*resample"):
        read_dicom_series(tmp_path / "mr")


def test_inconsistent_orientation(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    c, s = np.cos(np.radians(5)), np.sin(np.radians(5))
    _edit(written.files[4], ImageOrientationPatient=[1, 0, 0, 0, c, s])
    with pytest.raises(InputError, match=r"ImageOrientationPatient.*differs"):
        read_dicom_series(tmp_path / "mr")


def test_inconsistent_pixel_spacing(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    _edit(written.files[1], PixelSpacing=[0.8, 1.0])
    with pytest.raises(InputError, match=r"PixelSpacing.*differs"):
        read_dicom_series(tmp_path / "mr")


def test_single_slice_and_multiframe(tmp_path: Path) -> None:
    written = _write(_phantom(), tmp_path / "mr")
    for f in written.files[1:]:
        f.unlink()
    with pytest.raises(InputError, match="single slice"):
        read_dicom_series(tmp_path / "mr")
    _edit(written.files[0], NumberOfFrames=7)
    with pytest.raises(InputError, match=r"NumberOfFrames.*multi-frame MR Image Storage object"):
        read_dicom_series(tmp_path / "mr")


def test_overwrite_refused_then_allowed(tmp_path: Path) -> None:
    first = _write(_phantom(), tmp_path / "mr")
    before = first.files[0].read_bytes()
    with pytest.raises(InputError, match=r"already exists and is not empty.*overwrite=True"):
        _write(_phantom().with_array(np.zeros(SHAPE)), tmp_path / "mr")
    assert first.files[0].read_bytes() == before  # untouched
    second = _write(_phantom().with_array(np.ones(SHAPE)), tmp_path / "mr", overwrite=True)
    assert np.array_equal(read_dicom_series(tmp_path / "mr").volume.array, second.volume.array)
    (tmp_path / "empty").mkdir()
    assert _write(_phantom(), tmp_path / "empty").files[0].parent == tmp_path / "empty"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_bad_writer_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"StudyDate.*not a DICOM date"):
        _write(_phantom(), tmp_path / "a", study_date="2020-01-01")
    with pytest.raises(InputError, match=r"PatientID.*at most 64 characters"):
        write_mr_series(_phantom(), tmp_path / "b", patient_id="x" * 65)
    with pytest.raises(ValueError, match="at least two slices"):
        _write(Volume(np.zeros((1, 4, 4)), spacing=(1, 1, 1)), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# ====================================================================== conformance


def test_dciodvfy_reports_no_errors(tmp_path: Path) -> None:
    written = _write(_phantom(_oblique(left_handed=True)), tmp_path / "mr", patient_name="Doe^Jane")
    lines = dciodvfy_lines(written.files[3], "MRImage")
    errors = [line for line in lines if line.startswith("Error")]
    assert errors == [], "\n".join(lines)
    assert any("MRImage" in line for line in lines)  # it really checked the MR Image IOD
