"""Tests of the paired (pre/post) crops of adaptrt.preprocess: one box, one set of slices, one scale."""

from __future__ import annotations

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.preprocess import (
    PART2_ANGLES,
    LesionPair,
    PreprocessConfig,
    normalise,
    paste_back,
    prepare_lesion,
    prepare_pair,
    sample_like,
)
from adaptrt.types import Volume

SPACING = (2.0, 1.0, 1.0)
SHAPE = (14, 56, 56)
PART2 = PreprocessConfig(n_slices=3, angles_deg=PART2_ANGLES)


def _grids() -> list[np.ndarray]:
    return np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")


def _background() -> np.ndarray:
    _, yy, xx = _grids()
    return 100.0 + 30.0 * np.cos(yy / 4.0) + 20.0 * np.sin(xx / 5.0)


def _ball(centre: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(_grids(), centre, SPACING, strict=True)))
    return r <= radius_mm


def _pair(
    post_centre: tuple[float, float, float] = (7.0, 28.0, 28.0), post_radius: float = 8.0
) -> tuple[Volume, Volume, Volume, Volume]:
    """A bright ball (radius 8 mm) on a smooth background, and the same head with the ball changed."""
    bg = _background()
    g1 = _ball((7.0, 28.0, 28.0), 8.0)
    g2 = _ball(post_centre, post_radius)
    return (
        Volume((bg + 200.0 * g1).astype(np.float32), SPACING),
        Volume(g1, SPACING),
        Volume((bg + 200.0 * g2).astype(np.float32), SPACING),
        Volume(g2, SPACING),
    )


def _inside_box(mask: np.ndarray, box: tuple[int, int, int, int, int, int]) -> bool:
    z0, z1, y0, y1, x0, x1 = box
    inner = np.zeros_like(mask)
    inner[max(z0, 0) : z1, max(y0, 0) : y1, max(x0, 0) : x1] = True
    return bool(not (mask & ~inner).any())


# ---------------------------------------------------------------------------------------------- the box
@pytest.mark.parametrize(
    ("centre", "radius"),
    [((7.0, 28.0, 28.0), 5.0), ((7.0, 28.0, 28.0), 12.0), ((7.0, 28.0, 35.0), 8.0)],
    ids=["shrank", "grew", "moved"],
)
def test_box_covers_both_gtvs_and_the_drift(centre: tuple[float, float, float], radius: float) -> None:
    pre, g1, post, g2 = _pair(centre, radius)
    pair = prepare_pair(pre, g1, post, g2, PART2)
    assert _inside_box(g1.array, pair.box) and _inside_box(g2.array, pair.box)
    # the drift region here is the symmetric difference of the two balls: inside the box too
    assert _inside_box(g1.array ^ g2.array, pair.box)
    _, _, y0, y1, x0, x1 = pair.box
    assert (y1 - y0) == (x1 - x0)  # square in mm (1 mm pixels)
    ny = np.flatnonzero((g1.array | g2.array).any(axis=(0, 2)))
    assert y0 <= ny[0] - 10 and y1 >= ny[-1] + 1 + 10  # the 10 mm margin on both sides
    assert len(pair) == 3 * 4
    assert pair.pre_mask.any(axis=(1, 2)).all() and pair.post_mask.any(axis=(1, 2)).all()
    # the region holds both GTVs
    assert not (pair.pre_mask & ~pair.region).any() and not (pair.post_mask & ~pair.region).any()


def test_same_slices_and_rotations_for_pre_and_post() -> None:
    pre, g1, post, g2 = _pair((7.0, 28.0, 31.0), 6.0)
    pair = prepare_pair(pre, g1, post, g2, PART2)
    assert pair.slice_index.tolist() == [6] * 4 + [7] * 4 + [8] * 4
    assert pair.angle_deg.tolist() == list(PART2_ANGLES) * 3
    for i in range(0, len(pair), 4):
        for j, k in enumerate((0, 1, 2, 3)):
            for arr in (pair.pre, pair.post, pair.drift, pair.pre_mask, pair.post_mask, pair.region):
                assert np.array_equal(arr[i + j], np.rot90(arr[i], k=k))
    # unchanged: a lesion that did not change has the single-image crop, slices and scale
    same = prepare_pair(pre, g1, pre, g1, PART2)
    single = prepare_lesion(pre, g1, PART2)
    assert same.box == single.box and np.array_equal(same.slice_index, single.slice_index)
    assert same.scale == single.scale
    # the single-image crop clips to [0, 1] before resampling, the pair does not: equal away from the extremes
    d = np.abs(np.clip(same.pre, 0, 1) - single.image)
    assert np.mean(d < 1e-6) > 0.95 and d.max() < 0.05
    assert not same.drift.any() and not same.region[~same.pre_mask].any()


def test_drift_is_exactly_post_minus_pre() -> None:
    pair = prepare_pair(*_pair((7.0, 29.0, 26.0), 10.0), PART2)
    assert pair.drift.dtype == np.float32 and pair.pre.dtype == np.float32
    assert np.array_equal(pair.drift, pair.post - pair.pre)
    # the ball grew: positive drift where post has GTV and pre has none
    grown = pair.post_mask & ~pair.pre_mask
    assert grown.any() and pair.drift[grown].mean() > 0.3


def test_one_intensity_scale_shows_a_global_brightening() -> None:
    pre, g1, _, _ = _pair()
    brighter = pre.with_array(pre.array * np.float32(1.1))
    pair = prepare_pair(pre, g1, brighter, g1, PreprocessConfig(n_slices=3, angles_deg=(0.0,)))
    low, high = pair.scale
    # +10 % of the source intensity, on the normalised scale
    expected = 0.1 * (pair.pre * (high - low) + low) / (high - low)
    assert np.allclose(pair.drift, expected, atol=1e-4)
    assert pair.drift.mean() > 0.03
    # the scale comes from the first image alone: the same as its own single-image crop
    assert pair.scale == prepare_lesion(pre, g1, PreprocessConfig(n_slices=3)).scale
    # an offset of 0.1 × the scale's range is a drift of exactly 0.1 everywhere in the box (inside the image)
    shifted = pre.with_array(pre.array + np.float32(0.1 * (high - low)))
    pair2 = prepare_pair(pre, g1, shifted, g1, PreprocessConfig(n_slices=3))
    assert np.allclose(pair2.drift, 0.1, atol=1e-4)
    # what separate scales would do: the brightening disappears
    sep = normalise(brighter.array, method="minmax") - normalise(pre.array, method="minmax")
    assert np.abs(sep).max() < 1e-5


def test_values_are_not_clipped() -> None:
    pre, g1, _, _ = _pair()
    pair = prepare_pair(pre, g1, pre.with_array(pre.array * np.float32(2.0)), g1, PART2)
    assert pair.post.max() > 1.5 and pair.pre.max() < 1.2


def test_drift_region_near_the_gtv_extends_the_box_and_far_changes_do_not() -> None:
    pre, g1, _, _ = _pair()
    base = prepare_pair(pre, g1, pre, g1, PART2)
    near = _ball((7.0, 28.0, 43.0), 2.5)  # 7 mm beyond the GTV's edge (radius 8): inside the search region
    far = _ball((7.0, 28.0, 52.0), 2.5)  # 16 mm beyond: outside it
    for blob, grows in ((near, True), (far, False)):
        post = pre.with_array(pre.array + np.float32(150.0) * blob)
        pair = prepare_pair(pre, g1, post, g1, PART2)
        assert (pair.box != base.box) == grows
        assert _inside_box(blob, pair.box) == grows
        assert pair.region.sum() > pair.pre_mask.sum() if grows else pair.region.sum() == pair.pre_mask.sum()
    # with reference="pre" nothing depends on the later image: the single-image box and slices
    post = pre.with_array(pre.array + np.float32(150.0) * near)
    ref_pre = prepare_pair(pre, g1, post, g1, PART2, reference="pre")
    assert ref_pre.box == base.box and np.array_equal(ref_pre.slice_index, base.slice_index)
    # a higher threshold ignores the same blob
    assert prepare_pair(pre, g1, post, g1, PART2, drift_threshold=0.9).box == base.box


def test_all_slices_mode() -> None:
    pre, g1, post, g2 = _pair((7.0, 28.0, 28.0), 11.0)
    pair = prepare_pair(pre, g1, post, g2, PART2, all_slices=True)
    z0, z1 = pair.box[:2]
    assert pair.slice_index.tolist() == list(range(z0, z1))
    assert np.all(pair.angle_deg == 0.0) and len(pair) == z1 - z0
    assert np.array_equal(pair.drift, pair.post - pair.pre)


# ---------------------------------------------------------------------------------------------- bad input
def test_pair_not_co_registered() -> None:
    pre, g1, post, g2 = _pair()
    moved = Volume(post.array, SPACING, origin=(0.0, 3.0, 0.0))
    with pytest.raises(
        InputError,
        match=r"not co-registered: the later image's origin \(0, 3, 0\) mm differs from the first's \(0, 0, 0\) mm",
    ) as e:
        prepare_pair(pre, g1, moved, Volume(g2.array, SPACING, origin=(0.0, 3.0, 0.0)))
    assert e.value.fix is not None and "register the later MRI to the first" in e.value.fix
    assert e.value.field == "post"
    with pytest.raises(InputError, match=r"not co-registered: the later image's shape"):
        prepare_pair(pre, g1, Volume(post.array[:, :50], SPACING), Volume(g2.array[:, :50], SPACING))
    with pytest.raises(InputError, match=r"later image \(post\): mask and image grids differ"):
        prepare_pair(pre, g1, post, Volume(g2.array, (2.0, 1.0, 1.1)))


def test_empty_gtv_at_either_time_point() -> None:
    pre, g1, post, g2 = _pair()
    empty = g1.with_array(np.zeros(SHAPE, dtype=bool))
    with pytest.raises(InputError, match=r"first image \(pre\): empty GTV") as e:
        prepare_pair(pre, empty, post, g2)
    assert e.value.field == "pre"
    with pytest.raises(InputError, match=r"later image \(post\): empty GTV"):
        prepare_pair(pre, g1, post, empty)
    # a complete response at follow-up, when allowed: the post GTV is empty on every sample
    pair = prepare_pair(pre, g1, post, empty, PART2, allow_empty_post=True)
    assert not pair.post_mask.any() and pair.pre_mask.any()


def test_constant_and_non_finite_images() -> None:
    pre, g1, post, g2 = _pair()
    with pytest.raises(InputError, match=r"first image \(pre\): image is constant over the lesion box"):
        prepare_pair(pre.with_array(np.full(SHAPE, 7.0, np.float32)), g1, post, g2)
    with pytest.raises(InputError, match=r"later image \(post\): image is constant over the lesion box"):
        prepare_pair(pre, g1, post.with_array(np.full(SHAPE, 7.0, np.float32)), g2)
    bad = post.array.copy()
    bad[7, 28, 20] = np.nan
    with pytest.raises(InputError, match=r"later image \(post\): image has non-finite values"):
        prepare_pair(pre, g1, post.with_array(bad), g2)
    with pytest.raises(InputError, match=r"first image \(pre\): image has non-finite values"):
        prepare_pair(post.with_array(bad), g1, post, g2)
    with pytest.raises(InputError, match="drift_threshold must be a finite number > 0"):
        prepare_pair(pre, g1, post, g2, drift_threshold=0.0)


def test_gtv_on_the_border_at_the_later_time_point() -> None:
    pre, g1, post, _ = _pair()
    edge = np.zeros(SHAPE, dtype=bool)
    edge[6:9, 20:30, 0:8] = True
    with pytest.raises(InputError, match=r"later image \(post\): GTV on the image border"):
        prepare_pair(pre, g1, post, g1.with_array(g1.array | edge))


# ---------------------------------------------------------------------------------------------- paste back
def test_paste_back_round_trip_in_source_units() -> None:
    pre, g1, post, g2 = _pair((7.0, 28.0, 30.0), 9.0)
    # a smooth pair so that bilinear down- and up-sampling is accurate
    smooth_pre = pre.with_array(_background().astype(np.float32))
    smooth_post = post.with_array((_background() * 1.03 + 2.0).astype(np.float32))
    pair = prepare_pair(smooth_pre, g1, smooth_post, g2, PreprocessConfig(size=64), all_slices=True)
    z0, z1, y0, y1, x0, x1 = pair.box
    assert y0 >= 0 and x0 >= 0 and y1 <= SHAPE[1] and x1 <= SHAPE[2]
    box = np.zeros(SHAPE, dtype=bool)
    box[z0:z1, y0:y1, x0:x1] = True
    interior = box.copy()
    interior[:, [y0, y1 - 1], :] = False
    interior[:, :, [x0, x1 - 1]] = False
    span = float(np.ptp(smooth_pre.array[box]))

    back = paste_back(pair.pre, pair, pre, kind="image", to_source_units=True, fill=np.nan)
    assert back.same_geometry(pre) and back.dtype == np.float32
    assert np.abs(back.array - smooth_pre.array)[interior].max() < 0.02 * span
    assert np.isnan(back.array[~box]).all() and np.isfinite(back.array[box]).all()

    drift = paste_back(pair.drift, pair, pre, kind="drift", to_source_units=True)
    true = smooth_post.array - smooth_pre.array
    assert np.abs(drift.array - true)[interior].max() < 0.02 * float(np.ptp(true[box]))
    assert np.all(drift.array[~box] == 0.0)

    mask = paste_back(pair.post_mask, pair, g2, kind="mask")
    assert mask.is_mask and (mask.array == g2.array).mean() > 0.995

    with pytest.raises(ValueError, match="to_source_units needs an image or drift map"):
        paste_back(pair.post_mask, pair, g2, kind="mask", to_source_units=True)
    rotated = prepare_pair(smooth_pre, g1, smooth_post, g2, PART2)
    with pytest.raises(ValueError, match="only unrotated samples"):
        paste_back(rotated.pre, rotated, pre, kind="image")


def test_sample_like_on_a_pair_matches_its_own_samples() -> None:
    pre, g1, post, g2 = _pair((7.0, 27.0, 30.0), 7.0)
    pair = prepare_pair(pre, g1, post, g2, PART2)
    assert np.array_equal(sample_like(g2, pair, kind="mask"), pair.post_mask)
    low, high = pair.scale
    raw = sample_like(post.with_array(post.array - pre.array), pair, kind="image")
    assert np.allclose(raw / (high - low), pair.drift, atol=1e-5)


# ---------------------------------------------------------------------------------------------- explicit box
def test_prepare_lesion_with_the_first_mri_box() -> None:
    pre, g1, post, g2 = _pair((7.0, 28.0, 28.0), 5.0)
    first = prepare_lesion(pre, g1, PART2)
    # its own box changes nothing
    again = prepare_lesion(pre, g1, PART2, box=first.box)
    assert np.array_equal(again.image, first.image) and np.array_equal(again.mask, first.mask)
    assert again.scale == first.scale

    refit = prepare_lesion(post, g2, PART2)
    later = prepare_lesion(post, g2, PART2, box=first.box, slices=np.unique(first.slice_index))
    assert later.box == first.box != refit.box
    assert np.array_equal(later.slice_index, first.slice_index)
    assert later.pixel_mm == first.pixel_mm and refit.pixel_mm < first.pixel_mm
    # the crop of the given box, normalised by its own statistics, resampled
    z0, z1, y0, y1, x0, x1 = first.box
    assert y0 >= 0 and x0 >= 0 and y1 <= SHAPE[1] and x1 <= SHAPE[2]
    crop = np.asarray(post.array[z0:z1, y0:y1, x0:x1], dtype=np.float64)
    norm = normalise(crop)
    k = int(first.slice_index[0]) - z0
    expected = Volume(norm[k : k + 1], SPACING)
    from adaptrt.preprocess import resample_inplane

    assert np.allclose(later.image[0], resample_inplane(expected, 64, order=1).array[0], atol=1e-6)
    assert later.scale == tuple(float(v) for v in np.percentile(crop, [0.5, 99.5]))


def test_prepare_lesion_box_and_slices_errors() -> None:
    pre, g1, _, _ = _pair()
    first = prepare_lesion(pre, g1, PART2)
    with pytest.raises(InputError, match=r"box slices .* are outside the image's 14 slices"):
        prepare_lesion(pre, g1, PART2, box=(10, 20, 0, 40, 0, 40))
    with pytest.raises(InputError, match="box must be six integers"):
        prepare_lesion(pre, g1, PART2, box=(1, 2, 3))
    with pytest.raises(InputError, match="is empty along an axis"):
        prepare_lesion(pre, g1, PART2, box=(3, 3, 0, 40, 0, 40))
    with pytest.raises(InputError, match="the GTV has no voxel inside the given box"):
        prepare_lesion(pre, g1, PART2, box=(0, 14, 0, 10, 0, 10))
    with pytest.raises(InputError, match=r"slices \[0\] are not all inside the box's slices"):
        prepare_lesion(pre, g1, PART2, box=first.box, slices=[0])


def test_lesion_pair_record_checks_shapes() -> None:
    pair = prepare_pair(*_pair(), PART2)
    assert isinstance(pair, LesionPair) and pair.pixel_mm > 0 and not pair.touches_border
    with pytest.raises(ValueError, match="must have pre's shape"):
        LesionPair(**{**pair.__dict__, "post": pair.post[:2]})
