"""CTV comparison: composite lesion, per-patient rows, summaries, Wilcoxon conventions, equal volume."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptrt.target.compare import (
    composite_lesion,
    coverage_at_volume,
    coverage_volume_curve,
    equal_volume_ctv,
    evaluate_ctvs,
    family_curves,
    margin_for_volume,
    new_progression,
    pooled_curve,
    summarise_ctvs,
    wilcoxon_ctvs,
    wilcoxon_paired,
)
from adaptrt.target.ctv import CTV, margin_ctv, rtog_ctv
from adaptrt.target.figures_ctv import contour_overlay, coverage_volume_figure, metric_boxplots

SP = (3.0, 1.0, 1.0)
SHAPE = (9, 31, 31)


def _masks(shift: int = 0) -> dict[str, np.ndarray]:
    z = np.zeros(SHAPE, dtype=bool)
    t2l_b, cel_b, t2l_p, cel_p, cavity = z.copy(), z.copy(), z.copy(), z.copy(), z.copy()
    t2l_b[4, 13:18, 13:18] = True  # 25 voxels
    cel_b[4, 15, 15] = True
    cavity[4, 14, 14] = True
    t2l_p[4, 15, 13 + 8 + shift : 13 + 11 + shift] = True  # 3 new voxels, 4-6 mm beyond T2L (shift 0)
    brain = np.ones(SHAPE, dtype=bool)
    return {
        "brain": brain,
        "cavity": cavity,
        "cel_baseline": cel_b,
        "t2l_baseline": t2l_b,
        "cel_progression": cel_p,
        "t2l_progression": t2l_p,
    }


def test_composite_and_new_progression() -> None:
    m = _masks()
    comp = composite_lesion(m)
    assert comp.sum() == 25 + 3
    new = new_progression(m)
    assert new.sum() == 3 and not (new & m["t2l_baseline"]).any()
    with pytest.raises(KeyError, match="cel_progression"):
        composite_lesion({k: v for k, v in m.items() if k != "cel_progression"})


def test_evaluate_rows_for_any_number_of_ctvs() -> None:
    m = _masks()
    lesion = composite_lesion(m)
    rtog = rtog_ctv(m["t2l_baseline"], m["cel_baseline"], m["brain"], SP)
    gtv = CTV("GTV", m["t2l_baseline"], SP, "T2L only")
    dl = CTV("DL", lesion, SP, "a perfect third CTV")
    rows = evaluate_ctvs([rtog, gtv, dl], lesion, m["brain"], patient_id="P1", extra={"treatment": "soc"})
    assert [r["ctv"] for r in rows] == ["RTOG", "GTV", "DL"]
    by = {r["ctv"]: r for r in rows}
    assert by["RTOG"]["sensitivity"] == 1.0
    assert by["GTV"]["sensitivity"] == pytest.approx(25 / 28)
    assert by["DL"]["dice"] == 1.0 and by["DL"]["hd95_mm"] == 0.0
    assert by["GTV"]["specificity"] == 1.0
    assert by["RTOG"]["specificity"] < 1.0
    assert all(r["treatment"] == "soc" and r["patient_id"] == "P1" for r in rows)
    with pytest.raises(ValueError, match="unique"):
        evaluate_ctvs([gtv, gtv], lesion, m["brain"], patient_id="P1")


def test_summary_and_wilcoxon_over_patients() -> None:
    rows = []
    for p in range(7):
        for name, sens in (("A", 0.9 + 0.01 * p), ("B", 0.5 + 0.02 * p)):
            rows.append(
                {
                    "patient_id": f"P{p}",
                    "ctv": name,
                    "sensitivity": sens,
                    "hd95_mm": math.inf if p == 0 else 5.0,
                }
            )
    summ = summarise_ctvs(rows, metrics=("sensitivity", "hd95_mm"))
    a_hd = next(s for s in summ if s["ctv"] == "A" and s["metric"] == "hd95_mm")
    assert a_hd["n_inf"] == 1 and a_hd["n_finite"] == 6 and a_hd["median"] == 5.0
    tests = wilcoxon_ctvs(rows, metrics=("sensitivity", "hd95_mm"))
    sens = next(t for t in tests if t["metric"] == "sensitivity")
    assert (sens["ctv_a"], sens["ctv_b"], sens["n"]) == ("A", "B", 7)
    assert sens["p"] == pytest.approx(2 / 2**7)  # every difference positive: exact two-sided p = 2 / 2^7
    hd = next(t for t in tests if t["metric"] == "hd95_mm")
    assert hd["n_dropped"] == 1 and hd["n_zero"] == 6 and hd["p"] == 1.0
    assert "every difference is zero" in hd["note"]


def test_wilcoxon_small_samples_and_empty() -> None:
    few = wilcoxon_paired([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert few["p"] == pytest.approx(2 / 32) and "cannot fall below 0.05" in few["note"]
    none = wilcoxon_paired([math.nan], [1.0])
    assert math.isnan(none["p"]) and none["n"] == 0


def test_coverage_volume_curve_against_margin_ctvs() -> None:
    m = _masks()
    base = m["t2l_baseline"] | m["cel_baseline"]
    curve = coverage_volume_curve(base, new_progression(m), m["brain"], SP, range(0, 11), family="RTOG-style")
    # new voxels at 4, 5, 6 mm from the T2L edge (x = 17 is its last column)
    assert curve.coverage[[3, 4, 5, 6, 10]].tolist() == [
        0.0,
        pytest.approx(1 / 3),
        pytest.approx(2 / 3),
        1.0,
        1.0,
    ]
    for mm in (0, 3, 7):
        ctv = margin_ctv(base, m["brain"], SP, float(mm), name="x", definition="x")
        assert curve.volume_cm3[mm] == pytest.approx(ctv.volume_cm3)
    assert np.all(np.diff(curve.volume_cm3) >= 0)
    assert coverage_at_volume(curve, curve.volume_cm3[5]) == pytest.approx(2 / 3)
    mid = (curve.volume_cm3[4] + curve.volume_cm3[5]) / 2
    assert coverage_at_volume(curve, mid) == pytest.approx(0.5)
    assert math.isnan(coverage_at_volume(curve, 0.0))


def test_family_curves_and_pooling() -> None:
    a = family_curves(_masks(), SP, range(0, 21), patient_id="A")
    b = family_curves(_masks(shift=3), SP, range(0, 21), patient_id="B")
    assert set(a) == {"RTOG", "EORTC"}
    assert np.all(a["EORTC"].volume_cm3 <= a["RTOG"].volume_cm3)  # the EORTC base is smaller
    pooled = pooled_curve([a["RTOG"], b["RTOG"]])
    assert pooled.n_patients == 2 and pooled.new_voxels == 6
    np.testing.assert_allclose(pooled.coverage, (a["RTOG"].coverage + b["RTOG"].coverage) / 2)
    no_new = coverage_volume_curve(
        _masks()["t2l_baseline"], np.zeros(SHAPE, bool), np.ones(SHAPE, bool), SP, range(0, 21), family="x"
    )
    assert np.all(np.isnan(no_new.coverage))
    assert pooled_curve([a["RTOG"], no_new]).n_patients == 1


def test_margin_for_volume_finds_the_nearest_step() -> None:
    m = _masks()
    base = m["t2l_baseline"]
    target = margin_ctv(base, m["brain"], SP, 7.0, name="t", definition="t").volume_cm3
    found = margin_for_volume(base, target, brain=m["brain"], spacing_mm=SP)
    assert found.reachable and found.volume_cm3 == pytest.approx(target)
    ctv = margin_ctv(base, m["brain"], SP, found.margin_mm, name="t", definition="t")
    assert ctv.volume_cm3 == pytest.approx(target)
    small = margin_for_volume(base, 0.001, brain=m["brain"], spacing_mm=SP)
    assert not small.reachable and small.margin_mm == 0.0
    eq, f2 = equal_volume_ctv(base, target, brain=m["brain"], spacing_mm=SP, name="RTOG@DL")
    assert eq.name == "RTOG@DL" and eq.volume_cm3 == pytest.approx(target) and f2 == found


def test_figures_draw_what_they_say() -> None:
    import matplotlib.pyplot as plt

    m = _masks()
    lesion = composite_lesion(m)
    rtog = rtog_ctv(m["t2l_baseline"], m["cel_baseline"], m["brain"], SP, margin_mm=5.0)
    rows = evaluate_ctvs([rtog, CTV("EORTC", m["t2l_baseline"], SP, "x")], lesion, m["brain"], patient_id="P")
    rows = [{**r, "patient_id": f"P{i}"} for i in range(3) for r in rows]
    fig = metric_boxplots(rows, metrics=("sensitivity", "hd95_mm"))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("RTOG" in lab and "n = 3" in lab for lab in labels)
    assert "mm" in fig.axes[1].get_ylabel()
    plt.close(fig)
    curves = family_curves(m, SP, range(0, 11), patient_id="P")
    fig = coverage_volume_figure({"RTOG-style": [curves["RTOG"]], "EORTC-style": [curves["EORTC"]]})
    ax = fig.axes[0]
    assert "cm³" in ax.get_xlabel() and "%" in ax.get_ylabel()
    plt.close(fig)
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    fig = contour_overlay(image, lesion, [rtog], SP)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["progression (composite lesion)", "RTOG"]
    plt.close(fig)
