"""Users' real DICOM: compressed transfer syntaxes, enhanced multi-frame objects, other multi-frame objects."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid

from adaptrt.errors import InputError
from adaptrt.io.dicom import DicomSeries, read_dicom_series, write_mr_series
from adaptrt.types import Volume


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> DicomSeries:
    """A float MR series (quantised with RescaleSlope/Intercept, signed and unsigned values)."""
    rng = np.random.default_rng(3)
    values = (rng.random((3, 40, 36)) * 1300.0 - 250.0).astype(np.float32)
    folder = tmp_path_factory.mktemp("dicom") / "mr"
    return write_mr_series(
        Volume(values, spacing=(2.0, 0.9, 0.8), origin=(-10.0, 20.0, 5.5)),
        folder,
        patient_id="P1",
        uid_seed="c",
    )


def _with_pydicom(syntax: str) -> Callable[[Path, Path], None]:
    def encode(src: Path, dst: Path) -> None:
        ds = pydicom.dcmread(src)
        ds.compress(syntax, generate_instance_uid=False)
        ds.save_as(dst, enforce_file_format=True)

    return encode


def _with_gdcm(process: str) -> Callable[[Path, Path], None]:
    """JPEG Lossless (pydicom has no encoder for it): GDCM compresses, the dataset stays the MR slice."""

    def encode(src: Path, dst: Path) -> None:
        import gdcm

        reader = gdcm.ImageReader()
        reader.SetFileName(str(src))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, process)))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(dst))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
        encoded = pydicom.dcmread(dst)
        ds = pydicom.dcmread(src)
        ds.PixelData = encoded.PixelData
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = encoded.file_meta.TransferSyntaxUID
        ds.save_as(dst, enforce_file_format=True)

    return encode


@pytest.mark.parametrize(
    ("syntax", "encode"),
    [
        (uid.JPEGLosslessSV1, _with_gdcm("JPEGLosslessProcess14_1")),
        (uid.JPEGLossless, _with_gdcm("JPEGLosslessProcess14")),
        (uid.JPEGLSLossless, _with_pydicom(uid.JPEGLSLossless)),
        (uid.JPEG2000Lossless, _with_pydicom(uid.JPEG2000Lossless)),
        (uid.RLELossless, _with_pydicom(uid.RLELossless)),
    ],
    ids=["jpeg-lossless-sv1", "jpeg-lossless", "jpeg-ls", "jpeg2000", "rle"],
)
def test_compressed_series_read_as_the_uncompressed_copy(
    tmp_path: Path, series: DicomSeries, syntax: str, encode: Callable[[Path, Path], None]
) -> None:
    folder = tmp_path / "compressed"
    folder.mkdir()
    for f in series.files:
        encode(f, folder / f.name)
    assert str(pydicom.dcmread(folder / series.files[0].name).file_meta.TransferSyntaxUID) == syntax
    back = read_dicom_series(folder)
    plain = read_dicom_series(series.files[0].parent)
    assert np.array_equal(back.volume.array, plain.volume.array)
    assert back.volume.same_geometry(plain.volume, atol_mm=0.0)
    assert back.sop_instance_uids == plain.sop_instance_uids


def test_undecodable_pixel_data_names_the_file(tmp_path: Path, series: DicomSeries) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(series.files[0].parent, folder)
    ds = pydicom.dcmread(folder / series.files[1].name)
    ds.compress(uid.RLELossless)
    ds.PixelData = ds.PixelData[:40]  # a damaged stream
    ds.save_as(folder / series.files[1].name, enforce_file_format=True)
    with pytest.raises(InputError, match="pixel data could not be decoded") as info:
        read_dicom_series(folder)
    assert info.value.path == str(folder / series.files[1].name)


def test_enhanced_multiframe_is_refused_with_how_to_convert(tmp_path: Path, series: DicomSeries) -> None:
    folder = tmp_path / "enhanced"
    folder.mkdir()
    ds = pydicom.dcmread(series.files[0])
    ds.SOPClassUID = uid.EnhancedMRImageStorage
    ds.file_meta.MediaStorageSOPClassUID = uid.EnhancedMRImageStorage
    ds.NumberOfFrames = 1
    ds.save_as(folder / "enhanced.dcm", enforce_file_format=True)
    with pytest.raises(
        InputError, match=r"enhanced multi-frame image \(Enhanced MR Image Storage.*emf2sf.*dcm2niix"
    ):
        read_dicom_series(folder)


def test_rt_dose_is_not_called_enhanced(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    folder = tmp_path / "dose"
    folder.mkdir()
    shutil.copy(str(get_testdata_file("rtdose.dcm")), folder / "RD.dcm")
    with pytest.raises(InputError, match="is an RT Dose grid, not an MR image series") as info:
        read_dicom_series(folder)
    assert "enhanced" not in str(info.value)


def test_ultrasound_cine_is_not_called_enhanced(tmp_path: Path, series: DicomSeries) -> None:
    folder = tmp_path / "us"
    folder.mkdir()
    ds = pydicom.dcmread(series.files[0])
    ds.SOPClassUID = uid.UltrasoundMultiFrameImageStorage
    ds.file_meta.MediaStorageSOPClassUID = uid.UltrasoundMultiFrameImageStorage
    ds.NumberOfFrames = 4
    ds.save_as(folder / "us.dcm", enforce_file_format=True)
    with pytest.raises(
        InputError, match=r"multi-frame Ultrasound Multi-frame Image Storage object \(4 frames"
    ) as info:
        read_dicom_series(folder)
    assert "enhanced" not in str(info.value)
