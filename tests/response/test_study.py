"""End-to-end tests of the response study on a tiny simulated cohort (few epochs; checks wiring, not skill)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from adaptrt.cli import main
from adaptrt.io.manifest import read_manifest
from adaptrt.response.study import prepare_cohort, response_config, run_trials, table1
from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort

TINY = MetastasisConfig(
    n_patients=8, n_lesions=12, fov=(40, 128, 128), volume_range_mm3=(300.0, 3000.0), responder_share=0.5
)


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_metastasis_cohort(tmp_path_factory.mktemp("resp") / "cohort", config=TINY, seed=3)


def _config(**changes):
    cfg = response_config("quick", n_trials=2, test_size=0.25, **changes)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))


def test_study_end_to_end(tiny_manifest):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config()
    lesions, notes = prepare_cohort(read_manifest(tiny_manifest), cfg)
    assert len(lesions) + len(notes) == TINY.n_lesions
    # truth is found next to the simulated manifest and lies inside the GTV of the test samples
    assert all(d.truth_mri2 is not None and not (d.truth_mri2 & ~d.test_mri2.mask).any() for d in lesions)
    # the training data is the first MRI with the six Part I rotations of one slice
    assert all(len(d.train) == 6 and len(d.test_mri2) == 1 for d in lesions)
    res = run_trials(lesions, cfg)
    groups = np.array([d.lesion.patient_id for d in lesions])
    for s in res.splits:
        assert not set(groups[s.train]) & set(groups[s.test])  # grouped by patient
    # 3 models x 2 test sets x 2 trials
    assert len(res.metric_rows) == 12
    assert {r["model"] for r in res.metric_rows} == {"radiomics", "gradients", "cam"}
    # every prediction is of a test lesion of its trial
    test_keys = {s.trial: {lesions[i].key for i in s.test} for s in res.splits}
    assert all(p["lesion"] in test_keys[p["trial"]] for p in res.prediction_rows)
    assert all(0.0 <= p["probability"] <= 1.0 for p in res.prediction_rows)
    # CAMs: 3 methods x 2 targets for each test sample of each trial
    n_test = sum(len(s.test) for s in res.splits)
    assert len(res.cam_rows) == n_test * 6
    assert any(np.isfinite(r.get("auc", np.nan)) for r in res.cam_rows)
    t1 = table1(res.metric_rows)
    assert [r["metric"] for r in t1] == ["sensitivity", "specificity", "accuracy", "auc", "precision", "f1"]
    assert set(t1[0]) == {"metric", "Radiomics Model", "Gradients Model", "Pixel-CAM Model"}
    # the same seed gives the same predictions
    again = run_trials(lesions, cfg)
    assert [p["probability"] for p in again.prediction_rows] == [
        p["probability"] for p in res.prediction_rows
    ]


def test_cli_run_folder(tiny_manifest, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    out = tmp_path / "run"
    code = main(
        [
            "response",
            "run",
            "--manifest",
            str(tiny_manifest),
            "--out",
            str(out),
            "--trials",
            "2",
            "--test-size",
            "0.25",
            "--models",
            "gradients",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    with (out / "results" / "table1.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["metric"] for r in rows][:2] == ["sensitivity", "specificity"]
    summary = json.loads((out / "results" / "summary.json").read_text())
    assert summary["n_trials"] == 2 and summary["n_lesions"] == TINY.n_lesions
    report = (out / "report.html").read_text()
    assert "Table 1" in report
    # chance, stated: the null band and one verdict per model, in the results and the report
    chance = summary["chance"]
    low, high = chance["null_band_90"]
    assert low < high and chance["n_permutations"] == 50 and chance["null_models"] == ["gradients", "pixels"]
    assert [v["model"] for v in chance["verdicts"]] == ["gradients", "gradients"]  # mri2, mri1
    assert chance["verdicts"][0]["verdict"] in ("above chance", "at chance", "below chance")
    assert summary["positive_class"].startswith("responder")
    assert "what it found" in report and chance["verdicts"][0]["sentence"].split(" — ")[0] in report
    assert "permuted 50 times" in report and "SAME 2 splits" in report
    with (out / "results" / "chance.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    # no staging folder in what the user reads
    assert ".partial" not in report and ".partial" not in json.dumps(summary)


def test_too_few_lesions_of_a_class(tiny_manifest, tmp_path, capsys):
    # a threshold no lesion reaches leaves no responders: a clear error, exit 2, nothing written
    out = tmp_path / "run"
    code = main(
        [
            "response",
            "run",
            "--manifest",
            str(tiny_manifest),
            "--out",
            str(out),
            "--threshold",
            "0.99",
            "--models",
            "gradients",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs both classes" in err and "Traceback" not in err
    assert not out.exists()


def test_sequential_ablation_is_opt_in_and_gets_its_column(tiny_manifest):
    from adaptrt.response.study import comparisons

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    assert "cam_sequential" not in response_config("quick").models
    assert "cam_sequential" not in response_config("paper").models
    cfg = _config(models=("gradients", "cam", "cam_sequential"), score_cams=False)
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    res = run_trials(lesions, cfg)
    seq = [r for r in res.metric_rows if r["model"] == "cam_sequential"]
    assert len(seq) == 4  # 2 trials x 2 test sets, on the same splits as the other models
    assert {r["trial"] for r in seq} == {s.trial for s in res.splits}
    column = "Sequential AE+classifier (ablation)"
    assert list(table1(res.metric_rows)[0]) == ["metric", "Gradients Model", "Pixel-CAM Model", column]
    without = [r for r in res.metric_rows if r["model"] != "cam_sequential"]
    assert column not in table1(without)[0]
    assert {c["comparison"] for c in comparisons(res.metric_rows, res.splits, seed=0)} == {
        "cam - gradients",
        "cam - cam_sequential",
    }
    # the trial-0 model kept for the figures is the joint one; no CAMs for the ablation
    assert res.first_model.config.mode == "joint" and not res.cam_rows
    p_joint = [p["probability"] for p in res.prediction_rows if p["model"] == "cam"]
    p_seq = [p["probability"] for p in res.prediction_rows if p["model"] == "cam_sequential"]
    assert len(p_joint) == len(p_seq) and p_joint != p_seq


def test_run_folder_with_ablation_and_final_models(tiny_manifest, tmp_path):
    from adaptrt.response.run import run_response_study

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config(models=("gradients", "cam_sequential"), score_cams=False)
    out = run_response_study(tiny_manifest, tmp_path / "run", cfg, progress=False)
    with (out / "results" / "table1.csv").open() as fh:
        header = next(csv.reader(fh))
    assert header == ["metric", "Gradients Model", "Sequential AE+classifier (ablation)"]
    assert not (out / "results" / "comparisons.csv").exists()  # no joint CAM model to compare with
    info = json.loads((out / "models" / "manifest.json").read_text())
    assert set(info["models"]) == {"gradients", "cam_sequential"} and info["n_lesions"] == TINY.n_lesions
    assert info["models"]["cam_sequential"]["train"]["mode"] == "sequential"
    report = (out / "report.html").read_text()
    assert "Final models (for deployment)" in report and "Ablation" in report
    no_final = run_response_study(
        tiny_manifest, tmp_path / "run2", dataclasses.replace(cfg, fit_final=False), progress=False
    )
    assert not (no_final / "models").exists()


def test_lesions_without_followup_or_second_mri_are_excluded_with_a_note(tiny_manifest, tmp_path):
    import shutil

    from adaptrt.io.manifest import read_manifest as read

    root = tmp_path / "cohort"
    shutil.copytree(tiny_manifest.parent, root)
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    first, second = (
        rows[0],
        next(
            r
            for r in rows
            if (r["patient_id"], r["lesion_id"]) != (rows[0]["patient_id"], rows[0]["lesion_id"])
        ),
    )
    drop = {
        (first["patient_id"], first["lesion_id"], "followup"),
        (second["patient_id"], second["lesion_id"], "mri2"),
    }
    kept = [r for r in rows if (r["patient_id"], r["lesion_id"], r["timepoint"]) not in drop]
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(kept)
    lesions, notes = prepare_cohort(read(root / "manifest.csv"), _config(models=("gradients",)))
    assert len(lesions) == TINY.n_lesions - 2
    key1, key2 = (
        f"{first['patient_id']}/{first['lesion_id']}",
        f"{second['patient_id']}/{second['lesion_id']}",
    )
    assert any(n.startswith(key1) and "followup" in n for n in notes)
    assert any(n.startswith(key2) and "mri2" in n for n in notes)
    assert {d.key for d in lesions}.isdisjoint({key1, key2})


def test_batched_trials_match_one_at_a_time(tiny_manifest):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config(models=("cam",), score_cams=False, fit_final=False)
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    batched = run_trials(lesions, dataclasses.replace(cfg, batch_trials=2))
    single = run_trials(lesions, dataclasses.replace(cfg, batch_trials=1))
    pb = np.array([p["probability"] for p in batched.prediction_rows])
    ps = np.array([p["probability"] for p in single.prediction_rows])
    assert [p["lesion"] for p in batched.prediction_rows] == [p["lesion"] for p in single.prediction_rows]
    np.testing.assert_allclose(pb, ps, atol=5e-3)


def test_engine_trainer_matches_one_at_a_time(tiny_manifest):
    # the paper profile's trainer (fit_fast in worker processes) on the study's own splits and data
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config(models=("cam",), score_cams=False, fit_final=False)
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    engine = run_trials(lesions, dataclasses.replace(cfg, trainer="engine", workers=2, compile=False))
    single = run_trials(lesions, dataclasses.replace(cfg, trainer="plain"))
    pe = np.array([p["probability"] for p in engine.prediction_rows])
    ps = np.array([p["probability"] for p in single.prediction_rows])
    assert [p["lesion"] for p in engine.prediction_rows] == [p["lesion"] for p in single.prediction_rows]
    np.testing.assert_allclose(pe, ps, atol=5e-3)


def test_trainer_settings_are_checked():
    from adaptrt.errors import InputError

    assert response_config("paper").trainer == "engine" and response_config("quick").trainer == "batched"
    with pytest.raises(InputError, match="trainer must be one of"):
        response_config("quick", trainer="fast")
    with pytest.raises(InputError, match="workers must be null or an int >= 1"):
        response_config("quick", workers=0)
    with pytest.raises(InputError, match="compile must be true or false"):
        response_config("quick", compile="yes")
