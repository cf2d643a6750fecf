"""Uncertainty from K samples and its calibration (issue 11): pure functions on known distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptrt.drift.analyses import check_conditional_labels, core_margin, read_sensitive_fractions
from adaptrt.drift.methods import DriftModel, DriftModelConfig, DriftPrediction
from adaptrt.drift.study import AnalysisConfig
from adaptrt.drift.uncertainty import (
    NOMINAL,
    calibration_curve,
    check_samples,
    coverage,
    ence,
    fit_sigma_scale,
    sample_stats,
)
from adaptrt.errors import InputError


def test_coverage_of_calibrated_gaussian_errors_is_nominal() -> None:
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.05, 0.5, 200_000)
    err = rng.normal(0.0, sd)
    assert coverage(err, sd, 1.0) == pytest.approx(NOMINAL[1], abs=0.005)
    assert coverage(err, sd, 2.0) == pytest.approx(NOMINAL[2], abs=0.003)
    assert NOMINAL[1] == pytest.approx(0.6827, abs=1e-4) and NOMINAL[2] == pytest.approx(0.9545, abs=1e-4)
    curve = calibration_curve(err, sd, n_bins=10)
    assert len(curve) == 10 and ence(curve) < 0.02
    assert all(c["sd_low"] <= c["sd_high"] for c in curve)


def test_sigma_scaling_recovers_an_overconfident_factor() -> None:
    rng = np.random.default_rng(1)
    sd = rng.uniform(0.05, 0.5, 100_000)
    err = rng.normal(0.0, 3.0 * sd)  # the model's SD is 3 times too small
    s = fit_sigma_scale(err, sd)
    assert s == pytest.approx(3.0, rel=0.02)
    assert coverage(err, sd, 1.0) < 0.3  # overconfident before
    assert coverage(err, sd, 1.0, s) == pytest.approx(NOMINAL[1], abs=0.01)
    before, after = ence(calibration_curve(err, sd)), ence(calibration_curve(err, sd, scale=s))
    assert before > 1.5 and after < 0.03
    with pytest.raises(ValueError, match="no validation pixels"):
        fit_sigma_scale(np.zeros(0), np.zeros(0))


class _Noisy:
    """A fake fitted model: post = pre + 0.1 * noise drawn from the seed (so samples differ), drift = post - pre."""

    def predict(
        self, pre: np.ndarray, *, seed: int, eta: float, label: int | None, batch_size: int
    ) -> DriftPrediction:
        rng = np.random.default_rng(seed)
        noise = rng.normal(0.0, 0.1, pre.shape).astype(np.float32)
        return DriftPrediction(post=pre + noise, drift=noise)


def test_sample_stats_groups_k_samples_per_image() -> None:
    pre = np.stack([np.full((8, 8), v, np.float32) for v in (0.0, 0.5, 1.0)])
    st = sample_stats(_Noisy(), pre, 64, seed=3)
    assert st.post_mean.shape == (3, 8, 8) and st.k == 64
    # each image's mean is its own pre (not mixed with the others), the SD is the noise's
    np.testing.assert_allclose(st.post_mean.mean(axis=(1, 2)), [0.0, 0.5, 1.0], atol=0.01)
    assert float(st.post_sd.mean()) == pytest.approx(0.1, rel=0.05)
    np.testing.assert_allclose(st.drift_sd, st.post_sd, atol=1e-6)
    again = sample_stats(_Noisy(), pre, 64, seed=3)
    np.testing.assert_array_equal(again.post_sd, st.post_sd)


@pytest.mark.parametrize(
    ("k", "eta", "field"), [(1, 0.0, "samples"), (2.5, 0.0, "samples"), (4, -0.1, "eta")]
)
def test_bad_samples_or_eta_are_refused_by_name(k: float, eta: float, field: str) -> None:
    with pytest.raises(InputError, match=field):
        check_samples(k, eta)
    with pytest.raises(InputError, match=field):
        AnalysisConfig(samples=k, eta=eta)  # type: ignore[arg-type]


def test_ddim_samples_of_a_real_model_differ_and_eta_adds_spread() -> None:
    rng = np.random.default_rng(0)
    pre = rng.uniform(0, 1, (16, 16, 16)).astype(np.float32)
    cfg = DriftModelConfig(method="method2", widths=(2, 4), iterations=3, batch_size=8, log_every=1)
    model = DriftModel(cfg, seed=0, device="cpu").fit(pre, pre * 0.9)
    s0 = sample_stats(model, pre[:2], 4, seed=1)
    assert float(s0.post_sd.mean()) > 0  # different starting noise gives different samples
    s1 = sample_stats(model, pre[:2], 4, seed=1, eta=1.0)
    assert not np.allclose(s0.post_mean, s1.post_mean)


def test_conditional_labels_missing_or_one_class_are_clear_errors() -> None:
    with pytest.raises(InputError, match="no lesion of the cohort has one"):
        check_conditional_labels([None, None, -1])
    with pytest.raises(InputError, match=r"all 3 labelled lesions .* are poor response"):
        check_conditional_labels([0, 0, None, 0])
    check_conditional_labels([0, 1, None])  # both classes: accepted


def test_core_and_margin_of_a_disk() -> None:
    yy, xx = np.mgrid[:32, :32]
    disk = ((yy - 16) ** 2 + (xx - 16) ** 2 <= 36)[None]
    drift = np.where(disk, -0.5, 0.2).astype(np.float32)
    core, margin = core_margin(drift, disk)
    assert core == pytest.approx(-0.5) and margin == pytest.approx(0.2)


def test_label_dropout_is_a_validated_config_field_and_trains() -> None:
    with pytest.raises(InputError, match="label_dropout"):
        DriftModelConfig(label_dropout=1.0)
    rng = np.random.default_rng(0)
    pre = rng.uniform(0, 1, (8, 16, 16)).astype(np.float32)
    cfg = DriftModelConfig(widths=(2, 4), iterations=3, batch_size=4, n_classes=2, label_dropout=0.5)
    model = DriftModel(cfg, seed=0, device="cpu").fit(pre, pre, labels=np.array([0, 1, 2, 0, 1, 2, 0, 1]))
    a = model.predict(pre[:1], seed=0, label=0).post
    b = model.predict(pre[:1], seed=0, label=1).post
    c = model.predict(pre[:1], seed=0, label=None).post
    assert a.shape == b.shape == c.shape and not np.array_equal(a, b)


def test_sensitive_fractions_read_only_in_the_simulator_format(tmp_path) -> None:  # type: ignore[no-untyped-def]
    man = tmp_path / "manifest.csv"
    man.write_text("x\n")
    assert read_sensitive_fractions(man)[0] == {}
    (tmp_path / "truth").mkdir()
    (tmp_path / "truth" / "lesions.csv").write_text("patient_id,lesion_id,other\nP1,1,3\n")
    got, why = read_sensitive_fractions(man)
    assert got == {} and "resistant_fraction" in why
    (tmp_path / "truth" / "lesions.csv").write_text("patient_id,lesion_id,resistant_fraction\nP1,1,0.25\n")
    got, _ = read_sensitive_fractions(man)
    assert got == {("P1", "1"): pytest.approx(0.75)}
    assert not math.isnan(got[("P1", "1")])


def test_validation_patients_are_carved_from_training_patients_only() -> None:
    from adaptrt.drift.analyses import _carve

    pats = ["a", "a", "b", "c", "c", "d", "e"]
    val = _carve(pats, 0.2, seed=0)
    assert len(val) == 1 and val <= set(pats)
    assert _carve(pats, 0.2, seed=0) == val  # seeded
    assert len(_carve(pats, 0.9, seed=1)) == 4  # always leaves one patient to train on
    assert _carve(["a", "a"], 0.5, seed=0) == set()  # one patient: no validation patient
