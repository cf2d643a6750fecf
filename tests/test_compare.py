"""Tests of adaptrt.compare: Part I vs Part II on the response run's splits, from tiny run folders written here.

The cohort: 8 lesions of 7 patients, labels 1 0 1 0 1 0 1 0, three splits of 4 test lesions each. Every AUC
below is counted by hand from the pairs (responder, non-responder) of each test part.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from adaptrt.cli import main
from adaptrt.compare import (
    ComparisonResult,
    add_comparison_section,
    compare_response_drift,
    format_table,
    write_comparison,
)
from adaptrt.errors import InputError
from adaptrt.report.html import Report

KEYS = ["P1/1", "P1/2", "P2/1", "P3/1", "P4/1", "P5/1", "P6/1", "P7/1"]
LABEL = dict(zip(KEYS, [1, 0, 1, 0, 1, 0, 1, 0], strict=True))
TESTS = [
    ["P1/1", "P1/2", "P2/1", "P3/1"],
    ["P4/1", "P5/1", "P6/1", "P7/1"],
    ["P2/1", "P3/1", "P4/1", "P5/1"],
]
# the drift score (larger = responder); trial AUCs by hand:
# 0: pos .9 .4 / neg .1 .5 -> 3/4;  1: pos .8 .75 / neg .2 .7 -> 4/4;  2: pos .4 .8 / neg .5 .2 -> 3/4
AREA = dict(zip(KEYS, [0.9, 0.1, 0.4, 0.5, 0.8, 0.2, 0.75, 0.7], strict=True))
AREA_AUCS = [0.75, 1.0, 0.75]


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _response_run(root: Path) -> Path:
    """Radiomics: mri2 probabilities = 1 - AREA (AUCs 1/4, 0, 1/4), mri1 all 0.5 (ties: AUC 1/2)."""
    res = root / "response" / "results"
    _write(
        res / "splits.csv",
        [
            {
                "trial": t,
                "seed": 100 + t,
                "train": " ".join(k for k in KEYS if k not in te),
                "test": " ".join(te),
            }
            for t, te in enumerate(TESTS)
        ],
    )
    preds, metrics = [], []
    for t, te in enumerate(TESTS):
        for test_set, prob in (("mri2", lambda k: 1.0 - AREA[k]), ("mri1", lambda k: 0.5)):
            p = [prob(k) for k in te]
            preds += [
                {
                    "trial": t,
                    "model": "radiomics",
                    "test_set": test_set,
                    "lesion": k,
                    "label": LABEL[k],
                    "probability": v,
                }
                for k, v in zip(te, p, strict=True)
            ]
            auc = roc_auc_score([LABEL[k] for k in te], p)
            metrics.append(
                {"trial": t, "model": "radiomics", "test_set": test_set, "accuracy": 0.5, "auc": auc}
            )
    _write(res / "predictions.csv", preds)
    _write(res / "metrics_per_trial.csv", metrics)
    _write(
        res / "chance.csv",
        [
            {
                "model": "radiomics",
                "title": "Radiomics Model",
                "test_set": ts,
                "mean_auc": 0.2,
                "ci_low": 0.0,
                "ci_high": 0.5,
                "null_low": 0.3,
                "null_high": 0.7,
                "n_trials": 3,
                "verdict": "x",
                "sentence": "x",
            }
            for ts in ("mri2", "mri1")
        ],
    )
    _write(
        res / "lesions.csv", [{"lesion": k, "patient_id": k.split("/")[0], "label": LABEL[k]} for k in KEYS]
    )
    return root / "response"


def _drift_run(
    root: Path,
    *,
    drop: tuple[str, ...] = (),
    flip: tuple[str, ...] = (),
    prefix: str = "P",
    blank: tuple[str, ...] = (),
) -> Path:
    rows = []
    for k in KEYS:
        if k in drop:
            continue
        patient, lesion = k.split("/")
        rows.append(
            {
                "patient": prefix + patient[1:],
                "lesion": lesion,
                "label": 1 - LABEL[k] if k in flip else LABEL[k],
                "area_k": "" if k in blank else AREA[k],
                "observed": LABEL[k] + 0.01 * KEYS.index(k),  # separates the classes: AUC 1
            }
        )
    _write(root / "drift" / "results" / "drift_response_scores.csv", rows)
    return root / "drift"


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return _response_run(tmp_path), _drift_run(tmp_path)


def _row(result: ComparisonResult, key: str, test_set: str | None = None) -> dict:
    return next(
        dict(r) for r in result.rows if r["key"] == key and (test_set is None or r["test_set"] == test_set)
    )


def test_known_aucs_interval_and_verdicts(runs: tuple[Path, Path]) -> None:
    result = compare_response_drift(*runs, permutations=200, seed=0)
    assert [r["key"] for r in result.rows] == ["radiomics", "radiomics", "area_k", "observed"]
    assert result.trials_used == (0, 1, 2) and result.trials_dropped == ()
    assert result.n_lesions_common == 8 and result.missing_from_drift == ()

    area = _row(result, "area_k")
    assert area["part"] == "Part II" and area["n_trials"] == 3 and area["n_test"] == 4
    assert area["auc_per_trial"] == "0.750 1.000 0.750"
    assert area["auc_mean"] == pytest.approx(5 / 6)
    assert area["auc_sd"] == pytest.approx(np.std(AREA_AUCS, ddof=1))
    # Nadeau-Bengio with n_test / n_train = 4 / 4
    half = stats.t.ppf(0.975, 2) * math.sqrt((1 / 3 + 1.0) * np.var(AREA_AUCS, ddof=1))
    # truncated to an AUC's range [0, 1]
    assert (area["ci_low"], area["ci_high"]) == pytest.approx((5 / 6 - half, min(5 / 6 + half, 1.0)))
    assert area["verdict"] == "at chance"  # 3 trials: the interval includes 0.5
    assert "computed here" in area["null_from"]

    mri2 = _row(result, "radiomics", "mri2")
    assert mri2["auc_per_trial"] == "0.250 0.000 0.250"
    assert (mri2["null_low"], mri2["null_high"]) == (0.3, 0.7)
    assert "chance.csv" in mri2["null_from"] and mri2["method"] == "Radiomics Model"
    mri1 = _row(result, "radiomics", "mri1")
    assert mri1["auc_mean"] == pytest.approx(0.5)  # all probabilities tied
    assert mri1["verdict"] == "at chance" and "inside the null band" in mri1["reason"]

    ref = _row(result, "observed")
    assert ref["part"].startswith("reference") and ref["auc_mean"] == pytest.approx(1.0)
    assert ref["verdict"] == "above chance"  # SD 0: interval [1, 1]


def test_drift_null_band_equals_a_brute_force_permutation(runs: tuple[Path, Path]) -> None:
    result = compare_response_drift(*runs, permutations=100, seed=5)
    rng = np.random.default_rng(5)
    # the pool: the lesions in first-seen order of splits.csv (trial 0's training part, then its test part, ...)
    pool: list[str] = []
    for te in TESTS:
        pool += [k for k in [*(k for k in KEYS if k not in te), *te] if k not in pool]
    y = np.array([LABEL[k] for k in pool])
    s = np.array([AREA[k] for k in pool])
    idx = [np.array([pool.index(k) for k in te]) for te in TESTS]
    means = []
    for _ in range(100):
        yp = rng.permutation(y)
        vals = [roc_auc_score(yp[i], s[i]) for i in idx if len(set(yp[i])) == 2]
        if vals:
            means.append(np.mean(vals))
    area = _row(result, "area_k")
    assert (area["null_low"], area["null_high"]) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert area["null_low"] < 0.5 < area["null_high"]
    again = compare_response_drift(*runs, permutations=100, seed=5)
    assert _row(again, "area_k")["null_low"] == area["null_low"]


def test_missing_lesions_are_left_out_of_every_row_and_counted(tmp_path: Path) -> None:
    resp = _response_run(tmp_path)
    drift = _drift_run(tmp_path, drop=("P2/1",))
    result = compare_response_drift(resp, drift, permutations=50)
    assert result.missing_from_drift == ("P2/1",) and result.n_lesions_common == 7
    assert any("P2/1" in n and "not in the drift run" in n for n in result.notes)
    # trial 0 without P2/1: pos .9 / neg .1 .5 -> 1; trial 2: pos .8 / neg .5 .2 -> 1
    assert _row(result, "area_k")["auc_per_trial"] == "1.000 1.000 1.000"
    # Part I recomputed on the same lesions: mri2 probabilities 1 - AREA reverse the order -> 0
    assert _row(result, "radiomics", "mri2")["auc_per_trial"] == "0.000 0.000 0.000"


def test_trial_with_one_class_left_is_dropped_for_every_row(tmp_path: Path) -> None:
    resp = _response_run(tmp_path)
    drift = _drift_run(tmp_path, drop=("P2/1", "P4/1"))  # trial 2's test part keeps P3/1, P5/1: both 0
    result = compare_response_drift(resp, drift, permutations=50)
    assert result.trials_dropped == (2,) and result.trials_used == (0, 1)
    assert all(r["n_trials"] == 2 for r in result.rows)
    assert any("trial(s) left out of every row" in n for n in result.notes)


def test_lesion_without_a_score_is_left_out_of_that_row_only(tmp_path: Path) -> None:
    resp = _response_run(tmp_path)
    drift = _drift_run(tmp_path, blank=("P7/1",))
    result = compare_response_drift(resp, drift, permutations=50)
    area = _row(result, "area_k")
    assert area["no_score"] == 1
    assert area["auc_per_trial"] == "0.750 1.000 0.750"  # trial 1: pos .8 .75 / neg .2 -> 1
    assert _row(result, "observed")["no_score"] == 0


def test_drift_run_of_another_cohort_is_refused_naming_both_files(tmp_path: Path) -> None:
    resp = _response_run(tmp_path)
    drift = _drift_run(tmp_path, prefix="Q")
    with pytest.raises(InputError, match="not runs of the same cohort") as err:
        compare_response_drift(resp, drift)
    assert "drift_response_scores.csv" in str(err.value) and "splits.csv" in str(err.value)
    assert err.value.fix is not None and "same manifest" in err.value.fix


def test_labels_that_disagree_are_refused(tmp_path: Path) -> None:
    resp = _response_run(tmp_path)
    drift = _drift_run(tmp_path, flip=("P3/1",))
    with pytest.raises(InputError, match=r"another response label.*P3/1 \(0 vs 1\)") as err:
        compare_response_drift(resp, drift)
    assert "predictions.csv" in str(err.value) and "threshold" in str(err.value)


def test_run_files_that_disagree_are_refused(runs: tuple[Path, Path]) -> None:
    resp, drift = runs
    path = resp / "results" / "metrics_per_trial.csv"
    rows = list(csv.DictReader(path.open()))
    rows[0]["auc"] = "0.99"
    _write(path, rows)
    with pytest.raises(InputError, match=r"is not the AUC of metrics_per_trial\.csv"):
        compare_response_drift(resp, drift)


def test_missing_file_and_column_are_named(runs: tuple[Path, Path]) -> None:
    resp, drift = runs
    (drift / "results" / "drift_response_scores.csv").unlink()
    with pytest.raises(InputError, match=r"drift_response_scores\.csv: not found\. Fix: give the run folder"):
        compare_response_drift(resp, drift)
    with pytest.raises(InputError, match="is not a folder"):
        compare_response_drift(resp / "nope", drift)
    path = resp / "results" / "splits.csv"
    rows = [{k: v for k, v in r.items() if k != "test"} for r in csv.DictReader(path.open())]
    _write(path, rows)
    with pytest.raises(InputError, match="has no column 'test'"):
        compare_response_drift(resp, drift)


def test_without_chance_csv_or_permutations_the_interval_decides(runs: tuple[Path, Path]) -> None:
    resp, drift = runs
    (resp / "results" / "chance.csv").unlink()
    result = compare_response_drift(resp, drift, permutations=0)
    assert all(math.isnan(r["null_low"]) for r in result.rows)
    assert any("no chance.csv" in n for n in result.notes)
    assert "no permutation null band" in _row(result, "area_k")["reason"]
    with pytest.raises(InputError, match="permutations"):
        compare_response_drift(resp, drift, permutations=-1)


def test_write_comparison_and_report_section(runs: tuple[Path, Path], tmp_path: Path) -> None:
    result = compare_response_drift(*runs, permutations=50)
    out = tmp_path / "out"
    csv_path, json_path = write_comparison(result, out)
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["key"] for r in rows] == ["radiomics", "radiomics", "area_k", "observed"]
    data = json.loads(json_path.read_text())  # strict JSON: NaN written as null
    assert data["n_lesions_common"] == 8 and len(data["per_trial"]) == 12
    with pytest.raises(InputError, match="already exists"):
        write_comparison(result, out)
    write_comparison(result, out, overwrite=True)

    report = Report("t")
    sec = add_comparison_section(report, result)
    html = "".join(sec.blocks)
    assert "same 3 trial(s)" in html and "No method is above chance" in html
    assert "never saw its patient" in html and "Reference row (observed, not a prediction)" in html
    assert "area_k" in format_table(result)


def test_cli_writes_the_folder_and_exits_2_on_bad_input(
    runs: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    resp, drift = runs
    out = tmp_path / "cmp"
    argv = ["compare", "response-drift", "--response", str(resp), "--drift", str(drift), "--out", str(out)]
    assert main([*argv, "--permutations", "50"]) == 0
    printed = capsys.readouterr().out
    assert "Part II: area_k" in printed
    assert (out / "results" / "part1_vs_part2.csv").is_file() and (out / "report.html").is_file()
    assert "Part I vs Part II on the same splits" in (out / "report.html").read_text()

    assert main(argv) == 2  # the folder exists
    assert "already exists" in capsys.readouterr().err

    bad = tmp_path / "cmp_bad"
    code = main(
        [
            "compare",
            "response-drift",
            "--response",
            str(tmp_path / "none"),
            "--drift",
            str(drift),
            "--out",
            str(bad),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is not a folder" in err and "Fix:" in err and "Traceback" not in err
    assert not bad.exists()
    assert main([*argv[:-1], str(bad), "--permutations", "-3"]) == 2
    assert "--permutations" in capsys.readouterr().err


def test_demo_hook_writes_the_table_and_names_the_final_folder(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    import shutil

    from adaptrt import demo
    from adaptrt.report.run import RunFolder

    resp, drift = runs
    out = tmp_path / "demo_run"
    with RunFolder(out, command="test", config={}, seed=0) as run:
        demo._compare(run, 0)  # nothing to compare yet: a note, no file
        assert "Not computed" in "".join(run.report.sections[-1].blocks)
        for src in [*(resp / "results").iterdir(), *(drift / "results").iterdir()]:
            shutil.copy(src, run.file(f"results/{src.name}"))
        demo._compare(run, 0)
        stage = str(run.stage)
    data = json.loads((out / "results" / "part1_vs_part2.json").read_text())
    assert data["response_run"] == str(out) == data["drift_run"]
    html = (out / "report.html").read_text()
    assert "Part I vs Part II on the same splits" in html and stage not in html


def test_demo_hook_notes_a_refused_comparison_instead_of_failing(tmp_path: Path) -> None:
    import shutil

    from adaptrt import demo
    from adaptrt.report.run import RunFolder

    resp, drift = _response_run(tmp_path), _drift_run(tmp_path, prefix="Q")
    with RunFolder(tmp_path / "demo_run", command="test", config={}, seed=0) as run:
        for src in [*(resp / "results").iterdir(), *(drift / "results").iterdir()]:
            shutil.copy(src, run.file(f"results/{src.name}"))
        demo._compare(run, 0)
        text = "".join(run.report.sections[-1].blocks)
        stage = str(run.stage)
    assert "Not computed" in text and "not runs of the same cohort" in text and stage not in text
    assert not (tmp_path / "demo_run" / "results" / "part1_vs_part2.csv").exists()
