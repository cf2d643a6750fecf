import numpy as np
import pytest

from adaptrt.types import AXIAL_DIRECTION, Volume


def _oblique() -> np.ndarray:
    a = np.deg2rad(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return rot @ AXIAL_DIRECTION


def test_volume_is_read_only_and_copies_input():
    arr = np.zeros((2, 3, 4), dtype=np.float32)
    v = Volume(arr, spacing=(3.0, 1.0, 0.5))
    arr[0, 0, 0] = 5
    assert v.array[0, 0, 0] == 0
    with pytest.raises(ValueError, match="read-only"):
        v.array[0, 0, 0] = 1
    assert v.voxel_volume_mm3 == pytest.approx(1.5)


def test_affine_round_trip_oblique():
    v = Volume(np.zeros((3, 4, 5)), spacing=(2.5, 0.9, 0.8), origin=(-10.0, 20.0, 5.0), direction=_oblique())
    w = Volume.from_affine(v.array, v.affine)
    assert w.same_geometry(v)
    idx = np.array([[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]])
    np.testing.assert_allclose(v.world_to_index(v.index_to_world(idx)), idx, atol=1e-9)
    # one step along array axis 0 moves 2.5 mm along the direction's first column
    step = v.index_to_world([1, 0, 0]) - v.index_to_world([0, 0, 0])
    np.testing.assert_allclose(step, 2.5 * v.direction[:, 0])


def test_default_direction_is_axial_lps():
    v = Volume(np.zeros((2, 2, 2)), spacing=(1, 1, 1))
    # x index (axis 2) runs to patient left (+x), y index down the rows (+y posterior), slices superior (+z)
    np.testing.assert_allclose(v.index_to_world([0, 0, 1]), [1, 0, 0])
    np.testing.assert_allclose(v.index_to_world([0, 1, 0]), [0, 1, 0])
    np.testing.assert_allclose(v.index_to_world([1, 0, 0]), [0, 0, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros((2, 2))}, "must be 3-D"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be three finite values > 0"),
        ({"spacing": (1.0, 1.0)}, "spacing must be three"),
        ({"origin": (0.0, np.nan, 0.0)}, "origin must be three finite"),
        ({"direction": np.ones((3, 3))}, "orthonormal"),
        ({"array": np.zeros((0, 2, 2))}, "must not be empty"),
        ({"array": np.array([[["a"]]])}, "boolean, integer or float"),
    ],
)
def test_volume_validation(kwargs, match):
    base = {"array": np.zeros((2, 2, 2)), "spacing": (1.0, 1.0, 1.0)}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Volume(**base)


def test_geometry_difference_and_with_array():
    v = Volume(np.zeros((2, 3, 4)), spacing=(1, 1, 1))
    assert v.geometry_difference(v.with_array(np.ones((2, 3, 4)))) is None
    w = Volume(np.zeros((2, 3, 4)), spacing=(1, 1, 1), origin=(0.0, 0.0, 1.0))
    assert "origin" in (v.geometry_difference(w) or "")
    assert "shape" in (v.geometry_difference(Volume(np.zeros((2, 3, 5)), spacing=(1, 1, 1))) or "")
    with pytest.raises(ValueError, match="differs from the volume's shape"):
        v.with_array(np.zeros((1, 1, 1)))
    m = v.with_array(np.zeros((2, 3, 4), dtype=bool))
    assert m.is_mask and not v.is_mask


def test_geometry_difference_prints_plain_numbers():
    v = Volume(np.zeros((2, 3, 4)), spacing=(1.0, 0.9, 0.9), origin=(0.0, 10.5, -3.0))
    w = Volume(np.zeros((2, 3, 4)), spacing=(1.0, 0.9, 0.9), origin=(-12.6, 10.5, np.float64(-3.0)))
    msg = v.geometry_difference(w)
    assert msg == "origin (-12.6, 10.5, -3) mm differs from (0, 10.5, -3) mm"
    s = Volume(np.zeros((2, 3, 4)), spacing=(np.float64(2.5), 0.9, 0.9), origin=v.origin)
    assert v.geometry_difference(s) == "spacing (2.5, 0.9, 0.9) mm differs from (1, 0.9, 0.9) mm"
    d = Volume(np.zeros((2, 3, 4)), spacing=v.spacing, origin=v.origin, direction=_oblique())
    msg = v.geometry_difference(d) or ""
    assert msg.startswith("direction") and "np." not in msg and "\n" not in msg
    assert "0.9397" in msg and "-0.342" in msg
