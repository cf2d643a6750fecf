"""Tests of adaptrt.preprocess on tiny phantoms made in code (spheres, discs, ramps)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from adaptrt.config import from_dict, to_jsonable
from adaptrt.errors import InputError
from adaptrt.preprocess import (
    MIN_SLICE_VOXELS,
    PART1_ANGLES,
    PART2_ANGLES,
    LesionSlices,
    PreprocessConfig,
    crop_to_gtv,
    downsample_mask,
    exclusion_reason,
    normalise,
    prepare_lesion,
    resample_inplane,
    rotate_slices,
    select_slices,
)
from adaptrt.types import AXIAL_DIRECTION, Volume

SPACING = (2.0, 0.8, 0.8)  # anisotropic: thick slices, fine in-plane pixels
RADIUS = 8.0


def _oblique() -> np.ndarray:
    a = np.deg2rad(25.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return rot @ AXIAL_DIRECTION


def _sphere(centre=(7.0, 22.0, 27.0), shape=(15, 50, 56), radius=RADIUS) -> tuple[Volume, Volume]:
    """A bright sphere of ``radius`` mm centred at index ``centre`` on a smooth background."""
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, SPACING, strict=True)))
    gtv = r <= radius
    image = (100.0 + 30.0 * np.cos(grids[1] / 4.0) + 20.0 * np.sin(grids[2] / 5.0) + 200.0 * gtv).astype(
        np.float32
    )
    return Volume(image, spacing=SPACING), Volume(gtv, spacing=SPACING)


def _disc(size: int = 64, radius: float = 14.0, centre: tuple[float, float] = (31.5, 31.5)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


# ------------------------------------------------------------------------------------------------ config
def test_config_defaults_and_paper_angles():
    cfg = PreprocessConfig()
    assert (cfg.size, cfg.bottleneck, cfg.n_slices, cfg.angles_deg) == (64, 16, 3, (0.0,))
    assert PreprocessConfig(angles_deg=PART1_ANGLES).angles_deg == (0.0, 10.0, 15.0, 30.0, 45.0, 90.0)
    # ints and lists are normalised to floats and tuples, so the frozen config stays hashable
    cfg2 = PreprocessConfig(angles_deg=[0, 90], percentiles=[1, 99], margin_mm=5)  # type: ignore[arg-type]
    assert cfg2.angles_deg == (0.0, 90.0) and cfg2.percentiles == (1.0, 99.0) and cfg2.margin_mm == 5.0
    assert hash(cfg2) == hash(
        PreprocessConfig(angles_deg=(0.0, 90.0), percentiles=(1.0, 99.0), margin_mm=5.0)
    )


def test_config_message_format():
    with pytest.raises(
        InputError,
        match=re.escape("The 'size' parameter of PreprocessConfig must be an int >= 8. Got 3 instead."),
    ):
        PreprocessConfig(size=3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 64.0}, "'size' parameter .* an int >= 8. Got 64.0"),
        ({"size": True}, "'size' parameter"),
        ({"margin_mm": -1.0}, "'margin_mm' parameter .* >= 0"),
        ({"margin_mm": float("nan")}, "'margin_mm' parameter .* finite"),
        ({"n_slices": 2}, "'n_slices' parameter .* odd int >= 1. Got 2"),
        ({"n_slices": 0}, "'n_slices' parameter"),
        ({"angles_deg": ()}, "'angles_deg' parameter .* non-empty"),
        ({"angles_deg": (0.0, 0.0)}, "'angles_deg' parameter .* distinct"),
        ({"angles_deg": (0.0, float("inf"))}, "'angles_deg' parameter .* finite"),
        (
            {"bottleneck": 10},
            re.escape(
                "'bottleneck' parameter of PreprocessConfig must be an int >= 1 that divides size (64). Got 10"
            ),
        ),
        ({"bottleneck": 0}, "'bottleneck' parameter"),
        (
            {"normalisation": "zscore"},
            "'normalisation' parameter .* one of \\['minmax', 'percentile'\\]. Got 'zscore'",
        ),
        ({"percentiles": (99.0, 1.0)}, "'percentiles' parameter .* 0 <= low < high <= 100"),
        ({"percentiles": (0.0, 101.0)}, "'percentiles' parameter"),
        ({"percentiles": (1.0,)}, "'percentiles' parameter"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(InputError, match=match):
        PreprocessConfig(**kwargs)


def test_config_round_trips_through_json_config():
    cfg = PreprocessConfig(angles_deg=PART2_ANGLES, normalisation="minmax", margin_mm=7.5)
    assert from_dict(PreprocessConfig, to_jsonable(cfg)) == cfg
    with pytest.raises(InputError, match="'n_slices' parameter"):
        from_dict(PreprocessConfig, {"n_slices": 4})


# ------------------------------------------------------------------------------------------------ prepare_lesion
def test_prepare_sphere_shapes_dtypes_and_range():
    image, mask = _sphere()
    cfg = PreprocessConfig(angles_deg=PART1_ANGLES)
    ls = prepare_lesion(image, mask, cfg)
    n = 3 * len(PART1_ANGLES)
    assert isinstance(ls, LesionSlices) and len(ls) == n
    assert ls.image.shape == (n, 64, 64) and ls.image.dtype == np.float32
    assert ls.mask.shape == (n, 64, 64) and ls.mask.dtype == np.bool_
    assert ls.mask_bottleneck.shape == (n, 16, 16) and ls.mask_bottleneck.dtype == np.bool_
    assert ls.slice_index.dtype == np.int64 and ls.angle_deg.dtype == np.float64
    assert np.isfinite(ls.image).all() and ls.image.min() >= 0.0 and ls.image.max() <= 1.0
    assert ls.image.max() == pytest.approx(1.0, abs=0.05)  # the range is used, not squashed
    # slice-major order: the sphere's centre slice 7 and its neighbours, every angle in config order
    np.testing.assert_array_equal(ls.slice_index, np.repeat([6, 7, 8], len(PART1_ANGLES)))
    np.testing.assert_array_equal(ls.angle_deg, np.tile(PART1_ANGLES, 3))
    assert ls.touches_border is False
    assert all(m.any() for m in ls.mask)


def test_prepare_geometry_box_and_pixel_mm():
    image, mask = _sphere()
    margin = 10.0
    ls = prepare_lesion(image, mask, PreprocessConfig(margin_mm=margin))
    z0, z1, y0, y1, x0, x1 = ls.box
    gz = np.flatnonzero(mask.array.any(axis=(1, 2)))
    assert (z0, z1) == (gz[0], gz[-1] + 1)
    assert y1 - y0 == x1 - x0  # square in mm (equal in-plane spacing)
    gy = np.flatnonzero(mask.array.any(axis=(0, 2)))
    extent_mm = (gy[-1] - gy[0] + 1) * SPACING[1]
    side_mm = (y1 - y0) * SPACING[1]
    assert extent_mm + 2 * margin <= side_mm + 1e-9 < extent_mm + 2 * margin + SPACING[1]
    assert ls.pixel_mm == pytest.approx(side_mm / 64)


def test_prepare_mask_area_matches_sphere_cross_section():
    image, mask = _sphere()
    ls = prepare_lesion(image, mask, PreprocessConfig(angles_deg=(0.0, 30.0)))
    for k, dz in zip([6, 7, 8], [-1, 0, 1], strict=True):
        expected_mm2 = np.pi * (RADIUS**2 - (dz * SPACING[0]) ** 2)
        for angle in (0.0, 30.0):
            sel = (ls.slice_index == k) & (ls.angle_deg == angle)
            area_mm2 = ls.mask[sel][0].sum() * ls.pixel_mm**2
            assert area_mm2 == pytest.approx(expected_mm2, rel=0.04)
        source_mm2 = mask.array[k].sum() * SPACING[1] * SPACING[2]
        sel0 = (ls.slice_index == k) & (ls.angle_deg == 0.0)
        assert ls.mask[sel0][0].sum() * ls.pixel_mm**2 == pytest.approx(source_mm2, rel=0.03)


def test_unequal_row_and_column_spacing():
    spacing = (2.0, 0.7, 0.9)
    shape, centre, radius = (13, 50, 40), (6.0, 24.0, 20.0), 7.0
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)))
    image = Volume((100.0 + 100.0 * (r <= radius)).astype(np.float32), spacing=spacing)
    mask = Volume(r <= radius, spacing=spacing)
    ls = prepare_lesion(image, mask, PreprocessConfig(n_slices=1))
    _, _, y0, y1, x0, x1 = ls.box
    side_y, side_x = (y1 - y0) * spacing[1], (x1 - x0) * spacing[2]
    assert abs(side_y - side_x) < max(spacing[1:])  # square in mm to within one voxel
    assert ls.pixel_mm == pytest.approx(np.sqrt(side_y * side_x) / 64)
    assert ls.mask[0].sum() * ls.pixel_mm**2 == pytest.approx(np.pi * radius**2, rel=0.04)


@pytest.mark.parametrize("centre", [(7.0, 22.0, 27.0), (7.0, 20.5, 30.5), (6.0, 31.0, 12.0)])
def test_gtv_centre_lands_on_image_centre(centre):
    image, mask = _sphere(centre=centre)
    ls = prepare_lesion(image, mask, PreprocessConfig())
    m = ls.mask[ls.slice_index == round(centre[0])][0]
    rows, cols = np.nonzero(m)
    box_voxels = ls.box[3] - ls.box[2]
    tol = 0.5 * 64 / box_voxels + 0.1  # the box starts on a whole voxel: half a source voxel at most
    assert rows.mean() == pytest.approx(31.5, abs=tol)
    assert cols.mean() == pytest.approx(31.5, abs=tol)


def test_bright_lesion_is_bright_after_normalisation():
    image, mask = _sphere()
    ls = prepare_lesion(image, mask, PreprocessConfig())
    inside = ls.image[ls.mask].mean()
    outside = ls.image[~ls.mask].mean()
    assert inside > 0.8 and outside < 0.5


def test_part2_rotations_are_exact_quarter_turns():
    image, mask = _sphere(centre=(7.0, 20.0, 30.0), radius=6.0)
    # an asymmetric image so that a wrong rotation sense would show
    yy, xx = np.mgrid[: image.shape[1], : image.shape[2]]
    image = image.with_array(image.array + (2.0 * xx + yy)[None].astype(np.float32))
    ls = prepare_lesion(image, mask, PreprocessConfig(angles_deg=PART2_ANGLES, n_slices=1))
    base_img, base_msk = ls.image[0], ls.mask[0]
    for k in range(1, 4):
        np.testing.assert_array_equal(ls.image[k], np.rot90(base_img, k))
        np.testing.assert_array_equal(ls.mask[k], np.rot90(base_msk, k))


def test_mask_bottleneck_is_block_average_of_mask():
    image, mask = _sphere()
    ls = prepare_lesion(image, mask, PreprocessConfig(angles_deg=(0.0, 45.0)))
    blocks = ls.mask.reshape(len(ls), 16, 4, 16, 4).mean(axis=(2, 4))
    np.testing.assert_array_equal(ls.mask_bottleneck, blocks >= 0.5)
    assert ls.mask_bottleneck.any(axis=(1, 2)).all()


def test_fewer_slices_when_gtv_is_thin_and_touching_first_slice():
    image, mask = _sphere(centre=(0.0, 22.0, 27.0), radius=3.0)  # on slice 0, 2 slices deep at 2 mm
    ls = prepare_lesion(image, mask, PreprocessConfig(n_slices=5))
    gz = np.flatnonzero(mask.array.any(axis=(1, 2)))
    np.testing.assert_array_equal(ls.slice_index, gz)
    assert ls.touches_border is True


def test_prepare_is_deterministic_and_does_not_mutate_input():
    image, mask = _sphere()
    before = image.array.copy()
    cfg = PreprocessConfig(angles_deg=PART1_ANGLES)
    a = prepare_lesion(image, mask, cfg)
    b = prepare_lesion(image, mask, cfg)
    for name in ("image", "mask", "mask_bottleneck", "slice_index", "angle_deg"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.box, a.pixel_mm) == (b.box, b.pixel_mm)
    np.testing.assert_array_equal(image.array, before)


def test_integer_image_and_minmax_normalisation():
    image, mask = _sphere()
    int_image = image.with_array(image.array.astype(np.int16))
    ls = prepare_lesion(int_image, mask, PreprocessConfig(normalisation="minmax"))
    assert ls.image.dtype == np.float32
    # minmax over all the GTV's slices: the selected slices reach close to, but not beyond, both ends
    assert ls.image.min() == 0.0 and 0.95 < ls.image.max() <= 1.0


# ------------------------------------------------------------------------------------------------ exclusions
def _with_mask(image: Volume, mask_array: np.ndarray) -> tuple[Volume, Volume]:
    return image, image.with_array(mask_array)


def test_exclusion_reasons():
    image, mask = _sphere()
    assert exclusion_reason(image, mask) is None

    empty = np.zeros(image.shape, dtype=bool)
    assert exclusion_reason(*_with_mask(image, empty)).startswith("empty GTV")

    tiny = empty.copy()
    tiny[5, 20, 20:23] = True  # three voxels
    tiny[6, 20, 20] = True
    assert MIN_SLICE_VOXELS == 4
    assert exclusion_reason(*_with_mask(image, tiny)).startswith("GTV smaller than one slice")

    border = mask.array.copy()
    border[7, 22, 0:30] = True  # a streak that reaches column 0
    assert exclusion_reason(*_with_mask(image, border)).startswith("GTV on the image border")
    last_row = mask.array.copy()
    last_row[7, 22:, 27] = True
    assert exclusion_reason(*_with_mask(image, last_row)).startswith("GTV on the image border")

    shifted = Volume(mask.array, spacing=SPACING, origin=(1.0, 0.0, 0.0))
    assert exclusion_reason(image, shifted).startswith("mask and image grids differ")
    other_shape = Volume(mask.array[:, :-1], spacing=SPACING)
    reason = exclusion_reason(image, other_shape)
    assert reason.startswith("mask and image grids differ") and "\n" not in reason

    nan_image = image.array.copy()
    nan_image[7, 0, 0] = np.nan
    assert exclusion_reason(image.with_array(nan_image), mask).startswith("image has non-finite values")
    nan_elsewhere = image.array.copy()
    nan_elsewhere[0, 0, 0] = np.nan  # slice 0 holds no GTV and is never used
    assert exclusion_reason(image.with_array(nan_elsewhere), mask) is None


def test_exclusion_reasons_are_one_line_for_oblique_grids():
    image, mask = _sphere()
    oblique = Volume(mask.array, spacing=SPACING, direction=_oblique())
    reason = exclusion_reason(image, oblique)
    assert reason is not None and reason.startswith("mask and image grids differ") and "\n" not in reason


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: np.zeros_like(m), "empty GTV.*Fix: check the mask file"),
        (lambda m: np.pad(m[:, :, 20:], ((0, 0), (0, 0), (0, 20))), "GTV on the image border.*Fix:"),
        (
            lambda m: np.arange(m.size).reshape(m.shape) == 7 * 50 * 56 + 22 * 56 + 27,
            "GTV smaller than one slice",
        ),
    ],
)
def test_prepare_lesion_raises_input_error(make, match):
    image, mask = _sphere()
    bad = image.with_array(make(mask.array))
    with pytest.raises(InputError, match=match) as info:
        prepare_lesion(image, bad)
    assert info.value.fix


def test_prepare_lesion_raises_on_grid_mismatch():
    image, mask = _sphere()
    other = Volume(mask.array, spacing=(2.0, 0.9, 0.8))
    with pytest.raises(InputError, match=r"mask and image grids differ.*spacing") as info:
        prepare_lesion(image, other)
    assert info.value.problem.startswith("mask and image grids differ")


# ------------------------------------------------------------------------------------------------ crop
def test_crop_keeps_world_positions_oblique():
    img, msk = _sphere()
    image = Volume(img.array, spacing=SPACING, origin=(-30.0, 12.0, 7.5), direction=_oblique())
    mask = Volume(msk.array, spacing=SPACING, origin=(-30.0, 12.0, 7.5), direction=_oblique())
    crop_img, crop_msk = crop_to_gtv(image, mask, margin_mm=4.0)
    assert crop_img.same_geometry(crop_msk) and crop_msk.is_mask
    np.testing.assert_allclose(crop_img.direction, image.direction)
    assert crop_img.spacing == image.spacing
    # find the offset from the mask, then check a few voxels map to the same world point and value
    src = image.world_to_index(crop_img.index_to_world([0, 0, 0]))
    offset = np.round(src).astype(int)
    np.testing.assert_allclose(src, offset, atol=1e-9)
    for idx in ([0, 0, 0], [2, 5, 9], [crop_img.shape[0] - 1, crop_img.shape[1] - 1, 3]):
        np.testing.assert_allclose(crop_img.index_to_world(idx), image.index_to_world(np.add(idx, offset)))
        k, j, i = np.add(idx, offset)
        assert crop_img.array[tuple(idx)] == image.array[k, j, i]
    assert crop_msk.array.sum() == msk.array.sum()  # the whole GTV is inside the crop


def test_crop_pads_outside_image_with_crop_minimum_and_false():
    image, mask = _sphere(centre=(7.0, 10.0, 27.0), radius=6.0)  # near row 0, not touching it
    crop_img, crop_msk = crop_to_gtv(image, mask, margin_mm=10.0)
    src0 = np.round(image.world_to_index(crop_img.index_to_world([0, 0, 0]))).astype(int)
    assert src0[1] < 0  # the box reaches above the image
    pad_rows = -src0[1]
    inside = crop_img.array[:, pad_rows:]
    assert np.all(crop_img.array[:, :pad_rows] == inside.min())
    assert not crop_msk.array[:, :pad_rows].any()
    assert crop_msk.array.sum() == mask.array.sum()


def test_crop_rejects_empty_mask():
    image, mask = _sphere()
    with pytest.raises(ValueError, match="mask is empty"):
        crop_to_gtv(image, mask.with_array(np.zeros(mask.shape, dtype=bool)), margin_mm=5.0)


def test_prepare_near_border_pads_to_zero():
    image, mask = _sphere(centre=(7.0, 10.0, 27.0), radius=6.0)
    ls = prepare_lesion(image, mask, PreprocessConfig(margin_mm=10.0))
    assert ls.box[2] < 0
    pad_px = int(-ls.box[2] * 64 / (ls.box[3] - ls.box[2]))
    assert np.all(ls.image[:, : max(pad_px - 1, 1)] == 0.0)


# ------------------------------------------------------------------------------------------------ resample
def test_resample_image_keeps_world_positions_of_a_linear_ramp():
    shape, spacing = (2, 30, 20), (3.0, 0.7, 1.1)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    ramp = Volume((yy * spacing[1] + 2.0 * xx * spacing[2] + 100.0 * zz).astype(np.float32), spacing=spacing)
    out = resample_inplane(ramp, 16, order=1)
    assert out.shape == (2, 16, 16) and out.dtype == np.float32
    np.testing.assert_allclose(out.spacing, (3.0, 0.7 * 30 / 16, 1.1 * 20 / 16))
    # at interior output pixels, the value is the ramp at that pixel's world position
    idx = np.stack(np.meshgrid([0, 1], np.arange(2, 14), np.arange(2, 14), indexing="ij"), axis=-1)
    world = out.index_to_world(idx.reshape(-1, 3))
    src = ramp.world_to_index(world)
    expected = src[:, 1] * spacing[1] + 2.0 * src[:, 2] * spacing[2] + 100.0 * src[:, 0]
    np.testing.assert_allclose(out.array[tuple(idx.reshape(-1, 3).T)], expected, rtol=1e-5)
    # the field of view is unchanged: outer pixel edges coincide
    edge_src = ramp.world_to_index(out.index_to_world([0, -0.5, -0.5]))
    np.testing.assert_allclose(edge_src, [0, -0.5, -0.5], atol=1e-9)


def test_resample_mask_by_coverage_keeps_band_area():
    band = np.zeros((1, 96, 96), dtype=bool)
    band[0, 30:33] = True  # 3 rows at 1 mm
    vol = Volume(band, spacing=(1.0, 1.0, 1.0))
    out = resample_inplane(vol, 64, order=1)
    assert out.is_mask and out.shape == (1, 64, 64)
    area = out.array.sum() * out.spacing[1] * out.spacing[2]
    assert area == pytest.approx(band.sum(), rel=1e-9)


def test_resample_mask_upsampling_keeps_disc_area():
    disc = _disc(40, 11.0, (19.5, 19.5))[None]
    vol = Volume(disc, spacing=(1.0, 0.5, 0.5))
    out = resample_inplane(vol, 64, order=0)
    area = out.array.sum() * out.spacing[1] * out.spacing[2]
    assert area == pytest.approx(disc.sum() * 0.25, rel=0.02)


def test_resample_rejects_bad_arguments():
    vol = Volume(np.zeros((1, 8, 8)), spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="order must be an int from 0 to 5"):
        resample_inplane(vol, 16, order=7)
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        resample_inplane(vol, 0, order=1)


# ------------------------------------------------------------------------------------------------ normalise
def test_normalise_constant_input_gives_zeros():
    for method in ("minmax", "percentile"):
        out = normalise(np.full((3, 4, 5), 7.0), method=method)  # type: ignore[arg-type]
        assert out.dtype == np.float32 and not np.isnan(out).any() and np.all(out == 0.0)


def test_normalise_minmax_percentile_and_mask():
    a = np.arange(101, dtype=np.float64)
    np.testing.assert_allclose(normalise(a, method="minmax"), a / 100.0, rtol=1e-6)
    p = normalise(a, method="percentile", percentiles=(10.0, 90.0))
    assert p[10] == 0.0 and p[90] == 1.0 and p[0] == 0.0 and p[100] == 1.0
    assert p[50] == pytest.approx(0.5)
    ref = a <= 50  # reference range 0..50; values above clip to 1
    m = normalise(a, ref, method="minmax")
    assert m[25] == pytest.approx(0.5) and np.all(m[50:] == 1.0)
    with pytest.raises(ValueError, match="at least one reference value"):
        normalise(a, np.zeros_like(ref), method="minmax")
    with pytest.raises(ValueError, match="method must be one of"):
        normalise(a, method="zscore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ slices
def _areas_to_mask(areas: list[int]) -> np.ndarray:
    m = np.zeros((len(areas), 4, 4), dtype=bool)
    for k, a in enumerate(areas):
        m[k].flat[:a] = True
    return m


@pytest.mark.parametrize(
    ("areas", "n", "expected"),
    [
        ([0, 2, 5, 9, 4, 0, 0], 3, [2, 3, 4]),  # largest-area slice and its neighbours
        ([0, 2, 5, 9, 4, 0, 0], 1, [3]),
        ([0, 2, 5, 9, 4, 0, 0], 5, [1, 2, 3, 4]),  # only slices that hold the GTV
        ([0, 2, 5, 9, 4, 0, 0], 7, [1, 2, 3, 4]),
        ([9, 5, 3, 1], 3, [0, 1, 2]),  # centre on the first slice: the window shifts
        ([4, 9, 9, 1], 1, [1]),  # tie: nearest the centroid (z = 1.30)
        ([1, 9, 9, 4], 1, [2]),  # tie: nearest the centroid (z = 1.70)
        ([3, 0, 0, 9, 0, 6], 3, [0, 3, 5]),  # gaps are skipped; nearest GTV slices
    ],
)
def test_select_slices(areas, n, expected):
    got = select_slices(_areas_to_mask(areas), n)
    assert got.dtype == np.int64
    assert got.tolist() == expected


def test_select_slices_rejects_empty_mask():
    with pytest.raises(ValueError, match="mask is empty"):
        select_slices(np.zeros((3, 4, 4), dtype=bool), 1)


# ------------------------------------------------------------------------------------------------ rotation
def test_rotate_90_equals_rot90():
    rng = np.random.default_rng(0)
    img = rng.random((2, 32, 32))
    msk = np.zeros((2, 32, 32), dtype=bool)
    msk[:, 5:12, 3:20] = True
    out_img, out_msk, angles = rotate_slices(img, msk, [0.0, 90.0, -90.0, 180.0])
    assert out_img.shape == (8, 32, 32) and angles.tolist() == [0.0, 90.0, -90.0, 180.0] * 2
    for i in range(2):
        np.testing.assert_allclose(out_img[4 * i], img[i], rtol=1e-6)
        np.testing.assert_allclose(out_img[4 * i + 1], np.rot90(img[i], 1), rtol=1e-6)
        np.testing.assert_allclose(out_img[4 * i + 2], np.rot90(img[i], -1), rtol=1e-6)
        np.testing.assert_array_equal(out_msk[4 * i + 1], np.rot90(msk[i], 1))
        np.testing.assert_array_equal(out_msk[4 * i + 3], np.rot90(msk[i], 2))


def test_rotate_arbitrary_angle_has_the_sense_of_rot90():
    # an off-centre blob: three 30° turns land where one quarter turn (np.rot90) puts it
    blob = _disc(64, 6.0, (15.0, 40.0))
    img = blob.astype(float)[None]
    out_img, out_msk, _ = rotate_slices(img, blob[None], [30.0])
    for _ in range(2):
        out_img, out_msk, _ = rotate_slices(out_img, out_msk, [30.0])
    target = np.rot90(blob)
    overlap = (out_msk[0] & target).sum() / (out_msk[0] | target).sum()
    assert overlap > 0.9
    np.testing.assert_allclose(np.argwhere(out_msk[0]).mean(0), np.argwhere(target).mean(0), atol=0.5)


def test_rotate_preserves_mask_area_and_zeroes_corners():
    disc = _disc(64, 14.0)
    ellipse = np.zeros_like(disc)
    yy, xx = np.mgrid[:64, :64]
    ellipse = ((yy - 31.5) / 20.0) ** 2 + ((xx - 31.5) / 8.0) ** 2 <= 1.0
    masks = np.stack([disc, ellipse])
    images = np.ones((2, 64, 64))
    out_img, out_msk, _ = rotate_slices(images, masks, [30.0, 45.0])
    for k in range(4):
        assert out_msk[k].sum() == pytest.approx(masks[k // 2].sum(), rel=0.03)
        assert out_img[k, 0, 0] == 0.0 and out_img[k, 31, 31] == pytest.approx(1.0)
        assert out_img[k].min() >= 0.0 and out_img[k].max() <= 1.0 + 1e-6


# ------------------------------------------------------------------------------------------------ bottleneck
def test_downsample_mask_block_average():
    m = np.zeros((4, 4), dtype=bool)
    m[0, 0:2] = True  # top-left block exactly half -> inside
    m[2, 2] = True  # bottom-right block a quarter -> outside
    m[0:2, 2:4] = True  # top-right block full
    np.testing.assert_array_equal(downsample_mask(m, 2), [[True, True], [False, False]])
    stack = np.stack([m, ~m])
    assert downsample_mask(stack, 2).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="divides the mask's size"):
        downsample_mask(m, 3)


def test_sample_like_reproduces_the_gtv_and_image():
    from adaptrt.preprocess import PART1_ANGLES, PreprocessConfig, prepare_lesion, sample_like
    from tests.conftest import sphere_volume

    image, mask = sphere_volume(shape=(12, 40, 40), radius_mm=7.0)
    cfg = PreprocessConfig(angles_deg=PART1_ANGLES, normalisation="minmax")
    ls = prepare_lesion(image, mask, cfg)
    # the GTV carried through sample_like equals the prepared GTV
    np.testing.assert_array_equal(sample_like(mask, ls, kind="mask"), ls.mask)
    # an image carried through and min-max normalised over the crop matches the prepared image at 0 degrees
    raw = sample_like(image, ls, kind="image")
    assert raw.shape == ls.image.shape and raw.dtype == np.float32
    zero = ls.angle_deg == 0
    corr = np.corrcoef(raw[zero].ravel(), ls.image[zero].ravel())[0, 1]
    assert corr > 0.999
