import numpy as np
import pytest

from adaptrt.cohort import mask_volume_mm3, response_label
from adaptrt.types import Volume


def test_mask_volume_uses_spacing():
    m = np.zeros((4, 5, 6), dtype=bool)
    m[1:3, 1:4, 2:5] = True  # 2*3*3 = 18 voxels
    assert mask_volume_mm3(Volume(m, spacing=(3.0, 0.5, 0.5))) == pytest.approx(18 * 0.75)
    with pytest.raises(ValueError, match="boolean mask"):
        mask_volume_mm3(Volume(m.astype(np.uint8), spacing=(1, 1, 1)))


@pytest.mark.parametrize(
    ("first", "follow", "threshold", "responder"),
    [
        (1000.0, 800.0, 0.2, True),  # exactly 20 % smaller counts
        (1000.0, 801.0, 0.2, False),
        (1000.0, 0.0, 0.2, True),  # disappeared
        (1000.0, 1500.0, 0.2, False),
        (1000.0, 600.0, 0.5, False),
        (1000.0, 500.0, 0.5, True),
        (1000.0, 700.0, 0.3, True),
    ],
)
def test_response_label(first, follow, threshold, responder):
    lab = response_label(first, follow, threshold)
    assert lab.responder is responder
    assert lab.ratio == pytest.approx(follow / first)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0.0, 1.0, 0.2), "first-MRI volume must be > 0"),
        ((1.0, -1.0, 0.2), "follow-up volume"),
        ((1.0, 1.0, 1.2), "threshold must be in"),
    ],
)
def test_response_label_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        response_label(*args)
