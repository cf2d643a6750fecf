"""Tests of the drift study's data layer: the cohort as pre/post pairs, exclusions, truth, bad input, the toy."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from adaptrt.config import from_dict, to_jsonable
from adaptrt.drift.data import (
    PART2_PREPROCESS,
    DriftDataConfig,
    DriftDataset,
    digits_dataset,
    load_pairs,
)
from adaptrt.errors import InputError
from adaptrt.io.manifest import write_manifest
from adaptrt.io.nifti import write_nifti
from adaptrt.preprocess import paste_back
from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort
from adaptrt.simulate.phantom import PhantomConfig, write_phantom_cohort
from adaptrt.types import Volume

#: three patients, four lesions, a small head: written in about 1.5 s
TINY = MetastasisConfig(
    n_patients=3, n_lesions=4, fov=(32, 112, 112), volume_range_mm3=(300.0, 1500.0), responder_share=0.5
)
SAMPLES = 3 * 4  # Part II: three slices × four rotations per lesion


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_metastasis_cohort(tmp_path_factory.mktemp("drift") / "cohort", config=TINY, seed=3)


@pytest.fixture(scope="module")
def pairs(simulated: Path) -> DriftDataset:
    return load_pairs(simulated)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _truth(manifest: Path) -> dict[str, dict[str, str]]:
    return {
        f"{r['patient_id']}/{r['lesion_id']}": r for r in _rows(manifest.parent / "truth" / "lesions.csv")
    }


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"post": "mri3"}, "post"),
        ({"threshold": 1.0}, "threshold"),
        ({"drift_threshold": 0.0}, "drift_threshold"),
        ({"reference": "post"}, "reference"),
        ({"preprocess": {"size": 64}}, "preprocess"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InputError, match=f"The '{field}' parameter of DriftDataConfig") as e:
        DriftDataConfig(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field


def test_config_defaults_are_part2() -> None:
    cfg = DriftDataConfig()
    again = from_dict(DriftDataConfig, to_jsonable(DriftDataConfig(post="followup", reference="pre")))
    assert again == DriftDataConfig(post="followup", reference="pre")
    assert cfg.post == "mri2" and cfg.threshold == 0.2 and cfg.preprocess == PART2_PREPROCESS
    assert (cfg.preprocess.size, cfg.preprocess.n_slices, cfg.preprocess.angles_deg) == (
        64,
        3,
        (0.0, 90.0, 180.0, 270.0),
    )


# ---------------------------------------------------------------------------------------------- simulator
def test_shapes_groups_labels_and_volumes(pairs: DriftDataset, simulated: Path) -> None:
    n_les = TINY.n_lesions
    assert pairs.n_lesions == n_les and len(pairs) == n_les * SAMPLES
    for name in ("pre", "post", "drift", "truth_drift"):
        arr = getattr(pairs, name)
        assert arr.shape == (n_les * SAMPLES, 1, 64, 64) and arr.dtype == np.float32
    for name in ("pre_mask", "post_mask", "region"):
        assert (
            getattr(pairs, name).shape == (n_les * SAMPLES, 1, 64, 64) and getattr(pairs, name).dtype == bool
        )
    assert np.array_equal(pairs.drift, pairs.post - pairs.pre)
    assert pairs.lesion_of_sample.tolist() == np.repeat(np.arange(n_les), SAMPLES).tolist()
    assert pairs.angle_deg.tolist() == [0.0, 90.0, 180.0, 270.0] * (3 * n_les)
    assert np.array_equal(pairs.slice_index, np.concatenate([les.pair.slice_index for les in pairs.lesions]))
    assert pairs.samples_of(1).tolist() == list(range(SAMPLES, 2 * SAMPLES))
    assert pairs.exclusions == () and pairs.notes == ()

    truth = _truth(simulated)
    assert [les.key for les in pairs.lesions] == list(truth)
    assert pairs.groups.tolist() == [truth[k]["patient_id"] for k in truth]
    assert pairs.labels.tolist() == [int(truth[k]["responder"] == "True") for k in truth]
    assert pairs.has_label.all()
    for les in pairs.lesions:
        t = truth[les.key]
        # the RTSTRUCT round trip may move a boundary voxel: volumes agree to within a few percent
        assert les.volume_pre_mm3 == pytest.approx(float(t["volume_mri1_mm3"]), rel=0.05)
        assert les.volume_post_mm3 == pytest.approx(float(t["volume_mri2_mm3"]), rel=0.05)
        assert les.post_timepoint == "mri2" and les.rows[0] > 0 and les.rows[1] > 0


def test_truth_drift_is_on_the_pairs_frame_and_scale(pairs: DriftDataset) -> None:
    for les in pairs.lesions:
        assert les.truth_drift is not None
        # the true drift is noise-free, the measured one is not: close and strongly correlated
        r = np.corrcoef(les.truth_drift.ravel(), les.pair.drift.ravel())[0, 1]
        assert r > 0.6
        assert np.abs(les.truth_drift - les.pair.drift).mean() < 0.05


def test_paste_back_onto_the_first_mri(pairs: DriftDataset) -> None:
    les = pairs.lesions[0]
    image = les.load_image()
    sub = les.pair.unrotated()
    assert len(sub) == 3 and np.all(sub.angle_deg == 0.0) and sub.box == les.pair.box
    back = paste_back(sub.pre, sub, image, kind="image", to_source_units=True)
    z = int(sub.slice_index[1])
    _, _, y0, y1, x0, x1 = sub.box
    err = np.abs(
        back.array[z, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] - image.array[z, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
    )
    # a noisy image resampled down (64 pixels for a ~30-voxel box: up-sampled, so nearly exact) and back
    assert np.median(err) < 0.05 * (sub.scale[1] - sub.scale[0])


def test_lesion_without_the_post_time_point_is_excluded(simulated: Path) -> None:
    rows = _rows(simulated)
    dropped = "P003/2"
    kept = [
        r for r in rows if not (f"{r['patient_id']}/{r['lesion_id']}" == dropped and r["timepoint"] == "mri2")
    ]
    manifest = write_manifest(kept, simulated.parent / "manifest_no_mri2.csv", overwrite=True)
    ds = load_pairs(manifest)
    assert ds.n_lesions == TINY.n_lesions - 1 and len(ds) == (TINY.n_lesions - 1) * SAMPLES
    assert ds.exclusions == ((dropped, "no 'mri2' time point (it has mri1, followup)"),)
    assert ds.exclusion_text() == f"{dropped}: no 'mri2' time point (it has mri1, followup)"
    assert ds.truth_drift is not None  # the truth of the other lesions is still found

    only_first = write_manifest(
        [r for r in rows if r["timepoint"] == "mri1"], simulated.parent / "manifest_mri1.csv", overwrite=True
    )
    with pytest.raises(
        InputError, match=r"no lesion is usable for the drift study \(4 excluded: P001/1: no 'mri2'"
    ) as e:
        load_pairs(only_first)
    assert e.value.path == str(only_first.resolve())


def test_followup_as_post(simulated: Path) -> None:
    ds = load_pairs(simulated, DriftDataConfig(post="followup"))
    assert ds.n_lesions == TINY.n_lesions and ds.truth_drift is None
    assert all(les.truth_drift is None and les.post_timepoint == "followup" for les in ds.lesions)
    assert any("not used for post = 'followup'" in note for note in ds.notes)
    truth = _truth(simulated)
    for les in ds.lesions:
        assert les.response is not None
        assert les.volume_post_mm3 == pytest.approx(les.response.volume_followup_mm3)
        assert les.label == int(truth[les.key]["responder"] == "True") == int(les.response.responder)


def test_phantom_truth_is_ignored_with_a_note(tmp_path: Path) -> None:
    manifest = write_phantom_cohort(tmp_path / "ph", config=PhantomConfig(n_patients=2), fmt="nifti", seed=1)
    ds = load_pairs(manifest)
    assert ds.truth_drift is None and all(les.truth_drift is None for les in ds.lesions)
    assert len(ds.notes) == 1 and "not the metastasis simulator's layout" in ds.notes[0]
    assert len(ds) == ds.n_lesions * SAMPLES


# ---------------------------------------------------------------------------------------------- bad input
SPACING = (2.0, 1.0, 1.0)
SHAPE = (12, 48, 48)


def _ball(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    return np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, SPACING, strict=True))) <= radius


def _case(
    root: Path,
    *,
    post_image: np.ndarray | None = None,
    post_gtv: np.ndarray | None = None,
    post_origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """One patient, one lesion, NIfTI at mri1 and mri2; the later image, GTV and origin can be spoiled."""
    rng = np.random.default_rng(0)
    gtv = _ball((6.0, 24.0, 24.0), 7.0)
    image = (300.0 + 400.0 * gtv + rng.normal(0.0, 10.0, SHAPE)).astype(np.float32)
    root.mkdir()
    rows = []
    for tp, img, m, origin in (
        ("mri1", image, gtv, (0.0, 0.0, 0.0)),
        (
            "mri2",
            image if post_image is None else post_image,
            gtv if post_gtv is None else post_gtv,
            post_origin,
        ),
    ):
        write_nifti(Volume(img, SPACING, origin=origin), root / f"{tp}.nii.gz")
        write_nifti(Volume(m, SPACING, origin=origin), root / f"{tp}_gtv.nii.gz")
        rows.append(
            {
                "patient_id": "P1",
                "lesion_id": "1",
                "timepoint": tp,
                "image": f"{tp}.nii.gz",
                "mask": f"{tp}_gtv.nii.gz",
            }
        )
    return write_manifest(rows, root / "manifest.csv")


def test_a_clean_case_loads(tmp_path: Path) -> None:
    ds = load_pairs(_case(tmp_path / "ok"))
    assert ds.n_lesions == 1 and not ds.has_label.any() and ds.labels.tolist() == [-1]
    assert not ds.drift.any()  # the same image twice


@pytest.mark.parametrize(
    ("spoil", "match", "file"),
    [
        (
            {"post_origin": (0.0, 4.0, 0.0)},
            r"patient P1, lesion 1, mri2 \(manifest row 2\): the pre and post images are not "
            r"co-registered: the later image's origin \(0, 4, 0\) mm",
            "mri2.nii.gz",
        ),
        (
            {"post_gtv": np.zeros(SHAPE, dtype=bool)},
            r"patient P1, lesion 1, mri2 \(manifest row 2\): later image \(post\): empty GTV",
            "mri2_gtv.nii.gz",
        ),
        (
            {"post_image": np.full(SHAPE, 5.0, dtype=np.float32)},
            r"patient P1, lesion 1, mri2 \(manifest row 2\): later image \(post\): image is constant",
            "mri2.nii.gz",
        ),
        (
            {"post_image": np.where(_ball((6.0, 24.0, 24.0), 3.0), np.nan, 300.0).astype(np.float32)},
            r"patient P1, lesion 1, mri2 \(manifest row 2\): .*NaN or infinite",
            "mri2.nii.gz",
        ),
    ],
    ids=["not-registered", "empty-gtv", "constant", "nan"],
)
def test_bad_input_names_patient_lesion_and_file(
    tmp_path: Path, spoil: dict[str, object], match: str, file: str
) -> None:
    manifest = _case(tmp_path / "bad", **spoil)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=match) as e:
        load_pairs(manifest)
    assert e.value.path is not None and Path(e.value.path).name == file
    assert e.value.fix


def test_gtv_on_the_border_is_an_exclusion_not_an_error(tmp_path: Path) -> None:
    edge = _ball((6.0, 24.0, 24.0), 7.0)
    edge[5:8, 20:28, 0:6] = True
    with pytest.raises(InputError, match=r"no lesion is usable .*P1/1: mri2: GTV on the image border"):
        load_pairs(_case(tmp_path / "edge", post_gtv=edge))


# ---------------------------------------------------------------------------------------------- the toy
def test_digits_dataset() -> None:
    ds = digits_dataset(12, size=32, seed=0)
    assert ds.pre.shape == (12, 1, 32, 32) and ds.n_lesions == 12 and len(ds) == 12
    assert np.array_equal(ds.drift, ds.post - ds.pre)
    assert len(set(ds.groups.tolist())) == 12 and ds.has_label.all()
    from adaptrt.simulate.digits import zero_digit_pairs

    toy = zero_digit_pairs(12, size=32, seed=0)
    assert np.array_equal(ds.pre[:, 0], toy.pre)
    assert ds.labels.tolist() == (toy.area_ratio <= 0.8).astype(int).tolist()
    assert ds.truth_drift is not None and np.array_equal(ds.truth_drift, ds.drift)
    assert ds.pre_mask.sum() > 0 and not (ds.pre_mask & ~ds.region).any()
    with pytest.raises(InputError, match="'threshold' parameter of digits_dataset"):
        digits_dataset(2, threshold=0.0)
