"""Tests of adaptrt.response.gradients on analytic phantoms (ramps, radial profiles, boxes) in mm."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptrt.errors import InputError
from adaptrt.response.gradients import (
    GradientConfig,
    gradient_feature_names,
    gradient_features,
    gradient_maps,
    gradient_regions,
    radial_deviation,
)
from adaptrt.types import Volume

RAW = GradientConfig(smoothing_mm=0.0)


def _grid(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], centred: bool = True
) -> list[np.ndarray]:
    """World-frame coordinates in mm of every voxel, ``(z, y, x)``, origin at the array centre if ``centred``."""
    return list(
        np.meshgrid(
            *[
                np.arange(n) * s - ((n - 1) / 2 * s if centred else 0.0)
                for n, s in zip(shape, spacing, strict=True)
            ],
            indexing="ij",
        )
    )


def test_linear_ramp_has_constant_magnitude_equal_to_the_slope_in_mm() -> None:
    spacing = (2.0, 0.5, 1.0)
    z, y, x = _grid((12, 30, 20), spacing, centred=False)
    slopes = (3.0, -2.0, 0.5)  # intensity per mm along z, y, x
    image = Volume(slopes[0] * z + slopes[1] * y + slopes[2] * x, spacing)
    mask = Volume((np.abs(z - 11) < 5) & (np.abs(y - 7) < 4) & (np.abs(x - 10) < 5), spacing)
    expected = math.sqrt(sum(s * s for s in slopes))
    magnitude, _ = gradient_maps(image, mask, RAW)
    assert np.allclose(magnitude.array, expected, rtol=1e-9)
    # Gaussian smoothing preserves a ramp beyond its reach (4 sigma + 1 voxel) from the faces
    smoothed, _ = gradient_maps(image, mask, GradientConfig(smoothing_mm=1.0))
    assert np.allclose(smoothed.array[3:-3, 9:-9, 5:-5], expected, rtol=1e-6)
    # radial gradient along +x from the centroid of a ramp I = x is the cosine of the angle to x
    ramp_x = Volume(x.copy(), spacing)
    _, radial = gradient_maps(ramp_x, mask, RAW)
    centre = np.argwhere(mask.array).mean(axis=0) * np.asarray(spacing)
    k, j, i = 6, 20, 18
    rvec = np.array([k * spacing[0], j * spacing[1], i * spacing[2]]) - centre
    assert radial.array[k, j, i] == pytest.approx(rvec[2] / np.linalg.norm(rvec))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_radial_profile_gives_f_prime_and_zero_deviation(sign: float) -> None:
    spacing = (1.5, 1.0, 0.8)
    z, y, x = _grid((21, 31, 41), spacing)
    r = np.sqrt(z**2 + y**2 + x**2)
    # I = a r^2: central differences are exact for a quadratic, so the radial gradient is exactly 2 a r
    a = sign * 0.7
    image = Volume(a * r**2, spacing)
    mask = Volume(r <= 6.0, spacing)
    magnitude, radial = gradient_maps(image, mask, RAW)
    interior = (slice(1, -1), slice(1, -1), slice(1, -1))
    assert np.allclose(radial.array[interior], 2 * a * r[interior], atol=1e-9)
    assert np.allclose(magnitude.array[interior], np.abs(2 * a * r[interior]), atol=1e-9)
    deviation = radial_deviation(image, mask, RAW).array
    assert np.isnan(deviation[10, 15, 20])  # the centroid: no radial direction
    assert np.nanmax(deviation[interior]) < 1e-3
    feats = gradient_features(image, mask, RAW)
    assert feats["deviation_margin_p90"] < 1e-3
    assert np.sign(feats["radial_margin_mean"]) == sign


def test_smooth_edge_profile_gives_its_derivative() -> None:
    spacing = (1.0, 1.0, 1.0)
    z, y, x = _grid((33, 33, 33), spacing)
    r = np.sqrt(z**2 + y**2 + x**2)
    width = 3.0
    image = Volume(100.0 / (1.0 + np.exp((r - 8.0) / width)), spacing)  # bright lesion, soft edge at 8 mm
    mask = Volume(r <= 8.0, spacing)
    _, radial = gradient_maps(image, mask, RAW)
    fprime = -100.0 / width * np.exp((r - 8.0) / width) / (1.0 + np.exp((r - 8.0) / width)) ** 2
    band = (r > 5.0) & (r < 11.0)
    assert np.allclose(radial.array[band], fprime[band], rtol=0.03)


def test_regions_have_their_widths_in_mm_on_an_anisotropic_grid() -> None:
    spacing = (2.0, 1.0, 0.5)
    shape = (20, 40, 60)
    box = np.zeros(shape, bool)
    box[2:18, 5:35, 10:50] = True  # 32 x 30 x 20 mm
    cfg = GradientConfig(core_margin_mm=2.0, shell_inner_mm=2.0, shell_outer_mm=3.0)
    regions = {k: v.array for k, v in gradient_regions(Volume(box, spacing), cfg).items()}
    # along x (0.5 mm): 2 mm inside = 4 columns, 3 mm outside = 6 columns, each side
    row = {k: v[10, 20, :] for k, v in regions.items()}
    assert np.flatnonzero(row["shell_inner"]).tolist() == [10, 11, 12, 13, 46, 47, 48, 49]
    assert np.flatnonzero(row["shell_outer"]).tolist() == [*range(4, 10), *range(50, 56)]
    assert np.flatnonzero(row["core"]).tolist() == list(range(14, 46))
    # along z (2 mm): 1 slice inside, 1 slice outside (the next is 4 mm > 3 mm away)
    col = {k: v[:, 20, 30] for k, v in regions.items()}
    assert np.flatnonzero(col["shell_inner"]).tolist() == [2, 17]
    assert np.flatnonzero(col["shell_outer"]).tolist() == [1, 18]
    # along y (1 mm): 2 rows inside, 3 rows outside
    line = {k: v[10, :, 30] for k, v in regions.items()}
    assert np.flatnonzero(line["shell_inner"]).tolist() == [5, 6, 33, 34]
    assert np.flatnonzero(line["shell_outer"]).tolist() == [2, 3, 4, 35, 36, 37]
    # core and inner shell partition the GTV when core_margin == shell_inner; margin = inner | outer
    assert np.array_equal(regions["core"] | regions["shell_inner"], box)
    assert not np.any(regions["core"] & regions["shell_inner"])
    assert np.array_equal(regions["margin"], regions["shell_inner"] | regions["shell_outer"])


def test_features_are_finite_named_and_equal_to_full_image_maps() -> None:
    spacing = (2.0, 0.9, 0.9)
    z, y, x = _grid((24, 60, 60), spacing)
    r = np.sqrt(z**2 + y**2 + x**2)
    rng = np.random.default_rng(3)
    image = Volume(
        300.0 + 400.0 / (1.0 + np.exp((r - 9.0) / 1.5)) + 20.0 * rng.standard_normal(r.shape), spacing
    )
    mask = Volume(r <= 9.0, spacing)
    cfg = GradientConfig()
    feats = gradient_features(image, mask, cfg)
    assert list(feats) == list(gradient_feature_names())
    assert len(feats) == 36
    assert all(math.isfinite(v) for v in feats.values())
    # the edge is steeper than the interior, and intensity falls outward at the edge
    assert feats["magnitude_margin_mean"] > feats["magnitude_core_mean"]
    assert feats["radial_margin_p50"] < 0
    # the crop used by gradient_features changes nothing
    magnitude, radial = gradient_maps(image, mask, cfg)
    regions = gradient_regions(mask, cfg)
    margin = regions["margin"].array
    assert feats["magnitude_margin_mean"] == pytest.approx(magnitude.array[margin].mean(), rel=1e-12)
    assert feats["radial_core_p90"] == pytest.approx(np.percentile(radial.array[regions["core"].array], 90))


def test_small_gtv_has_nan_core_and_finite_margin() -> None:
    spacing = (1.0, 1.0, 1.0)
    z, y, x = _grid((15, 15, 15), spacing)
    r = np.sqrt(z**2 + y**2 + x**2)
    image = Volume(100.0 + 50.0 * (r <= 1.5) + np.sin(x + 2 * y), spacing)
    mask = Volume(r <= 1.5, spacing)  # 19 voxels: no voxel is more than 2 mm deep
    feats = gradient_features(image, mask)
    assert all(math.isnan(feats[f"magnitude_core_{s}"]) for s in ("mean", "std", "p50", "skewness"))
    assert all(math.isfinite(feats[f"magnitude_margin_{s}"]) for s in ("mean", "std", "p50", "skewness"))


def test_constant_region_has_zero_skewness() -> None:
    spacing = (1.0, 1.0, 1.0)
    *_, x = _grid((16, 16, 16), spacing, centred=False)
    image = Volume(2.0 * x, spacing)
    mask = Volume(np.abs(x - 7.5) < 5, spacing)
    feats = gradient_features(image, mask, RAW)
    assert feats["magnitude_core_std"] == pytest.approx(0.0, abs=1e-12)
    assert feats["magnitude_core_skewness"] == 0.0
    assert feats["magnitude_core_mean"] == pytest.approx(2.0)


def test_bad_inputs_raise_input_errors() -> None:
    image = Volume(np.zeros((8, 8, 8)), (1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="mask is empty"):
        gradient_features(image, Volume(np.zeros((8, 8, 8), bool), (1.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="not on the image's grid"):
        gradient_maps(image, Volume(np.ones((8, 8, 8), bool), (2.0, 1.0, 1.0)))
    bad = np.zeros((8, 8, 8))
    bad[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        gradient_features(Volume(bad, (1.0, 1.0, 1.0)), Volume(np.ones((8, 8, 8), bool), (1.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="core_margin_mm"):
        GradientConfig(core_margin_mm=-1.0)
    with pytest.raises(InputError, match="margin shell is empty"):
        GradientConfig(shell_inner_mm=0.0, shell_outer_mm=0.0)


# ---------------------------------------------------------------------------------------------------------
# The feature classifier of adaptrt.response.features (the gradient and radiomics models share it)
def _toy_table(n: int = 80, p: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)  # imbalanced, like responders vs non-responders
    shift = np.zeros(p)
    shift[:3] = 2.0  # three informative features, 2 SD apart between the classes
    X = (rng.normal(size=(n, p)) + shift * y[:, None]) * rng.uniform(0.5, 20.0, size=p)
    X[:, -1] = 7.0  # constant
    X[rng.random((n, p)) < 0.05] = np.nan  # scattered missing values
    return X, y


def test_feature_model_fits_every_step_on_the_training_split_only() -> None:
    import warnings

    from sklearn.feature_selection import f_classif
    from sklearn.metrics import roc_auc_score

    from adaptrt.response.features import N_SELECTED, feature_model

    X, y = _toy_table()
    train, test = np.arange(60), np.arange(60, 80)
    model = feature_model("gradients", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(X[train], y[train])
    medians = np.nanmedian(X[train], axis=0)
    imputed = np.where(np.isnan(X[train]), medians, X[train])
    assert np.allclose(model["impute"].statistics_, medians)
    kept = model["variance"].get_support()
    assert not kept[-1] and kept.sum() == X.shape[1] - 1
    assert np.allclose(model["scale"].mean_, imputed[:, kept].mean(axis=0))
    assert not np.allclose(
        model["scale"].mean_, np.nanmean(X[:, kept], axis=0)
    )  # the test split is not in it
    z = (imputed[:, kept] - model["scale"].mean_) / model["scale"].scale_
    assert np.allclose(model["select"].scores_, f_classif(z, y[train])[0])
    selected = np.flatnonzero(kept)[model["select"].get_support()]
    assert len(selected) == N_SELECTED and {0, 1, 2} <= set(selected.tolist())
    assert roc_auc_score(y[test], model.predict_proba(X[test])[:, 1]) > 0.8


def test_feature_model_keeps_all_features_when_fewer_than_k() -> None:
    import warnings

    from adaptrt.response.features import feature_model

    X, y = _toy_table(p=4)
    model = feature_model("radiomics", seed=1, profile="quick")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # plain SelectKBest would warn that k > n_features
        model.fit(X, y)
    assert model["select"].get_support().sum() == 3  # 4 columns minus the constant one
    with pytest.raises(ValueError, match="kind must be one of"):
        feature_model("cnn", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="profile must be one of"):
        feature_model("radiomics", seed=0, profile="fast")


def test_features_table_aligns_keys() -> None:
    from adaptrt.response.features import features_table

    rows = [{"a": 1.0, "b": 2.0}, {"b": 3.0, "c": float("inf")}, {"a": 4.0}]
    X, names = features_table(rows)
    assert names == ["a", "b", "c"]
    assert np.array_equal(
        X, np.array([[1, 2, np.nan], [np.nan, 3, np.nan], [4, np.nan, np.nan]]), equal_nan=True
    )
    X2, names2 = features_table([{"c": 5.0, "zz": 1.0}], names=names)
    assert names2 == names and np.array_equal(X2, [[np.nan, np.nan, 5.0]], equal_nan=True)
    with pytest.raises(ValueError, match="not a number"):
        features_table([{"a": "x"}])  # type: ignore[dict-item]
