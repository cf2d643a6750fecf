"""The drift study end to end through the CLI: run on the toy and on a tiny simulated cohort, predict, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from adaptrt.cli import main
from adaptrt.drift.study import drift_config, lesion_folds
from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort

SMALL = MetastasisConfig(
    n_patients=4, n_lesions=6, fov=(32, 112, 112), volume_range_mm3=(300.0, 1500.0), responder_share=0.5
)
FAST = ["--iterations", "3", "--folds", "2", "--quiet"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_metastasis_cohort(tmp_path_factory.mktemp("met") / "c", config=SMALL, seed=0, progress=False)


@pytest.fixture(scope="module")
def run(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drift") / "run"
    assert main(["drift", "run", "--manifest", str(cohort), "--out", str(out), "--size", "16", *FAST]) == 0
    return out


def test_run_writes_tables_figures_models(run: Path) -> None:
    rows = list(csv.DictReader((run / "results" / "drift_lesions.csv").open()))
    models = {r["model"] for r in rows}
    assert models == {"no_change", "mean_drift", "method1", "method2", "decoupled", "regression"}
    # every lesion evaluated once per model, on held-out folds only
    assert len(rows) == 6 * len(models)
    table = list(csv.DictReader((run / "results" / "drift_table.csv").open()))
    assert [t["model"] for t in table][:2] == ["no_change", "mean_drift"]
    for fig in ("drift_examples", "drift_loss_curves", "drift_trajectories", "drift_augmentation_noise"):
        assert (run / "figures" / f"{fig}.png").is_file()
    man = json.loads((run / "models" / "drift" / "manifest.json").read_text())
    assert {m["name"] for m in man["models"]} == {"method1", "method2"}
    html = (run / "report.html").read_text()
    assert "baseline" in html and "chance" in html


def test_no_change_baseline_scores_are_exact(run: Path) -> None:
    rows = [
        r for r in csv.DictReader((run / "results" / "drift_lesions.csv").open()) if r["model"] == "no_change"
    ]
    # post = pre: its drift MAE is the mean |true drift|, its predicted area ratio is 1 (nothing changes)
    assert all(float(r["drift_mae"]) >= 0 for r in rows)
    assert all(float(r["area_ratio_pred"]) == pytest.approx(1.0, abs=0.35) for r in rows)


def test_predict_writes_nifti_on_the_first_mri_grid(run: Path, cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    assert (
        main(["drift", "predict", "--run", str(run), "--manifest", str(cohort), "--out", str(out), "--quiet"])
        == 0
    )
    rows = list(csv.DictReader((out / "results" / "predictions.csv").open()))
    assert len(rows) == 6
    drift = nib.load(out / rows[0]["predicted_drift"])
    data = np.asarray(drift.dataobj)
    assert np.isfinite(data).any() and np.isnan(data).any()  # predicted inside the box, NaN elsewhere


def test_toy_runs(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    args = [
        "drift",
        "run",
        "--toy",
        "--out",
        str(out),
        "--variants",
        "method1,method2",
        "--no-analyses",
        *FAST,
    ]
    assert main(args) == 0
    assert "zero-digit" in (out / "report.html").read_text()
    assert not (out / "results" / "drift_calibration.csv").exists()  # --no-analyses


def test_bad_input_is_exit_2_and_writes_nothing(run: Path, cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    assert main(["drift", "run", "--out", str(out), "--quiet"]) == 2  # no manifest
    assert main(["drift", "run", "--toy", "--out", str(out), "--variants", "method9", "--quiet"]) == 2
    assert main(["drift", "run", "--toy", "--out", str(out), "--seed", "-1", "--quiet"]) == 2
    assert (
        main(["drift", "run", "--manifest", str(cohort), "--out", str(out), "--folds", "9", "--quiet"]) == 2
    )
    bad = ["drift", "predict", "--run", str(run), "--manifest", str(cohort), "--out", str(out)]
    assert main([*bad, "--model", "nope", "--quiet"]) == 2
    assert (
        main(["drift", "predict", "--run", str(tmp_path), "--manifest", str(cohort), "--out", str(out)]) == 2
    )
    assert not out.exists()
    # an existing output folder is refused before any work
    assert main(["drift", "run", "--toy", "--out", str(run), "--quiet"]) == 2


def test_folds_are_grouped_by_patient() -> None:
    groups = np.array(["a", "a", "b", "c", "c", "d", "e", "e", "f"])
    labels = np.array([1, 0, 1, 0, 1, None, 0, 1, 0], dtype=object)
    folds = lesion_folds(groups, labels, 3, seed=0)
    seen = np.concatenate([te for _, te in folds])
    assert sorted(seen.tolist()) == list(range(9))
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])


def test_profiles() -> None:
    q, p = drift_config("quick"), drift_config("paper")
    assert p.model.iterations == 5000 and p.model.batch_size == 64 and p.model.lr == 1e-4 and p.size == 64
    assert p.model.T == 21 and p.folds == 5 and q.model.iterations < p.model.iterations
    with pytest.raises(ValueError, match="folds"):
        drift_config("quick", folds=1)


def test_run_writes_the_analyses_beyond_the_paper(run: Path) -> None:
    res = run / "results"
    unc = list(csv.DictReader((res / "drift_uncertainty_lesions.csv").open()))
    assert {r["model"] for r in unc} == {"mean of 4 samples", "one sample"}  # quick profile: K = 4
    assert len(unc) == 2 * 6  # every lesion held out once
    k_rows = [r for r in unc if r["model"].startswith("mean")]
    assert all(float(r["post_mean_sd"]) > 0 for r in k_rows)
    cal = {r["target"]: r for r in csv.DictReader((res / "drift_calibration.csv").open())}
    assert set(cal) == {"post", "drift", "drift_truth"}  # the simulator's truth drift is a target too
    assert 0 <= float(cal["post"]["coverage1_raw"]) <= 1 and float(cal["post"]["sigma_scale"]) > 0
    cf = list(csv.DictReader((res / "drift_counterfactual_lesions.csv").open()))
    assert len(cf) == 6
    # the simulator's truth/lesions.csv gives each lesion's sensitive fraction
    assert all(0.0 <= float(r["sensitive_fraction"]) <= 1.0 for r in cf)
    for r in cf:
        diff = float(r["area_ratio_good"]) - float(r["area_ratio_poor"])
        assert float(r["area_ratio_good_minus_poor"]) == pytest.approx(diff)
    splits = json.loads((res / "drift_response_splits.json").read_text())
    assert "folds" in splits["description"] or "grouped_splits" in splits["description"]
    for fig in ("drift_calibration", "drift_uncertainty_example_post", "drift_uncertainty_example_drift"):
        assert (run / "figures" / f"{fig}.png").is_file()
    assert any((run / "figures" / f"drift_counterfactual_{c}.png").is_file() for c in ("poor", "good"))
    scales = json.loads((run / "models" / "drift" / "calibration.json").read_text())
    assert scales["post"] > 0 and scales["samples"] == 4
    html = (run / "report.html").read_text()
    assert "Calibration" in html and "Counterfactual" in html


def test_predict_samples_writes_mean_and_sd_maps(run: Path, cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred_k"
    args = ["drift", "predict", "--run", str(run), "--manifest", str(cohort), "--out", str(out), "--quiet"]
    assert main([*args, "--samples", "3", "--eta", "0.5"]) == 0
    rows = list(csv.DictReader((out / "results" / "predictions.csv").open()))
    sd_img = nib.load(out / rows[0]["predicted_post_sd"])
    mean_img = nib.load(out / rows[0]["predicted_post"])
    sd = np.asarray(sd_img.dataobj)
    assert sd.shape == mean_img.shape and np.allclose(sd_img.affine, mean_img.affine)
    inside = np.isfinite(sd)
    assert inside.any() and (sd[inside] >= 0).all() and sd[inside].max() > 0
    cal = np.asarray(nib.load(out / rows[0]["predicted_post_sd_calibrated"]).dataobj)
    scale = json.loads((run / "models" / "drift" / "calibration.json").read_text())["post"]
    np.testing.assert_allclose(cal[inside], sd[inside] * scale, rtol=1e-4, atol=1e-5)


def test_bad_samples_eta_and_one_class_labels_are_exit_2(run: Path, cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    pred = ["drift", "predict", "--run", str(run), "--manifest", str(cohort), "--out", str(out), "--quiet"]
    assert main([*pred, "--samples", "1"]) == 2
    assert main([*pred, "--samples", "4", "--eta", "-0.5"]) == 2
    toy = ["drift", "run", "--toy", "--out", str(out), "--quiet"]
    assert main([*toy, "--samples", "1"]) == 2
    assert main([*toy, "--eta", "-1"]) == 2
    assert main([*toy, "--label-dropout", "1.5"]) == 2
    # nobody shrinks by 99 %: one class only, so conditional generation is refused before anything is written
    one_class = ["drift", "run", "--manifest", str(cohort), "--out", str(out), "--threshold", "0.99", *FAST]
    assert main(one_class) == 2
    assert not out.exists()


def test_bad_flag_messages_name_the_flag(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["drift", "run", "--toy", "--out", str(tmp_path / "x"), "--samples", "1", "--quiet"])
    assert "--samples" in capsys.readouterr().err
    main(
        [
            "drift",
            "run",
            "--manifest",
            str(cohort),
            "--out",
            str(tmp_path / "y"),
            "--threshold",
            "0.99",
            *FAST,
        ]
    )
    assert "both response classes" in capsys.readouterr().err


def test_no_conditional_runs_a_one_class_cohort(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "nc"
    args = ["drift", "run", "--manifest", str(cohort), "--out", str(out), "--threshold", "0.99"]
    assert main([*args, "--no-conditional", "--variants", "method2", "--size", "16", *FAST]) == 0
    assert (out / "results" / "drift_calibration.csv").is_file()
    assert not (out / "results" / "drift_counterfactual_lesions.csv").exists()
    assert "fewer than two classes" in (out / "report.html").read_text()
