"""Final models of the response study: fit on all lesions, save / load, predict on a manifest, run_predict."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.io.manifest import read_manifest
from adaptrt.io.nifti import write_nifti
from adaptrt.response.final import (
    fit_final_models,
    load_final_models,
    predict_cohort,
    run_predict,
    save_final_models,
)
from adaptrt.response.study import prepare_cohort, response_config
from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort
from adaptrt.types import Volume

torch = pytest.importorskip("torch")

TINY = MetastasisConfig(
    n_patients=8, n_lesions=12, fov=(40, 128, 128), volume_range_mm3=(300.0, 3000.0), responder_share=0.5
)
MODELS = ("radiomics", "gradients", "cam", "cam_sequential")


def _config():
    cfg = response_config("quick", n_trials=2, test_size=0.25, models=MODELS)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2))


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory) -> Path:
    return write_metastasis_cohort(tmp_path_factory.mktemp("final") / "cohort", config=TINY, seed=3)


@pytest.fixture(scope="module")
def prepared(tiny_manifest):
    torch.set_num_threads(1)
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), _config())
    return lesions


@pytest.fixture(scope="module")
def final(prepared):
    torch.set_num_threads(1)
    return fit_final_models(prepared, _config())


@pytest.fixture(scope="module")
def saved(final, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("study") / "run"
    save_final_models(final, folder)
    return folder


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:  # absolute paths, so that the rows can be written to another folder
        r["image"] = str((manifest.parent / r["image"]).resolve())
        r["mask"] = str((manifest.parent / r["mask"]).resolve())
    return rows


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["patient_id", "lesion_id", "timepoint", "image", "mask", "roi"])
        w.writeheader()
        w.writerows(rows)
    return path


def _nifti_lesion(folder: Path, name: str, centre: tuple[int, int], radius: float, fu_radius: float) -> list:
    """A sphere-ish lesion in NIfTI with its mri1 row and a follow-up row of another radius."""
    rng = np.random.default_rng(len(name))
    zz, yy, xx = np.mgrid[:16, :48, :48]
    spacing = (2.0, 1.0, 1.0)
    rows = []
    for tp, r in (("mri1", radius), ("followup", fu_radius)):
        gtv = ((zz - 8) * 2.0) ** 2 + (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= r**2
        image = 100.0 + 80.0 * gtv + 0.5 * yy + rng.normal(0.0, 5.0, gtv.shape)
        img_path = write_nifti(Volume(image.astype(np.float32), spacing), folder / f"{name}_{tp}.nii.gz")
        gtv_path = write_nifti(Volume(gtv, spacing), folder / f"{name}_{tp}_gtv.nii.gz")
        rows.append(
            {
                "patient_id": name,
                "lesion_id": "1",
                "timepoint": tp,
                "image": str(img_path),
                "mask": str(gtv_path),
                "roi": "",
            }
        )
    return rows


def test_final_models_fitted_on_all_lesions(prepared, final):
    n = len(prepared)
    assert final.names == MODELS
    assert final.n_lesions == n and final.n_responders == sum(d.label for d in prepared)
    # networks on every lesion's first-MRI training samples (one slice x 6 rotations), pipelines on one row each
    assert final.n_samples["cam"] == final.n_samples["cam_sequential"] == 6 * n
    assert final.n_samples["radiomics"] == final.n_samples["gradients"] == n
    for kind in ("radiomics", "gradients"):
        fm = final.features[kind]
        assert fm.pipeline.named_steps["impute"].n_features_in_ == len(fm.feature_names)
    # joint: 2 epochs; the ablation: 2 autoencoder + 2 classifier epochs
    assert [h["phase"] for h in final.networks["cam"].history_] == ["joint"] * 2
    assert [h["phase"] for h in final.networks["cam_sequential"].history_] == ["autoencoder"] * 2 + [
        "classifier"
    ] * 2
    assert set(final.training_lesions) == {d.key for d in prepared}


def test_save_and_load_give_identical_predictions(final, saved, tiny_manifest):
    folder = saved / "models"
    assert {p.name for p in folder.iterdir()} == {
        "manifest.json",
        "final_cam.pt",
        "final_cam_sequential.pt",
        "final_radiomics.joblib",
        "final_gradients.joblib",
    }
    info = json.loads((folder / "manifest.json").read_text())
    assert info["n_lesions"] == final.n_lesions and info["threshold"] == pytest.approx(0.2)
    assert info["models"]["cam"]["file"] == "final_cam.pt" and info["models"]["cam"]["n_samples"] == 72
    assert "executes code" in info["note"]
    loaded = load_final_models(saved)
    assert loaded.names == final.names and loaded.preprocess == final.preprocess
    cohort = read_manifest(tiny_manifest)
    before = predict_cohort(final, cohort)
    after = predict_cohort(loaded, cohort)
    assert before == after
    assert all(0.0 <= r[f"p_{m}"] <= 1.0 for r in before for m in MODELS)
    with pytest.raises(InputError, match="already exists"):
        save_final_models(final, saved)


def test_load_errors(final, saved, tmp_path):
    with pytest.raises(InputError, match="run folder not found"):
        load_final_models(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no saved final models"):
        load_final_models(tmp_path)
    copy = tmp_path / "copy"
    save_final_models(final, copy)
    manifest = copy / "models" / "manifest.json"
    info = json.loads(manifest.read_text())
    info["versions"]["adaptrt"] = "0.0.1"
    manifest.write_text(json.dumps(info))
    with pytest.warns(UserWarning, match="saved with adaptrt 0.0.1"):
        load_final_models(copy)
    info["format_version"] = 99
    manifest.write_text(json.dumps(info))
    with pytest.raises(InputError, match="format version 99"):
        load_final_models(copy)
    save_final_models(final, copy, overwrite=True)
    with (copy / "models" / "final_gradients.joblib").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(InputError, match="SHA-256"):
        load_final_models(copy)
    save_final_models(final, copy, overwrite=True)
    (copy / "models" / "final_cam.pt").unlink()
    with pytest.raises(InputError, match="is missing"):
        load_final_models(copy)


def test_predict_new_manifest_lists_excluded_lesions(final, tiny_manifest, tmp_path):
    # first-MRI rows only (no labels needed), under new patient ids; plus a lesion cut by the field of view
    rows = [
        dict(r, patient_id="X" + r["patient_id"]) for r in _rows(tiny_manifest) if r["timepoint"] == "mri1"
    ]
    rows += [r for r in _nifti_lesion(tmp_path, "EDGE", (5, 24), 6.0, 6.0) if r["timepoint"] == "mri1"]
    manifest = _write(tmp_path / "new.csv", rows)
    out = predict_cohort(final, read_manifest(manifest))
    assert [r["lesion"] for r in out] == [f"{r['patient_id']}/{r['lesion_id']}" for r in rows]
    ok, edge = out[:-1], out[-1]
    assert all(
        r["status"] == "ok" and 0.0 <= r["p_cam"] <= 1.0 and 0.0 <= r["p_radiomics"] <= 1.0 for r in ok
    )
    # renamed, but the pixels are those of the training lesions
    assert all(r["seen_by"] == "pixels" for r in ok)
    assert edge["status"] == "excluded" and "GTV on the image border" in edge["reason"]
    assert edge["p_cam"] is None and edge["p_gradients"] is None and not edge["seen_in_training"]
    with pytest.raises(InputError, match="no lesion of the manifest has a 'mri2' row"):
        predict_cohort(final, read_manifest(manifest), timepoint="mri2")
    with pytest.raises(InputError, match="cannot predict from time point 'followup'"):
        predict_cohort(final, read_manifest(manifest), timepoint="followup")


def test_predict_from_second_mri(final, tiny_manifest, tmp_path):
    rows = _rows(tiny_manifest)
    rows += [r for r in _nifti_lesion(tmp_path, "NEW", (24, 24), 6.0, 6.0) if r["timepoint"] == "mri1"]
    out = predict_cohort(final, read_manifest(_write(tmp_path / "m.csv", rows)), timepoint="mri2")
    assert all(r["status"] == "ok" and r["timepoint"] == "mri2" for r in out[:-1])
    assert out[-1]["status"] == "excluded" and out[-1]["reason"] == "no 'mri2' row in the manifest"


def test_run_predict_writes_folder_and_refuses_overwrite(saved, tiny_manifest, tmp_path):
    out = tmp_path / "pred"
    run_predict(saved, tiny_manifest, out, progress=False)
    with (out / "results" / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == TINY.n_lesions and {r["label"] for r in rows} == {"0", "1"}
    summary = json.loads((out / "results" / "predictions.json").read_text())
    # the training cohort itself: metrics are reported, but not as an external test
    assert summary["external_test"] is False and summary["n_seen_in_training"] == TINY.n_lesions
    assert {m["model"] for m in summary["metrics"]} == set(MODELS)
    report = (out / "report.html").read_text()
    assert "NOT an external test" in report and "Labels are not needed" in report
    with pytest.raises(InputError, match="already exists"):
        run_predict(saved, tiny_manifest, out, progress=False)
    run_predict(saved, tiny_manifest, out, overwrite=True, progress=False)
    assert (out / "results" / "metrics.csv").is_file()


def test_run_predict_external_test(saved, tmp_path):
    rows = _nifti_lesion(tmp_path, "A", (24, 24), 7.0, 4.0) + _nifti_lesion(tmp_path, "B", (22, 26), 6.0, 6.5)
    out = tmp_path / "pred"
    run_predict(saved, _write(tmp_path / "ext.csv", rows), out, progress=False)
    summary = json.loads((out / "results" / "predictions.json").read_text())
    assert summary["external_test"] is True
    assert [r["label"] for r in summary["rows"]] == [1, 0]
    assert all(m["n"] == 2 for m in summary["metrics"])
    assert "External test against the follow-up labels" in (out / "report.html").read_text()


def test_identical_runs_give_identical_checkpoints(prepared, tmp_path):
    """Two identical quick fits saved to two run folders: the same SHA-256 (no staging name in the archive)."""
    cfg = dataclasses.replace(_config(), models=("gradients", "cam"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))
    digests = []
    for run in ("run_a", "run_b"):
        torch.set_num_threads(1)
        manifest = save_final_models(fit_final_models(prepared, cfg), tmp_path / run)
        entries = json.loads(manifest.read_text())["models"]
        digests.append({name: entry["sha256"] for name, entry in entries.items()})
        # the archive's records are named "archive/...", never after the (staging) file
        assert b"archive/data.pkl" in (manifest.parent / "final_cam.pt").read_bytes()
    assert set(digests[0]) == {"gradients", "cam"}
    assert digests[0] == digests[1]


def test_second_mri_is_cut_with_the_first_mri_box(tiny_manifest, prepared):
    # the same-box rule: every later time point is cut with the first MRI's box and slices
    for d in prepared:
        assert d.test_mri2.box == d.test_mri1.box
        assert np.array_equal(d.test_mri2.slice_index, d.test_mri1.slice_index)
        assert np.array_equal(np.unique(d.train.slice_index), np.unique(d.test_mri1.slice_index))
    # the old rule (a box refitted to the shrunken second-MRI GTV) gives other boxes for some lesions
    own = dataclasses.replace(_config(), later_crop="own", models=("gradients",))
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), own)
    assert any(d.test_mri2.box != d.test_mri1.box for d in lesions)


def test_fixed_field_of_view_in_mm(tiny_manifest):
    cfg = dataclasses.replace(_config(), fov_mm=40.0, models=("gradients",))
    lesions, _ = prepare_cohort(read_manifest(tiny_manifest), cfg)
    spacing = read_manifest(tiny_manifest).lesions[0]["mri1"].load_image().spacing
    for d in lesions:
        _, _, y0, y1, x0, x1 = d.test_mri1.box
        assert (y1 - y0) * spacing[1] == pytest.approx(40.0, abs=spacing[1])
        assert (x1 - x0) * spacing[2] == pytest.approx(40.0, abs=spacing[2])
        assert d.test_mri2.box == d.test_mri1.box == d.train.box
    with pytest.raises(InputError, match="fov_mm must be null or a positive number"):
        dataclasses.replace(cfg, fov_mm=-1.0)


def test_explain_and_predict_agree_on_a_lesion(final, saved, tiny_manifest, tmp_path):
    from adaptrt.config import to_jsonable
    from adaptrt.response.explain import ExplainConfig, explain_from_manifest

    (saved / "config.json").write_text(json.dumps(to_jsonable(_config())))
    cohort = read_manifest(tiny_manifest)
    key = cohort.lesions[0].key
    for timepoint in ("mri1", "mri2"):
        pred = {r["lesion"]: r for r in predict_cohort(load_final_models(saved), cohort, timepoint=timepoint)}
        out = explain_from_manifest(
            saved,
            tiny_manifest,
            key,
            tmp_path / f"ex_{timepoint}",
            timepoint=timepoint,
            config=ExplainConfig(),
        )
        info = json.loads((out / "explanation.json").read_text())
        # by default explain uses the final model (the one predict uses) and the same slices
        assert info["model"]["path"].endswith("final_cam.pt") and info["model_kind"].startswith("final model")
        assert len(info["probability_slices"]) == pred[key]["n_slices"]
        assert info["probability_responder"] == pytest.approx(pred[key]["p_cam"], abs=1e-6)


def test_engine_trainer_fits_the_final_network_as_fit(prepared, tiny_manifest, tmp_path):
    """The paper profile's trainer (fit_fast, no monitoring data) gives fit's final network to float32
    rounding, as an AutoencoderClassifier that is saved, loaded and used by predict as before."""
    from .test_batched import _NOISE_ONLY

    base = dataclasses.replace(_config(), models=("cam",))
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=1))
    torch.set_num_threads(1)
    fast = fit_final_models(prepared, dataclasses.replace(base, trainer="engine", compile=False))
    plain = fit_final_models(prepared, dataclasses.replace(base, trainer="plain"))
    got, want = fast.networks["cam"], plain.networks["cam"]
    assert type(got) is type(want) and got.seed == want.seed == base.seed
    sd_got, sd_want = got.model_.state_dict(), want.model_.state_dict()
    assert sd_got.keys() == sd_want.keys()
    for k in sd_want:
        if k not in _NOISE_ONLY:
            torch.testing.assert_close(sd_got[k], sd_want[k], rtol=1e-4, atol=1e-5, msg=k)
    assert [h["epoch"] for h in got.history_] == [h["epoch"] for h in want.history_] == [1]
    assert got.history_[0]["val_loss"] is None and want.history_[0]["val_loss"] is None
    assert fast.n_samples["cam"] == sum(len(d.train) for d in prepared)
    # saved and loaded as before; predict uses the loaded network
    save_final_models(fast, tmp_path / "run")
    loaded = load_final_models(tmp_path / "run")
    rows = predict_cohort(loaded, read_manifest(tiny_manifest))
    d = prepared[0]
    p = got.predict_proba(d.test_mri1.image, d.test_mri1.mask_bottleneck)
    row = next(r for r in rows if r["lesion"] == d.key)
    assert row["p_cam"] == pytest.approx(float(np.mean(p)), abs=1e-6)
