"""Part I vs Part II on the same splits: one table of response AUCs (issue 11, "drift as a response predictor").

What it compares
----------------
The response study (Part I) evaluates its models (radiomics, gradients, the CAM network, ...) on repeated
patient-grouped 80/20 splits (``results/splits.csv`` of its run folder) and keeps every test prediction
(``results/predictions.csv``). The drift study (Part II) writes one response score per lesion
(``results/drift_response_scores.csv``: larger = more likely responder, each from a fold model that never saw
the lesion's patient, no label used). A fixed score needs no fitting, so it can be scored on **exactly the
response run's splits**: per trial, the ROC AUC on that trial's test lesions. This module reads the two run
folders' CSV files (it imports no study) and builds one table:

* per method and test set: the per-trial AUCs, their mean ± SD (``ddof=1``), the Nadeau-Bengio corrected
  95 % interval of the mean (``n_test / n_train`` from the splits;
  :func:`adaptrt.metrics.resampling.corrected_interval`);
* the label-permutation null band of the mean AUC on the same splits (90 %: 5th-95th percentiles, as the
  response run's). Part I models: the band the response run computed (``results/chance.csv``: cheap models
  refitted under permuted labels; the networks are not refitted). Part II scores: computed here: the labels of
  the lesions common to both runs (in first-seen order of ``splits.csv``) are permuted together, ``permutations``
  times, and the mean AUC over the same trials is recomputed with the fixed scores (trials whose permuted test
  part holds one class are skipped in that permutation's mean, as in the response run). One set of
  permutations serves every drift score. The column ``null_from`` says which band a row uses;
* the verdict by the project's conservative rule (:func:`adaptrt.metrics.resampling.chance_verdict`): above or
  below chance only when the mean lies outside the band **and** the corrected interval excludes 0.5.

The drift run's ``observed`` column (the observed area change at the second MRI) is a labelled reference row,
not a prediction.

Lesions and trials
------------------
Lesions are matched by their key ``patient/lesion`` (``P001/1``), never by position. A lesion of the response
run that the drift run does not have (excluded there) or has without a label is left out of every row's test
parts, Part I included (its AUCs are then recomputed from ``predictions.csv`` on the remaining lesions), so all
rows rest on the same lesions; a trial whose test part then lacks a class is left out of every row. Both are
counted in the result and its notes. A lesion without a finite value of one drift score is left out of that
row only (column ``no_score``). Where no lesion was left out, the recomputed Part I AUCs must equal
``metrics_per_trial.csv``; a difference means the run's files do not belong together and is refused.

A drift run of another cohort is refused (:class:`~adaptrt.errors.InputError` naming both files): fewer than
half of the response run's lesions (or fewer than :data:`MIN_COMMON`) in common, or any common lesion whose
response label differs between the runs (another cohort, or another response threshold).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .config import to_jsonable
from .errors import InputError
from .io.atomic import atomic_file, check_writable
from .metrics.resampling import chance_verdict, corrected_interval, rank_auc
from .report.html import Report, Section
from .report.run import write_csv_rows
from .seeding import SeedLike, as_generator

__all__ = [
    "COMPARISON_CSV",
    "COMPARISON_JSON",
    "DRIFT_SCORE_NAMES",
    "MIN_COMMON",
    "ComparisonResult",
    "add_comparison_section",
    "compare_response_drift",
    "format_table",
    "summary_sentences",
    "write_comparison",
]

#: Where :func:`write_comparison` writes, relative to its folder.
COMPARISON_CSV = "results/part1_vs_part2.csv"
COMPARISON_JSON = "results/part1_vs_part2.json"
#: Fewest lesions the two runs must share (and at least half of the response run's).
MIN_COMMON = 4
#: Display names of the drift run's score columns (used when its ``drift_response_auc.csv`` gives none).
DRIFT_SCORE_NAMES: Mapping[str, str] = {
    "area_study": "method2 (study net, one sample): predicted area change",
    "area_k": "analysis net, mean of K: predicted area change",
    "core_k": "analysis net, mean of K: − mean drift in GTV core",
    "margin_k": "analysis net, mean of K: − mean drift in GTV margin",
    "observed": "reference, not a prediction: observed area change at the later MRI",
}
_REFERENCE = ("observed",)
_NULL_QUANTILES = (0.05, 0.95)
_AUC_TOLERANCE = 1e-9

_RESPONSE_FIX = "give the run folder of `adaptrt response run` (or of `adaptrt demo`) as --response"
_DRIFT_FIX = (
    "give the run folder of `adaptrt drift run` with its analyses (not --no-analyses), or of `adaptrt demo`, "
    "as --drift"
)


@dataclass(frozen=True)
class ComparisonResult:
    """The table of :func:`compare_response_drift` and what it rests on.

    Attributes
    ----------
    rows
        One row per method and test set (Part I models, then Part II drift scores, then the reference row):
        ``part``, ``method``, ``key``, ``test_set``, ``n_trials`` (trials scored), ``n_test`` (mean test
        lesions per scored trial), ``no_score`` (common test lesions without a score in this row),
        ``auc_per_trial`` (space-separated, trial order), ``auc_mean``, ``auc_sd``, ``ci_low``, ``ci_high``
        (Nadeau-Bengio corrected 95 %), ``null_low``, ``null_high`` (90 % permutation band of the mean),
        ``null_from``, ``verdict``, ``reason``.
    per_trial
        ``{key, test_set, trial, auc, n_test, n_pos}`` per row and scored trial.
    response_run, drift_run
        The two run folders read.
    n_trials
        Trials in the response run's ``splits.csv``.
    trials_used
        Trials whose test part holds both classes after the lesions missing from the drift run are left out.
    trials_dropped
        The others (left out of every row).
    n_lesions_response
        Lesions in the response run's splits.
    n_lesions_common
        Those the drift run has with a label: the lesions of this table.
    missing_from_drift
        Response lesions the drift run does not have (excluded there).
    unlabelled_in_drift
        Response lesions the drift run has without a response label.
    n_only_in_drift
        Drift-run lesions that are not in the response run's splits (not used).
    test_train_ratio
        Mean ``n_test / n_train`` of the splits (the correction of the intervals).
    permutations, seed
        Label permutations of the drift scores' null band and their seed (None when given as a Generator).
    notes
        What was left out and why, in words.
    """

    rows: tuple[Mapping[str, Any], ...]
    per_trial: tuple[Mapping[str, Any], ...]
    response_run: str
    drift_run: str
    n_trials: int
    trials_used: tuple[int, ...]
    trials_dropped: tuple[int, ...]
    n_lesions_response: int
    n_lesions_common: int
    missing_from_drift: tuple[str, ...]
    unlabelled_in_drift: tuple[str, ...]
    n_only_in_drift: int
    test_train_ratio: float
    permutations: int
    seed: int | None
    notes: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------- reading
def _read_csv(path: Path, columns: Sequence[str], fix: str) -> list[dict[str, str]]:
    """Rows of a CSV file that must exist and hold ``columns``."""
    if not path.is_file():
        raise InputError("not found", path=path, fix=fix)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = [h.strip() for h in reader.fieldnames or []]
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text ({exc.reason})", path=path, fix=fix) from exc
    except csv.Error as exc:
        raise InputError(f"is not a valid CSV file ({exc})", path=path, fix=fix) from exc
    for col in columns:
        if col not in header:
            raise InputError(f"has no column {col!r}", path=path, field=col, fix=fix)
    return rows


def _float(value: str | None, path: Path, row: int, name: str) -> float:
    """A number of a CSV cell; empty, "nan" and "None" are NaN."""
    text = (value or "").strip()
    if text.lower() in ("", "nan", "none"):
        return math.nan
    try:
        return float(text)
    except ValueError as exc:
        raise InputError(
            f"{text!r} is not a number",
            path=path,
            row=row,
            field=name,
            fix="the run's files must not be edited",
        ) from exc


def _int(value: str | None, path: Path, row: int, name: str) -> int:
    v = _float(value, path, row, name)
    if not (math.isfinite(v) and v == int(v)):
        raise InputError(
            f"{value!r} is not an integer",
            path=path,
            row=row,
            field=name,
            fix="the run's files must not be edited",
        )
    return int(v)


def _label(value: str | None, path: Path, row: int) -> int | None:
    """A response label cell: 1 / 0 (or True / False); empty or "None" = no label."""
    text = (value or "").strip().lower()
    if text in ("", "none", "nan"):
        return None
    if text in ("1", "1.0", "true"):
        return 1
    if text in ("0", "0.0", "false"):
        return 0
    raise InputError(
        f"{value!r} is not a response label (1 responder, 0 non-responder, empty: unknown)",
        path=path,
        row=row,
        field="label",
        fix="the run's files must not be edited",
    )


@dataclass(frozen=True)
class _Split:
    trial: int
    n_train: int
    test: tuple[str, ...]


def _read_splits(path: Path) -> list[_Split]:
    rows = _read_csv(path, ("trial", "train", "test"), _RESPONSE_FIX)
    out: list[_Split] = []
    seen: set[int] = set()
    for i, r in enumerate(rows, start=1):
        trial = _int(r["trial"], path, i, "trial")
        train, test = (r["train"] or "").split(), (r["test"] or "").split()
        if trial in seen:
            raise InputError(
                f"trial {trial} is listed twice", path=path, row=i, field="trial", fix=_RESPONSE_FIX
            )
        if not train or not test:
            raise InputError(
                "a split needs training and test lesions", path=path, row=i, field="test", fix=_RESPONSE_FIX
            )
        if set(train) & set(test):
            raise InputError(
                f"lesion(s) {sorted(set(train) & set(test))[:3]} are in both the training and the test part",
                path=path,
                row=i,
                fix=_RESPONSE_FIX,
            )
        seen.add(trial)
        out.append(_Split(trial, len(train), tuple(test)))
    if not out:
        raise InputError("holds no split", path=path, fix=_RESPONSE_FIX)
    return out


def _split_lesions(path: Path) -> list[str]:
    """Every lesion of the splits (training and test), in first-seen order."""
    keys: dict[str, None] = {}
    for r in _read_csv(path, ("trial", "train", "test"), _RESPONSE_FIX):
        for k in (r["train"] or "").split() + (r["test"] or "").split():
            keys.setdefault(k, None)
    return list(keys)


def _response_labels(run: Path, predictions: list[dict[str, str]]) -> dict[str, int]:
    """Labels the response run used: ``lesions.csv`` when present, and every prediction row's (must agree)."""
    labels: dict[str, tuple[int, str]] = {}

    def put(key: str, lab: int | None, where: str) -> None:
        if lab is None:
            return
        if key in labels and labels[key][0] != lab:
            raise InputError(
                f"lesion {key} has label {labels[key][0]} in {labels[key][1]} but {lab} in {where}",
                path=run,
                fix="the run's files do not belong together: run the response study again",
            )
        labels[key] = (lab, where)

    lesions_csv = run / "results" / "lesions.csv"
    if lesions_csv.is_file():
        for i, r in enumerate(_read_csv(lesions_csv, ("lesion", "label"), _RESPONSE_FIX), start=1):
            put(r["lesion"].strip(), _label(r["label"], lesions_csv, i), lesions_csv.name)
    pred_path = run / "results" / "predictions.csv"
    for i, r in enumerate(predictions, start=1):
        put(r["lesion"].strip(), _label(r["label"], pred_path, i), pred_path.name)
    return {k: v for k, (v, _) in labels.items()}


@dataclass(frozen=True)
class _DriftScores:
    labels: dict[str, int | None]
    values: dict[str, dict[str, float]]  # score column -> {lesion key: value}
    columns: tuple[str, ...]


def _read_drift_scores(path: Path) -> _DriftScores:
    rows = _read_csv(path, ("patient", "lesion", "label"), _DRIFT_FIX)
    with path.open(newline="", encoding="utf-8-sig") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    columns = tuple(c for c in header if c not in ("patient", "lesion", "label"))
    if not columns:
        raise InputError("has no score column", path=path, fix=_DRIFT_FIX)
    labels: dict[str, int | None] = {}
    values: dict[str, dict[str, float]] = {c: {} for c in columns}
    for i, r in enumerate(rows, start=1):
        patient, lesion = (r["patient"] or "").strip(), (r["lesion"] or "").strip()
        if not patient or not lesion:
            raise InputError("a row without patient or lesion", path=path, row=i, fix=_DRIFT_FIX)
        key = f"{patient}/{lesion}"
        if key in labels:
            raise InputError(f"lesion {key} is listed twice", path=path, row=i, fix=_DRIFT_FIX)
        labels[key] = _label(r["label"], path, i)
        for c in columns:
            values[c][key] = _float(r.get(c), path, i, c)
    return _DriftScores(labels, values, columns)


def _drift_names(run: Path) -> dict[str, str]:
    """Display names of the drift scores from the drift run's ``drift_response_auc.csv`` (when present)."""
    names = dict(DRIFT_SCORE_NAMES)
    path = run / "results" / "drift_response_auc.csv"
    if path.is_file():
        for r in _read_csv(path, ("score", "key"), _DRIFT_FIX):
            if r["key"] and r["score"]:
                names[r["key"].strip()] = r["score"].strip()
    return names


def _chance_bands(run: Path) -> tuple[dict[tuple[str, str], tuple[float, float, str]], str | None]:
    """``{(model, test_set): (null_low, null_high, title)}`` from the response run's ``chance.csv``."""
    path = run / "results" / "chance.csv"
    if not path.is_file():
        return {}, f"the response run has no {path.name} (no permutation null band for Part I)"
    out: dict[tuple[str, str], tuple[float, float, str]] = {}
    for i, r in enumerate(
        _read_csv(path, ("model", "test_set", "null_low", "null_high"), _RESPONSE_FIX), start=1
    ):
        out[(r["model"].strip(), r["test_set"].strip())] = (
            _float(r["null_low"], path, i, "null_low"),
            _float(r["null_high"], path, i, "null_high"),
            (r.get("title") or "").strip(),
        )
    return out, None


# ----------------------------------------------------------------------------- the table
def _summary_row(
    *,
    part: str,
    method: str,
    key: str,
    test_set: str,
    aucs: Sequence[tuple[int, float, int]],
    no_score: int,
    ratio: float,
    null: tuple[float, float] | None,
    null_from: str,
) -> dict[str, Any]:
    vals = [a for _, a, _ in aucs]
    mean, lo, hi = corrected_interval(vals, ratio, bounds=(0.0, 1.0))
    sd = float(np.std(vals, ddof=1)) if len(vals) >= 2 else math.nan
    verdict, reason = chance_verdict(mean, lo, hi, *(null if null is not None else (None, None)))
    return {
        "part": part,
        "method": method,
        "key": key,
        "test_set": test_set,
        "n_trials": len(vals),
        "n_test": float(np.mean([n for _, _, n in aucs])) if aucs else math.nan,
        "no_score": no_score,
        "auc_per_trial": " ".join(f"{a:.3f}" for a in vals),
        "auc_mean": mean,
        "auc_sd": sd,
        "ci_low": lo,
        "ci_high": hi,
        "null_low": math.nan if null is None else null[0],
        "null_high": math.nan if null is None else null[1],
        "null_from": null_from,
        "verdict": verdict,
        "reason": reason,
    }


def _null_band(
    scores: NDArray[np.float64], tests: Sequence[NDArray[np.int64]], perms: NDArray[np.int64]
) -> tuple[float, float]:
    """5th and 95th percentiles of the mean AUC over ``tests`` (pool indices) under the permuted labels.

    ``scores``: ``(n_pool,)``; ``perms``: ``(P, n_pool)`` permuted labels. NaN where nothing was scored.
    """
    per_trial = np.stack([rank_auc(perms[:, t], scores[t]) for t in tests])  # (T, P)
    n = np.isfinite(per_trial).sum(axis=0)
    means = np.where(n > 0, np.nansum(per_trial, axis=0) / np.maximum(n, 1), np.nan)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(means, _NULL_QUANTILES)
    return float(lo), float(hi)


def compare_response_drift(
    response_run: str | Path,
    drift_run: str | Path,
    *,
    permutations: int = 1000,
    seed: SeedLike = 0,
) -> ComparisonResult:
    """Part I's models and Part II's drift scores on the response run's splits: one table (module docstring).

    Parameters
    ----------
    response_run
        Run folder of ``adaptrt response run`` (or of ``adaptrt demo``): ``results/splits.csv``,
        ``metrics_per_trial.csv``, ``predictions.csv``, and ``chance.csv`` (optional: the Part I null band)
        and ``lesions.csv`` (optional: more labels to check).
    drift_run
        Run folder of ``adaptrt drift run`` with its analyses (or of ``adaptrt demo``, the same folder):
        ``results/drift_response_scores.csv`` (and ``drift_response_auc.csv`` for the scores' names).
    permutations
        Label permutations of the drift scores' null band (>= 0; 0: no band, the verdict then rests on the
        corrected interval alone).
    seed
        Seed of the permutations (:func:`adaptrt.seeding.as_generator`; an int is recorded in the result).

    Returns
    -------
    ComparisonResult

    Raises
    ------
    InputError
        A missing or malformed file (named, with the column or row); a drift run of another cohort (fewer
        than half of the response run's lesions, or fewer than :data:`MIN_COMMON`, in common; or a common
        lesion whose label differs); no trial whose test part holds both classes; run files that disagree
        with each other.
    """
    if not (isinstance(permutations, int) and permutations >= 0):
        raise InputError(
            f"the number of permutations must be an integer >= 0, got {permutations!r}",
            field="permutations",
            fix="give e.g. 1000 (0: no null band for the drift scores)",
        )
    rrun, drun = Path(response_run), Path(drift_run)
    for run, fix in ((rrun, _RESPONSE_FIX), (drun, _DRIFT_FIX)):
        if not run.is_dir():
            raise InputError("is not a folder", path=run, fix=fix)
    splits_path = rrun / "results" / "splits.csv"
    metrics_path = rrun / "results" / "metrics_per_trial.csv"
    pred_path = rrun / "results" / "predictions.csv"
    scores_path = drun / "results" / "drift_response_scores.csv"

    splits = _read_splits(splits_path)
    response_lesions = _split_lesions(splits_path)
    metrics = _read_csv(metrics_path, ("trial", "model", "test_set", "auc"), _RESPONSE_FIX)
    predictions = _read_csv(
        pred_path, ("trial", "model", "test_set", "lesion", "label", "probability"), _RESPONSE_FIX
    )
    r_labels = _response_labels(rrun, predictions)
    drift = _read_drift_scores(scores_path)
    notes: list[str] = []

    # ---------------------------------------------------------------- the lesions both runs have
    missing = tuple(k for k in response_lesions if k not in drift.labels)
    unlabelled = tuple(k for k in response_lesions if k in drift.labels and drift.labels[k] is None)
    common = [k for k in response_lesions if drift.labels.get(k) is not None]
    n_only_drift = sum(1 for k in drift.labels if k not in set(response_lesions))
    needed = max(MIN_COMMON, math.ceil(0.5 * len(response_lesions)))
    if len(common) < needed:
        raise InputError(
            f"the drift run's scores {scores_path} share {len(common)} labelled lesion(s) with the response run's "
            f"{len(response_lesions)} lesions of {splits_path} (at least {needed} needed): they are not runs of "
            "the same cohort",
            path=scores_path,
            fix="give a drift run made on the same manifest as the response run (lesions are matched by "
            "patient/lesion, e.g. P001/1)",
        )
    disagree = [k for k in common if k in r_labels and r_labels[k] != drift.labels[k]]
    if disagree:
        shown = ", ".join(f"{k} ({r_labels[k]} vs {drift.labels[k]})" for k in disagree[:5])
        raise InputError(
            f"{len(disagree)} lesion(s) have another response label in the drift run's scores {scores_path} than in "
            f"the response run {pred_path} (response vs drift: {shown}{', ...' if len(disagree) > 5 else ''})",
            path=scores_path,
            field="label",
            fix="give runs of the same cohort made with the same response threshold (--threshold)",
        )
    label = {k: int(drift.labels[k] or 0) for k in common}  # every common lesion has a label
    common_set = set(common)
    if missing:
        notes.append(
            f"{len(missing)} of the response run's {len(response_lesions)} lesions are not in the drift run "
            f"(excluded there): {', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''}. They are left "
            "out of every row's test parts; the Part I AUCs are recomputed from predictions.csv without them, so "
            "they can differ from Table 1 (their null band, from chance.csv, was drawn with all lesions)."
        )
    if unlabelled:
        notes.append(
            f"{len(unlabelled)} lesion(s) have no response label in the drift run and are left out: "
            f"{', '.join(unlabelled[:10])}{', ...' if len(unlabelled) > 10 else ''}."
        )
    if n_only_drift:
        notes.append(
            f"{n_only_drift} lesion(s) of the drift run are not in the response run's splits (not used)."
        )

    tests: dict[int, list[str]] = {}
    dropped: list[int] = []
    for s in splits:
        t = [k for k in s.test if k in common_set]
        if len({label[k] for k in t}) < 2:
            dropped.append(s.trial)
        else:
            tests[s.trial] = t
    if dropped:
        notes.append(
            f"{len(dropped)} of {len(splits)} trial(s) left out of every row: their test part holds one class only "
            f"once the lesions missing from the drift run are left out (trials {', '.join(map(str, dropped))})."
        )
    if not tests:
        raise InputError(
            f"no trial of {splits_path} has both classes in its test part among the lesions that the drift run "
            f"{scores_path} also has",
            path=splits_path,
            fix="give runs of the same cohort (the drift run should not exclude most of the response run's lesions)",
        )
    ratio = float(np.mean([len(s.test) / s.n_train for s in splits]))
    full_test = {s.trial: len(s.test) == len(tests.get(s.trial, ())) for s in splits}

    rows: list[dict[str, Any]] = []
    per_trial: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- Part I: the response run's predictions
    probs: dict[tuple[int, str, str], dict[str, float]] = {}
    test_of = {s.trial: set(s.test) for s in splits}
    for i, r in enumerate(predictions, start=1):
        trial = _int(r["trial"], pred_path, i, "trial")
        key = r["lesion"].strip()
        if trial not in test_of or key not in test_of[trial]:
            raise InputError(
                f"trial {trial} has a prediction for lesion {key}, which is not in that trial's test part in "
                f"{splits_path}",
                path=pred_path,
                row=i,
                fix="the run's files do not belong together: run the response study again",
            )
        probs.setdefault((trial, r["model"].strip(), r["test_set"].strip()), {})[key] = _float(
            r["probability"], pred_path, i, "probability"
        )
    reported: dict[tuple[int, str, str], float] = {}
    order: dict[tuple[str, str], None] = {}
    for i, r in enumerate(metrics, start=1):
        model, test_set = r["model"].strip(), r["test_set"].strip()
        reported[(_int(r["trial"], metrics_path, i, "trial"), model, test_set)] = _float(
            r["auc"], metrics_path, i, "auc"
        )
        order.setdefault((model, test_set), None)
    bands, band_note = _chance_bands(rrun)
    if band_note:
        notes.append(band_note + ": their verdicts rest on the corrected interval alone.")
    pooled = next(((lo, hi) for lo, hi, _ in bands.values() if math.isfinite(lo) and math.isfinite(hi)), None)
    set_rank = {"mri2": 0, "mri1": 1}
    for model, test_set in sorted(order, key=lambda mt: set_rank.get(mt[1], 2)):
        aucs: list[tuple[int, float, int]] = []
        no_score: set[str] = set()
        for trial, t in tests.items():
            p = probs.get((trial, model, test_set), {})
            keep = [k for k in t if math.isfinite(p.get(k, math.nan))]
            no_score.update(k for k in t if k not in keep)
            y = np.array([label[k] for k in keep])
            if len(set(y.tolist())) < 2:
                continue
            auc = float(rank_auc(y, np.array([p[k] for k in keep])))
            want = reported.get((trial, model, test_set), math.nan)
            if (
                full_test[trial]
                and len(keep) == len(t)
                and math.isfinite(want)
                and abs(auc - want) > _AUC_TOLERANCE
            ):
                raise InputError(
                    f"trial {trial}, {model} on {test_set}: the AUC of predictions.csv ({auc:.6f}) is not the AUC of "
                    f"metrics_per_trial.csv ({want:.6f})",
                    path=rrun / "results",
                    fix="the run's files do not belong together: run the response study again",
                )
            aucs.append((trial, auc, len(keep)))
            per_trial.append(
                {
                    "key": model,
                    "test_set": test_set,
                    "trial": trial,
                    "auc": auc,
                    "n_test": len(keep),
                    "n_pos": int(y.sum()),
                }
            )
        own = bands.get((model, test_set))
        if own is not None and math.isfinite(own[0]) and math.isfinite(own[1]):
            null: tuple[float, float] | None = (own[0], own[1])
            null_from = "response run (chance.csv: cheap models refitted under permuted labels)"
        elif pooled is not None:
            null = pooled
            null_from = "response run (chance.csv, the pooled band of its cheap models)"
        else:
            null, null_from = None, "none (the response run has no permutation null)"
        title = own[2] if own is not None and own[2] else model
        rows.append(
            _summary_row(
                part="Part I",
                method=title,
                key=model,
                test_set=test_set,
                aucs=aucs,
                no_score=len(no_score),
                ratio=ratio,
                null=null,
                null_from=null_from,
            )
        )

    # ---------------------------------------------------------------- Part II: fixed scores, null computed here
    names = _drift_names(drun)
    rng = as_generator(seed)
    y_pool = np.array([label[k] for k in common], dtype=np.int64)
    pos = {k: i for i, k in enumerate(common)}
    perms = np.stack([rng.permutation(y_pool) for _ in range(permutations)]) if permutations else None
    columns = [c for c in drift.columns if c not in _REFERENCE] + [
        c for c in drift.columns if c in _REFERENCE
    ]
    for col in columns:
        vals = drift.values[col]
        s_pool = np.array([vals.get(k, math.nan) for k in common], dtype=np.float64)
        if not np.isfinite(s_pool).any():
            notes.append(f"Drift score {col!r} has no value for any common lesion: not shown.")
            continue
        aucs = []
        idx: list[NDArray[np.int64]] = []
        no_score = set()
        for trial, t in tests.items():
            keep = [k for k in t if math.isfinite(s_pool[pos[k]])]
            no_score.update(k for k in t if k not in keep)
            ti = np.array([pos[k] for k in keep], dtype=np.int64)
            y = y_pool[ti]
            if len(set(y.tolist())) < 2:
                continue
            auc = float(rank_auc(y, s_pool[ti]))
            aucs.append((trial, auc, len(keep)))
            idx.append(ti)
            per_trial.append(
                {
                    "key": col,
                    "test_set": "mri2" if col in _REFERENCE else "mri1",
                    "trial": trial,
                    "auc": auc,
                    "n_test": len(keep),
                    "n_pos": int(y.sum()),
                }
            )
        band = _null_band(s_pool, idx, perms) if perms is not None and idx else None
        reference = col in _REFERENCE
        rows.append(
            _summary_row(
                part="reference (not a prediction)" if reference else "Part II",
                method=names.get(col, col),
                key=col,
                test_set="mri2 (observed)" if reference else "mri1 (predicted drift)",
                aucs=aucs,
                no_score=len(no_score),
                ratio=ratio,
                null=band,
                null_from=(
                    f"computed here: {permutations} label permutations on the same splits (fixed scores)"
                    if band is not None
                    else "none (permutations = 0)"
                ),
            )
        )
    return ComparisonResult(
        rows=tuple(rows),
        per_trial=tuple(per_trial),
        response_run=str(rrun),
        drift_run=str(drun),
        n_trials=len(splits),
        trials_used=tuple(tests),
        trials_dropped=tuple(dropped),
        n_lesions_response=len(response_lesions),
        n_lesions_common=len(common),
        missing_from_drift=missing,
        unlabelled_in_drift=unlabelled,
        n_only_in_drift=n_only_drift,
        test_train_ratio=ratio,
        permutations=permutations,
        seed=seed if isinstance(seed, int) else None,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------- writing and the report
def write_comparison(
    result: ComparisonResult, out_folder: str | Path, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write :data:`COMPARISON_CSV` (the table) and :data:`COMPARISON_JSON` (everything) into ``out_folder``.

    Each file is written atomically (:func:`adaptrt.io.atomic.atomic_file`); both are checked before either
    is written, so an existing file (without ``overwrite``) leaves both untouched.

    Returns
    -------
    (csv_path, json_path)

    Raises
    ------
    InputError
        A file exists and ``overwrite`` is False.
    """
    folder = Path(out_folder)
    csv_path, json_path = folder / COMPARISON_CSV, folder / COMPARISON_JSON
    for p in (csv_path, json_path):
        check_writable(p, overwrite=overwrite)
    with atomic_file(csv_path, overwrite=overwrite) as tmp:
        write_csv_rows(tmp, result.rows)
    payload = {
        "description": "Part I models and Part II drift scores on the response run's splits (adaptrt.compare)",
        **to_jsonable(result),
    }
    with atomic_file(json_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return csv_path, json_path


def _ci(r: Mapping[str, Any]) -> str:
    lo, hi = float(r["ci_low"]), float(r["ci_high"])
    ci = f"[{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "no interval"
    return (
        f"{r['method']} ({r['test_set']}): mean AUC {float(r['auc_mean']):.2f}, corrected 95 % interval {ci}"
    )


def summary_sentences(result: ComparisonResult) -> list[str]:
    """The section's findings in words: how many trials, which methods beat chance, where the scores come from."""
    n = len(result.trials_used)
    test_sizes = [float(r["n_test"]) for r in result.rows if math.isfinite(float(r["n_test"]))]
    out = [
        f"All rows rest on the same {n} trial(s) of the response run's splits (patient-grouped train/test splits, "
        f"{result.n_trials} in its splits.csv), about {np.mean(test_sizes):.0f} test lesions each, "
        f"{result.n_lesions_common} of its {result.n_lesions_response} lesions in common with the drift run."
        if test_sizes
        else f"All rows rest on the same {n} trial(s) of the response run's splits."
    ]
    if n < 2:
        out.append(
            "With one trial there is no corrected interval: the table cannot call any method above chance."
        )
    elif n < 10:
        out.append(
            f"With {n} trials the corrected intervals are wide (t with {n - 1} degrees of freedom): read the table as "
            "a check of the protocol, not as evidence for or against a method."
        )
    preds = [r for r in result.rows if not str(r["part"]).startswith("reference")]
    above = [r for r in preds if r["verdict"] == "above chance"]
    below = [r for r in preds if r["verdict"] == "below chance"]
    if above:
        out.append(
            "Above chance (mean above the null band and corrected interval above 0.5): "
            + "; ".join(map(_ci, above))
            + "."
        )
    else:
        best = sorted(
            (r for r in preds if math.isfinite(float(r["auc_mean"]))), key=lambda r: -float(r["auc_mean"])
        )[:2]
        out.append(
            "No method is above chance by the project's rule (mean above the permutation null band and corrected "
            "95 % interval above 0.5)"
            + (f"; the highest means: {'; '.join(map(_ci, best))}." if best else ".")
        )
    if below:
        out.append("Below chance: " + "; ".join(map(_ci, below)) + ".")
    out.append(
        "Part I models are refitted on each trial's training lesions; their null band is the response run's. The "
        "Part II drift scores are not fitted on these splits: each lesion's score comes from a drift-study fold "
        "model that never saw its patient and uses no response label of the lesion (the study's Method 2 is "
        "trained without labels; the analysis network sees its training patients' labels only as a conditioning "
        "input and samples held-out lesions unconditionally). Their null band is computed here by permuting the "
        "labels on the same splits."
    )
    for r in result.rows:
        if str(r["part"]).startswith("reference"):
            lo, hi = float(r["ci_low"]), float(r["ci_high"])
            ci = f"[{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "no interval"
            out.append(
                f"Reference row ({r['key']}, not a prediction): mean AUC {float(r['auc_mean']):.2f}, corrected 95 % "
                f"interval {ci}; it is measured on the second MRI, so it shows how much the early change itself "
                "tells about the follow-up label, not what a method can predict before it."
            )
    return out


def format_table(result: ComparisonResult) -> str:
    """The table as plain text (the CLI prints it): method, test set, trials, mean ± SD, intervals, verdict."""

    def num(v: Any) -> str:
        return f"{float(v):.2f}" if math.isfinite(float(v)) else "n/a"

    head = ("method", "test set", "trials", "AUC mean ± SD", "corrected 95 %", "null band", "verdict")
    body = [
        (
            f"{'reference' if str(r['part']).startswith('reference') else r['part']}: {r['key']}",
            str(r["test_set"]),
            str(r["n_trials"]),
            f"{num(r['auc_mean'])} ± {num(r['auc_sd'])}",
            f"[{num(r['ci_low'])}, {num(r['ci_high'])}]",
            f"[{num(r['null_low'])}, {num(r['null_high'])}]",
            str(r["verdict"]),
        )
        for r in result.rows
    ]
    widths = [max(len(line[i]) for line in (head, *body)) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (head, *body)
    )


#: Columns of the report's table (the CSV has them all).
_SHOWN = (
    "part",
    "method",
    "test_set",
    "n_trials",
    "n_test",
    "auc_mean",
    "auc_sd",
    "ci_low",
    "ci_high",
    "null_low",
    "null_high",
    "null_from",
    "verdict",
    "reason",
)


def add_comparison_section(
    report: Report, result: ComparisonResult, *, title: str = "Part I vs Part II on the same splits"
) -> Section:
    """Add the comparison's section (findings in words, the table, the notes) to ``report`` and return it."""
    sec = report.section(title)
    sec.text("\n\n".join(summary_sentences(result)))
    shown = [{k: r[k] for k in _SHOWN} for r in result.rows]
    if len(result.trials_used) <= 10:
        for s, r in zip(shown, result.rows, strict=True):
            s["auc_per_trial"] = r["auc_per_trial"]
    sec.table(
        shown,
        caption=(
            f"Response AUC on the response run's splits ({len(result.trials_used)} trials; mean ± SD over trials; "
            "Nadeau–Bengio corrected 95 % interval; 90 % label-permutation null band of the mean; positive class: "
            "responder)"
        ),
    )
    for note in result.notes:
        sec.note(note)
    return sec
