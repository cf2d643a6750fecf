"""Segmentation metrics against hand-computed values on tiny phantoms (anisotropic grids included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist, directed_hausdorff

from adaptrt.metrics.segmentation import (
    confusion_counts,
    dice,
    hd95,
    pcc,
    pcc_weights,
    segmentation_metrics,
    sensitivity,
    specificity,
    summarise,
    surface_voxels,
    tversky,
)


# ------------------------------------------------------------------------------------ overlap metrics
@pytest.fixture
def row_phantom() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """truth: row 0 (10 voxels); pred: 4 of them + 2 in row 1 -> TP 4, FP 2, FN 6; brain: all 100 voxels."""
    truth = np.zeros((1, 10, 10), dtype=bool)
    truth[0, 0, :] = True
    pred = np.zeros_like(truth)
    pred[0, 0, :4] = True
    pred[0, 1, :2] = True
    brain = np.ones_like(truth)
    return pred, truth, brain


def test_counts_and_overlap_metrics_by_hand(row_phantom: tuple[np.ndarray, ...]) -> None:
    pred, truth, brain = row_phantom
    c = confusion_counts(pred, truth, brain)
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (4, 2, 6, 88)
    assert sensitivity(pred, truth) == pytest.approx(0.4)
    assert specificity(pred, truth, brain) == pytest.approx(88 / 90)
    assert dice(pred, truth) == pytest.approx(8 / 16)
    # alpha weighs FP (2), beta weighs FN (6): 4 / (4 + 0.02*2 + 0.98*6)
    assert tversky(pred, truth) == pytest.approx(4 / (4 + 0.04 + 5.88))
    assert tversky(pred, truth, alpha=1.0, beta=0.0) == pytest.approx(4 / 6)  # precision
    assert tversky(pred, truth, alpha=0.0, beta=1.0) == pytest.approx(0.4)  # sensitivity
    assert tversky(pred, truth, alpha=0.5, beta=0.5) == pytest.approx(dice(pred, truth))
    # f = 10 / 100 -> beta = 1 / 1.1, alpha = 0.1 / 1.1
    a, b = 0.1 / 1.1, 1 / 1.1
    assert pcc(pred, truth, brain) == pytest.approx(4 / (4 + a * 2 + b * 6))


def test_pcc_weights_follow_eq1_and_eq2() -> None:
    alpha, beta = pcc_weights(20, 1000)
    assert beta == pytest.approx(1 / 1.02)
    assert alpha == pytest.approx(1 - 1 / 1.02)
    assert beta == pytest.approx(1 - 20 / (1000 + 20))  # eq. 2 is the same number
    assert pcc_weights(0, 10) == (0.0, 1.0)
    # the paper's Tversky weights are the PCC weights of a lesion 2 % of the brain, to two decimals
    assert (round(alpha, 2), round(beta, 2)) == (0.02, 0.98)
    with pytest.raises(ValueError, match="brain_voxels must be"):
        pcc_weights(5, 0)
    with pytest.raises(ValueError, match="lesion_voxels must be"):
        pcc_weights(-1, 10)


def test_specificity_counts_only_within_the_brain(row_phantom: tuple[np.ndarray, ...]) -> None:
    pred, truth, _ = row_phantom
    brain = np.zeros_like(truth)
    brain[0, :5, :] = True  # 50 voxels; negatives inside: 40
    outside = pred.copy()
    outside[0, 9, :] = True  # 10 FP outside the brain: not counted by specificity
    assert specificity(pred, truth, brain) == pytest.approx(38 / 40)
    assert specificity(outside, truth, brain) == pytest.approx(38 / 40)
    assert dice(outside, truth) < dice(pred, truth)  # but counted by Dice (whole array)


def test_all_brain_prediction() -> None:
    brain = np.zeros((3, 6, 6), dtype=bool)
    brain[:, 1:5, 1:5] = True  # 48 voxels
    truth = np.zeros_like(brain)
    truth[1, 2:4, 2:4] = True  # 4 voxels
    m = segmentation_metrics(brain, truth, brain, (3.0, 1.0, 1.0))
    assert m["sensitivity"] == 1.0
    assert m["specificity"] == 0.0
    assert m["dice"] == pytest.approx(8 / 52)
    assert m["volume_cm3"] == pytest.approx(48 * 3.0 / 1000)
    assert m["truth_volume_cm3"] == pytest.approx(4 * 3.0 / 1000)
    # a prediction equal to a truth that fills the brain leaves no negatives: specificity undefined
    assert math.isnan(specificity(brain, brain, brain))


def test_empty_masks_have_stated_values() -> None:
    empty = np.zeros((3, 4, 4), dtype=bool)
    one = empty.copy()
    one[1, 1, 1] = True
    assert hd95(empty, one, (3, 1, 1)) == math.inf
    assert hd95(one, empty, (3, 1, 1)) == math.inf
    assert hd95(empty, empty, (3, 1, 1)) == 0.0
    assert dice(empty, empty) == 1.0 and dice(empty, one) == 0.0
    assert tversky(empty, empty) == 1.0 and tversky(one, empty) == 0.0
    assert math.isnan(sensitivity(one, empty))
    assert sensitivity(empty, one) == 0.0
    m = segmentation_metrics(empty, one, np.ones_like(one), (3, 1, 1))
    assert m["hd95_mm"] == math.inf and m["sensitivity"] == 0.0 and m["pcc"] == 0.0


def test_bad_inputs_raise() -> None:
    a = np.zeros((2, 3, 3), dtype=bool)
    with pytest.raises(ValueError, match="must be a boolean mask"):
        dice(a.astype(np.uint8), a)
    with pytest.raises(ValueError, match="one grid"):
        dice(a, np.zeros((2, 3, 4), dtype=bool))
    with pytest.raises(ValueError, match="spacing_mm must be 3"):
        hd95(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="brain mask is empty"):
        pcc(a, a, a)
    with pytest.raises(ValueError, match="alpha must be"):
        tversky(a, a, alpha=-1)


# ------------------------------------------------------------------------------------ HD95
def test_hd95_single_voxels_on_anisotropic_grid() -> None:
    a = np.zeros((4, 4, 4), dtype=bool)
    b = a.copy()
    a[0, 0, 0] = True
    b[2, 0, 1] = True
    # two slices of 3 mm and one column of 1 mm apart
    assert hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(math.sqrt(36 + 1))
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(math.sqrt(4 + 1))


def test_hd95_boxes_offset_by_one_slice_is_the_slice_spacing() -> None:
    # truth: box of 3 x 4 x 4 voxels; pred: the same box one slice higher, on a 3 x 1 x 1 mm grid.
    # pred surface (44 voxels) to truth surface: 24 at 0 mm, 4 at 1 mm (bottom-face centre, nearest the
    # truth's side ring in-plane), 16 at 3 mm (top face) -> 95th percentile 3 mm; symmetric.
    truth = np.zeros((8, 8, 8), dtype=bool)
    truth[2:5, 2:6, 2:6] = True
    pred = np.roll(truth, 1, axis=0)
    assert np.count_nonzero(surface_voxels(truth)) == 44
    assert hd95(pred, truth, (3.0, 1.0, 1.0)) == pytest.approx(3.0)
    # counted in voxels, the same offset would read as 1 "mm": the anisotropic-grid bug
    assert hd95(pred, truth, (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # the median of the directed distances: 24 zeros of 44 -> 0
    assert hd95(pred, truth, (3.0, 1.0, 1.0), percentile=50) == 0.0


def _brute_force(a: np.ndarray, b: np.ndarray, sp: tuple[float, ...], q: float) -> tuple[float, float]:
    pa = np.argwhere(surface_voxels(a)) * np.asarray(sp)
    pb = np.argwhere(surface_voxels(b)) * np.asarray(sp)
    d = cdist(pa, pb)
    ab, ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(ab, q), np.percentile(ba, q)), float(np.percentile(np.concatenate([ab, ba]), q))


def _blob(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.5)
    return np.asarray(noise > 0.05)


@pytest.mark.parametrize("spacing", [(3.0, 1.0, 1.0), (1.0, 0.7, 2.5)])
def test_hd95_matches_brute_force_pairwise_distances(spacing: tuple[float, float, float]) -> None:
    a, b = _blob((10, 14, 12), 1), _blob((10, 14, 12), 2)
    want_max, want_pooled = _brute_force(a, b, spacing, 95.0)
    assert hd95(a, b, spacing) == pytest.approx(want_max)
    assert hd95(a, b, spacing, combine="pooled") == pytest.approx(want_pooled)
    # percentile 100 is the classical Hausdorff distance between the surfaces (scipy's directed_hausdorff)
    pa = np.argwhere(surface_voxels(a)) * np.asarray(spacing)
    pb = np.argwhere(surface_voxels(b)) * np.asarray(spacing)
    classical = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
    assert hd95(a, b, spacing, percentile=100) == pytest.approx(classical)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecation notice
def test_hd95_matches_monai() -> None:
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    a, b = _blob((10, 14, 12), 3), _blob((10, 14, 12), 4)
    sp = (3.0, 1.0, 1.0)
    got = monai_metrics.compute_hausdorff_distance(
        torch.from_numpy(a[None, None].astype(np.float32)),
        torch.from_numpy(b[None, None].astype(np.float32)),
        include_background=True,
        percentile=95,
        spacing=list(sp),
    )
    assert hd95(a, b, sp) == pytest.approx(float(got.item()), abs=1e-5)


# ------------------------------------------------------------------------------------ summaries
def test_summarise_counts_empty_and_undefined_cases_apart() -> None:
    s = summarise([1.0, 2.0, 3.0, 4.0, math.inf, math.nan])
    assert (s.n, s.n_finite, s.n_inf, s.n_nan) == (6, 4, 1, 1)
    assert s.median == pytest.approx(2.5)
    assert (s.q1, s.q3) == (pytest.approx(1.75), pytest.approx(3.25))
    assert s.mean == pytest.approx(2.5)
    assert s.sd == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert "1 infinite" in s.text() and "1 undefined" in s.text()
    none = summarise([math.inf])
    assert none.n_finite == 0 and math.isnan(none.mean) and "no finite value" in none.text()
