"""Item 1: recurrence zones on phantoms with known answers, the patient classes, progression types."""

from __future__ import annotations

import numpy as np
import pytest

from adaptrt.seeding import spawn
from adaptrt.simulate.glioblastoma import GlioblastomaConfig, recurrence_pattern, simulate_patient
from adaptrt.target.data import PatientVolumes
from adaptrt.target.pattern import (
    classify_zone,
    lesion_zones,
    new_progression,
    patient_pattern,
    pattern_table,
    progression_type_table,
    zone_threshold_sweep,
)
from adaptrt.types import Volume


def _patient(
    t2l_b: np.ndarray,
    cel_b: np.ndarray,
    t2l_p: np.ndarray,
    cel_p: np.ndarray,
    spacing: tuple[float, float, float],
    *,
    pid: str = "P1",
    treatment: str = "soc",
) -> PatientVolumes:
    shape = t2l_b.shape
    brain = np.ones(shape, dtype=bool)
    z = np.zeros(shape, dtype=bool)
    return PatientVolumes(
        patient_id=pid,
        treatment=treatment,
        ttp_months=6.0,
        row=1,
        reference=Volume(brain, spacing=spacing),
        maps={},
        brain=brain,
        cavity=z,
        cel_baseline=cel_b,
        t2l_baseline=t2l_b,
        cel_progression=cel_p,
        t2l_progression=t2l_p,
        press_box=z,
    )


def _line_phantom() -> PatientVolumes:
    # anisotropic grid: 3 mm slices, 1 mm in-plane; baseline T2L = slices 0-1 (a slab), CEL inside it
    shape, spacing = (40, 4, 4), (3.0, 1.0, 1.0)
    t2l_b = np.zeros(shape, bool)
    t2l_b[:2] = True
    cel_b = np.zeros(shape, bool)
    cel_b[0] = True
    t2l_p = t2l_b.copy()
    t2l_p[5] = True  # 4 slices = 12 mm from the slab: margin zone (<= 20 mm)
    t2l_p[8] = True  # 21 mm: beyond 2 cm
    t2l_p[15] = True  # 42 mm: beyond 2 cm and beyond the 4 cm region
    cel_p = cel_b.copy()
    cel_p[1] = True  # newly enhancing inside the T2L: "inside"
    return _patient(t2l_b, cel_b, t2l_p, cel_p, spacing)


def test_zones_in_mm_on_an_anisotropic_grid() -> None:
    vols = _line_phantom()
    zones = lesion_zones(vols, margin_mm=20.0, region_mm=40.0)
    # slice k is 3 (k - 1) mm from the slab: slices 2..7 within 20 mm, 2..14 within 40 mm
    assert np.flatnonzero(zones.margin[:, 0, 0]).tolist() == list(range(8))
    assert np.flatnonzero(zones.region[:, 0, 0]).tolist() == list(range(15))
    p = patient_pattern(vols, zones, min_zone_percent=10.0)
    assert p.n_new_voxels == 4 * 16  # four planes of 16 voxels
    assert (p.inside_percent, p.margin_percent, p.beyond_percent) == (25.0, 25.0, 50.0)
    assert p.beyond_region_percent == 25.0
    assert p.category == "beyond"
    assert p.new_ml == pytest.approx(64 * 3.0 / 1000.0)
    assert p.new_cel_ml == pytest.approx(16 * 3e-3) and p.new_nel_ml == pytest.approx(48 * 3e-3)
    assert p.progression_type == "t2l"  # neither reaches 1 mL: the larger one


def test_classify_zone_is_the_furthest_zone_with_enough_new_voxels() -> None:
    assert classify_zone(0, 0, 0, min_zone_percent=10) == "none"
    assert classify_zone(80, 12, 8, min_zone_percent=10) == "margin"
    assert classify_zone(80, 12, 8, min_zone_percent=5) == "beyond"
    assert classify_zone(95, 5, 0, min_zone_percent=10) == "inside"
    assert classify_zone(95, 5, 0, min_zone_percent=0) == "margin"
    assert classify_zone(0, 92, 8, min_zone_percent=10) == "margin"


def test_same_as_the_simulators_truth_on_a_simulated_patient() -> None:
    cfg = GlioblastomaConfig(n_patients=1, voxel_mm=4.0, shape=(30, 40, 34))
    sim = simulate_patient(cfg, 0, spawn(11, 1)[0])
    m = sim.masks
    vols = PatientVolumes(
        patient_id=sim.patient_id,
        treatment=sim.treatment,
        ttp_months=sim.ttp_months,
        row=1,
        reference=sim.volume(m["brain"]),
        maps={},
        brain=m["brain"],
        cavity=m["cavity"],
        cel_baseline=m["cel_baseline"],
        t2l_baseline=m["t2l_baseline"],
        cel_progression=m["cel_progression"],
        t2l_progression=m["t2l_progression"],
        press_box=m["press_box"],
    )
    p = patient_pattern(vols, lesion_zones(vols), min_zone_percent=10.0)
    truth = recurrence_pattern(
        m["t2l_baseline"],
        m["cel_baseline"],
        m["t2l_progression"],
        m["cel_progression"],
        spacing_mm=(4.0,) * 3,
    )
    assert p.n_new_voxels == truth.n_new_voxels > 0
    assert p.inside_percent == pytest.approx(truth.inside_percent)
    assert p.margin_percent == pytest.approx(truth.margin_percent)
    assert p.category == truth.category


def test_new_progression_counts_newly_enhancing_voxels_inside_the_t2l() -> None:
    z = np.zeros((3, 3, 3), bool)
    t2l_b = z.copy()
    t2l_b[1] = True
    cel_p = z.copy()
    cel_p[1, 1, 1] = True
    new = new_progression(t2l_b, z, t2l_b, cel_p)
    assert new.sum() == 1 and new[1, 1, 1]


def test_progression_types_and_cohort_tables() -> None:
    shape, sp = (10, 20, 20), (5.0, 5.0, 5.0)  # 0.125 mL per voxel: 8 voxels = 1 mL
    t2l_b = np.zeros(shape, bool)
    t2l_b[4:6, 8:12, 8:12] = True
    z = np.zeros(shape, bool)
    both_t2l, both_cel = t2l_b.copy(), z.copy()
    both_t2l[4:6, 12:16, 8:12] = True  # 32 new NEL voxels = 4 mL
    both_cel[4:6, 8:12, 8:12] = True  # 32 newly enhancing = 4 mL
    pats = [
        patient_pattern(v, lesion_zones(v))
        for v in (
            _patient(t2l_b, z, both_t2l, both_cel, sp, pid="A", treatment="soc"),
            _patient(t2l_b, z, both_t2l, z, sp, pid="B", treatment="aa"),
            _patient(t2l_b, z, t2l_b, both_cel, sp, pid="C", treatment="aa"),
            _patient(t2l_b, z, t2l_b, z, sp, pid="D", treatment="soc"),
        )
    ]
    assert [p.progression_type for p in pats] == ["both", "t2l", "cel", "none"]
    assert [p.category for p in pats] == ["margin", "margin", "inside", "none"]
    types = {r["progression type"]: r for r in progression_type_table(pats)}
    assert types["Both"]["all (n=4)"] == 1 and types["CEL progression"]["aa (n=2)"] == 1
    table = {r["cohort"]: r for r in pattern_table(pats)}
    assert table["all"]["with new progression"] == 3
    assert table["all"]["patients T2L to 2 cm"] == "2 (67 %)"
    # pooled voxel shares: 32 + 32 inside-or-margin for A, 32 margin for B, 32 inside for C
    assert table["all"]["voxels inside % (pooled)"] == pytest.approx(100 * 64 / 128, abs=0.1)
    sweep = zone_threshold_sweep(pats, thresholds=(0.0, 60.0))
    assert sweep[0]["margin %"] == pytest.approx(200 / 3, abs=0.1)
    assert sweep[1]["inside %"] == pytest.approx(200 / 3, abs=0.1)  # A's 50 % margin no longer counts
