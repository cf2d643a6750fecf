"""Tests of the brain-metastasis cohort simulator: mechanism, geometry, determinism, validation, writing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.seeding import spawn
from adaptrt.simulate.metastases import (
    TIMEPOINTS,
    MetastasisConfig,
    SimulatedPatient,
    _draw_fates,
    _resistance_offset,
    lesion_counts,
    simulate_patient,
    write_metastasis_cohort,
)

# a small head (80 x 128 x 112 mm) and small lesions keep every patient well under 0.2 s
SMALL = {"fov": (40, 128, 112), "volume_range_mm3": (15.0, 1500.0)}


def _cohort(cfg: MetastasisConfig, seed: int) -> list[SimulatedPatient]:
    return [simulate_patient(cfg, i, r) for i, r in enumerate(spawn(seed, cfg.n_patients))]


@pytest.fixture(scope="module")
def patients() -> list[SimulatedPatient]:
    return _cohort(MetastasisConfig(n_patients=12, n_lesions=30, **SMALL), seed=1)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_patients": 3, "n_lesions": 13}, "at most 4 \\* n_patients"),
        ({"n_patients": 3, "n_lesions": 2}, "at least n_patients"),
        ({"n_patients": 0, "n_lesions": 0}, "n_patients must be >= 1"),
        ({"volume_range_mm3": (-5.0, 100.0)}, "0 < min <= max"),
        ({"volume_range_mm3": (500.0, 100.0)}, "0 < min <= max"),
        ({"volume_range_mm3": (1.0, 100.0)}, "at least 4 voxels"),
        ({"responder_share": 1.5}, "responder_share must be in \\[0, 1\\]"),
        ({"responder_share": -0.1}, "responder_share must be in \\[0, 1\\]"),
        ({"signature_strength": -1.0}, "signature_strength must be >= 0"),
        ({"in_plane_mm": 0.0}, "in_plane_mm must be > 0"),
        ({"fov": (8, 64, 64)}, "fov must be three sizes >= 16"),
        ({"fov": (32, 112, 96), "volume_range_mm3": (15.0, 38_000.0)}, "does not fit"),
        ({"mri2_progress": (0.6, 0.2)}, "mri2_progress"),
        ({"response_threshold": 1.0}, "response_threshold must be in \\(0, 1\\)"),
    ],
)
def test_bad_config_raises(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetastasisConfig(**kwargs)  # type: ignore[arg-type]


def test_lesion_counts_sum_and_bounds() -> None:
    default = lesion_counts(MetastasisConfig())
    assert sum(default) == 69 and len(default) == 39
    assert min(default) >= 1 and max(default) <= 4
    assert default.count(1) >= 20  # most PULSAR patients had a single metastasis
    for n_p, n_l in [(1, 1), (1, 4), (3, 5), (5, 20), (7, 8)]:
        counts = lesion_counts(MetastasisConfig(n_patients=n_p, n_lesions=n_l, **SMALL))  # type: ignore[arg-type]
        assert sum(counts) == n_l and len(counts) == n_p and set(counts) <= {1, 2, 3, 4}


def test_patient_index_out_of_range() -> None:
    cfg = MetastasisConfig(n_patients=2, n_lesions=2, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patient_index must be in"):
        simulate_patient(cfg, 2, 0)


# ---------------------------------------------------------------------------------------------- geometry
def test_masks_inside_brain_disjoint_and_off_the_border(patients: list[SimulatedPatient]) -> None:
    lo, hi = SMALL["volume_range_mm3"]
    n_lesions = 0
    for p in patients:
        assert p.images[TIMEPOINTS[0]].shape == (40, 128, 112)
        for t in TIMEPOINTS:
            stack = np.stack([les.gtv[t] for les in p.lesions]).astype(int)
            assert stack.sum(axis=0).max() <= 1, "lesions overlap"
            union = stack.sum(axis=0) > 0
            assert not np.any(union & ~p.brain), "lesion tissue outside the brain"
            for a in (0, 1, 2):
                edge = np.take(union, [0, union.shape[a] - 1], axis=a)
                assert not edge.any(), "a lesion touches the image border"
        for les in p.lesions:
            n_lesions += 1
            v1 = les.volumes_mm3["mri1"]
            # the volume is drawn in [lo, hi] and realised to the nearest voxel (2 mm³)
            assert lo - 2.0 <= v1 <= hi + 2.0
            assert les.gtv["mri1"].any() and les.gtv["mri2"].any()
            # resistant tissue lies inside the GTV at every time point
            for t in TIMEPOINTS:
                assert not np.any(les.resistant[t] & ~les.gtv[t])
            assert les.resistant_fraction == pytest.approx(
                les.resistant["mri1"].sum() / les.gtv["mri1"].sum()
            )
            assert (les.resistant_fraction == 0) == (les.n_resistant_regions == 0)
    assert n_lesions == 30


def test_truth_ratio_matches_masks(patients: list[SimulatedPatient]) -> None:
    for p in patients:
        voxel = float(np.prod(p.spacing))
        for les in p.lesions:
            for t in TIMEPOINTS:
                assert les.volumes_mm3[t] == pytest.approx(les.gtv[t].sum() * voxel)
            ratio = les.gtv["followup"].sum() / les.gtv["mri1"].sum()
            assert les.ratio == pytest.approx(ratio)
            assert les.responder == (ratio <= 0.8 + 1e-9)
            # the masks realise the intended treatment effect up to rasterisation
            assert les.ratio == pytest.approx(
                les.intended_ratio, abs=0.35 / np.sqrt(les.gtv["mri1"].sum()) + 0.02
            )


def test_drift_is_second_minus_first_and_local(patients: list[SimulatedPatient]) -> None:
    p = patients[0]
    assert p.drift.dtype == np.float32 and p.drift.shape == p.images["mri1"].shape
    near = np.zeros(p.drift.shape, dtype=bool)
    for les in p.lesions:
        near |= les.gtv["mri1"] | les.gtv["mri2"]
    assert np.abs(p.drift[near]).mean() > 10.0 * max(np.abs(p.drift[~p.brain]).mean(), 1e-6)
    # the noisy images differ by the drift plus noise only
    diff = p.images["mri2"] - p.images["mri1"] - p.drift
    assert abs(float(diff[p.brain].mean())) < 2.0


# ---------------------------------------------------------------------------------------------- mechanism
def test_more_resistance_means_less_shrinkage(patients: list[SimulatedPatient]) -> None:
    f = np.array([les.resistant_fraction for p in patients for les in p.lesions])
    ratio = np.array([les.ratio for p in patients for les in p.lesions])
    ranks = np.argsort(np.argsort(f)), np.argsort(np.argsort(ratio))
    spearman = np.corrcoef(*ranks)[0, 1]
    assert spearman > 0.7
    assert ratio[f == 0].mean() < ratio[f > 0.5].mean() - 0.5


def test_responder_share_follows_config() -> None:
    shares = {}
    for target in (0.2, 0.8):
        cfg = MetastasisConfig(n_patients=14, n_lesions=40, responder_share=target, **SMALL)  # type: ignore[arg-type]
        labels = [les.responder for p in _cohort(cfg, seed=3) for les in p.lesions]
        shares[target] = float(np.mean(labels))
        # 40 lesions: binomial standard deviation ~0.065
        assert abs(shares[target] - target) < 0.2
    assert shares[0.8] - shares[0.2] > 0.35


@pytest.mark.parametrize("target", [0.0, 0.3, 0.6, 1.0])
def test_calibration_of_the_resistant_fraction(target: float) -> None:
    cfg = MetastasisConfig(responder_share=target)
    mu = _resistance_offset(cfg)
    rng = np.random.default_rng(7)
    n = 20_000
    fates = _draw_fates(cfg, rng, n, cfg.patient_effect * rng.standard_normal(n), mu)
    assert float(np.mean(fates.ratio <= 0.8 + 1e-9)) == pytest.approx(target, abs=0.02)


def test_volume_alone_does_not_separate_the_classes() -> None:
    cfg = MetastasisConfig()
    rng = np.random.default_rng(0)
    n = 4000
    fates = _draw_fates(cfg, rng, n, cfg.patient_effect * rng.standard_normal(n), _resistance_offset(cfg))
    y = fates.ratio <= 0.8
    # AUC of "smaller lesion -> responder" by the rank-sum formula
    ranks = np.argsort(np.argsort(-fates.log_volume)) + 1
    auc = (ranks[y].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (~y).sum())
    assert 0.5 < auc < 0.7


def _signature_effect(strength: float) -> tuple[float, float]:
    cfg = MetastasisConfig(
        n_patients=12,
        n_lesions=30,
        fov=(40, 128, 112),
        volume_range_mm3=(100.0, 1500.0),
        signature_strength=strength,
        responder_share=0.4,
    )
    d = []
    for p in _cohort(cfg, seed=1):
        img = p.images["mri1"]
        for les in p.lesions:
            g, r = les.gtv["mri1"], les.resistant["mri1"]
            s = g & ~r
            if r.sum() >= 3 and s.sum() >= 3:
                d.append((img[r].mean() - img[s].mean()) / img[g].std())
    return float(np.mean(d)), float(np.std(d) / np.sqrt(len(d)))


def test_signature_strength_controls_visibility() -> None:
    mean0, se0 = _signature_effect(0.0)
    mean1, se1 = _signature_effect(1.0)
    assert abs(mean0) < 3.0 * se0 + 0.05  # indistinguishable: within noise of zero
    assert mean1 < -0.4 and mean1 < mean0 - 5.0 * max(se0, se1)


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_first_mri_blind_to_resistant_tissue_only_at_strength_zero(
    strength: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The negative control is structural: at strength 0 the first MRI does not depend on where (or whether)
    resistant tissue is. The same patient is simulated twice, the second time with every resistant region
    emptied after its random draws (so both runs consume the same random numbers): the labels' cause changes,
    the first-MRI image must not (issue 14: a strength-0 texture cue must be chance or size, never a leak)."""
    import adaptrt.simulate.metastases as sim

    cfg = MetastasisConfig(n_patients=3, n_lesions=6, signature_strength=strength, **SMALL)  # type: ignore[arg-type]
    real = [simulate_patient(cfg, i, r) for i, r in enumerate(spawn(3, 3))]
    original = sim._resistant_region

    def emptied(*args: object, **kwargs: object) -> tuple[np.ndarray, int]:
        mask, k = original(*args, **kwargs)  # type: ignore[arg-type]
        return np.zeros_like(mask), k

    monkeypatch.setattr(sim, "_resistant_region", emptied)
    blind = [simulate_patient(cfg, i, r) for i, r in enumerate(spawn(3, 3))]
    assert sum(les.resistant["mri1"].sum() for p in real for les in p.lesions) > 0
    assert all(les.resistant["mri1"].sum() == 0 for p in blind for les in p.lesions)
    # the outcome did change (resistant tissue grows, so emptied lesions shrink further) ...
    assert any(
        a.ratio != b.ratio
        for pa, pb in zip(real, blind, strict=True)
        for a, b in zip(pa.lesions, pb.lesions, strict=True)
    )
    for pa, pb in zip(real, blind, strict=True):
        for a, b in zip(pa.lesions, pb.lesions, strict=True):
            np.testing.assert_array_equal(a.gtv["mri1"], b.gtv["mri1"])  # same lesion at the first MRI
    same = all(
        np.array_equal(pa.images["mri1"], pb.images["mri1"]) for pa, pb in zip(real, blind, strict=True)
    )
    # ... and the first MRI is bit-identical at strength 0, and differs once the signature is on
    assert same is (strength == 0.0)


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_arrays_different_seed_different() -> None:
    cfg = MetastasisConfig(n_patients=2, n_lesions=3, **SMALL)  # type: ignore[arg-type]
    a = simulate_patient(cfg, 1, np.random.default_rng(5))
    b = simulate_patient(cfg, 1, np.random.default_rng(5))
    c = simulate_patient(cfg, 1, np.random.default_rng(6))
    for t in TIMEPOINTS:
        np.testing.assert_array_equal(a.images[t], b.images[t])
        for la, lb in zip(a.lesions, b.lesions, strict=True):
            np.testing.assert_array_equal(la.gtv[t], lb.gtv[t])
            np.testing.assert_array_equal(la.resistant[t], lb.resistant[t])
    np.testing.assert_array_equal(a.drift, b.drift)
    assert not np.array_equal(a.images["mri1"], c.images["mri1"])


# ---------------------------------------------------------------------------------------------- writing
def _digest(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MetastasisConfig]:
    cfg = MetastasisConfig(n_patients=2, n_lesions=3, **SMALL)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("mets") / "cohort"
    manifest = write_metastasis_cohort(out, config=cfg, seed=11)
    assert manifest == out / "manifest.csv"
    return out, cfg


def test_written_cohort_loads_back_with_matching_volumes_and_labels(
    written: tuple[Path, MetastasisConfig],
) -> None:
    import csv

    from adaptrt.io.manifest import check_cohort, read_manifest
    from adaptrt.io.nifti import read_nifti

    out, cfg = written
    cohort = read_manifest(out / "manifest.csv")
    summary = check_cohort(cohort, threshold=0.2)
    assert summary.n_patients == 2 and summary.n_lesions == 3
    assert dict(summary.timepoints) == {"mri1": 3, "mri2": 3, "followup": 3}
    with (out / "truth" / "lesions.csv").open() as fh:
        truth = {(r["patient_id"], r["lesion_id"]): r for r in csv.DictReader(fh)}
    assert len(truth) == 3
    for les in summary.lesions:
        row = truth[(les.patient_id, les.lesion_id)]
        for t in TIMEPOINTS:
            true_v = float(row[f"volume_{t}_mm3"])
            # contours through voxel centres reproduce the voxel masks; allow a little for rasterisation
            assert les.volumes_mm3[t] == pytest.approx(true_v, rel=0.05, abs=4.0)
        assert les.response is not None
        assert les.response.responder == (row["responder"] == "True")
        for t in TIMEPOINTS:
            res = read_nifti(out / row[f"resistant_{t}"], kind="mask")
            assert res.shape == cfg.fov
        drift = read_nifti(out / row["drift"])
        assert drift.spacing == pytest.approx(cfg.spacing_mm)
    meta = json.loads((out / "truth" / "config.json").read_text())
    assert meta["seed"] == 11 and meta["config"]["n_lesions"] == 3


def test_written_cohort_shares_frame_of_reference(written: tuple[Path, MetastasisConfig]) -> None:
    from adaptrt.io.dicom import read_dicom_series

    out, _ = written
    series = [read_dicom_series(out / "images" / "P001" / t) for t in TIMEPOINTS]
    assert len({s.frame_of_reference_uid for s in series}) == 1
    assert len({s.study_instance_uid for s in series}) == 1
    assert len({s.series_instance_uid for s in series}) == 3
    assert all(s.volume.same_geometry(series[0].volume) for s in series)


def test_same_seed_writes_identical_files(written: tuple[Path, MetastasisConfig], tmp_path: Path) -> None:
    out, cfg = written
    again = write_metastasis_cohort(tmp_path / "again", config=cfg, seed=11).parent
    assert _digest(out) == _digest(again)


def test_existing_folder_is_not_overwritten(written: tuple[Path, MetastasisConfig]) -> None:
    out, cfg = written
    with pytest.raises(InputError, match="already exists"):
        write_metastasis_cohort(out, config=cfg, seed=11)


def test_config_type_is_checked(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="config must be a MetastasisConfig"):
        write_metastasis_cohort(tmp_path / "x", config={"n_patients": 2})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- placement
def _placements(cfg: MetastasisConfig, seed: int, volumes: list[float]) -> list[tuple[int, int, int]]:
    """The placement step alone: one patient's anatomy, then lesions of ``volumes`` placed largest first."""
    from adaptrt.seeding import as_generator
    from adaptrt.simulate.metastases import _anatomy, _new_placement, _place_lesion

    gen = as_generator(seed)
    anatomy = _anatomy(cfg, gen)
    sp = np.asarray(cfg.spacing_mm, dtype=float)
    n = len(volumes)
    fates = _draw_fates(cfg, gen, n, np.zeros(n), 0.0)
    occupied = np.zeros(cfg.fov, dtype=bool)
    placed: list = []
    for i, vol in sorted(enumerate(volumes), key=lambda iv: -iv[1]):
        item = _place_lesion(
            placed,
            _new_placement(vol, sp, cfg, fates, i, gen),
            lambda vol=vol, i=i: _new_placement(vol, sp, cfg, fates, i, gen),
            anatomy,
            occupied,
            cfg.spacing_mm,
            gen,
            f"S{seed}",
        )
        placed.append(item)
    for item in placed:  # disjoint reserves, inside the allowed brain
        assert item.plan.placed_at is not None
    starts = [item.plan.placed_at for item in placed]
    return [s for s in starts if s is not None]


def test_default_placement_never_fails() -> None:
    """The hardest default draws: four lesions, the largest at the top of volume_range_mm3."""
    cfg = MetastasisConfig()
    top = cfg.volume_range_mm3[1]
    for seed in range(3):
        assert len(_placements(cfg, seed, [top, top, 12_000.0, 5_000.0])) == 4


def test_placement_never_fails_over_many_seeds() -> None:
    """Many patients' worth of placements on a small head with large lesions for it."""
    cfg = MetastasisConfig(**SMALL)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    for seed in range(20):
        volumes = np.exp(rng.uniform(np.log(300.0), np.log(1_500.0), size=4)).tolist()
        assert len(_placements(cfg, seed, volumes)) == 4


def test_placement_is_deterministic_with_redraws() -> None:
    cfg = MetastasisConfig(**SMALL)  # type: ignore[arg-type]
    volumes = [1_500.0] * 4
    assert _placements(cfg, 5, volumes) == _placements(cfg, 5, volumes)


def test_lesion_that_cannot_fit_at_all_is_a_clear_error() -> None:
    cfg = MetastasisConfig(fov=(24, 96, 96), volume_range_mm3=(15.0, 1_000.0))
    with pytest.raises(InputError, match=r"could not place a lesion of 20000 mm³.*even with no other lesion"):
        _placements(cfg, 0, [20_000.0])


@pytest.mark.slow
def test_seed_that_used_to_fail_now_simulates_the_same_bytes_twice() -> None:
    cfg = MetastasisConfig()
    first = simulate_patient(cfg, 20, spawn(90431, cfg.n_patients + 1)[20])  # P021 of seed 90431
    again = simulate_patient(cfg, 20, spawn(90431, cfg.n_patients + 1)[20])
    assert len(first.lesions) == 3
    for a, b in zip(first.lesions, again.lesions, strict=True):
        assert all(np.array_equal(a.gtv[t], b.gtv[t]) for t in TIMEPOINTS)
    assert all(np.array_equal(first.images[t], again.images[t]) for t in TIMEPOINTS)
