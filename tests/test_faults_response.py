"""`adaptrt response run` on cohorts that cannot make a study, or that carry another simulator's truth: exit 2
with the manifest named and the real cause, nothing written; a foreign ``truth/lesions.csv`` is ignored with a
note."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from adaptrt.cli import main
from adaptrt.response.study import TRUTH_COLUMNS, read_truth_table
from adaptrt.simulate.phantom import PhantomConfig, write_phantom_cohort

# NIfTI phantoms: the quickest cohort that goes through every loader of the study
MIXED = PhantomConfig(n_patients=8, shape=(16, 48, 48), responder_share=0.5)
ALL_RESPONDERS = PhantomConfig(n_patients=6, shape=(16, 48, 48), responder_share=1.0)
RUN = ["--models", "gradients", "--trials", "1", "--test-size", "0.5", "--no-final"]


@pytest.fixture(scope="module")
def mixed_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_cohort(
        tmp_path_factory.mktemp("mixed") / "cohort", config=MIXED, fmt="nifti", seed=2
    )


def _copy(manifest: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "cohort"
    shutil.copytree(manifest.parent, dst)
    return dst / "manifest.csv"


def _drop_rows(manifest: Path, keep: object) -> None:
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = list(reader.fieldnames or []), list(reader)
    with manifest.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(r for r in rows if keep(r))  # type: ignore[operator]


def test_phantom_cohort_runs_and_its_truth_is_ignored_with_a_note(
    mixed_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _copy(mixed_src, tmp_path)
    truth = manifest.parent / "truth" / "lesions.csv"
    # the phantom's own truth table, with other columns than the metastasis simulator's
    assert truth.is_file()
    table, note = read_truth_table(manifest)
    assert table == {} and note is not None and "truth/lesions.csv" in note and "ignored" in note
    out = tmp_path / "run"
    assert main(["response", "run", "--manifest", str(manifest), "--out", str(out), *RUN]) == 0
    printed = capsys.readouterr().out
    assert "is not the metastasis simulator's truth table" in printed and "'patient_id'" in printed
    assert (out / "results" / "table1.csv").is_file()
    assert "is not the metastasis simulator&#x27;s truth table" in (out / "report.html").read_text()


def test_truth_table_read_only_in_the_expected_format(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    assert read_truth_table(manifest) == ({}, None)  # no truth folder: nothing to say
    (tmp_path / "truth").mkdir()
    truth = tmp_path / "truth" / "lesions.csv"
    truth.write_text(",".join(TRUTH_COLUMNS) + "\nP001,1,truth/P001/GTV_1_resistant_mri2.nii.gz\n")
    table, note = read_truth_table(manifest)
    assert note is None and table[("P001", "1")]["resistant_mri2"].endswith("mri2.nii.gz")
    truth.write_bytes(b"patient_id,lesion_id,resistant_mri2\nP\xe9001,1,x\n")  # Latin-1, not UTF-8
    table, note = read_truth_table(manifest)
    assert table == {} and note is not None and "not a UTF-8 CSV" in note


def test_cohort_whose_lesions_all_lack_followup(mixed_src: Path, tmp_path: Path, capsys) -> None:
    manifest = _copy(mixed_src, tmp_path)
    _drop_rows(manifest, lambda r: r["timepoint"] != "followup")
    out = tmp_path / "run"
    assert main(["response", "run", "--manifest", str(manifest), "--out", str(out), "--quiet", *RUN]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err
    assert "every lesion (" in err and "was excluded for lacking follow-up" in err
    assert "timepoint 'followup'" in err and "rare class" not in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def test_one_class_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_phantom_cohort(tmp_path / "cohort", config=ALL_RESPONDERS, fmt="nifti", seed=3)
    out = tmp_path / "run"
    assert main(["response", "run", "--manifest", str(manifest), "--out", str(out), "--quiet", *RUN]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err and "usable lesions are responders" in err and "needs both classes" in err
    assert "--threshold" in err and "lacking follow-up" not in err and "Traceback" not in err
    assert not out.exists()


def test_one_class_left_after_lesions_without_followup(mixed_src: Path, tmp_path: Path, capsys) -> None:
    manifest = _copy(mixed_src, tmp_path)
    with (manifest.parent / "truth" / "lesions.csv").open(newline="") as fh:
        fate = {(int(r["patient"]), int(r["lesion"])): r["responder"] == "True" for r in csv.DictReader(fh)}
    non_responders = {(f"P{p + 1:03d}", str(les + 1)) for (p, les), resp in fate.items() if not resp}
    assert non_responders  # the seed gives both classes

    def keep(r: dict[str, str]) -> bool:
        return r["timepoint"] != "followup" or (r["patient_id"], r["lesion_id"]) not in non_responders

    _drop_rows(manifest, keep)
    out = tmp_path / "run"
    assert main(["response", "run", "--manifest", str(manifest), "--out", str(out), "--quiet", *RUN]) == 2
    err = capsys.readouterr().err
    assert str(manifest) in err and "usable lesions are responders" in err
    assert f"{len(non_responders)} of the " in err and "were excluded for lacking follow-up" in err
    assert "add the follow-up rows" in err
    assert not out.exists()
