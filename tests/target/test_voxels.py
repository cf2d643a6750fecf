"""Items 2-3: voxel categories, medians (MRSI in the PRESS box), signed-rank tests, grouped forests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wilcoxon

from adaptrt.target.data import PatientVolumes
from adaptrt.target.pattern import lesion_zones
from adaptrt.target.voxels import (
    CATEGORIES,
    ForestSettings,
    PatientVoxels,
    category_tests,
    holm,
    patient_folds,
    run_forest,
    summarise_patient,
    voxel_categories,
    voxel_table,
)
from adaptrt.types import Volume


def _phantom() -> PatientVolumes:
    """A 1-D-like phantom on a 2 mm grid: slices of known category along z."""
    shape, sp = (40, 3, 3), (2.0, 2.0, 2.0)
    brain = np.ones(shape, bool)
    brain[39] = False  # outside the brain
    t2l_b = np.zeros(shape, bool)
    t2l_b[10:14] = True
    cel_b = np.zeros(shape, bool)
    cel_b[10:12] = True
    t2l_p = t2l_b.copy()
    t2l_p[14:16] = True  # NAV -> NEL (2 slices)
    cel_p = cel_b.copy()
    cel_p[12:13] = True  # NEL -> CEL (1 slice)
    cel_p[16:17] = True  # NAV -> CEL (1 slice)
    t2l_p |= cel_p
    cavity = np.zeros(shape, bool)
    cavity[8] = True
    press = np.zeros(shape, bool)
    press[:16] = True
    z = np.arange(shape[0], dtype=np.float32)[:, None, None] * np.ones(shape, np.float32)
    maps = {"nADC": z.copy(), "CNI": np.where(press, z, 0.0).astype(np.float32)}
    return PatientVolumes(
        patient_id="P1",
        treatment="soc",
        ttp_months=5.0,
        row=1,
        reference=Volume(brain, spacing=sp),
        maps=maps,
        brain=brain,
        cavity=cavity,
        cel_baseline=cel_b,
        t2l_baseline=t2l_b,
        cel_progression=cel_p,
        t2l_progression=t2l_p,
        press_box=press,
    )


def test_categories_on_a_phantom_within_the_region() -> None:
    vols = _phantom()
    zones = lesion_zones(vols, margin_mm=4.0, region_mm=20.0)  # region: slices 0..23 (10 slices of 2 mm)
    codes = voxel_categories(vols, zones)[:, 0, 0]
    names = {c: [int(k) for k in np.flatnonzero(codes == i)] for i, c in enumerate(CATEGORIES)}
    assert names["nav_nel"] == [14, 15]
    assert names["nav_cel"] == [16]
    assert names["nel_cel"] == [12]
    # stable NAV: region slices 0..23 minus the lesion 10..13, the cavity 8 and the progressed 14..16
    assert names["nav_nav"] == [*range(0, 8), 9, *range(17, 24)]
    assert codes[24] == -1 and codes[10] == -1  # outside the region; CEL at baseline is in no category


def test_medians_need_min_voxels_and_mrsi_uses_the_press_box_only() -> None:
    vols = _phantom()
    zones = lesion_zones(vols, margin_mm=4.0, region_mm=20.0)
    pv = summarise_patient(
        vols, zones, ["nADC", "CNI"], min_voxels=5, max_voxels_per_class=10, rng=np.random.default_rng(0)
    )
    assert pv.counts == {"nav_nav": 16 * 9, "nav_nel": 18, "nav_cel": 9, "nel_cel": 9}
    nav = [*range(0, 8), 9, *range(17, 24)]
    assert pv.medians["nav_nav"]["nADC"] == pytest.approx(float(np.median(nav)))
    # CNI only in the box (slices < 16): the NAV voxels 0..7, 9
    assert pv.medians["nav_nav"]["CNI"] == pytest.approx(float(np.median([*range(0, 8), 9])))
    assert pv.medians["nav_nel"]["CNI"] == pytest.approx(14.5)
    assert "CNI" not in pv.medians["nav_cel"]  # slice 16 lies outside the box: no in-box voxel
    assert pv.medians["nav_cel"]["nADC"] == 16.0
    # sample: at most 10 per category, features = maps + in-box indicator
    assert np.bincount(pv.codes, minlength=4).tolist() == [10, 10, 9, 9]
    assert pv.features.shape == (38, 3) and pv.features.dtype == np.float32
    assert set(np.unique(pv.features[:, 2])) <= {0.0, 1.0}
    inbox = pv.features[:, 2] == 1
    assert np.all(pv.features[inbox, 0] < 16) and np.all(pv.features[~inbox, 1] == 0)


def test_holm_against_hand_computed_values() -> None:
    got = holm([0.01, 0.04, 0.03, None])
    assert got[3] is None and got[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.9]) == pytest.approx([0.4, 0.9])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


def _pv(pid: str, treatment: str, stable: float, progressed: float) -> PatientVoxels:
    med = {c: {"m": progressed} for c in CATEGORIES}
    med["nav_nav"] = {"m": stable}
    return PatientVoxels(
        pid,
        treatment,
        5.0,
        dict.fromkeys(CATEGORIES, 10),
        med,
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.int8),
    )


def test_category_tests_are_paired_signed_rank_with_holm() -> None:
    rng = np.random.default_rng(1)
    stable = rng.normal(1.0, 0.3, 12)
    pats = [_pv(f"P{i}", "soc" if i % 2 else "aa", s, s + 0.2 + 0.01 * i) for i, s in enumerate(stable)]
    rows = category_tests(pats, ["m"], min_pairs=5)
    pooled = [r for r in rows if r["cohort"] == "all"]
    assert len(pooled) == 3 and {r["cohort"] for r in rows} == {"all", "aa", "soc"}
    a = np.array([p.medians["nav_nav"]["m"] for p in pats])
    b = np.array([p.medians["nav_nel"]["m"] for p in pats])
    assert pooled[0]["p"] == pytest.approx(float(wilcoxon(b, a).pvalue))
    # every patient's progressed median is higher: the exact two-sided p of n = 12 is 2 / 2**12
    assert pooled[0]["p"] == pytest.approx(2 / 2**12)
    assert pooled[0]["p_holm"] == pytest.approx(min(1.0, 3 * pooled[0]["p"]))
    assert pooled[0]["significance"] == "**"  # Holm: 3 x 2 / 4096 = 0.0015
    # an unpaired test would not see this: the shift is small against the spread between patients
    assert pooled[0]["median_difference"] == pytest.approx(float(np.median(b - a)))
    few = category_tests(pats[:3], ["m"], min_pairs=5)
    assert few[0]["p"] is None and few[0]["p_holm"] is None and few[0]["significance"] == ""


def test_patient_folds_are_grouped_stratified_and_cover_everyone() -> None:
    treatments = ["soc"] * 10 + ["aa"] * 6 + ["enza"] * 5
    folds, notes = patient_folds(treatments, 5, seed=0)
    assert notes == [] and len(folds) == 5
    allp = np.concatenate(folds)
    assert sorted(allp.tolist()) == list(range(21))  # each patient in exactly one test fold
    for f in folds:
        assert sum(treatments[i] == "soc" for i in f) == 2
    folds3, notes3 = patient_folds(["a", "a", "b", "b"], 5, seed=0)
    assert len(folds3) == 4 and sorted(np.concatenate(folds3).tolist()) == [0, 1, 2, 3] and notes3


def _table(n_patients: int, signal: float, seed: int) -> object:
    rng = np.random.default_rng(seed)
    pats = []
    for i in range(n_patients):
        codes = np.repeat(np.array([0, 1, 2, 3], np.int8), [60, 20, 10, 10])
        y = codes > 0
        f = rng.normal(size=(codes.size, 3)).astype(np.float32)
        f[:, 0] += signal * y + rng.normal(0, 0.5)  # per-patient offset: patients differ
        f[:, 2] = rng.random(codes.size) < 0.7
        pats.append(
            PatientVoxels(
                f"P{i:02d}", ["soc", "aa"][i % 2], float(3 + i), dict.fromkeys(CATEGORIES, 1), {}, f, codes
            )
        )
    return voxel_table(pats, ["a", "b"])


def test_forest_learns_a_planted_signal_and_is_at_chance_without_one() -> None:
    settings = ForestSettings(n_estimators=30, permutation_repeats=2, n_jobs=1, seed=0)
    good = run_forest(_table(10, 3.0, 0), "cel", None, settings)  # type: ignore[arg-type]
    assert good.mean_auc is not None and good.mean_auc > 0.9 and good.beats_chance
    assert len(good.folds) == 5 and all(f.auc is not None for f in good.folds)
    assert sorted(p for f in good.folds for p in f.test_patients) == [f"P{i:02d}" for i in range(10)]
    assert good.n_positive == 10 * 20 and good.n_negative == 10 * 60
    assert max(good.permutation, key=lambda k: good.permutation[k]) == "a"
    assert max(good.impurity, key=lambda k: good.impurity[k]) == "a"
    null = run_forest(_table(10, 0.0, 1), "nel", None, settings, importance=False)  # type: ignore[arg-type]
    assert null.mean_auc is not None and abs(null.mean_auc - 0.5) < 0.15 and not null.permutation
    inside = run_forest(
        _table(10, 3.0, 0),
        "cel",
        [0, 1, 2, 3, 4, 5],
        ForestSettings(n_estimators=20, press_box="inside", n_jobs=1),
        importance=False,
    )  # type: ignore[arg-type]
    assert inside.feature_names == ("a", "b") and inside.n_patients == 6 and len(inside.folds) == 5
