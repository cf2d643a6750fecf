"""Tests of adaptrt.response.radiomics (PyRadiomics wrapper) on tiny spheres."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.response.radiomics import (
    RadiomicsConfig,
    radiomics_feature_names,
    radiomics_features,
    volume_to_sitk,
)
from adaptrt.types import Volume

NO_WAVELET = RadiomicsConfig(wavelet=False)


def _sphere(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    radius_mm: float,
    texture: float = 0.0,
    seed: int = 0,
) -> tuple[Volume, Volume]:
    """A bright sphere (200) on a background of 100, plus Gaussian noise of SD ``texture``."""
    centre = [(n - 1) / 2 * s for n, s in zip(shape, spacing, strict=True)]
    grids = np.meshgrid(
        *[np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre, strict=True)], indexing="ij"
    )
    r = np.sqrt(sum(g**2 for g in grids))
    mask = r <= radius_mm
    image = 100.0 + 100.0 * mask + texture * np.random.default_rng(seed).standard_normal(shape)
    return Volume(image.astype(np.float32), spacing), Volume(mask, spacing)


def test_smooth_and_textured_spheres_differ_and_paper_features_present() -> None:
    image, mask = _sphere((20, 20, 20), (1.0, 1.0, 1.0), 7.0)
    textured, _ = _sphere((20, 20, 20), (1.0, 1.0, 1.0), 7.0, texture=25.0)
    f_smooth = radiomics_features(image, mask, NO_WAVELET)
    f_tex = radiomics_features(textured, mask, NO_WAVELET)
    for key in ("original_firstorder_Kurtosis", "original_glszm_LowGrayLevelZoneEmphasis"):
        assert math.isfinite(f_smooth[key]) and math.isfinite(f_tex[key])
    # a uniform sphere is one grey level: one zone, no contrast; noise creates many zones and contrast
    assert f_smooth["original_glszm_ZoneEntropy"] < f_tex["original_glszm_ZoneEntropy"]
    assert f_smooth["original_glcm_Contrast"] == pytest.approx(0.0, abs=1e-12)
    assert f_tex["original_glcm_Contrast"] > 1.0
    assert f_smooth["original_firstorder_Variance"] < f_tex["original_firstorder_Variance"]
    # shape does not depend on the intensities
    assert f_smooth["original_shape_MeshVolume"] == pytest.approx(f_tex["original_shape_MeshVolume"])


def test_keys_match_the_enumerated_names_and_wavelet_only_when_enabled() -> None:
    image, mask = _sphere((16, 16, 16), (1.0, 1.0, 1.0), 5.0, texture=20.0)
    plain = radiomics_features(image, mask, NO_WAVELET)
    assert list(plain) == list(radiomics_feature_names(NO_WAVELET))
    assert len(plain) == 107
    assert not any(k.startswith("wavelet") for k in plain)
    cfg = RadiomicsConfig(wavelet=True, classes=("firstorder", "glszm", "shape"))
    wav = radiomics_features(image, mask, cfg)
    assert set(wav) == set(radiomics_feature_names(cfg))
    bands = {k.split("_")[0] for k in wav}
    assert bands == {"original"} | {
        f"wavelet-{b}" for b in ("LLH", "LHL", "LHH", "HLL", "HLH", "HHL", "HHH", "LLL")
    }
    assert math.isfinite(wav["wavelet-HLL_glszm_LowGrayLevelZoneEmphasis"])
    assert not any("_glcm_" in k for k in wav)
    assert len(radiomics_feature_names(RadiomicsConfig())) == 851


def test_anisotropic_spacing_gives_the_sphere_volume_in_mm3() -> None:
    radius = 7.0
    true_volume = 4.0 / 3.0 * math.pi * radius**3
    image, mask = _sphere((10, 26, 20), (2.5, 0.8, 1.0), radius, texture=10.0)
    f = radiomics_features(image, mask, NO_WAVELET)
    assert f["original_shape_VoxelVolume"] == pytest.approx(mask.array.sum() * 2.5 * 0.8 * 1.0)
    assert f["original_shape_MeshVolume"] == pytest.approx(true_volume, rel=0.04)
    # still a sphere: with the spacing on the wrong axes it would be a 3:1 ellipsoid (flatness ~0.16)
    assert f["original_shape_Flatness"] > 0.9 and f["original_shape_Elongation"] > 0.9
    assert f["original_shape_Maximum3DDiameter"] == pytest.approx(2 * radius, rel=0.2)
    resampled = radiomics_features(
        image, mask, RadiomicsConfig(wavelet=False, resampled_spacing_mm=(1, 1, 1))
    )
    assert resampled["original_shape_MeshVolume"] == pytest.approx(true_volume, rel=0.05)


def test_volume_to_sitk_keeps_the_geometry() -> None:
    theta = math.radians(20.0)
    rot = np.array(
        [[math.cos(theta), -math.sin(theta), 0.0], [math.sin(theta), math.cos(theta), 0.0], [0, 0, 1]]
    )
    direction = rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    vol = Volume(
        np.zeros((3, 4, 5), np.float32), (2.0, 0.5, 0.7), origin=(10.0, -5.0, 3.0), direction=direction
    )
    img = volume_to_sitk(vol)
    assert img.GetSize() == (5, 4, 3)
    assert img.GetSpacing() == pytest.approx((0.7, 0.5, 2.0))
    for k, j, i in [(0, 0, 0), (2, 3, 4), (1, 0, 3)]:
        assert img.TransformIndexToPhysicalPoint((i, j, k)) == pytest.approx(
            tuple(vol.index_to_world((k, j, i)))
        )


def test_tiny_gtvs_do_not_crash() -> None:
    image, _ = _sphere((12, 12, 12), (1.0, 1.0, 1.0), 3.0, texture=20.0)
    plus = np.zeros((12, 12, 12), bool)
    plus[6, 6, 5:8] = True
    plus[6, 5:8, 6] = True  # 5 voxels in one slice: 5 mm³
    cfg = RadiomicsConfig(wavelet=True, classes=("firstorder", "glcm", "glszm", "shape"))
    f = radiomics_features(image, Volume(plus, image.spacing), cfg)
    assert set(f) == set(radiomics_feature_names(cfg))
    assert f["original_shape_VoxelVolume"] == pytest.approx(5.0)
    assert math.isfinite(f["original_firstorder_Kurtosis"])
    # below label_min_voxels every feature is NaN, with the same keys (the table stays aligned)
    f2 = radiomics_features(
        image, Volume(plus, image.spacing), RadiomicsConfig(wavelet=False, label_min_voxels=6)
    )
    assert list(f2) == list(radiomics_feature_names(NO_WAVELET))
    assert all(math.isnan(v) for v in f2.values())


def test_normalisation_makes_features_invariant_to_intensity_scale() -> None:
    image, mask = _sphere((16, 16, 16), (1.0, 1.0, 1.0), 5.0, texture=20.0)
    scaled = image.with_array(image.array * 4.0)  # a power of 2: the z-scores are bit-identical
    a = radiomics_features(image, mask, NO_WAVELET)
    b = radiomics_features(scaled, mask, NO_WAVELET)
    for key in (
        "original_firstorder_Kurtosis",
        "original_glszm_LowGrayLevelZoneEmphasis",
        "original_glcm_Contrast",
    ):
        assert a[key] == pytest.approx(b[key])
    raw = radiomics_features(image, mask, RadiomicsConfig(wavelet=False, normalize=False))
    raw_scaled = radiomics_features(scaled, mask, RadiomicsConfig(wavelet=False, normalize=False))
    assert raw["original_firstorder_Mean"] * 4.0 == pytest.approx(raw_scaled["original_firstorder_Mean"])


def test_logger_level_is_restored() -> None:
    logger = logging.getLogger("radiomics")
    before = logger.level
    image, mask = _sphere((12, 12, 12), (1.0, 1.0, 1.0), 3.0, texture=10.0)
    radiomics_features(image, mask, RadiomicsConfig(wavelet=False, classes=("firstorder",)))
    assert logger.level == before


def test_bad_inputs_raise_input_errors() -> None:
    image, mask = _sphere((12, 12, 12), (1.0, 1.0, 1.0), 3.0)
    with pytest.raises(InputError, match="mask is empty"):
        radiomics_features(image, mask.with_array(np.zeros(mask.shape, bool)), NO_WAVELET)
    other = Volume(mask.array, (1.0, 1.0, 2.0))
    with pytest.raises(InputError, match="not on the image's grid"):
        radiomics_features(image, other, NO_WAVELET)
    with pytest.raises(InputError, match="constant"):
        radiomics_features(image.with_array(np.ones(image.shape, np.float32)), mask, NO_WAVELET)
    bad = image.array.copy()
    bad[6, 6, 6] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        radiomics_features(image.with_array(bad), mask, NO_WAVELET)
    textured, _ = _sphere((12, 12, 12), (1.0, 1.0, 1.0), 3.0, texture=20.0)  # GTV range ~100: 1000 bins
    with pytest.raises(InputError, match="grey-level bins"):
        radiomics_features(textured, mask, RadiomicsConfig(wavelet=False, normalize=False, bin_width=0.1))
    with pytest.raises(InputError, match="bin_width"):
        RadiomicsConfig(bin_width=0.0)
    with pytest.raises(InputError, match="max_bins"):
        RadiomicsConfig(max_bins=1)
    with pytest.raises(InputError, match="classes"):
        RadiomicsConfig(classes=("glcm", "shape2D"))
    with pytest.raises(InputError, match="label_min_voxels"):
        RadiomicsConfig(label_min_voxels=1)
