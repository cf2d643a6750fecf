"""``adaptrt target run`` end to end on a tiny simulated cohort; bad input exits 2 and writes nothing."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from adaptrt.cli import main
from adaptrt.io.nifti import read_nifti, write_nifti
from adaptrt.simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort
from adaptrt.target.run import pattern_vs_paper, wilson_interval
from adaptrt.target.study import target_config
from adaptrt.types import Volume

SMALL = GlioblastomaConfig(n_patients=6, voxel_mm=4.0, shape=(30, 40, 34))


@pytest.fixture(scope="module")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gbm") / "cohort"
    write_glioblastoma_cohort(out, config=SMALL, seed=5)
    return out


@pytest.fixture(scope="module")
def run_dir(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    rc = main(
        [
            "target",
            "run",
            "--manifest",
            str(cohort_dir / "manifest.csv"),
            "--out",
            str(out),
            "--quiet",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0
    return out


def test_run_writes_every_table_figure_and_the_report(run_dir: Path, cohort_dir: Path) -> None:
    for name in (
        "patients",
        "pattern_summary",
        "pattern_vs_paper",
        "progression_types",
        "zone_threshold_sweep",
        "category_counts",
        "category_medians",
        "category_tests",
        "forests",
        "forest_folds",
        "feature_importance",
        "target_exclusions",
    ):
        assert (run_dir / "results" / f"{name}.csv").is_file(), name
    for name in ("ctv_metrics", "ctv_summary", "ctv_wilcoxon", "ctv_coverage_volume"):  # item 6
        assert (run_dir / "results" / f"{name}.csv").is_file(), name
    for fig in (
        "pattern_bars",
        "category_boxplots_all",
        "roc",
        "importance",
        "ctv_metrics",
        "ctv_coverage_volume",
    ):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000
    html = (run_dir / "report.html").read_text()
    for title in ("Item 1", "Item 2", "Item 3", "chance 0.5", "Wilcoxon signed-rank", "Holm"):
        assert title in html
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["profile"] == "quick" and cfg["n_jobs"] == 1
    with (run_dir / "results" / "patients.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["class"] for r in rows} <= {"inside", "margin", "beyond", "none"}
    with (run_dir / "results" / "forests.csv").open() as fh:
        forests = list(csv.DictReader(fh))
    assert [(f["model_key"], f["patients"]) for f in forests] == [
        ("cel", "all"),
        ("nel", "all"),
        ("cel", "early"),
        ("nel", "early"),
        ("cel", "late"),
        ("nel", "late"),
    ]
    nel = forests[1]
    assert float(nel["mean AUC"]) > 0.6  # the simulator plants a signal ahead of NEL progression
    with (cohort_dir / "truth" / "truth.csv").open() as fh:
        truth = {r["patient_id"]: r for r in csv.DictReader(fh)}
    for r in rows:  # the study's pattern from the masks equals the simulator's hidden-truth pattern
        assert r["class"] == truth[r["patient_id"]]["recurrence_category"]


def test_existing_run_folder_is_refused_before_any_work(run_dir: Path, cohort_dir: Path) -> None:
    before = sorted(p.name for p in run_dir.rglob("*"))
    rc = main(
        ["target", "run", "--manifest", str(cohort_dir / "manifest.csv"), "--out", str(run_dir), "--quiet"]
    )
    assert rc == 2
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_bad_input_exits_2_and_writes_nothing(
    cohort_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "cohort"
    shutil.copytree(cohort_dir, bad)
    f = bad / "patients" / "GBM002" / "nFLAIR.nii.gz"
    v = read_nifti(f)
    write_nifti(Volume(np.array(v.array), spacing=(4.0, 4.0, 5.0), origin=v.origin), f, overwrite=True)
    out = tmp_path / "run"
    rc = main(["target", "run", "--manifest", str(bad / "manifest.csv"), "--out", str(out), "--quiet"])
    assert rc == 2
    assert not out.exists() and not list(tmp_path.glob(".run*"))
    err = capsys.readouterr().err
    assert "GBM002" in err and "nFLAIR" in err and "Fix:" in err


def test_profiles_and_config_validation() -> None:
    quick, paper = target_config("quick"), target_config("paper")
    assert quick.n_estimators < paper.n_estimators and quick.max_voxels_per_class < paper.max_voxels_per_class
    assert target_config("quick", seed=3).seed == 3
    with pytest.raises(ValueError, match="'n_folds' parameter of TargetConfig must be an int >= 2"):
        target_config("quick", n_folds=1)
    with pytest.raises(ValueError, match="'press_box' parameter"):
        target_config("quick", press_box="outside")
    with pytest.raises(ValueError, match="profile must be 'quick' or 'paper'"):
        target_config("fast")  # type: ignore[arg-type]


def test_wilson_interval_and_paper_comparison() -> None:
    lo, hi = wilson_interval(29, 101)
    # by hand: centre (p + z²/2n) / (1 + z²/n) = 0.2949, half-width 0.0870
    assert lo == pytest.approx(0.2080, abs=1e-3) and hi == pytest.approx(0.3819, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert pattern_vs_paper([]) and pattern_vs_paper([])[0]["this cohort"] == "–"
