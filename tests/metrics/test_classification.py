"""Tests of adaptrt.metrics.classification against hand-computed confusion matrices."""

from __future__ import annotations

import math

import pytest

from adaptrt.metrics.classification import METRIC_NAMES, binary_metrics, format_mean_sd, summarise_trials


def test_hand_computed_confusion_matrix() -> None:
    # truth:  1    1    1    1    0    0    0    0    0    0
    # score: .9   .8   .5   .2   .7   .4   .3   .1   .05  .6    (predicted 1 when >= 0.5)
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.5, 0.2, 0.7, 0.4, 0.3, 0.1, 0.05, 0.6]
    m = binary_metrics(y, s)
    # TP = 3 (.9 .8 .5: the threshold itself counts as positive), FN = 1, FP = 2 (.7 .6), TN = 4
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 2, 4)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 6)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    # AUC: of the 4 x 6 = 24 (positive, negative) pairs, the positive scores higher in 20
    # (.9 and .8 beat all 6; .5 beats 4 (.4 .3 .1 .05); .2 beats 2 (.1 .05))
    assert m["auc"] == pytest.approx((6 + 6 + 4 + 2) / 24)
    assert (m["n"], m["n_pos"]) == (10, 4)
    assert m.reasons == {}
    assert set(METRIC_NAMES) <= set(m)


def test_nothing_predicted_positive_gives_nan_precision_not_zero() -> None:
    m = binary_metrics([1, 0, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert math.isnan(m["precision"])
    assert "nothing predicted positive" in m.reasons["precision"]
    assert m["sensitivity"] == 0.0 and m["specificity"] == 1.0
    assert m["f1"] == 0.0  # 2TP / (2TP + FP + FN) = 0 / 2: defined, the predicted set misses every positive
    assert m["auc"] == pytest.approx(0.5)  # threshold-free: .4 beats .2 and .3, .1 beats neither: 2 / 4


def test_one_class_absent_gives_nan_auc_with_a_reason() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(m["auc"]) and "only one class" in m.reasons["auc"]
    assert math.isnan(m["sensitivity"]) and math.isnan(m["balanced_accuracy"])
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["precision"] == 0.0  # one predicted positive, wrong
    assert m["f1"] == 0.0
    m = binary_metrics([0, 0], [0.1, 0.2])
    assert math.isnan(m["f1"]) and "no positive samples" in m.reasons["f1"]
    m = binary_metrics([True, True], [0.9, 0.2], threshold=0.5)
    assert math.isnan(m["specificity"]) and m["sensitivity"] == 0.5


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal length"):
        binary_metrics([0, 1], [0.1])
    with pytest.raises(ValueError, match="non-finite"):
        binary_metrics([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one sample"):
        binary_metrics([], [])


def test_summarise_trials_excludes_and_counts_nan() -> None:
    rows: list[dict[str, object]] = [
        {"model": "cam", "auc": 0.8, "precision": 0.5},
        {"model": "cam", "auc": 0.9, "precision": float("nan")},
        {"model": "cam", "auc": 1.0},  # precision missing
        {"model": "cam", "auc": float("nan"), "precision": None},
        {"model": "cam", "auc": float("inf"), "precision": 0.7},
    ]
    out = summarise_trials(rows)
    assert list(out) == ["auc", "precision"]  # the label column is not a metric
    mean, sd, n = out["auc"]
    assert (mean, n) == (pytest.approx(0.9), 3)
    assert sd == pytest.approx(0.1)  # deviations -0.1, 0, 0.1: sqrt(0.02 / 2)
    mean, sd, n = out["precision"]
    assert (mean, n) == (pytest.approx(0.6), 2) and sd == pytest.approx(math.sqrt(0.02))
    single = summarise_trials([{"f1": 0.4}, {"f1": float("nan")}])["f1"]
    assert single[0] == pytest.approx(0.4) and math.isnan(single[1]) and single[2] == 1
    empty = summarise_trials([{"f1": float("nan")}])["f1"]
    assert math.isnan(empty[0]) and empty[2] == 0


def test_format_mean_sd() -> None:
    assert format_mean_sd(0.87654, 0.0449) == "0.877 ± 0.045"
    assert format_mean_sd(0.5, float("nan"), digits=2, n=1) == "0.50 ± n/a (n=1)"
    with pytest.raises(ValueError, match="digits"):
        format_mean_sd(0.5, 0.1, digits=-1)
