"""``adaptrt target predict``: checksummed model, NIfTI + RTSTRUCT of DL / RTOG / EORTC, bad input exits 2."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from adaptrt.cli import main
from adaptrt.io.dicom import read_dicom_series
from adaptrt.io.nifti import read_nifti
from adaptrt.io.rtstruct import read_rtstruct
from adaptrt.simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort
from adaptrt.target.dl import DLConfig, TrainedModel, contiguity
from adaptrt.target.predict import MODEL_FILE, load_model, model_bytes, save_model
from adaptrt.target.unet3d import UNet3D

SMALL = GlioblastomaConfig(n_patients=2, voxel_mm=4.0, shape=(30, 40, 34))


def _model(seed: int = 0) -> TrainedModel:
    torch.manual_seed(seed)
    net = UNet3D(6, base_features=2)
    torch.nn.init.constant_(net.head.bias, 0.2)  # a positive bias: a non-empty prediction
    cfg = DLConfig(base_features=2, epochs=1, device="cpu")
    return TrainedModel(cfg, dict(net.state_dict()), 1, (), ("A",), ("B",))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gbm") / "cohort"
    write_glioblastoma_cohort(out, config=SMALL, seed=5)
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    save_model(run, _model())
    return run


def test_checkpoints_are_byte_identical_and_checked(tmp_path: Path, run_dir: Path) -> None:
    assert model_bytes(_model(0)) == model_bytes(_model(0))
    assert model_bytes(_model(0)) != model_bytes(_model(1))
    man = json.loads((run_dir / "models/dl_ctv.json").read_text())
    assert man["sha256"] == hashlib.sha256((run_dir / MODEL_FILE).read_bytes()).hexdigest()
    loaded = load_model(run_dir)
    assert loaded.config.channels == DLConfig().channels and loaded.config.base_features == 2
    for k, v in _model().state.items():
        assert torch.equal(loaded.state[k], v)


def test_predict_writes_nifti_rtstruct_and_probability(cohort: Path, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    rc = main(
        [
            "target",
            "predict",
            "--run",
            str(run_dir),
            "--manifest",
            str(cohort / "manifest.csv"),
            "--out",
            str(out),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert [r["patient_id"] for r in rows] == ["GBM001", "GBM002"]
    for pid in ("GBM001", "GBM002"):
        d = out / pid
        brain = np.asarray(read_nifti(cohort / "patients" / pid / "brain.nii.gz", kind="mask").array, bool)
        dl = np.asarray(read_nifti(d / "CTV_DL.nii.gz", kind="mask").array, bool)
        assert dl.shape == brain.shape and not np.any(dl & ~brain)
        assert contiguity(dl) <= 1
        prob = np.asarray(read_nifti(d / "dl_probability.nii.gz").array)
        assert prob.min() >= 0 and prob.max() <= 1
        assert dl.any() and np.mean(prob[dl] >= 0.5) > 0.5  # the rest: filled holes
        for name in ("RTOG", "EORTC"):
            assert (d / f"CTV_{name}.nii.gz").is_file()
        series = read_dicom_series(d / "MR")
        back = read_rtstruct(d / "RS_ctvs.dcm", "CTV_DL", series)
        assert np.array_equal(np.asarray(back.array, bool), dl)
        if shutil.which("dciodvfy"):
            res = subprocess.run(["dciodvfy", str(d / "RS_ctvs.dcm")], capture_output=True, text=True)
            errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
            assert errors == []


def test_bad_input_exits_2_and_writes_nothing(
    cohort: Path, run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a manifest without the model's CCrI channel
    rows = list(csv.DictReader(open(cohort / "manifest.csv")))
    fields = [f for f in rows[0] if f != "map_CCrI"]
    no_ccri = cohort / "no_ccri.csv"
    with open(no_ccri, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "x"
    assert (
        main(["target", "predict", "--run", str(run_dir), "--manifest", str(no_ccri), "--out", str(out)]) == 2
    )
    assert "expects the input channels" in capsys.readouterr().err and not out.exists()
    # one patient lacking a channel: named
    one = cohort / "one_missing.csv"
    rows2 = [dict(r) for r in rows]
    rows2[1]["map_nFA"] = ""
    with open(one, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows2)
    assert main(["target", "predict", "--run", str(run_dir), "--manifest", str(one), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "GBM002" in err and "nFA" in err and not out.exists()
    # a damaged checkpoint
    bad = tmp_path / "bad_run"
    shutil.copytree(run_dir, bad)
    data = bytearray((bad / MODEL_FILE).read_bytes())
    data[-10] ^= 0xFF
    (bad / MODEL_FILE).write_bytes(bytes(data))
    assert (
        main(
            [
                "target",
                "predict",
                "--run",
                str(bad),
                "--manifest",
                str(cohort / "manifest.csv"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "SHA-256" in capsys.readouterr().err and not out.exists()
    # a run folder without a model
    assert (
        main(
            [
                "target",
                "predict",
                "--run",
                str(tmp_path),
                "--manifest",
                str(cohort / "manifest.csv"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "no DL-CTV model" in capsys.readouterr().err
