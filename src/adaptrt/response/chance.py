"""Chance, stated: the permutation null band of Table 1's mean AUC, corrected intervals and verdicts.

Why
---
With ~70 lesions and repeated 80/20 splits of ONE cohort, a model with no transferable signal does not sit
at AUC 0.5 trial after trial: the trials reuse the same lesions, so their mean wanders (a pixel model's
10-trial mean AUC under shuffled labels spans roughly 0.31-0.67, issue 14), and the SD over trials is a spread,
not a standard error. This module gives the two references a reader needs next to Table 1.

The permutation null band (:func:`permutation_null`)
----------------------------------------------------
The labels of the lesions are permuted at random (``n_permutations`` times); for each permutation every
cheap model is fitted on each trial's training lesions with the **permuted** labels and scored (ROC AUC)
against the **true** labels of the trial's test lesions, **with the same splits as the study**, and the AUC is
averaged over the trials, as Table 1 averages it. The 5th-95th percentiles of those means (all cheap models
pooled) are the 90 % null band: where the mean AUC of a model that learned nothing from the labels falls
under this protocol on this cohort. Only the training labels are permuted because the test images need not
be independent of the labels: the second MRI shows the early shrinkage of responders (its volume change alone
separates the classes with AUC ~0.9 on the default cohort), so a model whose training taught it nothing
still scores far from 0.5 there, on either side, by how its arbitrary weights happen to line up with that
shrinkage. Permuting the test labels as well would remove that spread and make such a model look
"significant"; keeping them puts it into the band. On the first MRI (no such cue) both nulls agree. The
cheap models (:func:`study_null`) are the study's gradient pipeline
(:func:`adaptrt.response.features.feature_model`, about 9 ms per fit; the radiomics pipeline, about 12 ms,
only when gradients were not run) and a pixel baseline (:data:`PIXEL_MODEL`: L2 logistic regression on the 16 × 16
block means of the unrotated 64 × 64 crop, trained on the first MRI, tested on the second, like the others).
The network is not refitted per permutation (minutes per fit); its null is taken to be that of the cheap
models, which see the same splits and test sets. Trials whose permuted training labels hold one class only
are skipped in that permutation's mean.

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
from dataclasses import dataclass
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
    "pixel_features",
]

#: Name of the pixel baseline in the chance tables.
PIXEL_MODEL = "pixels"
#: The cheap models refitted under permuted labels (those of the study that are present, plus pixels).
CHEAP_MODELS: tuple[str, ...] = ("radiomics", "gradients", PIXEL_MODEL)
_BLOCK = 4  # 64 × 64 -> 16 × 16 block means


@dataclass(frozen=True)
class NullBand:
    """The permutation null of the mean AUC over the study's trials.

    Attributes
    ----------
    low, high
        The 5th and 95th percentiles of the null means (all cheap models pooled): the 90 % band.
    median
        Their median.
    n_permutations
        Permutations drawn.
    models
        The cheap models refitted.
    values
        ``{model: (n_permutations,) null mean AUCs}`` (NaN where no trial could be scored).
    observed
        ``{model: mean AUC with the true labels}`` of the cheap models (the pixel baseline's is reported
        only here).
    """

    low: float
    high: float
    median: float
    n_permutations: int
    models: tuple[str, ...]
    values: Mapping[str, NDArray[np.float64]]
    observed: Mapping[str, float]


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


def _pixel_model() -> Any:
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


def _mean_auc(
    make: Any,
    x_train: NDArray[np.float64],
    x_test: NDArray[np.float64],
    y_fit: NDArray[np.int64],
    y_test: NDArray[np.int64],
    splits: Sequence[Split],
) -> float:
    """Mean test AUC over ``splits``: fitted on ``y_fit`` of the training lesions, scored on ``y_test``."""
    vals = []
    for s in splits:
        ytr = y_fit[s.train]
        if ytr.min() == ytr.max():
            continue
        model = make()
        model.fit(x_train[s.train], ytr)
        vals.append(_auc(y_test[s.test], model.predict_proba(x_test[s.test])[:, 1]))
    arr = np.array(vals, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def _null_chunk(
    name: str,
    profile: str,
    xa: NDArray[np.float64],
    xb: NDArray[np.float64],
    labels: Sequence[NDArray[np.int64]],
    y_test: NDArray[np.int64],
    splits: Sequence[Split],
) -> list[float]:
    """Mean AUC over ``splits`` of the cheap model ``name`` fitted with each training-label vector of
    ``labels`` and scored against the test labels ``y_test``."""
    from .features import feature_model

    def make() -> Any:
        if name == PIXEL_MODEL:
            return _pixel_model()
        return feature_model(name, seed=0, profile=profile)  # type: ignore[arg-type]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return [_mean_auc(make, xa, xb, yp, y_test, splits) for yp in labels]


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
    """The label-permutation null band of the mean test AUC with the study's splits (module docstring).

    Parameters
    ----------
    tables
        ``{cheap model: (X_train_timepoint, X_test_timepoint)}``, each ``(n_lesions, n_features)`` in the
        lesion order of ``y`` (e.g. first-MRI and second-MRI features); keys from :data:`CHEAP_MODELS`.
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
    NullBand

    Raises
    ------
    ValueError
        No table, or ``n_permutations < 1``.
    """
    if not tables:
        raise ValueError("permutation_null needs at least one cheap model's table")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    y = np.asarray(y, dtype=np.int64)

    rng = as_generator(seed)
    perms = [rng.permutation(y) for _ in range(n_permutations)]
    values: dict[str, NDArray[np.float64]] = {}
    observed: dict[str, float] = {}
    for name, (xa, xb) in tables.items():
        observed[name] = _null_chunk(name, profile, xa, xb, [y], y, splits)[0]
        if n_jobs > 1 and n_permutations > 1:
            from joblib import Parallel, delayed

            chunks = [perms[i::n_jobs] for i in range(n_jobs)]
            parts = Parallel(n_jobs=n_jobs)(
                delayed(_null_chunk)(name, profile, xa, xb, c, y, splits) for c in chunks if c
            )
            # undo the round-robin split so that values[i] belongs to perms[i]
            vals = np.empty(n_permutations)
            for i, part in enumerate(parts):
                vals[i::n_jobs] = part
            values[name] = vals
        else:
            values[name] = np.array(_null_chunk(name, profile, xa, xb, perms, y, splits))
    pooled = np.concatenate(list(values.values()))
    pooled = pooled[np.isfinite(pooled)]
    low, med, high = (
        (float(v) for v in np.quantile(pooled, [0.05, 0.5, 0.95])) if pooled.size else (math.nan,) * 3
    )
    return NullBand(low, high, med, n_permutations, tuple(tables), values, observed)


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
) -> NullBand | None:
    """:func:`permutation_null` for a study's lesions (``LesionData``): first-MRI train, second-MRI test.

    The cheap models are the gradient model (the radiomics model instead when gradients were not run: its
    ~850 wavelet features make it the slowest to refit) and the pixel baseline. None when
    ``n_permutations`` is 0.
    """
    from .features import features_table

    if n_permutations == 0:
        return None
    y = np.array([d.label for d in lesions], dtype=np.int64)
    tables: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
    kinds = ["gradients"] if "gradients" in models else ["radiomics"] if "radiomics" in models else []
    for kind in kinds:
        if kind in models:
            x1, names = features_table([d.features[kind]["mri1"] for d in lesions])
            x2, _ = features_table([d.features[kind]["mri2"] for d in lesions], names)
            tables[kind] = (x1, x2)
    tables[PIXEL_MODEL] = (
        pixel_features([d.test_mri1.image for d in lesions]),
        pixel_features([d.test_mri2.image for d in lesions]),
    )
    return permutation_null(
        tables, y, splits, n_permutations=n_permutations, seed=seed, profile=profile, n_jobs=n_jobs
    )
