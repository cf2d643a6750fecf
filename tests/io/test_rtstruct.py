"""RT Structure Set reading and writing: round trips on tiny phantoms, validity, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import MRImageStorage, generate_uid

from adaptrt.errors import InputError
from adaptrt.io.dicom import DicomSeries, read_dicom_series, write_mr_series
from adaptrt.io.rtstruct import (
    RT_STRUCTURE_SET_STORAGE,
    Roi,
    read_rtstruct,
    rtstruct_roi_names,
    write_rtstruct,
)
from adaptrt.types import Volume
from tests.dicom_check import dciodvfy_lines


# ---------------------------------------------------------------------------------------------- helpers
def _rotation(ax: float, ay: float, az: float) -> NDArray[np.float64]:
    """A rotation matrix from angles in degrees about x, y and z."""
    a, b, c = np.radians([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _image(
    shape: tuple[int, int, int] = (10, 28, 28),
    spacing: tuple[float, float, float] = (2.0, 1.0, 1.0),
    direction: NDArray[np.float64] | None = None,
    origin: tuple[float, float, float] = (-13.5, -20.0, 40.0),
) -> Volume:
    grids = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    values = (grids[0] + grids[1] + grids[2]).astype(np.float32)
    kwargs = {} if direction is None else {"direction": direction}
    return Volume(values, spacing=spacing, origin=origin, **kwargs)


def _radius_mm(volume: Volume, centre_index: tuple[float, float, float] | None = None) -> NDArray[np.float64]:
    """Distance in mm of every voxel centre from the centre voxel (world space, so any direction works)."""
    shape = volume.shape
    c = np.asarray(centre_index if centre_index is not None else [(n - 1) / 2 for n in shape])
    index = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij"), axis=-1)
    world = volume.index_to_world(index)
    return np.linalg.norm(world - volume.index_to_world(c), axis=-1)


def _series(volume: Volume, *, frame_of_reference_uid: str | None = None) -> DicomSeries:
    header = Dataset()
    header.PatientID = "RT-001"
    header.PatientName = "Phantom^Ring"
    header.PatientBirthDate = "19700101"
    header.PatientSex = "O"
    header.StudyDate = "20240305"
    header.StudyTime = "101530"
    header.StudyID = "7"
    header.AccessionNumber = "ACC7"
    header.ReferringPhysicianName = ""
    return DicomSeries(
        volume=volume,
        series_instance_uid=generate_uid(),
        study_instance_uid=generate_uid(),
        frame_of_reference_uid=frame_of_reference_uid or generate_uid(),
        sop_class_uid=MRImageStorage,
        sop_instance_uids=tuple(generate_uid() for _ in range(volume.shape[0])),
        files=(),
        patient_id="RT-001",
        patient_name="Phantom^Ring",
        modality="MR",
        series_description="T1 post-contrast",
        header=header,
    )


def _dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    return float(2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


def _ring(volume: Volume) -> Volume:
    """A thick ring (a disc of radius 10 mm with a hole of radius 4 mm) on the middle slices."""
    nz, ny, nx = volume.shape
    # distance within each slice plane from the slice's centre pixel
    rows, cols = np.meshgrid(np.arange(ny, dtype=float), np.arange(nx, dtype=float), indexing="ij")
    index = np.stack([np.zeros_like(rows), rows, cols], axis=-1)
    centre = volume.index_to_world([0.0, (ny - 1) / 2, (nx - 1) / 2])
    r = np.linalg.norm(volume.index_to_world(index) - centre, axis=-1)
    k = np.arange(nz)[:, None, None]
    return volume.with_array(((r <= 10.0) & (r >= 4.0))[None, :, :] & (k >= 2) & (k <= nz - 3))


@pytest.fixture
def series() -> DicomSeries:
    return _series(_image())


@pytest.fixture
def written(tmp_path: Path, series: DicomSeries) -> tuple[Path, DicomSeries, Volume, Volume]:
    gtv = series.volume.with_array(_radius_mm(series.volume) <= 7.0)
    ring = _ring(series.volume)
    path = write_rtstruct(
        [
            Roi("GTV", gtv, color=(255, 0, 0)),
            Roi("Ring", ring, color=(0, 128, 255), interpreted_type="ORGAN"),
        ],
        series,
        tmp_path / "rs.dcm",
        uid_seed="test",
    )
    return path, series, gtv, ring


# ---------------------------------------------------------------------------------------------- round trips
def test_sphere_round_trip(tmp_path: Path, series: DicomSeries) -> None:
    mask = series.volume.with_array(_radius_mm(series.volume) <= 7.0)
    path = write_rtstruct([Roi("GTV", mask)], series, tmp_path / "rs.dcm")
    back = read_rtstruct(path, "GTV", series)
    assert back.is_mask
    assert back.same_geometry(series.volume)
    assert _dice(back.array, mask.array) >= 0.98
    assert np.array_equal(back.array, mask.array)


@pytest.mark.parametrize(
    ("spacing", "angles"),
    [
        ((3.0, 0.9, 1.1), (0.0, 0.0, 0.0)),
        ((1.5, 1.0, 1.0), (25.0, -10.0, 15.0)),
        ((2.5, 0.7, 1.3), (0, 90, 0)),
    ],
    ids=["anisotropic", "oblique", "sagittal-anisotropic"],
)
def test_sphere_round_trip_oblique_anisotropic(
    tmp_path: Path, spacing: tuple[float, float, float], angles: tuple[float, float, float]
) -> None:
    volume = _image(shape=(9, 30, 26), spacing=spacing, direction=_rotation(*angles))
    series = _series(volume)
    mask = volume.with_array(_radius_mm(volume) <= 9.0)
    path = write_rtstruct([Roi("sphere", mask)], series, tmp_path / "rs.dcm")
    back = read_rtstruct(path, "sphere", series)
    assert _dice(back.array, mask.array) >= 0.98
    assert np.count_nonzero(back.array ^ mask.array) == 0


def test_ring_with_hole_round_trips_exactly(tmp_path: Path, series: DicomSeries) -> None:
    ring = _ring(series.volume)
    path = write_rtstruct([Roi("ring", ring)], series, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    # every ring slice is traced as an outer contour and a hole contour
    per_slice: dict[str, int] = {}
    for contour in ds.ROIContourSequence[0].ContourSequence:
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        per_slice[uid] = per_slice.get(uid, 0) + 1
    assert len(per_slice) == int(ring.array.any(axis=(1, 2)).sum())
    assert set(per_slice.values()) == {2}
    back = read_rtstruct(path, "ring", series)
    assert np.array_equal(back.array, ring.array)


def test_mask_touching_the_image_edge_and_diagonal_pixels(tmp_path: Path, series: DicomSeries) -> None:
    arr = np.zeros(series.volume.shape, dtype=bool)
    arr[0, :, :3] = True  # along the image border, on the first slice
    arr[4, 5, 5] = arr[4, 6, 6] = arr[4, 7, 7] = True  # diagonal neighbours only
    arr[4, 10:20, 10:20] = True
    arr[4, 12:18, 12:18] = False
    arr[4, 14:16, 14:16] = True  # an island inside the hole
    mask = series.volume.with_array(arr)
    path = write_rtstruct([Roi("edge", mask)], series, tmp_path / "rs.dcm")
    assert np.array_equal(read_rtstruct(path, "edge", series).array, arr)


def test_two_rois_names_colours_and_types(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, gtv, ring = written
    assert rtstruct_roi_names(path) == ["GTV", "Ring"]
    ds = pydicom.dcmread(path)
    assert [list(item.ROIDisplayColor) for item in ds.ROIContourSequence] == [[255, 0, 0], [0, 128, 255]]
    assert [item.RTROIInterpretedType for item in ds.RTROIObservationsSequence] == ["GTV", "ORGAN"]
    assert [int(item.ReferencedROINumber) for item in ds.ROIContourSequence] == [1, 2]
    assert np.array_equal(read_rtstruct(path, "GTV", series).array, gtv.array)
    assert np.array_equal(read_rtstruct(path, "Ring", series).array, ring.array)


def test_default_colours_follow_a_palette(tmp_path: Path, series: DicomSeries) -> None:
    a = series.volume.with_array(_radius_mm(series.volume) <= 4.0)
    path = write_rtstruct([Roi("a", a), Roi("b", a)], series, tmp_path / "rs.dcm")
    colours = [tuple(item.ROIDisplayColor) for item in pydicom.dcmread(path).ROIContourSequence]
    assert len(set(colours)) == 2
    assert all(0 <= c <= 255 for rgb in colours for c in rgb)


def test_empty_mask_gives_roi_without_contours(tmp_path: Path, series: DicomSeries) -> None:
    empty = series.volume.with_array(np.zeros(series.volume.shape, dtype=bool))
    path = write_rtstruct([Roi("empty", empty)], series, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    assert "ContourSequence" not in ds.ROIContourSequence[0]
    assert ds.StructureSetROISequence[0].ROIName == "empty"
    back = read_rtstruct(path, "EMPTY", series)
    assert not back.array.any()
    assert back.shape == series.volume.shape


# ---------------------------------------------------------------------------------------------- file content
def test_contour_data_values_fit_in_16_characters(tmp_path: Path) -> None:
    # far from the origin and oblique, so that coordinates have many digits
    volume = _image(direction=_rotation(13.0, 7.0, -21.0), origin=(-1234.56789, 987.654321, -4321.123456))
    series = _series(volume)
    mask = volume.with_array(_radius_mm(volume) <= 7.0)
    path = write_rtstruct([Roi("GTV", mask)], series, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(path)
    lengths = []
    for contour in ds.ROIContourSequence[0].ContourSequence:
        raw = contour.get_item(Tag(0x3006, 0x0050))  # the encoded bytes, before pydicom's conversion
        values = raw.value.strip().split(b"\\")
        assert len(values) == 3 * int(contour.NumberOfContourPoints)
        lengths += [len(v) for v in values]
    assert lengths
    assert max(lengths) <= 16
    assert np.array_equal(read_rtstruct(path, "gtv", series).array, mask.array)


def test_modules_and_references(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, _, _ = written
    ds = pydicom.dcmread(path)
    assert ds.file_meta.MediaStorageSOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == RT_STRUCTURE_SET_STORAGE
    assert ds.Modality == "RTSTRUCT"
    assert ds.Manufacturer == "adaptrt"
    assert ds.PatientID == "RT-001"
    assert str(ds.PatientName) == "Phantom^Ring"
    assert ds.StudyInstanceUID == series.study_instance_uid
    assert ds.SeriesInstanceUID not in (series.series_instance_uid, "")
    assert ds.FrameOfReferenceUID == series.frame_of_reference_uid
    assert ds.StructureSetLabel == "adaptrt"
    # seeded: date and time come from the study, not the clock
    assert (ds.StructureSetDate, ds.StructureSetTime) == ("20240305", "101530")
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == series.frame_of_reference_uid
    referenced = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series.series_instance_uid
    assert [i.ReferencedSOPInstanceUID for i in referenced.ContourImageSequence] == list(
        series.sop_instance_uids
    )
    roi_items = ds.StructureSetROISequence
    assert all(i.ReferencedFrameOfReferenceUID == series.frame_of_reference_uid for i in roi_items)
    for contour in ds.ROIContourSequence[0].ContourSequence:
        assert contour.ContourGeometricType == "CLOSED_PLANAR"
        assert contour.ContourImageSequence[0].ReferencedSOPInstanceUID in series.sop_instance_uids
        assert len(contour.ContourData) == 3 * contour.NumberOfContourPoints


def _dciodvfy_errors(path: Path) -> list[str]:
    return [line for line in dciodvfy_lines(path, "RTStructureSet") if line.startswith("Error")]


def test_dciodvfy_reports_no_errors(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    path, series, _, _ = written
    assert _dciodvfy_errors(path) == []
    # an ROI without contours is valid as well
    empty = series.volume.with_array(np.zeros(series.volume.shape, dtype=bool))
    second = write_rtstruct([Roi("empty", empty)], series, tmp_path / "empty.dcm", description="nothing")
    assert _dciodvfy_errors(second) == []


def test_dciodvfy_catches_a_broken_file(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    # guards the check above against a dciodvfy that silently reports nothing
    path, _, _, _ = written
    ds = pydicom.dcmread(path)
    del ds.StructureSetLabel
    broken = tmp_path / "broken.dcm"
    ds.save_as(broken)
    assert any("StructureSetLabel" in line for line in _dciodvfy_errors(broken))


def test_same_seed_gives_identical_bytes(tmp_path: Path, series: DicomSeries) -> None:
    mask = series.volume.with_array(_radius_mm(series.volume) <= 6.0)
    rois = [Roi("GTV", mask)]
    a = write_rtstruct(rois, series, tmp_path / "a.dcm", uid_seed="seed-1")
    b = write_rtstruct(rois, series, tmp_path / "b.dcm", uid_seed="seed-1")
    c = write_rtstruct(rois, series, tmp_path / "c.dcm", uid_seed="seed-2")
    assert a.read_bytes() == b.read_bytes()
    assert pydicom.dcmread(a).SOPInstanceUID != pydicom.dcmread(c).SOPInstanceUID
    # different content with the same seed must not reuse the UID
    other = write_rtstruct([Roi("GTV", _ring(series.volume))], series, tmp_path / "d.dcm", uid_seed="seed-1")
    assert pydicom.dcmread(a).SOPInstanceUID != pydicom.dcmread(other).SOPInstanceUID


def test_without_seed_uids_are_new(tmp_path: Path, series: DicomSeries) -> None:
    mask = series.volume.with_array(_radius_mm(series.volume) <= 6.0)
    a = pydicom.dcmread(write_rtstruct([Roi("GTV", mask)], series, tmp_path / "a.dcm"))
    b = pydicom.dcmread(write_rtstruct([Roi("GTV", mask)], series, tmp_path / "b.dcm"))
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SeriesInstanceUID != b.SeriesInstanceUID


# ---------------------------------------------------------------------------------------------- reading errors
def test_roi_lookup_ignores_case_and_spaces(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, gtv, ring = written
    assert np.array_equal(read_rtstruct(path, "gtv", series).array, gtv.array)
    assert np.array_equal(read_rtstruct(path, "  rInG ", series).array, ring.array)


def test_absent_roi_lists_the_names(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, _, _ = written
    with pytest.raises(InputError, match=r"no ROI named 'CTV'.*'GTV', 'Ring'") as info:
        read_rtstruct(path, "CTV", series)
    assert info.value.path == str(path)
    assert info.value.field == "ROIName"


def test_other_frame_of_reference_is_refused(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, _, _ = written
    other = _series(series.volume)
    with pytest.raises(InputError, match="belongs to another image series") as info:
        read_rtstruct(path, "GTV", other)
    message = str(info.value)
    assert series.frame_of_reference_uid in message
    assert other.frame_of_reference_uid in message


def test_contour_between_slices_is_refused(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, _, _ = written
    shifted = Volume(
        series.volume.array,
        spacing=series.volume.spacing,
        origin=(
            series.volume.origin[0],
            series.volume.origin[1],
            series.volume.origin[2] + 1.0,
        ),  # half a slice
    )
    moved = DicomSeries(**{**series.__dict__, "volume": shifted})
    with pytest.raises(InputError, match="not on this series' slice planes"):
        read_rtstruct(path, "GTV", moved)


def test_non_rtstruct_file_is_refused(tmp_path: Path, series: DicomSeries) -> None:
    mr = Dataset()
    mr.SOPClassUID = MRImageStorage
    mr.SOPInstanceUID = generate_uid()
    mr.Modality = "MR"
    mr_path = tmp_path / "mr.dcm"
    mr.save_as(mr_path, implicit_vr=False, little_endian=True)
    with pytest.raises(InputError, match="not an RT Structure Set") as info:
        read_rtstruct(mr_path, "GTV", series)
    assert info.value.field == "SOPClassUID"
    assert info.value.path == str(mr_path)

    text = tmp_path / "notes.txt"
    text.write_text("not DICOM at all\n")
    with pytest.raises(InputError, match="is not a DICOM file"):
        rtstruct_roi_names(text)
    with pytest.raises(InputError, match="no such file"):
        rtstruct_roi_names(tmp_path / "missing.dcm")


def test_modality_checked_when_sop_class_absent(tmp_path: Path) -> None:
    ds = Dataset()
    ds.Modality = "CT"
    path = tmp_path / "ct.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True)
    with pytest.raises(InputError, match="Modality is CT") as info:
        rtstruct_roi_names(path)
    assert info.value.field == "Modality"


def test_open_and_point_contours_are_ignored_with_a_warning(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    path, series, gtv, _ = written
    ds = pydicom.dcmread(path)
    contours = ds.ROIContourSequence[0].ContourSequence
    contours[0].ContourGeometricType = "OPEN_PLANAR"
    dropped_slice = int(np.flatnonzero(gtv.array.any(axis=(1, 2)))[0])
    edited = tmp_path / "edited.dcm"
    ds.save_as(edited)
    with pytest.warns(UserWarning, match="1 OPEN_PLANAR"):
        back = read_rtstruct(edited, "GTV", series)
    assert not back.array[dropped_slice].any()
    expected = gtv.array.copy()
    expected[dropped_slice] = False
    assert np.array_equal(back.array, expected)


def _star(
    rng: np.random.Generator, centre: tuple[float, float], n: int, r_min: float, r_max: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rows and columns of a random star-shaped polygon around ``centre`` (row, col)."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(r_min, r_max, n)
    return centre[0] + radii * np.sin(angles), centre[1] + radii * np.cos(angles)


def test_fill_matches_skimage_polygon_with_even_odd_overlap(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    from skimage.draw import polygon

    path, series, _, _ = written
    volume = series.volume
    ny, nx = volume.shape[1:]
    rng = np.random.default_rng(42)
    k = 5
    expected = np.zeros(volume.shape, dtype=bool)
    ds = pydicom.dcmread(path)
    items = list(ds.ROIContourSequence[0].ContourSequence)[:3]
    # two overlapping random star polygons and a self-intersecting one reaching outside the image
    shapes = [
        _star(rng, (12.3, 11.7), 15, 3.0, 9.0),
        _star(rng, (15.1, 17.4), 11, 2.0, 8.0),
        (np.array([-3.3, 20.2, -1.7, 21.4]), np.array([2.2, 30.6, 25.1, 1.3])),
    ]
    for item, (rows, cols) in zip(items, shapes, strict=True):
        rr, cc = polygon(rows, cols, shape=(ny, nx))
        layer = np.zeros((ny, nx), dtype=bool)
        layer[rr, cc] = True
        expected[k] ^= layer
        world = volume.index_to_world(np.column_stack([np.full(len(rows), float(k)), rows, cols]))
        item.ContourData = [f"{v:.6f}" for v in world.ravel()]
        item.NumberOfContourPoints = len(rows)
    ds.ROIContourSequence[0].ContourSequence = items
    edited = tmp_path / "edited.dcm"
    ds.save_as(edited)
    back = read_rtstruct(edited, "GTV", series)
    assert expected.any()
    assert np.count_nonzero(back.array ^ expected) == 0


def test_points_outside_the_image_are_clipped(tmp_path: Path, series: DicomSeries) -> None:
    big = Volume(np.zeros((10, 28, 28), dtype=np.float32), spacing=series.volume.spacing)
    big_series = DicomSeries(**{**series.__dict__, "volume": big})
    square = np.zeros(big.shape, dtype=bool)
    square[3:6, 2:26, 2:26] = True
    path = write_rtstruct([Roi("sq", big.with_array(square))], big_series, tmp_path / "rs.dcm")
    # the same frame of reference and slices, but a smaller field of view shifted by 4 pixels
    small = Volume(np.zeros((10, 20, 20), dtype=np.float32), spacing=big.spacing, origin=(4.0, 4.0, 0.0))
    small_series = DicomSeries(**{**series.__dict__, "volume": small})
    back = read_rtstruct(path, "sq", small_series)
    expected = square[:, 4:24, 4:24]
    assert np.array_equal(back.array, expected)


# ---------------------------------------------------------------------------------------------- writing errors
def test_overwrite_refused_unless_asked(written: tuple[Path, DicomSeries, Volume, Volume]) -> None:
    path, series, gtv, _ = written
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_rtstruct([Roi("GTV", gtv)], series, path)
    assert path.read_bytes() == before
    write_rtstruct([Roi("Other", gtv)], series, path, overwrite=True)
    assert rtstruct_roi_names(path) == ["Other"]


def test_invalid_rois_are_refused(tmp_path: Path, series: DicomSeries) -> None:
    mask = series.volume.with_array(_radius_mm(series.volume) <= 6.0)
    with pytest.raises(ValueError, match="unique ignoring case"):
        write_rtstruct([Roi("GTV", mask), Roi("gtv ", mask)], series, tmp_path / "a.dcm")
    with pytest.raises(ValueError, match="must not be empty"):
        Roi("  ", mask)
    with pytest.raises(ValueError, match="boolean Volume"):
        Roi("GTV", series.volume)
    with pytest.raises(ValueError, match="color must be three integers"):
        Roi("GTV", mask, color=(0, 0, 300))
    with pytest.raises(ValueError, match="not a DICOM code string"):
        Roi("GTV", mask, interpreted_type="gross tumour volume")
    with pytest.raises(ValueError, match="at least one Roi"):
        write_rtstruct([], series, tmp_path / "b.dcm")
    with pytest.raises(ValueError, match="StructureSetLabel"):
        write_rtstruct([Roi("GTV", mask)], series, tmp_path / "c.dcm", label="a label far too long")
    assert not list(tmp_path.iterdir())


def test_mask_on_another_grid_is_refused(tmp_path: Path, series: DicomSeries) -> None:
    other = Volume(np.zeros((10, 28, 28), dtype=bool), spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"not on the image series' grid.*origin"):
        write_rtstruct([Roi("GTV", other)], series, tmp_path / "a.dcm")
    smaller = Volume(
        np.zeros((9, 28, 28), dtype=bool), spacing=series.volume.spacing, origin=series.volume.origin
    )
    with pytest.raises(InputError, match=r"not on the image series' grid.*shape"):
        write_rtstruct([Roi("GTV", smaller)], series, tmp_path / "a.dcm")


# ---------------------------------------------------------------------------------------------- end to end
def test_end_to_end_with_written_mr_series(tmp_path: Path) -> None:
    volume = _image(shape=(8, 24, 22), spacing=(2.0, 1.0, 1.0), direction=_rotation(10.0, 0.0, 20.0))
    written = write_mr_series(volume, tmp_path / "mr", patient_id="E2E", uid_seed="e2e")
    mask = written.volume.with_array(_radius_mm(written.volume) <= 6.5)
    path = write_rtstruct([Roi("GTV", mask)], written, tmp_path / "rs.dcm", uid_seed="e2e")
    reread = read_dicom_series(tmp_path / "mr")
    back = read_rtstruct(path, "gtv", reread)
    assert back.same_geometry(reread.volume)
    assert np.array_equal(back.array, mask.array)
    ds = pydicom.dcmread(path)
    assert ds.PatientID == "E2E"
    assert ds.StudyInstanceUID == reread.study_instance_uid
    if shutil.which("dciodvfy") is not None:
        assert _dciodvfy_errors(path) == []


# ---------------------------------------------------------------------------------------------- pixel-centre contours
# Many mask-to-contour converters (rt-utils, OpenCV findContours, AI segmentation exports) trace the centres of
# the boundary pixels. The contours below are made that way, independently of adaptrt's writer: the convex hull
# of a digital disc's pixel centres (whose closed inside holds exactly the disc's pixels), diamonds through the
# centres of the pixels around a hole, with float32 rounding and 1e-6 mm noise on the coordinates.
def _disc(ny: int, nx: int, centre: tuple[int, int], radius: float) -> NDArray[np.bool_]:
    rows, cols = np.mgrid[:ny, :nx]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def _hull_contour(layer: NDArray[np.bool_]) -> NDArray[np.float64]:
    """The pixel-centre contour (row, col) of a digitally convex island: its centres' convex hull."""
    from scipy.spatial import ConvexHull, QhullError

    points = np.argwhere(layer).astype(np.float64)
    if len(points) <= 2:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # collinear pixels: the segment between the two ends
        order = np.lexsort((points[:, 1], points[:, 0]))
        return points[[order[0], order[-1]]]


def _diamond(centre: tuple[int, int], reach: int) -> NDArray[np.float64]:
    """Contour through the pixel centres at city-block distance ``reach`` (a hole of reach - 1 inside)."""
    r, c = centre
    return np.array([[r - reach, c], [r, c + reach], [r + reach, c], [r, c - reach]], dtype=np.float64)


def _write_contours(
    template: Path, out: Path, volume: Volume, contours: list[tuple[int, NDArray[np.float64]]], seed: int = 0
) -> Path:
    """Replace the first ROI's contours of ``template`` by ``(slice, (N, 2) row/col)`` polygons, written as
    float32 world coordinates with noise, as converters that go through float32 do."""
    rng = np.random.default_rng(seed)
    ds = pydicom.dcmread(template)
    template_item = ds.ROIContourSequence[0].ContourSequence[0]
    items = []
    for number, (k, rowcol) in enumerate(contours, start=1):
        index = np.column_stack([np.full(len(rowcol), float(k)), rowcol])
        world = volume.index_to_world(index) + rng.uniform(-1e-6, 1e-6, (len(rowcol), 3))
        item = Dataset()
        item.ContourImageSequence = template_item.ContourImageSequence
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.ContourNumber = number
        item.NumberOfContourPoints = len(rowcol)
        item.ContourData = [f"{v:.9g}" for v in world.astype(np.float32).astype(np.float64).ravel()]
        items.append(item)
    ds.ROIContourSequence[0].ContourSequence = items
    ds.save_as(out)
    return out


@pytest.mark.parametrize("oblique", [False, True])
def test_pixel_centre_contours_read_without_bias(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume], oblique: bool
) -> None:
    template, series, _, _ = written
    if oblique:
        volume = _image(direction=_rotation(10.0, -20.0, 35.0), origin=(12.499998927, -7.3, 3.1))
        series = DicomSeries(**{**series.__dict__, "volume": volume})
    volume = series.volume
    ny, nx = volume.shape[1:]
    expected = np.zeros(volume.shape, dtype=bool)
    contours: list[tuple[int, NDArray[np.float64]]] = []
    # a small metastasis of 33 voxels: discs on slices 1-5 (one-pixel poles: single-point contours)
    for k, radius in zip(range(1, 6), (0.5, 1.5, 2.0, 1.5, 0.5), strict=True):
        layer = _disc(ny, nx, (7, 8), radius)
        expected[k] |= layer
        contours.append((k, _hull_contour(layer)))
    # a ring with a hole (the hole contour runs through the centres of the pixels around it)
    outer = _disc(ny, nx, (14, 14), 6.2)
    rows, cols = np.mgrid[:ny, :nx]
    hole = np.abs(rows - 14) + np.abs(cols - 14) <= 2
    expected[6] = outer & ~hole
    contours += [(6, _hull_contour(outer)), (6, _diamond((14, 14), 3))]
    # a pin-hole: one missing pixel inside a square
    square = np.zeros((ny, nx), dtype=bool)
    square[3:12, 15:25] = True
    square[7, 20] = False
    expected[7] = square
    contours += [
        (7, np.array([[3, 15], [3, 24], [11, 24], [11, 15]], dtype=np.float64)),
        (7, _diamond((7, 20), 1)),
    ]
    # two islands on one slice
    left, right = _disc(ny, nx, (20, 6), 3.0), _disc(ny, nx, (20, 16), 4.4)
    expected[8] = left | right
    contours += [(8, _hull_contour(left)), (8, _hull_contour(right))]
    edited = _write_contours(template, tmp_path / "centres.dcm", volume, contours)

    back = read_rtstruct(edited, "GTV", series).array
    for k in range(volume.shape[0]):
        assert np.array_equal(back[k], expected[k]), f"slice {k}"
    metastasis = expected[1:6]
    assert np.count_nonzero(back[1:6]) == np.count_nonzero(metastasis) == 1 + 9 + 13 + 9 + 1  # read whole


def test_freehand_contours_stay_unbiased(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    template, series, _, _ = written
    volume = series.volume
    rng = np.random.default_rng(5)
    contours = []
    polygon_area = 0.0
    for k in range(1, 9):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 60))
        radius = rng.uniform(6.0, 11.0) * (1 + 0.05 * np.sin(3 * angles))
        rows = 13.5 + rng.uniform(-0.5, 0.5) + radius * np.sin(angles)
        cols = 13.5 + rng.uniform(-0.5, 0.5) + radius * np.cos(angles)
        contours.append((k, np.column_stack([rows, cols])))
        polygon_area += 0.5 * abs(float(np.dot(rows, np.roll(cols, 1)) - np.dot(cols, np.roll(rows, 1))))
    edited = _write_contours(template, tmp_path / "freehand.dcm", volume, contours)
    back = read_rtstruct(edited, "GTV", series)
    assert abs(np.count_nonzero(back.array) / polygon_area - 1) < 0.01


def test_single_point_contour_marks_its_pixel(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    template, series, _, _ = written
    edited = _write_contours(
        template,
        tmp_path / "dot.dcm",
        series.volume,
        [(4, np.array([[9.0, 11.0]])), (4, np.array([[2.0, 3.0], [2.0, 6.0]]))],
    )
    back = read_rtstruct(edited, "GTV", series).array
    expected = np.zeros(series.volume.shape, dtype=bool)
    expected[4, 9, 11] = True
    expected[4, 2, 3:7] = True
    assert np.array_equal(back, expected)


# ---------------------------------------------------------------------------------------------- incomplete files
def test_truncated_rtstruct_is_a_clean_error_naming_the_file(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    path, series, _, _ = written
    data = path.read_bytes()
    # cut inside the contour data, at an item boundary, and a few bytes before the end
    for n in (len(data) // 2, len(data) - 3, len(data) - 200, 3 * len(data) // 4 + 1):
        cut = tmp_path / f"cut_{n}.dcm"
        cut.write_bytes(data[:n])
        with pytest.raises(InputError, match=r"incomplete|not a DICOM file") as info:
            read_rtstruct(cut, "GTV", series)
        assert info.value.path == str(cut)
    assert np.any(read_rtstruct(path, "GTV", series).array)  # the whole file still reads


def test_complete_files_in_other_encodings_are_not_called_incomplete(
    tmp_path: Path, written: tuple[Path, DicomSeries, Volume, Volume]
) -> None:
    from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

    path, series, gtv, _ = written
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(tmp_path / "implicit.dcm", implicit_vr=True, little_endian=True)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    pydicom.dcmwrite(tmp_path / "big.dcm", ds, implicit_vr=False, little_endian=False, force_encoding=True)
    for name in ("implicit.dcm", "big.dcm"):
        assert np.array_equal(read_rtstruct(tmp_path / name, "GTV", series).array, gtv.array)
