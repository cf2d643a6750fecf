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


def _assert_same_lesions(a, b):
    assert [d.key for d in a] == [d.key for d in b]
    for x, y in zip(a, b, strict=True):
        assert (x.label, x.ratio) == (y.label, y.ratio)
        for part in ("train", "test_mri2", "test_mri1"):
            np.testing.assert_equal(vars(getattr(x, part)), vars(getattr(y, part)))
        np.testing.assert_equal(x.features, y.features)  # NaN features compare equal here
        np.testing.assert_equal(x.truth_mri2, y.truth_mri2)
        np.testing.assert_equal(dict(x.gradient_maps_mri2), dict(y.gradient_maps_mri2))


def test_parallel_preparation_equals_serial(tiny_manifest):
    cfg = _config(models=("gradients", "cam"))  # radiomics: the same path, slower
    cohort = read_manifest(tiny_manifest)
    serial, notes_serial = prepare_cohort(cohort, cfg, n_jobs=1)
    parallel, notes_parallel = prepare_cohort(cohort, cfg, n_jobs=2)
    assert notes_parallel == notes_serial
    assert len(serial) == TINY.n_lesions and serial[0].truth_mri2 is not None
    _assert_same_lesions(serial, parallel)


def test_preparation_jobs():
    from adaptrt.errors import InputError
    from adaptrt.response.study import MIN_LESIONS_PER_WORKER, preparation_jobs

    cfg = _config(workers=4)
    assert preparation_jobs(cfg, 100) == 4
    assert preparation_jobs(cfg, 2 * MIN_LESIONS_PER_WORKER) == 2  # a small cohort: fewer processes
    assert preparation_jobs(cfg, MIN_LESIONS_PER_WORKER - 1) == 1  # a tiny one: in this process
    assert preparation_jobs(cfg, 3, n_jobs=2) == 2 and preparation_jobs(cfg, 1, n_jobs=2) == 1
    with pytest.raises(InputError, match="n_jobs must be None or an int >= 1"):
        preparation_jobs(cfg, 10, n_jobs=0)


def test_an_unreadable_lesion_is_an_input_error_naming_it(tiny_manifest, tmp_path):
    import shutil

    from adaptrt.errors import InputError

    root = tmp_path / "cohort"
    shutil.copytree(tiny_manifest.parent, root)
    with (root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    bad = next(r for r in rows if r["timepoint"] == "mri2")
    (root / bad["mask"]).write_bytes(b"not a DICOM file")
    key = f"{bad['patient_id']}/{bad['lesion_id']}"
    for n_jobs in (1, 2):
        with pytest.raises(InputError, match=f"lesion {key}: ") as info:
            prepare_cohort(
                read_manifest(root / "manifest.csv"), _config(models=("gradients",)), n_jobs=n_jobs
            )
        assert info.value.path is not None and bad["mask"].split("/")[-1] in info.value.path


def test_final_network_in_the_trials_pool_equals_a_separate_fit(tiny_manifest):
    # run_trials(final_networks=True) trains the final network with the trials' workers: bit for bit the
    # network fit_final_models trains on its own (in this process), and the trials' networks are unchanged
    from adaptrt.response.final import fit_final_models

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config(models=("cam",), score_cams=False, trainer="engine", workers=2, compile=False)
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    both = run_trials(lesions, cfg, final_networks=True)
    alone = fit_final_models(lesions, cfg)
    assert set(both.final_networks) == {"cam"}
    combined = fit_final_models(lesions, cfg, networks=both.final_networks)
    assert combined.networks["cam"] is both.final_networks["cam"]
    want = alone.networks["cam"].model_.state_dict()
    for k, v in combined.networks["cam"].model_.state_dict().items():
        assert torch.equal(v, want[k]), k
    trials_only = run_trials(lesions, cfg)
    assert not trials_only.final_networks
    assert [p["probability"] for p in trials_only.prediction_rows] == [
        p["probability"] for p in both.prediction_rows
    ]
    other_seed = dataclasses.replace(cfg, seed=1)
    with pytest.raises(ValueError, match="another config or seed"):
        fit_final_models(lesions, other_seed, networks=both.final_networks)


def test_monitoring_pass_does_not_change_the_engine_network(tiny_manifest):
    # the engine trainer skips the per-epoch test curves of every trial but the first: same networks
    from adaptrt.response.engine import fit_fast
    from adaptrt.response.study import _trial_data
    from adaptrt.splits import grouped_splits

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cfg = _config(models=("cam",))
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    y = np.array([d.label for d in lesions])
    groups = np.array([d.lesion.patient_id for d in lesions])
    split = grouped_splits(y, groups, n_trials=1, test_size=0.25, seed=0)[0]
    data = [_trial_data(lesions, y, split, monitor=m) for m in (True, False)]
    assert data[0].x_val is not None and data[1].x_val is None
    monitored, plain = fit_fast(cfg.train, data, [7, 7], workers=1, compile=False)
    assert monitored.history_[0]["val_loss"] is not None and plain.history_[0]["val_loss"] is None
    for k, v in monitored.model_.state_dict().items():
        assert torch.equal(v, plain.model_.state_dict()[k]), k
