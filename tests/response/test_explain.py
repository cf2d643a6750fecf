"""Tests of ``adaptrt response explain``: CAMs pasted back on the image grid, the boost, the written files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from numpy.typing import NDArray

from adaptrt.config import to_jsonable
from adaptrt.errors import InputError
from adaptrt.io.dicom import DicomSeries, read_dicom_series
from adaptrt.io.manifest import read_manifest, write_manifest
from adaptrt.io.nifti import read_nifti, write_nifti
from adaptrt.io.rtstruct import read_rtstruct, rtstruct_roi_names
from adaptrt.preprocess import PreprocessConfig, prepare_lesion, sample_like
from adaptrt.response.explain import (
    BOOST_INTERPRETED_TYPE,
    ExplainConfig,
    LesionExplanation,
    explain_from_manifest,
    explain_lesion,
    paste_back,
    resolve_model,
    write_explanation,
)
from adaptrt.response.train import AutoencoderClassifier, TrainConfig
from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort
from adaptrt.types import Volume
from tests.dicom_check import dciodvfy_lines

#: The study's preprocessing (one slice, rotations) except for fewer angles: explain must override both.
PRE = PreprocessConfig(n_slices=1, angles_deg=(0.0, 90.0))
SPACING = (2.0, 1.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def lesion(
    shape: tuple[int, int, int] = (10, 48, 48),
    spacing: tuple[float, float, float] = SPACING,
    centre: tuple[float, float, float] = (4.5, 24.0, 22.0),
    radius_mm: float = 8.0,
) -> tuple[Volume, Volume]:
    """A textured image with an ellipsoidal GTV (brighter on its right half) and the GTV mask."""
    grids = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    r = np.sqrt(sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, spacing, strict=True)))
    gtv = r <= radius_mm
    _, yy, xx = grids
    rng = np.random.default_rng(0)
    img = 100 + 20 * np.sin(yy / 5) + 50 * gtv + 30 * gtv * (xx > centre[2]) + rng.normal(0, 3, shape)
    return Volume(img.astype(np.float32), spacing), Volume(gtv, spacing)


def smooth(like: Volume) -> Volume:
    zz, yy, xx = np.mgrid[: like.shape[0], : like.shape[1], : like.shape[2]].astype(float)
    return like.with_array((50 + 10 * np.cos(yy / 6) + 5 * np.sin(xx / 7) + zz).astype(np.float32))


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


@pytest.fixture(scope="module")
def model() -> AutoencoderClassifier:
    """A tiny model trained for one epoch: the maps need not mean anything, only be computed right."""
    image, gtv = lesion()
    ls = prepare_lesion(image, gtv, PRE)
    x = np.concatenate([ls.image] * 4)
    m = np.concatenate([ls.mask_bottleneck] * 4)
    y = np.arange(len(x)) % 2
    return AutoencoderClassifier(TrainConfig(epochs=1, batch_size=8, width=4), seed=0).fit(x, m, y)


def _explain_nonzero(
    model: AutoencoderClassifier, image: Volume, gtv: Volume, **changes: object
) -> LesionExplanation:
    """The explanation for the class whose pixel-wise CAM is not all zero (one of the two always is not)."""
    for target in ("neg", "pos"):
        cfg = ExplainConfig(target=target, **changes)  # type: ignore[arg-type]
        expl = explain_lesion(model, image, gtv, preprocess=PRE, config=cfg)
        if expl.boost.array.any():
            return expl
    raise AssertionError("both classes gave an empty boost")


@pytest.fixture(scope="module")
def explained(model: AutoencoderClassifier) -> tuple[Volume, Volume, LesionExplanation]:
    image, gtv = lesion()
    return image, gtv, _explain_nonzero(model, image, gtv)


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ()}, "'methods' parameter of ExplainConfig"),
        ({"methods": ("gradcam", "scorecam")}, "'methods' parameter"),
        ({"methods": ("gradcam", "gradcam")}, "'methods' parameter"),
        ({"target": "responder"}, "'target' parameter"),
        ({"methods": ("gradcam",)}, "'boost_method' parameter"),
        ({"boost_threshold": 0.0}, r"'boost_threshold' parameter .* \(0, 1\]"),
        ({"boost_threshold": 1.5}, "'boost_threshold' parameter"),
        ({"boost_threshold": float("nan")}, "'boost_threshold' parameter"),
        ({"min_boost_voxels": 0}, "'min_boost_voxels' parameter"),
    ],
)
def test_config_is_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        ExplainConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field in kwargs or info.value.field == "boost_method"


def test_config_defaults() -> None:
    cfg = ExplainConfig()
    assert cfg.target == "neg" and cfg.target_class == 0
    assert cfg.boost_method in cfg.methods and cfg.boost_threshold == 0.5
    assert ExplainConfig(target="pos", boost_threshold=1).boost_threshold == 1.0


# ---------------------------------------------------------------------------------------------- paste_back
@pytest.mark.parametrize(
    ("shape", "spacing", "centre", "outside"),
    [
        ((10, 48, 48), SPACING, (4.5, 24.0, 22.0), False),
        # near a corner, with unequal row and column spacing: the box reaches outside the image
        ((8, 40, 44), (2.5, 0.9, 1.1), (3.0, 9.0, 8.0), True),
    ],
)
def test_paste_back_round_trip(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float],
    outside: bool,
) -> None:
    image, gtv = lesion(shape, spacing, centre, radius_mm=6.0)
    ls = prepare_lesion(image, gtv, PreprocessConfig(n_slices=3))
    _, _, y0, y1, x0, x1 = ls.box
    assert (y0 < 0 or x0 < 0 or y1 > shape[1] or x1 > shape[2]) == outside
    inside = np.zeros(shape, dtype=bool)
    inside[ls.slice_index[:, None], max(y0, 0) : y1, :] = True
    inside[:, :, : max(x0, 0)] = False
    inside[:, :, x1:] = False

    ref = smooth(image)
    back = paste_back(sample_like(ref, ls, kind="image"), ls, image, kind="image")
    assert back.same_geometry(image) and back.dtype == np.float32
    span = float(np.ptp(ref.array))
    # sample_like pads outside the image with 0, which the samples' bilinear edge pixels mix in: compare
    # away from the image's outer rows and columns
    interior = inside.copy()
    interior[:, [0, -1], :] = False
    interior[:, :, [0, -1]] = False
    assert np.abs(back.array - ref.array)[interior].max() < 0.02 * span
    assert np.all(back.array[~inside] == 0.0)

    mask = paste_back(sample_like(gtv, ls, kind="mask"), ls, gtv, kind="mask")
    assert mask.is_mask and mask.same_geometry(gtv)
    on = np.isin(np.arange(shape[0]), ls.slice_index)
    assert dice(mask.array[on], gtv.array[on]) >= 0.98
    assert not mask.array[~inside].any()


def test_paste_back_refuses_rotated_samples_and_bad_shapes() -> None:
    image, gtv = lesion()
    rotated = prepare_lesion(image, gtv, PRE)
    with pytest.raises(ValueError, match="only unrotated samples"):
        paste_back(rotated.image, rotated, image, kind="image")
    ls = prepare_lesion(image, gtv, PreprocessConfig(n_slices=3))
    with pytest.raises(ValueError, match=r"maps must have shape \(3, 64, 64\)"):
        paste_back(ls.image[:2], ls, image, kind="image")
    with pytest.raises(ValueError, match="kind must be"):
        paste_back(ls.image, ls, image, kind="label")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- explain
def test_cams_are_on_the_image_grid_and_zero_outside_the_box(
    explained: tuple[Volume, Volume, LesionExplanation],
) -> None:
    image, gtv, expl = explained
    gtv_slices = np.flatnonzero(gtv.array.any(axis=(1, 2)))
    assert expl.slices.slice_index.tolist() == gtv_slices.tolist()  # every GTV slice, once
    assert np.all(expl.slices.angle_deg == 0.0)
    assert expl.preprocess.margin_mm == PRE.margin_mm and expl.preprocess.angles_deg == (0.0,)
    _, _, y0, y1, x0, x1 = expl.slices.box
    box = np.zeros(image.shape, dtype=bool)
    box[gtv_slices[:, None], max(y0, 0) : y1, :] = True
    box[:, :, : max(x0, 0)] = False
    box[:, :, x1:] = False
    assert (
        set(expl.cams) == set(expl.cams_normalised) == set(expl.sample_cams) == set(ExplainConfig().methods)
    )
    for method, cam in expl.cams.items():
        assert cam.same_geometry(image) and cam.dtype == np.float32
        assert np.all(cam.array >= 0) and np.all(cam.array[~box] == 0)
        assert expl.sample_cams[method].shape == (len(gtv_slices), 64, 64)


def test_normalised_cams_have_lesion_wide_maximum_one(
    explained: tuple[Volume, Volume, LesionExplanation],
) -> None:
    _, _, expl = explained
    for method, cam in expl.cams.items():
        norm = expl.cams_normalised[method].array
        peak = float(cam.array.max())
        assert norm.min() >= 0.0 and norm.max() <= 1.0
        if peak > 0:
            assert norm.max() == 1.0
            np.testing.assert_allclose(norm * peak, cam.array, rtol=1e-5, atol=1e-7 * peak)
        else:
            assert not norm.any()
        sample_peak = float(expl.sample_cams[method].max())
        assert sample_peak in (0.0, 1.0)
    assert expl.cams["pixelwise"].array.max() > 0  # the fixture explains a class with evidence


def test_boost_is_the_threshold_applied_by_hand_inside_the_gtv(
    explained: tuple[Volume, Volume, LesionExplanation], model: AutoencoderClassifier
) -> None:
    image, gtv, expl = explained
    cam = expl.cams["pixelwise"].array
    by_hand = (cam >= 0.5 * cam.max()) & gtv.array
    assert expl.boost.is_mask and expl.boost.same_geometry(image)
    assert np.array_equal(expl.boost.array, by_hand)
    assert not (expl.boost.array & ~gtv.array).any()
    p = model.predict_proba(expl.slices.image, expl.slices.mask_bottleneck)
    assert expl.probability_all_slices == pytest.approx(float(p.mean()))
    # the headline probability is that of the model's slices (the run's n_slices), as `response predict`
    model_slices = prepare_lesion(image, gtv, dataclasses.replace(PRE, angles_deg=(0.0,)))
    assert expl.model_slice_index == tuple(np.unique(model_slices.slice_index).tolist())
    p_model = model.predict_proba(model_slices.image, model_slices.mask_bottleneck)
    assert expl.probability == pytest.approx(float(p_model.mean())) and 0.0 <= expl.probability <= 1.0
    # a higher threshold gives a smaller boost inside the first one
    high = explain_lesion(
        model, image, gtv, preprocess=PRE, config=dataclasses.replace(expl.config, boost_threshold=0.9)
    )
    assert high.boost.array.sum() <= expl.boost.array.sum()
    assert not (high.boost.array & ~expl.boost.array).any()


def test_min_boost_voxels_drops_small_pieces(
    explained: tuple[Volume, Volume, LesionExplanation], model: AutoencoderClassifier
) -> None:
    image, gtv, expl = explained
    n = int(expl.boost.array.sum())
    none = explain_lesion(
        model, image, gtv, preprocess=PRE, config=dataclasses.replace(expl.config, min_boost_voxels=n + 1)
    )
    assert not none.boost.array.any()
    same = explain_lesion(
        model, image, gtv, preprocess=PRE, config=dataclasses.replace(expl.config, min_boost_voxels=1)
    )
    assert np.array_equal(same.boost.array, expl.boost.array)


def test_a_gtv_on_a_single_slice_works(model: AutoencoderClassifier) -> None:
    image, gtv3 = lesion()
    one = np.zeros(gtv3.shape, dtype=bool)
    one[4] = gtv3.array[4]
    gtv = gtv3.with_array(one)
    expl = explain_lesion(model, image, gtv, preprocess=PRE, config=ExplainConfig(target="pos"))
    assert expl.slices.slice_index.tolist() == [4]
    for cam in expl.cams.values():
        assert not np.delete(cam.array, 4, axis=0).any()
    assert not (expl.boost.array & ~one).any()


def test_explain_refuses_a_preprocessing_the_model_cannot_take(model: AutoencoderClassifier) -> None:
    image, gtv = lesion()
    with pytest.raises(InputError, match="model takes 64×64 images"):
        explain_lesion(model, image, gtv, preprocess=PreprocessConfig(size=32, bottleneck=8))


# ---------------------------------------------------------------------------------------------- writing
def test_write_explanation_files_and_overwrite(
    tmp_path: Path, explained: tuple[Volume, Volume, LesionExplanation]
) -> None:
    image, gtv, expl = explained
    out = write_explanation(expl, tmp_path / "ex", lesion_key="P001/1", image=image, gtv=gtv)
    names = {p.name for p in out.iterdir()}
    for token in ("gradcam", "gradcampp", "pixelwise"):
        assert {f"cam_{token}.nii.gz", f"cam_{token}_normalised.nii.gz", f"cam_{token}.png"} <= names
    assert {"boost.nii.gz", "explanation.json"} <= names
    assert "boost_rtstruct.dcm" not in names  # no DICOM series given
    assert (out / "cam_pixelwise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cam = read_nifti(out / "cam_pixelwise.nii.gz")
    assert image.geometry_difference(cam) is None
    np.testing.assert_allclose(cam.array, expl.cams["pixelwise"].array)
    boost = read_nifti(out / "boost.nii.gz", kind="mask")
    assert image.geometry_difference(boost) is None and np.array_equal(boost.array, expl.boost.array)

    info = json.loads((out / "explanation.json").read_text())
    n = int(expl.boost.array.sum())
    assert info["probability_responder"] == pytest.approx(expl.probability)
    assert info["boost"]["n_voxels"] == n and info["boost"]["empty"] is False
    assert info["boost"]["volume_mm3"] == pytest.approx(n * 2.0)
    assert info["boost"]["fraction_of_gtv"] == pytest.approx(n / gtv.array.sum())
    assert info["boost"]["threshold_normalised"] == 0.5 and info["boost"]["method"] == "pixelwise"
    assert info["target"] == expl.config.target and info["rtstruct"] is None

    with pytest.raises(InputError, match="already exists"):
        write_explanation(expl, out, lesion_key="P001/1", image=image, gtv=gtv)
    write_explanation(expl, out, lesion_key="P001/1", image=image, gtv=gtv, overwrite=True)
    assert (out / "explanation.json").is_file()


def test_write_explanation_refuses_another_grid(
    tmp_path: Path, explained: tuple[Volume, Volume, LesionExplanation]
) -> None:
    image, gtv, expl = explained
    moved = Volume(image.array, spacing=image.spacing, origin=(5.0, 0.0, 0.0))
    with pytest.raises(InputError, match="not on the image's grid"):
        write_explanation(expl, tmp_path / "ex", lesion_key="P001/1", image=moved, gtv=gtv)
    assert not (tmp_path / "ex").exists()


# ---------------------------------------------------------------------------------------------- DICOM
@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = MetastasisConfig(n_patients=2, n_lesions=2, fov=(40, 128, 128), volume_range_mm3=(300.0, 3000.0))
    return write_metastasis_cohort(tmp_path_factory.mktemp("cohort") / "mets", config=cfg, seed=0)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory, model: AutoencoderClassifier) -> Path:
    """What `adaptrt response run` leaves: RUN/config.json (key 'preprocess') and RUN/models/cam_trial00.pt."""
    run = tmp_path_factory.mktemp("run") / "run"
    model.save(run / "models" / "cam_trial00.pt")
    (run / "config.json").write_text(json.dumps({"profile": "quick", "preprocess": to_jsonable(PRE)}))
    return run


def _dciodvfy_errors(path: Path) -> list[str]:
    return [line for line in dciodvfy_lines(path, "RTStructureSet") if "Error" in line]


def _target_with_boost(run: Path, manifest: Path, key: str) -> Literal["pos", "neg"]:
    tp = {les.key: les for les in read_manifest(manifest).lesions}[key]["mri1"]
    image, gtv = tp.load_image(), tp.load_mask()
    model_file, _ = resolve_model(run)
    model = AutoencoderClassifier.load(model_file)
    return _explain_nonzero(model, image, gtv).config.target


def test_explain_from_manifest_writes_an_rtstruct_on_the_series(
    tmp_path: Path, cohort: Path, run_folder: Path
) -> None:
    target = _target_with_boost(run_folder, cohort, "P001/1")
    out = explain_from_manifest(
        run_folder,
        cohort,
        "P001/1",
        tmp_path / "ex",
        config=ExplainConfig(target=target),
        uid_seed="t",
    )
    info = json.loads((out / "explanation.json").read_text())
    assert info["timepoint"] == "mri1" and info["lesion"] == "P001/1"
    assert info["model"]["path"] == str((run_folder / "models" / "cam_trial00.pt").resolve())
    assert len(info["model"]["sha256"]) == 64
    assert info["preprocess"]["margin_mm"] == PRE.margin_mm and info["preprocess"]["angles_deg"] == [0.0]
    assert info["rtstruct"]["rois"] == [
        {"name": "GTV_1", "interpreted_type": "GTV"},
        {"name": "BOOST_1", "interpreted_type": BOOST_INTERPRETED_TYPE},
    ]

    series = read_dicom_series(cohort.parent / "images" / "P001" / "mri1")
    rt = out / "boost_rtstruct.dcm"
    assert rtstruct_roi_names(rt) == ["GTV_1", "BOOST_1"]
    boost = read_nifti(out / "boost.nii.gz", kind="mask")
    assert boost.array.any() and not info["boost"]["empty"]
    assert series.volume.geometry_difference(boost) is None
    assert dice(read_rtstruct(rt, "BOOST_1", series).array, boost.array) >= 0.98
    gtv = read_rtstruct(cohort.parent / "images" / "P001_mri1_rtstruct.dcm", "GTV_1", series)
    assert dice(read_rtstruct(rt, "GTV_1", series).array, gtv.array) >= 0.98
    assert _dciodvfy_errors(rt) == []


def test_an_empty_boost_is_written_and_reported(
    tmp_path: Path, cohort: Path, model: AutoencoderClassifier
) -> None:
    tp = {les.key: les for les in read_manifest(cohort).lesions}["P002/1"]["mri1"]
    image, gtv = tp.load_image(), tp.load_mask()
    series: DicomSeries = read_dicom_series(tp.image.path)
    expl = explain_lesion(model, image, gtv, preprocess=PRE)
    empty = dataclasses.replace(expl, boost=gtv.with_array(np.zeros(gtv.shape, dtype=bool)))
    out = write_explanation(empty, tmp_path / "ex", lesion_key="P002/1", series=series, image=image, gtv=gtv)
    info = json.loads((out / "explanation.json").read_text())
    assert info["boost"]["empty"] is True and info["boost"]["volume_mm3"] == 0.0
    assert info["boost"]["note"].startswith("empty boost")
    assert not read_nifti(out / "boost.nii.gz", kind="mask").array.any()
    assert not read_rtstruct(out / "boost_rtstruct.dcm", "BOOST_1", series).array.any()
    assert _dciodvfy_errors(out / "boost_rtstruct.dcm") == []


def test_unknown_lesion_or_timepoint_is_an_input_error(
    tmp_path: Path, cohort: Path, run_folder: Path
) -> None:
    with pytest.raises(InputError, match=r"no lesion 'P999/9' in the manifest; its lesions are 'P001/1'"):
        explain_from_manifest(run_folder, cohort, "P999/9", tmp_path / "ex")
    with pytest.raises(InputError, match="has no time point 'mri7'"):
        explain_from_manifest(run_folder, cohort, "P001/1", tmp_path / "ex", timepoint="mri7")
    assert not (tmp_path / "ex").exists()


def test_model_path_and_preprocessing_are_resolved(
    tmp_path: Path, run_folder: Path, model: AutoencoderClassifier
) -> None:
    model_file = run_folder / "models" / "cam_trial00.pt"
    assert resolve_model(run_folder) == (model_file, run_folder / "config.json")
    assert resolve_model(model_file) == (model_file, run_folder / "config.json")
    alone = model.save(tmp_path / "alone" / "model.pt")
    assert resolve_model(alone) == (alone, None)
    with pytest.raises(InputError, match=r"no config\.json of the model's run"):
        explain_from_manifest(alone, tmp_path / "manifest.csv", "P001/1", tmp_path / "ex")
    with pytest.raises(InputError, match="model not found"):
        resolve_model(tmp_path / "missing.pt")


def test_a_nifti_manifest_gives_no_rtstruct(tmp_path: Path, run_folder: Path) -> None:
    image, gtv = lesion()
    write_nifti(image, tmp_path / "img.nii.gz")
    write_nifti(gtv, tmp_path / "gtv.nii.gz")
    manifest = write_manifest(
        [
            {
                "patient_id": "A",
                "lesion_id": "7",
                "timepoint": "mri1",
                "image": "img.nii.gz",
                "mask": "gtv.nii.gz",
            }
        ],
        tmp_path / "manifest.csv",
    )
    out = explain_from_manifest(
        run_folder / "models" / "cam_trial00.pt",
        manifest,
        "A/7",
        tmp_path / "ex",
        config=ExplainConfig(target="pos"),
    )
    info = json.loads((out / "explanation.json").read_text())
    assert info["rtstruct"] is None and not (out / "boost_rtstruct.dcm").exists()
    assert info["slices"] == np.flatnonzero(gtv.array.any(axis=(1, 2))).tolist()


def test_cli_explain_takes_run_and_the_deprecated_model_alias(
    tmp_path: Path, cohort: Path, run_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from adaptrt.cli import main

    base = ["response", "explain", "--manifest", str(cohort), "--lesion", "P001/1", "--target", "pos"]
    assert main([*base, "--run", str(run_folder), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr()
    # it says which model and which slices gave the probability
    assert "trial-0 network" in out.out and "slice(s) [" in out.out
    assert main([*base, "--model", str(run_folder), "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr()
    assert "--model is deprecated; use --run" in out.err
    a = json.loads((tmp_path / "a" / "explanation.json").read_text())
    b = json.loads((tmp_path / "b" / "explanation.json").read_text())
    assert a["probability_responder"] == b["probability_responder"]


def test_a_later_time_point_is_cut_with_the_first_mri_box(model: AutoencoderClassifier) -> None:
    image1, gtv1 = lesion()
    image2, gtv2 = lesion(radius_mm=5.0)  # shrunken at the second MRI: its own box would be smaller
    expl = explain_lesion(
        model, image2, gtv2, preprocess=PRE, first=(image1, gtv1), config=ExplainConfig(target="pos")
    )
    first = prepare_lesion(image1, gtv1, dataclasses.replace(PRE, angles_deg=(0.0,)))
    own = prepare_lesion(image2, gtv2, dataclasses.replace(PRE, angles_deg=(0.0,)))
    assert expl.slices.box == first.box != own.box
    assert expl.model_slice_index == tuple(np.unique(first.slice_index).tolist())
