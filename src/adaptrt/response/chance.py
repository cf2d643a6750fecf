"""Chance, stated: the permutation null band of Table 1's mean AUC, corrected intervals and verdicts.

Why
---
With ~70 lesions and repeated 80/20 splits of ONE cohort, a model with no transferable signal does not sit
at AUC 0.5 trial after trial: the trials reuse the same lesions, so their mean wanders (a pixel model's
10-trial mean AUC under shuffled labels spans roughly 0.31-0.67, issue 14), and the SD over trials is a spread,
not a standard error. This module gives the two references a reader needs next to Table 1.

The permutation null band (:func:`permutation_nulls`)
-----------------------------------------------------
The labels of the lesions are permuted at random (``n_permutations`` times); for each permutation every
cheap model is fitted on each trial's training lesions with the **permuted** labels, **with the same splits as
the study**, and its test AUC is averaged over the trials, as Table 1 averages it, for each test set (the
second MRI and the first MRI of the test lesions). Each fit is scored twice:

* against the **permuted** test labels (the classical permutation test): the exact null of the whole
  protocol when the test images are independent of the labels, as the first MRI is under "no signal". It
  keeps what the trials share: every lesion is a training lesion in some trials and a test lesion in others
  with the *same* label, so a cohort whose labels happen to line up with some image feature (or against it)
  moves the mean of every model the same way, and repeated splits add the known anti-learning of
  cross-validation without signal (a test lesion is missing from its own class's training data). With 50
  trials this spread is the larger one (e.g. [0.36, 0.64] against [0.41, 0.57] on a negative-control cohort).
* against the **true** test labels: the second MRI is *not* independent of the label (it shows responders'
  early shrinkage, which alone separates the classes with AUC ~0.9), so a model whose training taught it
  nothing still scores far from 0.5 there, on either side, by how its arbitrary weights happen to line up with
  that shrinkage; permuting the test labels removes that spread.

A model without signal is exposed to both, so the band used for the verdicts is their **envelope** (the
lower 5th and the higher 95th percentile, all cheap models pooled): 90 % or more of either null lies inside
it. (On the second MRI the two spreads add up in a model without signal, so the true null can be somewhat
wider than the envelope; the verdict rule's second condition, the corrected interval, guards that edge.)
The cheap models (:func:`study_null`) are the study's gradient pipeline
(:func:`adaptrt.response.features.feature_model`, about 9 ms per fit; the radiomics pipeline, about 12 ms,
only when gradients were not run) and a pixel baseline (:data:`PIXEL_MODEL`: L2 logistic regression on the 16 × 16
block means of the unrotated 64 × 64 crop, trained on the first MRI, tested on the second and the first, like
the others). The network is not refitted per permutation (minutes per fit); its null is taken to be that of
the cheap models, which see the same splits and test sets. Trials whose permuted training labels hold one
class only are skipped in that permutation's mean.

The corrected interval (:func:`corrected_interval`)
---------------------------------------------------
The Nadeau-Bengio corrected resampled t interval of a mean over ``J`` overlapping trials:
``mean ± t_{J-1, 0.975} * sqrt((1/J + n_test/n_train) * var)`` (the same correction as
:func:`adaptrt.metrics.stats.corrected_resampled_ttest`).

Verdicts (:func:`auc_verdicts`, :func:`cam_verdicts`)
-----------------------------------------------------
A model is *above chance* only when its mean AUC lies above the null band **and** its corrected interval
excludes 0.5 (*below chance*: below the band and the interval below 0.5), *at chance* otherwise
(:func:`adaptrt.metrics.resampling.chance_verdict`); the sentence gives both references. CAM-vs-truth scores:
each score minus its chance level (AUC: 0.5; pointing game and CAM mass in the truth: the fraction of the GTV
covered by the true sub-region), averaged per trial, with the corrected interval over trials: above / below
chance when the interval excludes 0 on that side.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..metrics.resampling import chance_verdict, corrected_interval
from ..seeding import SeedLike, as_generator
from ..splits import Split

__all__ = [
    "CAM_CLASSES",
    "CHEAP_MODELS",
    "PIXEL_MODEL",
    "NullBand",
    "auc_verdicts",
    "cam_verdicts",
    "corrected_interval",
    "explained_class",
    "permutation_null",
    "permutation_nulls",
    "pixel_features",
    "pixel_model",
]

#: Name of the pixel baseline in the chance tables.
PIXEL_MODEL = "pixels"
#: The cheap models refitted under permuted labels (those of the study that are present, plus pixels).
CHEAP_MODELS: tuple[str, ...] = ("radiomics", "gradients", PIXEL_MODEL)
_BLOCK = 4  # 64 × 64 -> 16 × 16 block means


@dataclass(frozen=True)
class NullBand:
    """The permutation null of the mean AUC over the study's trials, for one test set.

    Attributes
    ----------
    low, high
        The 90 % band used for the verdicts: the envelope of the two constructions below (the lower of their
        5th percentiles, the higher of their 95th), all cheap models pooled.
    median
        The median of all null means (both constructions, all cheap models).
    n_permutations
        Permutations drawn.
    models
        The cheap models refitted.
    values
        ``{model: (n_permutations,) null mean AUCs}`` scored against the **true** test labels (NaN where no
        trial could be scored).
    observed
        ``{model: mean AUC with the true labels}`` of the cheap models (the pixel baseline's is reported
        only here).
    values_permuted_test
        The same fits scored against the **permuted** test labels.
    band_true_test, band_permuted_test
        ``(5th, 95th)`` percentiles of each construction (pooled over the cheap models).
    """

    low: float
    high: float
    median: float
    n_permutations: int
    models: tuple[str, ...]
    values: Mapping[str, NDArray[np.float64]]
    observed: Mapping[str, float]
    values_permuted_test: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    band_true_test: tuple[float, float] = (math.nan, math.nan)
    band_permuted_test: tuple[float, float] = (math.nan, math.nan)


def pixel_features(images: Sequence[NDArray[np.float32]]) -> NDArray[np.float64]:
    """The pixel baseline's features: 4 × 4 block means of each lesion's first unrotated sample.

    Parameters
    ----------
    images
        One ``(n, 64, 64)`` stack per lesion (e.g. ``LesionSlices.image``); only sample 0 is used.

    Returns
    -------
    ndarray
        ``(n_lesions, 256)`` float64 for 64 × 64 samples.
    """
    rows = []
    for stack in images:
        a = np.asarray(stack[0], dtype=np.float64)
        h, w = (a.shape[0] // _BLOCK) * _BLOCK, (a.shape[1] // _BLOCK) * _BLOCK
        rows.append(a[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).mean(axis=(1, 3)).ravel())
    return np.stack(rows)


def pixel_model() -> Any:
    """The pixel baseline: standardised features, L2 logistic regression (C = 0.1, balanced classes)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=0.1, class_weight="balanced", max_iter=500)),
        ]
    )


def _auc(y: NDArray[np.int64], p: NDArray[np.float64]) -> float:
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, p))


def _mean_aucs(
    make: Any,
    x_train: NDArray[np.float64],
    x_tests: Mapping[str, NDArray[np.float64]],
    y_fit: NDArray[np.int64],
    y_true: NDArray[np.int64],
    splits: Sequence[Split],
) -> dict[str, tuple[float, float]]:
    """Per test set, the mean test AUC over ``splits`` of a model fitted on ``y_fit`` of the training
    lesions: ``(scored on y_true, scored on y_fit)`` of the test lesions. One fit per split serves all."""
    vals: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in x_tests}
    for s in splits:
        ytr = y_fit[s.train]
        if ytr.min() == ytr.max():
            continue
        model = make()
        model.fit(x_train[s.train], ytr)
        for key, x_test in x_tests.items():
            p = model.predict_proba(x_test[s.test])[:, 1]
            vals[key][0].append(_auc(y_true[s.test], p))
            vals[key][1].append(_auc(y_fit[s.test], p))

    def mean(v: list[float]) -> float:
        arr = np.array(v, dtype=float)
        arr = arr[np.isfinite(arr)]
        return float(arr.mean()) if arr.size else math.nan

    return {k: (mean(t), mean(q)) for k, (t, q) in vals.items()}


def _null_chunk(
    name: str,
    profile: str,
    xa: NDArray[np.float64],
    x_tests: Mapping[str, NDArray[np.float64]],
    labels: Sequence[NDArray[np.int64]],
    y_true: NDArray[np.int64],
    splits: Sequence[Split],
) -> list[dict[str, tuple[float, float]]]:
    """:func:`_mean_aucs` of the cheap model ``name`` for each training-label vector of ``labels``."""
    from .features import feature_model

    def make() -> Any:
        if name == PIXEL_MODEL:
            return pixel_model()
        return feature_model(name, seed=0, profile=profile)  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return [_mean_aucs(make, xa, x_tests, yp, y_true, splits) for yp in labels]


def _band(values: Mapping[str, NDArray[np.float64]]) -> tuple[float, float, NDArray[np.float64]]:
    pooled = np.concatenate([np.asarray(v, dtype=float) for v in values.values()])
    pooled = pooled[np.isfinite(pooled)]
    if not pooled.size:
        return math.nan, math.nan, pooled
    lo, hi = np.quantile(pooled, [0.05, 0.95])
    return float(lo), float(hi), pooled


def permutation_nulls(
    tables: Mapping[str, tuple[NDArray[np.float64], Mapping[str, NDArray[np.float64]]]],
    y: NDArray[np.int64],
    splits: Sequence[Split],
    *,
    n_permutations: int,
    seed: SeedLike = 0,
    profile: str = "paper",
    n_jobs: int = 1,
) -> dict[str, NullBand]:
    """The label-permutation null band of the mean test AUC with the study's splits, per test set (module
    docstring): every permutation's fits are scored on every test set, against the true and the permuted
    test labels.

    Parameters
    ----------
    tables
        ``{cheap model: (X_train, {test set: X_test})}``, each ``(n_lesions, n_features)`` in the lesion order
        of ``y`` (e.g. first-MRI features to train, ``{"mri2": ..., "mri1": ...}`` to test); keys from
        :data:`CHEAP_MODELS`. Every model must list the same test sets.
    y
        ``(n_lesions,)`` labels in {0, 1}.
    splits
        The study's splits.
    n_permutations
        Number of permutations (>= 1).
    seed
        Seed of the permutations (:func:`adaptrt.seeding.as_generator`).
    profile
        Passed to :func:`adaptrt.response.features.feature_model`.
    n_jobs
        Processes over which the permutations are spread (joblib; the result does not depend on it).

    Returns
    -------
    dict
        ``{test set: NullBand}``.

    Raises
    ------
    ValueError
        No table, test sets that differ between models, or ``n_permutations < 1``.
    """
    if not tables:
        raise ValueError("permutation_null needs at least one cheap model's table")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    test_sets = [tuple(xt) for _, xt in tables.values()]
    if len(set(test_sets)) != 1 or not test_sets[0]:
        raise ValueError(f"every cheap model must list the same, non-empty test sets, got {test_sets}")
    y = np.asarray(y, dtype=np.int64)

    rng = as_generator(seed)
    perms = [rng.permutation(y) for _ in range(n_permutations)]
    true_vals: dict[str, dict[str, NDArray[np.float64]]] = {k: {} for k in test_sets[0]}
    perm_vals: dict[str, dict[str, NDArray[np.float64]]] = {k: {} for k in test_sets[0]}
    observed: dict[str, dict[str, float]] = {k: {} for k in test_sets[0]}
    for name, (xa, x_tests) in tables.items():
        for key, (m, _) in _null_chunk(name, profile, xa, x_tests, [y], y, splits)[0].items():
            observed[key][name] = m
        if n_jobs > 1 and n_permutations > 1:
            from joblib import Parallel, delayed

            chunks = [perms[i::n_jobs] for i in range(n_jobs)]
            parts = Parallel(n_jobs=n_jobs)(
                delayed(_null_chunk)(name, profile, xa, x_tests, c, y, splits) for c in chunks if c
            )
            # undo the round-robin split so that rows[i] belongs to perms[i]
            rows: list[dict[str, tuple[float, float]]] = [{} for _ in range(n_permutations)]
            for i, part in enumerate(parts):
                rows[i::n_jobs] = part
        else:
            rows = _null_chunk(name, profile, xa, x_tests, perms, y, splits)
        for key in x_tests:
            true_vals[key][name] = np.array([r[key][0] for r in rows])
            perm_vals[key][name] = np.array([r[key][1] for r in rows])
    out = {}
    for key in test_sets[0]:
        t_lo, t_hi, t_all = _band(true_vals[key])
        p_lo, p_hi, p_all = _band(perm_vals[key])
        both = np.concatenate([t_all, p_all])
        out[key] = NullBand(
            low=float(np.nanmin([t_lo, p_lo])) if both.size else math.nan,
            high=float(np.nanmax([t_hi, p_hi])) if both.size else math.nan,
            median=float(np.median(both)) if both.size else math.nan,
            n_permutations=n_permutations,
            models=tuple(tables),
            values=true_vals[key],
            observed=observed[key],
            values_permuted_test=perm_vals[key],
            band_true_test=(t_lo, t_hi),
            band_permuted_test=(p_lo, p_hi),
        )
    return out


def permutation_null(
    tables: Mapping[str, tuple[NDArray[np.float64], NDArray[np.float64]]],
    y: NDArray[np.int64],
    splits: Sequence[Split],
    *,
    n_permutations: int,
    seed: SeedLike = 0,
    profile: str = "paper",
    n_jobs: int = 1,
) -> NullBand:
    """:func:`permutation_nulls` for one test set: ``tables`` is ``{cheap model: (X_train, X_test)}``."""
    out = permutation_nulls(
        {k: (xa, {"test": xb}) for k, (xa, xb) in tables.items()},
        y,
        splits,
        n_permutations=n_permutations,
        seed=seed,
        profile=profile,
        n_jobs=n_jobs,
    )
    return out["test"]


def _ratio(splits: Sequence[Split]) -> float:
    return float(np.mean([len(s.test) / len(s.train) for s in splits]))


def auc_verdicts(
    metric_rows: Sequence[Mapping[str, Any]],
    splits: Sequence[Split],
    null: NullBand | None,
    names: Mapping[str, str],
    *,
    test_set: str = "mri2",
) -> list[dict[str, Any]]:
    """One row per model of Table 1: mean AUC, corrected interval, the null band, the verdict and a sentence.

    ``names`` maps model keys to their display names (the models shown, in order). Without a null band
    (``n_permutations = 0``) the verdict uses the corrected interval against 0.5.
    """
    ratio = _ratio(splits)
    out = []
    for key, title in names.items():
        vals = [float(r["auc"]) for r in metric_rows if r["model"] == key and r["test_set"] == test_set]
        if not vals:
            continue
        mean, lo, hi = corrected_interval(vals, ratio, bounds=(0.0, 1.0))
        band = (null.low, null.high) if null is not None and math.isfinite(null.low) else None
        ref = (
            f"the permutation null band [{band[0]:.2f}, {band[1]:.2f}]"
            if band is not None
            else "0.5 (its corrected interval)"
        )
        verdict, _why = chance_verdict(mean, lo, hi, *(band if band is not None else (None, None)))
        outside = band is not None and math.isfinite(mean) and not band[0] <= mean <= band[1]
        caveat = (
            " (outside the null band, but its corrected interval includes 0.5: not called above or below chance)"
            if verdict == "at chance" and outside
            else ""
        )
        sentence = (
            f"{title}: {verdict} — mean AUC {mean:.2f} (Nadeau–Bengio corrected 95 % interval "
            f"[{lo:.2f}, {hi:.2f}], {len(vals)} trials) against {ref}{caveat}."
        )
        out.append(
            {
                "model": key,
                "title": title,
                "test_set": test_set,
                "mean_auc": mean,
                "ci_low": lo,
                "ci_high": hi,
                "null_low": None if null is None else null.low,
                "null_high": None if null is None else null.high,
                "n_trials": len(vals),
                "verdict": verdict,
                "sentence": sentence,
            }
        )
    return out


#: CAM scores and their chance level: a constant or the per-lesion column that holds it.
CAM_CHANCE: Mapping[str, float | str] = {
    "auc": 0.5,
    "pointing_game": "truth_fraction",
    "mass_in_truth": "truth_fraction",
}


#: The classes a CAM can explain, and how its localisation of the radio-resistant sub-region should go if the
#: network found it: evidence for non-response points at resistant tissue (AUC above 0.5), evidence for
#: response points away from it (below 0.5).
CAM_CLASSES: tuple[str, ...] = ("non-response", "response")


def explained_class(label: int, target: str) -> str:
    """The class a CAM row explains: its lesion's true class (``target == "true"``) or the other one."""
    own = "response" if int(label) == 1 else "non-response"
    if target == "true":
        return own
    return "non-response" if own == "response" else "response"


def cam_verdicts(
    cam_rows: Sequence[Mapping[str, Any]], splits: Sequence[Split], *, methods: Sequence[str]
) -> list[dict[str, Any]]:
    """Per CAM method, explained class and score: mean, its chance level, the corrected interval of the
    excess over chance (per-trial means) and the verdict. Rows without the score (no truth) are skipped.

    The rows are grouped by the class the CAM explains (:func:`explained_class`: the lesion's true class or
    the other one), not by "true" / "other": the CAM of the non-response class should point *at* the
    resistant sub-region in every lesion, responder or not, and the CAM of the response class away from it,
    so pooling the true-class CAMs of both groups would average two opposite expectations towards chance.
    """
    ratio = _ratio(splits)
    out = []
    for method in methods:
        for explains in CAM_CLASSES:
            rows = [
                r
                for r in cam_rows
                if r["method"] == method and explained_class(r["label"], r["target"]) == explains
            ]
            for score, chance in CAM_CHANCE.items():
                per_trial: dict[int, list[tuple[float, float]]] = {}
                for r in rows:
                    v = r.get(score)
                    c = chance if isinstance(chance, float) else r.get(chance)
                    if v is None or c is None or not (math.isfinite(float(v)) and math.isfinite(float(c))):
                        continue
                    per_trial.setdefault(int(r["trial"]), []).append((float(v), float(c)))
                if not per_trial:
                    continue
                excess = [float(np.mean([v - c for v, c in pairs])) for pairs in per_trial.values()]
                score_mean = float(np.mean([v for pairs in per_trial.values() for v, _ in pairs]))
                chance_mean = float(np.mean([c for pairs in per_trial.values() for _, c in pairs]))
                m, lo, hi = corrected_interval(excess, ratio, bounds=(-1.0, 1.0))
                verdict = (
                    "above chance"
                    if lo > 0
                    else "below chance"
                    if hi < 0
                    else "at chance"
                    if math.isfinite(lo)
                    else "too few trials"
                )
                out.append(
                    {
                        "method": method,
                        "explains": explains,
                        "score": score,
                        "mean": score_mean,
                        "chance": chance_mean,
                        "excess": m,
                        "excess_ci_low": lo,
                        "excess_ci_high": hi,
                        "n_trials": len(excess),
                        "n_lesion_cams": sum(len(p) for p in per_trial.values()),
                        "verdict": verdict,
                    }
                )
    return out


def study_null(
    lesions: Sequence[Any],
    splits: Sequence[Split],
    *,
    models: Sequence[str],
    n_permutations: int,
    seed: int,
    profile: str = "paper",
    n_jobs: int = 1,
) -> dict[str, NullBand] | None:
    """:func:`permutation_nulls` for a study's lesions (``LesionData``): trained on the first MRI, tested on
    the second (``"mri2"``) and on the first (``"mri1"``) MRI of the test lesions, as Table 1.

    The cheap models are the gradient model (the radiomics model instead when gradients were not run: its
    ~850 wavelet features make it the slowest to refit) and the pixel baseline. None when
    ``n_permutations`` is 0.
    """
    from .features import features_table

    if n_permutations == 0:
        return None
    y = np.array([d.label for d in lesions], dtype=np.int64)
    tables: dict[str, tuple[NDArray[np.float64], dict[str, NDArray[np.float64]]]] = {}
    kinds = ["gradients"] if "gradients" in models else ["radiomics"] if "radiomics" in models else []
    for kind in kinds:
        x1, names = features_table([d.features[kind]["mri1"] for d in lesions])
        x2, _ = features_table([d.features[kind]["mri2"] for d in lesions], names)
        tables[kind] = (x1, {"mri2": x2, "mri1": x1})
    p1 = pixel_features([d.test_mri1.image for d in lesions])
    tables[PIXEL_MODEL] = (p1, {"mri2": pixel_features([d.test_mri2.image for d in lesions]), "mri1": p1})
    return permutation_nulls(
        tables, y, splits, n_permutations=n_permutations, seed=seed, profile=profile, n_jobs=n_jobs
    )
