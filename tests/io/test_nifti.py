"""NIfTI reading and writing: geometry conversion RAS <-> LPS, value checks, error messages."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.io.nifti import read_nifti, write_nifti
from adaptrt.types import Volume
from tests.conftest import sphere_volume


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _random_image(shape: tuple[int, int, int] = (5, 6, 7)) -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    ("spacing", "origin", "direction"),
    [
        ((2.0, 1.0, 1.0), (-40.0, -40.0, -20.0), np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])),  # axial
        ((3.0, 0.9, 1.1), (12.5, -7.25, 33.0), _rotation(0.3, -0.2, 0.5)),  # oblique, anisotropic
        ((1.5, 2.5, 0.7), (0.0, 0.0, 0.0), np.array([[0.0, 1, 0], [0, 0, -1], [1, 0, 0]])),  # sagittal-like
    ],
)
def test_round_trip_preserves_values_and_affine(
    tmp_path: Path, suffix: str, spacing: tuple[float, float, float], origin: tuple, direction: np.ndarray
) -> None:
    vol = Volume(_random_image(), spacing=spacing, origin=origin, direction=direction)
    path = write_nifti(vol, tmp_path / f"img{suffix}")
    back = read_nifti(path)
    assert back.shape == vol.shape
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)


def test_mask_round_trip_is_bool_and_stored_as_uint8(tmp_path: Path) -> None:
    _, mask = sphere_volume()
    path = write_nifti(mask, tmp_path / "mask.nii.gz")
    assert nib.load(path).get_data_dtype() == np.uint8
    back = read_nifti(path, kind="mask")
    assert back.is_mask
    np.testing.assert_array_equal(back.array, mask.array)
    assert back.same_geometry(mask)


def test_conversion_matches_nifti_conventions(tmp_path: Path) -> None:
    """Voxel (k, j, i) of the Volume is voxel (i, j, k) of the file, and world LPS = diag(-1,-1,1) RAS."""
    vol = Volume(_random_image(), spacing=(2.0, 1.5, 1.0), origin=(10.0, 20.0, 30.0))
    path = write_nifti(vol, tmp_path / "img.nii")
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert data.shape == (7, 6, 5)
    assert data[3, 2, 1] == vol.array[1, 2, 3]
    ras = img.affine @ np.array([3.0, 2.0, 1.0, 1.0])
    lps = vol.index_to_world([1.0, 2.0, 3.0])
    np.testing.assert_allclose(ras[:3] * np.array([-1, -1, 1]), lps, atol=1e-5)
    sform, scode = img.header.get_sform(coded=True)
    qform, qcode = img.header.get_qform(coded=True)
    assert (int(scode), int(qcode)) == (1, 1)
    np.testing.assert_allclose(qform, sform, atol=1e-5)
    assert img.header.get_xyzt_units()[0] == "mm"


def test_4d_with_trailing_singleton_is_squeezed(tmp_path: Path) -> None:
    data = _random_image((7, 6, 5))[..., None]
    path = tmp_path / "four_d.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 2.0, 3.0, 1.0])), path)
    vol = read_nifti(path)
    assert vol.shape == (5, 6, 7)
    assert vol.spacing == (3.0, 2.0, 1.0)


def test_true_4d_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "series.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), np.eye(4)), path)
    with pytest.raises(
        InputError, match=r"series\.nii\.gz, field 'dim': has 4-D data of shape \(4, 4, 4, 3\)"
    ):
        read_nifti(path)


def test_nan_in_image_is_rejected_with_count(tmp_path: Path) -> None:
    data = _random_image()
    data[0, 0, :3] = np.nan
    data[1, 1, 1] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), np.eye(4)), path)
    with pytest.raises(InputError, match=r"nan\.nii\.gz: 4 of 210 voxels are NaN or infinite.*Fix:"):
        read_nifti(path)


def test_mask_with_value_2_is_rejected_listing_values(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), np.uint8)
    data[1, 1, 1] = 1
    data[2, 2, 2] = 2
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(
        InputError, match=r"labels\.nii\.gz: mask values must be exactly 0/1, found values 0, 1, 2"
    ):
        read_nifti(path, kind="mask")


def test_float_mask_with_exact_zero_one_is_accepted(tmp_path: Path) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data[1:3, 1:3, 1:3] = 1.0
    path = tmp_path / "float_mask.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert int(read_nifti(path, kind="mask").array.sum()) == 8


def test_qform_only_file_is_read(tmp_path: Path) -> None:
    affine = np.array([[-1.0, 0, 0, 30], [0, -2.0, 0, 40], [0, 0, 3.0, -50], [0, 0, 0, 1]])
    img = nib.Nifti1Image(_random_image((6, 5, 4)), None)
    img.set_qform(affine, code=1)
    img.set_sform(None, code=0)
    path = tmp_path / "qform.nii.gz"
    nib.save(img, path)
    vol = read_nifti(path)
    # RAS (-1, -2, 3) axes in LPS are (+1, +2, 3): x left, y posterior, z superior
    np.testing.assert_allclose(vol.spacing, (3.0, 2.0, 1.0))
    np.testing.assert_allclose(vol.origin, (-30.0, -40.0, -50.0))
    np.testing.assert_allclose(vol.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-6)


def test_sform_wins_over_qform(tmp_path: Path) -> None:
    img = nib.Nifti1Image(_random_image(), None)
    img.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    img.set_sform(np.diag([2.0, 2.0, 2.0, 1.0]), code=2)
    path = tmp_path / "both.nii"
    nib.save(img, path)
    assert read_nifti(path).spacing == (2.0, 2.0, 2.0)


def test_file_without_orientation_is_rejected(tmp_path: Path) -> None:
    img = nib.Nifti1Image(_random_image(), None)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    path = tmp_path / "no_orientation.nii"
    nib.save(img, path)
    with pytest.raises(InputError, match=r"no_orientation\.nii.*: has no orientation.*Fix: re-export"):
        read_nifti(path)


def test_overwrite_is_refused_unless_asked(tmp_path: Path) -> None:
    image, _ = sphere_volume()
    path = write_nifti(image, tmp_path / "img.nii.gz")
    with pytest.raises(InputError, match=r"img\.nii\.gz: already exists.*overwrite=True"):
        write_nifti(image.with_array(image.array * 2), path)
    np.testing.assert_array_equal(read_nifti(path).array, image.array)
    write_nifti(image.with_array(image.array * 2), path, overwrite=True)
    np.testing.assert_array_equal(read_nifti(path).array, image.array * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["img.nii.gz"]  # no temporary file left behind


def test_write_needs_nifti_suffix(tmp_path: Path) -> None:
    image, _ = sphere_volume()
    with pytest.raises(InputError, match=r"must end in \.nii or \.nii\.gz"):
        write_nifti(image, tmp_path / "img.nrrd")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"absent\.nii\.gz: file not found.*Fix: check the path"):
        read_nifti(tmp_path / "absent.nii.gz")


def test_not_nifti_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.nii\.gz: .*cannot be read.*Fix:"):
        read_nifti(path)
