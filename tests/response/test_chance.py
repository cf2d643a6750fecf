"""The chance reference of the response study: permutation null band, corrected intervals, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptrt.response.chance import (
    NullBand,
    auc_verdicts,
    cam_verdicts,
    corrected_interval,
    explained_class,
    permutation_null,
    permutation_nulls,
    pixel_features,
)
from adaptrt.splits import grouped_splits


def _cohort(n: int = 40, signal: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int64)
    x = rng.normal(size=(n, 12))
    x[:, 0] += signal * y
    groups = np.arange(n) // 2
    splits = grouped_splits(y, groups, n_trials=6, test_size=0.25, seed=seed)
    return x, y, splits


def test_corrected_interval_by_hand():
    v = [0.5, 0.7, 0.6, 0.6]
    m, lo, hi = corrected_interval(v, 0.25)
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * math.sqrt((1 / 4 + 0.25) * np.var(v, ddof=1))
    assert m == pytest.approx(0.6) and hi - m == pytest.approx(half) and m - lo == pytest.approx(half)
    assert math.isnan(corrected_interval([0.7], 0.25)[1])
    assert math.isnan(corrected_interval([], 0.25)[0])


def test_null_band_contains_half_and_is_reproducible():
    x, y, splits = _cohort()
    nb = permutation_null({"gradients": (x, x), "pixels": (x, x)}, y, splits, n_permutations=12, seed=1)
    assert nb.low < 0.5 < nb.high and nb.low <= nb.median <= nb.high
    assert set(nb.values) == {"gradients", "pixels"} and all(v.shape == (12,) for v in nb.values.values())
    again = permutation_null({"gradients": (x, x), "pixels": (x, x)}, y, splits, n_permutations=12, seed=1)
    assert np.array_equal(again.values["pixels"], nb.values["pixels"])
    par = permutation_null({"pixels": (x, x)}, y, splits, n_permutations=12, seed=1, n_jobs=2)
    np.testing.assert_allclose(par.values["pixels"], nb.values["pixels"])
    with pytest.raises(ValueError, match="n_permutations must be >= 1"):
        permutation_null({"pixels": (x, x)}, y, splits, n_permutations=0)


def test_null_keeps_the_true_test_labels():
    """Only the training labels are permuted: a test set that carries the label (as the second MRI carries
    the responders' early shrinkage) spreads the null of a model that learned nothing, instead of hiding it."""
    rng = np.random.default_rng(0)
    n = 40
    y = (np.arange(n) % 2).astype(np.int64)
    x_train = rng.normal(size=(n, 1))  # nothing to learn
    x_test = y[:, None] + 0.01 * rng.normal(size=(n, 1))  # the test images give the label away
    splits = grouped_splits(y, np.arange(n) // 2, n_trials=1, test_size=0.25, seed=0)
    nb = permutation_null({"pixels": (x_train, x_test)}, y, splits, n_permutations=40, seed=0)
    v = nb.values["pixels"]
    v = v[np.isfinite(v)]
    # one trial, one feature: a model fitted to permuted labels gets AUC ~0 or ~1 on the true test labels
    # (with permuted test labels as well it would scatter around 0.5)
    assert np.mean(np.abs(v - 0.5) > 0.4) > 0.8
    assert nb.low < 0.1 and nb.high > 0.9


def test_each_fit_is_scored_on_true_and_permuted_test_labels_by_brute_force():
    """values: the fit on permuted training labels scored on the true test labels; values_permuted_test: the
    same fit on the permuted test labels (the classical test); the verdicts' band is their envelope."""
    from sklearn.metrics import roc_auc_score

    from adaptrt.response.chance import pixel_model
    from adaptrt.seeding import as_generator

    x, y, splits = _cohort(n=24)
    nb = permutation_null({"pixels": (x, x[:, ::-1])}, y, splits, n_permutations=4, seed=3)
    rng = as_generator(3)
    for i, yp in enumerate([rng.permutation(y) for _ in range(4)]):
        true, perm = [], []
        for s in splits:
            if yp[s.train].min() == yp[s.train].max():
                continue
            p = pixel_model().fit(x[s.train], yp[s.train]).predict_proba(x[s.test][:, ::-1])[:, 1]
            true.append(roc_auc_score(y[s.test], p))
            if yp[s.test].min() != yp[s.test].max():
                perm.append(roc_auc_score(yp[s.test], p))
        assert nb.values["pixels"][i] == pytest.approx(np.mean(true))
        assert nb.values_permuted_test["pixels"][i] == pytest.approx(np.mean(perm))
    for vals, band in ((nb.values, nb.band_true_test), (nb.values_permuted_test, nb.band_permuted_test)):
        np.testing.assert_allclose(band, np.quantile(vals["pixels"], [0.05, 0.95]))
    assert nb.low == min(nb.band_true_test[0], nb.band_permuted_test[0])
    assert nb.high == max(nb.band_true_test[1], nb.band_permuted_test[1])


def test_one_fit_serves_every_test_set():
    x, y, splits = _cohort()
    x2 = x + np.random.default_rng(5).normal(size=x.shape)
    both = permutation_nulls(
        {"pixels": (x, {"mri2": x2, "mri1": x})}, y, splits, n_permutations=6, seed=2, n_jobs=2
    )
    for key, xt in (("mri2", x2), ("mri1", x)):
        one = permutation_null({"pixels": (x, xt)}, y, splits, n_permutations=6, seed=2)
        np.testing.assert_allclose(both[key].values["pixels"], one.values["pixels"])
        np.testing.assert_allclose(
            both[key].values_permuted_test["pixels"], one.values_permuted_test["pixels"]
        )
        assert both[key].observed == pytest.approx(one.observed)
    with pytest.raises(ValueError, match="same, non-empty test sets"):
        permutation_nulls(
            {"pixels": (x, {"mri2": x2}), "gradients": (x, {"mri1": x})}, y, splits, n_permutations=2
        )


def test_a_strong_signal_is_above_the_null_and_verdicts_say_so():
    x, y, splits = _cohort(signal=3.0)
    nb = permutation_null({"gradients": (x, x)}, y, splits, n_permutations=30, seed=0)
    assert nb.observed["gradients"] > nb.high
    rows = [
        {"trial": s.trial, "model": "good", "test_set": "mri2", "auc": 0.95 + 0.01 * (s.trial % 2)}
        for s in splits
    ]
    rows += [
        {"trial": s.trial, "model": "bad", "test_set": "mri2", "auc": 0.05 + 0.01 * (s.trial % 2)}
        for s in splits
    ]
    rows += [{"trial": s.trial, "model": "coin", "test_set": "mri2", "auc": 0.5} for s in splits]
    # a mean above the null band from trials that disagree wildly: its corrected interval includes 0.5
    rows += [
        {"trial": s.trial, "model": "noisy", "test_set": "mri2", "auc": 0.99 if s.trial % 2 else 0.45}
        for s in splits
    ]
    names = {"good": "G", "bad": "B", "coin": "C", "noisy": "N"}
    v = {r["model"]: r for r in auc_verdicts(rows, splits, nb, names)}
    assert v["noisy"]["mean_auc"] > nb.high and v["noisy"]["ci_low"] < 0.5
    assert v["noisy"]["verdict"] == "at chance" and "includes 0.5" in v["noisy"]["sentence"]
    assert v["good"]["verdict"] == "above chance" and v["good"]["sentence"].startswith("G: above chance")
    assert v["bad"]["verdict"] == "below chance"
    assert v["coin"]["verdict"] == "at chance"
    no_null = auc_verdicts(rows, splits, None, {"good": "G"})
    assert (
        no_null[0]["verdict"] == "above chance" and "0.5 (its corrected interval)" in no_null[0]["sentence"]
    )


def test_cam_verdicts_use_the_truth_fraction_as_chance():
    _, _, splits = _cohort()
    rows = []
    for s in splits:
        for k in range(3):
            rows.append(
                {
                    "trial": s.trial,
                    "method": "pixelwise",
                    "target": "true",
                    "label": 0,
                    "auc": 0.5 + 0.01 * ((k + s.trial) % 3 - 1),
                    "pointing_game": 1.0,
                    "mass_in_truth": 0.3 + 0.01 * k,
                    "truth_fraction": 0.3,
                }
            )
    out = {r["score"]: r for r in cam_verdicts(rows, splits, methods=["pixelwise"])}
    assert {r["explains"] for r in cam_verdicts(rows, splits, methods=["pixelwise"])} == {"non-response"}
    assert out["auc"]["verdict"] == "at chance" and out["auc"]["chance"] == 0.5
    assert out["pointing_game"]["chance"] == pytest.approx(0.3)
    assert out["pointing_game"]["verdict"] == "above chance"
    assert out["mass_in_truth"]["excess"] == pytest.approx(0.01)


def test_cams_are_grouped_by_the_class_they_explain():
    """The true-class CAM of a non-responder and the other-class CAM of a responder both explain
    non-response: they are pooled; a responder's true-class CAM explains response."""
    assert explained_class(0, "true") == "non-response" and explained_class(1, "other") == "non-response"
    assert explained_class(1, "true") == "response" and explained_class(0, "other") == "response"
    _, _, splits = _cohort()
    rows = []
    for s in splits:
        for label in (0, 1):
            for target in ("true", "other"):
                # a network that localises: non-response evidence on the resistant tissue, response away from it
                auc = 0.8 if explained_class(label, target) == "non-response" else 0.2
                rows.append(
                    {"trial": s.trial, "method": "gradcam", "target": target, "label": label, "auc": auc}
                )
    out = {r["explains"]: r for r in cam_verdicts(rows, splits, methods=["gradcam"])}
    assert (
        out["non-response"]["mean"] == pytest.approx(0.8) and out["non-response"]["verdict"] == "above chance"
    )
    assert out["response"]["mean"] == pytest.approx(0.2) and out["response"]["verdict"] == "below chance"
    assert out["non-response"]["n_lesion_cams"] == 2 * len(splits)


def test_pixel_features_are_block_means():
    img = np.arange(64 * 64, dtype=np.float32).reshape(1, 64, 64)
    f = pixel_features([img, img])
    assert f.shape == (2, 256)
    assert f[0, 0] == pytest.approx(img[0, :4, :4].mean())
    assert isinstance(NullBand(0.4, 0.6, 0.5, 1, ("pixels",), {}, {}), NullBand)
