import numpy as np
import pytest

from adaptrt.simulate.digits import zero_digit_pairs


def test_pairs_shapes_and_drift():
    p = zero_digit_pairs(20, size=32, seed=1)
    assert p.pre.shape == p.post.shape == p.drift.shape == (20, 32, 32)
    np.testing.assert_allclose(p.drift, p.post - p.pre)
    assert p.pre.min() >= 0 and p.pre.max() <= 1


def test_area_follows_scale_squared():
    p = zero_digit_pairs(60, size=48, scale_range=(0.6, 1.3), seed=2)
    # isotropic scaling by s multiplies the area by about s**2
    np.testing.assert_allclose(p.area_ratio, p.scale**2, rtol=0.25)
    assert np.corrcoef(p.area_ratio, p.scale)[0, 1] > 0.95
    shrink = p.scale < 0.9
    assert np.all(p.area_ratio[shrink] < 1.0)


def test_deterministic_and_bad_input():
    a, b = zero_digit_pairs(5, seed=3), zero_digit_pairs(5, seed=3)
    assert np.array_equal(a.post, b.post)
    assert not np.array_equal(a.post, zero_digit_pairs(5, seed=4).post)
    with pytest.raises(ValueError, match="scale_range"):
        zero_digit_pairs(5, scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="size must be"):
        zero_digit_pairs(5, size=4)
