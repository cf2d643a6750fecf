"""The drift study beyond the paper (issue 11): uncertainty from K DDIM samples, response-conditioned generation,
and drift as a response predictor, on the study's patient-grouped folds.

Per fold of :func:`adaptrt.drift.study.run_folds` (the same folds, so every number is from held-out patients):

1. **Validation patients** are carved out of the fold's training patients (``val_fraction`` of them, at least
   one, drawn with the study's seed); the **analysis network** (Method 2, separate drift decoder, as the
   study's ``method2`` variant) trains on the remaining training patients. With ``conditional`` it is
   conditioned on the response label (0 = poor, 1 = good; lesions without a label always see the "no label"
   row) with classifier-free label dropout, so the same network samples unconditionally (``label=None``).
2. **Uncertainty**: ``K`` unconditional samples of every validation and held-out slice; per-pixel mean and SD of
   the post image and the drift (:func:`adaptrt.drift.uncertainty.sample_stats`). The sigma scale of each
   target is fitted on the validation lesions only and applied to the held-out lesions. Targets: the post
   image, the drift (post − pre) and, on the simulator, the noise-free truth drift.
3. **Conditional generation**: every held-out slice is sampled under both labels from the same starting noise;
   the predicted area change (predicted post GTV over the pre GTV, :func:`adaptrt.drift.evaluate.predicted_gtv`
   with the fold's training threshold) and the mean drift in the GTV core are compared (good − poor).
4. **Response scores** (fixed sign, chosen before looking: larger = more likely a responder): the predicted
   area change ``1 − ratio`` (the study's Method 2, one sample; and the mean of K), minus the mean drift in the
   GTV core (pre GTV eroded by one pixel) and in the margin (a 3-pixel ring outside the pre GTV). AUCs on the
   response study's patient-grouped splits (:func:`adaptrt.splits.grouped_splits` with its default seed and
   test size), with a label-permutation chance band on the same splits. Each lesion's score comes from the
   fold model that never saw its patient (the scores use no label), so a split's test AUC uses only
   held-out predictions.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage, stats

from ..errors import InputError
from ..seeding import as_generator
from .evaluate import lesion_metrics, mean_sd, predicted_gtv
from .methods import DriftModel, DriftModelConfig
from .study import AnalysisConfig, DriftConfig, DriftStudyResult, _auc_many, _variants
from .uncertainty import (
    NOMINAL,
    SampleStats,
    calibration_curve,
    coverage,
    ence,
    fit_sigma_scale,
    sample_stats,
)

__all__ = [
    "AnalysisResult",
    "check_conditional_labels",
    "core_margin",
    "read_sensitive_fractions",
    "run_analyses",
]

MARGIN_PX = 3
TARGETS = ("post", "drift", "drift_truth")


def check_conditional_labels(labels: NDArray[Any] | list[Any], *, where: str = "the cohort") -> None:
    """Refuse conditional generation without response labels of both classes (an :class:`InputError`).

    Parameters
    ----------
    labels
        ``(L,)`` per lesion: 1 = good response, 0 = poor, None or -1 = no label.
    """
    lab = [int(v) for v in labels if v is not None and int(v) >= 0]
    if not lab:
        raise InputError(
            f"conditional generation needs response labels, but no lesion of {where} has one (no follow-up GTV)",
            field="response label (followup rows)",
            fix="add followup rows to the manifest, or run without conditional generation (--no-conditional)",
        )
    if len(set(lab)) < 2:
        cls = "good response (1)" if lab[0] == 1 else "poor response (0)"
        raise InputError(
            f"conditional generation needs both response classes, but all {len(lab)} labelled lesions of {where} "
            f"are {cls}",
            field="response label (followup rows)",
            fix="add lesions of the other class or change --threshold, or run with --no-conditional",
        )


def core_margin(
    drift: NDArray[Any], pre_mask: NDArray[np.bool_], margin_px: int = MARGIN_PX
) -> tuple[float, float]:
    """Mean drift in the GTV core (pre GTV eroded by one pixel; the GTV itself when that is empty) and in the
    margin (a ``margin_px`` ring outside the pre GTV), over a lesion's ``(n, h, w)`` slices."""
    d = np.asarray(drift, np.float64)
    m = np.asarray(pre_mask, bool)
    st = np.zeros((3, 3, 3), bool)
    st[1] = ndimage.generate_binary_structure(2, 1)
    core = ndimage.binary_erosion(m, st, iterations=1)
    if not core.any():
        core = m
    ring = ndimage.binary_dilation(m, st, iterations=margin_px) & ~m
    c = float(d[core].mean()) if core.any() else math.nan
    r = float(d[ring].mean()) if ring.any() else math.nan
    return c, r


def read_sensitive_fractions(source: Path | None) -> tuple[dict[tuple[str, str], float], str]:
    """The simulator's truth: ``1 − resistant_fraction`` per (patient, lesion) from ``truth/lesions.csv`` next to
    the manifest; ``({}, reason)`` when it is absent or not in that format (never an error)."""
    if source is None:
        return {}, "no manifest"
    src = Path(source)
    table = (src if src.is_dir() else src.parent) / "truth" / "lesions.csv"
    if not table.is_file():
        return {}, f"no {table.name} in {table.parent}"
    try:
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or not {"patient_id", "lesion_id", "resistant_fraction"} <= set(rows[0]):
            return {}, f"{table}: no 'patient_id', 'lesion_id', 'resistant_fraction' columns"
        out = {(r["patient_id"], r["lesion_id"]): 1.0 - float(r["resistant_fraction"]) for r in rows}
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        return {}, f"{table}: unreadable ({exc})"
    return out, str(table)


@dataclass
class AnalysisResult:
    """What :func:`run_analyses` produced (plain rows for CSV, arrays for figures).

    Attributes
    ----------
    lesion_rows
        Per (fold, held-out lesion, model): the evaluation metrics of the mean of K and of one sample, and
        per-lesion uncertainty numbers (mean SD, MAE, raw coverage) of each target.
    calibration_rows
        Per (fold, target): sigma scale (from validation lesions), ±1/±2 SD coverage and ENCE before and
        after scaling on the held-out lesions, Spearman of lesion mean SD vs lesion MAE.
    curves
        Per target: ``{"before": curve, "after": curve}`` on the pooled held-out pixels.
    counterfactual_rows
        Per held-out lesion: predicted area ratio and core drift under each label, their differences.
    score_rows
        Per lesion: the response scores and the label.
    auc_rows
        Per score: mean ± SD AUC over the splits, the permutation chance band.
    splits
        Which splits were used (description, count, test lesions per split).
    example, pairs
        Arrays of the calibrated example and of the counterfactual pairs (figures).
    notes
        Plain sentences for the report.
    """

    lesion_rows: list[dict[str, Any]] = field(default_factory=list)
    calibration_rows: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, dict[str, list[dict[str, float]]]] = field(default_factory=dict)
    counterfactual_rows: list[dict[str, Any]] = field(default_factory=list)
    score_rows: list[dict[str, Any]] = field(default_factory=list)
    auc_rows: list[dict[str, Any]] = field(default_factory=list)
    splits: dict[str, Any] = field(default_factory=dict)
    example: dict[str, Any] = field(default_factory=dict)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    k: int = 0


def _analysis_model(config: DriftConfig, an: AnalysisConfig) -> DriftModelConfig:
    m2 = next(v for v in _variants(config.model) if v.name == "method2").model
    if an.conditional:
        return dataclasses.replace(m2, n_classes=2, label_dropout=an.label_dropout)
    return dataclasses.replace(m2, n_classes=0, label_dropout=0.0)


def _carve(patients: list[str], fraction: float, seed: int) -> set[str]:
    """Validation patients: ``round(fraction · n)`` of them, at least 1, leaving at least one for training."""
    uniq = sorted(set(patients))
    if len(uniq) < 2:
        return set()
    n_val = min(len(uniq) - 1, max(1, round(fraction * len(uniq))))
    rng = as_generator(seed)
    return {uniq[i] for i in rng.choice(len(uniq), n_val, replace=False)}


def _spearman(a: list[float], b: list[float]) -> tuple[float, float]:
    x, y = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan
    r = stats.spearmanr(x[ok], y[ok])
    return float(r.statistic), float(r.pvalue)


def run_analyses(
    dataset: Any, config: DriftConfig, result: DriftStudyResult, *, progress: bool = False
) -> AnalysisResult:
    """Uncertainty, conditional generation and response scores on the folds of ``result`` (see module doc)."""
    an = config.analysis if config.analysis is not None else AnalysisConfig()
    t_start = time.perf_counter()
    out = AnalysisResult(k=an.samples)
    ls = dataset.lesions
    if an.conditional:
        check_conditional_labels([le.label for le in ls])
    les_of = np.asarray(dataset.lesion_of_sample)
    angle0 = np.asarray(dataset.angle_deg) == 0.0
    pl = dataset.planes()
    pre, post, drift, pre_m, post_m, truth = (
        pl.pre,
        pl.post,
        pl.drift,
        pl.pre_mask,
        pl.post_mask,
        pl.truth_drift,
    )
    lab_sample = np.asarray([-1 if ls[int(i)].label is None else ls[int(i)].label for i in les_of])
    mcfg = _analysis_model(config, an)
    k = an.samples
    name_k, name_1 = f"mean of {k} samples", "one sample"
    pooled: dict[str, dict[str, list[NDArray[np.float64]]]] = {
        t: {"err": [], "sd": [], "sds": []} for t in TARGETS
    }
    scores: dict[int, dict[str, float]] = {}
    sens, _ = read_sensitive_fractions(getattr(dataset, "source", None))
    if sens:
        # the table's name relative to the manifest: an absolute path may be a run's temporary staging folder
        out.notes.append(
            "Sensitive fraction (1 − resistant fraction) of each lesion read from truth/lesions.csv next to the "
            "manifest (the simulator's ground truth; no model reads it)."
        )
    for fi, (tr_les_l, te_les_l) in enumerate(result.folds):
        tr_les, te_les = np.asarray(tr_les_l), np.asarray(te_les_l)
        val_pat = _carve([ls[int(i)].patient_id for i in tr_les], an.val_fraction, config.seed * 1000 + fi)
        val_les = np.asarray([i for i in tr_les if ls[int(i)].patient_id in val_pat], dtype=np.int64)
        fit_les = np.asarray([i for i in tr_les if ls[int(i)].patient_id not in val_pat], dtype=np.int64)
        fit_s = np.flatnonzero(np.isin(les_of, fit_les))
        seed = config.seed * 1000 + fi * 10 + 7
        model = DriftModel(mcfg, seed=seed, device=config.device)
        labels = np.where(lab_sample[fit_s] >= 0, lab_sample[fit_s], 2) if an.conditional else None
        model.fit(
            pre[fit_s],
            post[fit_s],
            drift[fit_s],
            labels=labels,
            progress=progress,
            desc=f"fold {fi + 1}/{len(result.folds)} analysis net",
        )
        thr = result.thresholds[fi]
        # ------------------------------------------------------------------ sigma scale on validation lesions
        scale = dict.fromkeys(TARGETS, 1.0)
        fitted = False
        if len(val_les):
            v0 = np.flatnonzero(np.isin(les_of, val_les) & angle0)
            sv = sample_stats(model, pre[v0], k, seed=seed + 1, eta=an.eta)
            scale["post"] = fit_sigma_scale(sv.post_mean - post[v0], sv.post_sd)
            scale["drift"] = fit_sigma_scale(sv.drift_mean - drift[v0], sv.drift_sd)
            if truth is not None:
                scale["drift_truth"] = fit_sigma_scale(sv.drift_mean - truth[v0], sv.drift_sd)
            fitted = True
        # ------------------------------------------------------------------ held-out lesions
        te0 = np.flatnonzero(np.isin(les_of, te_les) & angle0)
        st = sample_stats(model, pre[te0], k, seed=seed + 2, eta=an.eta)
        errs = _errors(st, post[te0], drift[te0], None if truth is None else truth[te0])
        per_lesion: dict[str, dict[str, list[float]]] = {t: {"sd": [], "mae": []} for t in errs}
        for le in te_les:
            sel = les_of[te0] == le
            src = te0[sel]
            rec = ls[int(le)]
            base = {"fold": fi, "patient": rec.patient_id, "lesion": rec.lesion_id, "label": rec.label}
            tr_src = None if truth is None else truth[src]
            for mname, pp, pd in (
                (name_k, st.post_mean, st.drift_mean),
                (name_1, st.post_first, st.drift_first),
            ):
                met = lesion_metrics(
                    pp[sel], pd[sel], pre[src], post[src], pre_m[src], post_m[src], thr, tr_src
                )
                row: dict[str, Any] = {"model": mname, **base, **met}
                if mname == name_k:
                    for t, (err, sd) in errs.items():
                        s_sd = float(np.mean(sd[sel]))
                        s_mae = float(np.mean(np.abs(err[sel])))
                        per_lesion[t]["sd"].append(s_sd)
                        per_lesion[t]["mae"].append(s_mae)
                        row[f"{t}_mean_sd"] = s_sd
                        row[f"{t}_mae_of_mean"] = s_mae
                        row[f"{t}_coverage1"] = coverage(err[sel], sd[sel], 1.0, scale[t])
                        row[f"{t}_coverage2"] = coverage(err[sel], sd[sel], 2.0, scale[t])
                out.lesion_rows.append(row)
            c, r = core_margin(st.drift_mean[sel], pre_m[src])
            area = predicted_gtv(st.post_mean[sel], pre_m[src], thr)
            ratio = int(area.sum()) / max(int(pre_m[src].sum()), 1)
            scores[int(le)] = {"area_k": 1.0 - ratio, "core_k": -c, "margin_k": -r}
        for t, (err, sd) in errs.items():
            rs, _p = _spearman(per_lesion[t]["sd"], per_lesion[t]["mae"])
            c_before = calibration_curve(err, sd)
            c_after = calibration_curve(err, sd, scale=scale[t])
            out.calibration_rows.append(
                {
                    "fold": fi,
                    "target": t,
                    "validation_lesions": len(val_les),
                    "sigma_scale": scale[t] if fitted else math.nan,
                    "coverage1_raw": coverage(err, sd, 1.0),
                    "coverage2_raw": coverage(err, sd, 2.0),
                    "coverage1_scaled": coverage(err, sd, 1.0, scale[t]) if fitted else math.nan,
                    "coverage2_scaled": coverage(err, sd, 2.0, scale[t]) if fitted else math.nan,
                    "ence_raw": ence(c_before),
                    "ence_scaled": ence(c_after) if fitted else math.nan,
                    "spearman_sd_vs_mae": rs,
                }
            )
            pooled[t]["err"].append(np.abs(err).ravel())
            pooled[t]["sd"].append(np.maximum(sd, 1e-6).ravel().astype(np.float64))
            pooled[t]["sds"].append((np.maximum(sd, 1e-6) * scale[t]).ravel().astype(np.float64))
        if not fitted:
            out.notes.append(
                f"Fold {fi + 1}: one training patient only, no validation patient: no sigma scale."
            )
        if fi == 0:
            out.example = _example(dataset, te0, te_les, st, scale, thr)
        # ------------------------------------------------------------------ counterfactual: both labels
        if an.conditional:
            kc = an.counterfactual_samples or k
            sp = _draw(model, pre[te0], kc, seed=seed + 3, eta=an.eta, label=0)
            sg = _draw(model, pre[te0], kc, seed=seed + 3, eta=an.eta, label=1)
            for le in te_les:
                sel = les_of[te0] == le
                src = te0[sel]
                rec = ls[int(le)]
                pa = int(max(int(pre_m[src].sum()), 1))
                r_p = int(predicted_gtv(sp.post_mean[sel], pre_m[src], thr).sum()) / pa
                r_g = int(predicted_gtv(sg.post_mean[sel], pre_m[src], thr).sum()) / pa
                c_p, _ = core_margin(sp.drift_mean[sel], pre_m[src])
                c_g, _ = core_margin(sg.drift_mean[sel], pre_m[src])
                out.counterfactual_rows.append(
                    {
                        "fold": fi,
                        "patient": rec.patient_id,
                        "lesion": rec.lesion_id,
                        "label": rec.label,
                        "sensitive_fraction": sens.get((rec.patient_id, rec.lesion_id), math.nan),
                        "area_ratio_poor": r_p,
                        "area_ratio_good": r_g,
                        "area_ratio_good_minus_poor": r_g - r_p,
                        "core_drift_poor": c_p,
                        "core_drift_good": c_g,
                        "core_drift_good_minus_poor": c_g - c_p,
                        "mean_abs_drift_difference": float(
                            np.mean(np.abs(sg.drift_mean[sel] - sp.drift_mean[sel]))
                        ),
                        "area_ratio_true": int(post_m[src].sum()) / pa,
                    }
                )
                cls = rec.label
                if cls is not None and sum(1 for p in out.pairs if p["label"] == cls) < an.n_examples:
                    j = int(np.argmax(pre_m[src].sum(axis=(1, 2))))
                    i0 = int(np.flatnonzero(sel)[j])
                    out.pairs.append(
                        {
                            "label": cls,
                            "name": rec.key,
                            "pre": pre[te0[i0]],
                            "post": post[te0[i0]],
                            "post_poor": sp.post_mean[i0],
                            "post_good": sg.post_mean[i0],
                            "drift_poor": sp.drift_mean[i0],
                            "drift_good": sg.drift_mean[i0],
                            "area_poor": r_p,
                            "area_good": r_g,
                        }
                    )
    for t in TARGETS:
        if pooled[t]["err"]:
            e = np.concatenate(pooled[t]["err"])
            out.curves[t] = {
                "before": calibration_curve(e, np.concatenate(pooled[t]["sd"])),
                "after": calibration_curve(e, np.concatenate(pooled[t]["sds"])),
            }
    _scores(out, dataset, result, scores, an)
    out.seconds = time.perf_counter() - t_start
    return out


def _draw(model: DriftModel, pre: NDArray[Any], k: int, *, seed: int, eta: float, label: int) -> SampleStats:
    """K samples (K >= 2) or one (K = 1: mean = the sample, SD 0) under a label."""
    if k >= 2:
        return sample_stats(model, pre, k, seed=seed, eta=eta, label=label)
    p = model.predict(pre, seed=seed, eta=eta, label=label)
    z = np.zeros_like(p.post)
    return SampleStats(p.post, z, p.drift, z, p.post, p.drift, 1, eta)


def _errors(
    st: SampleStats, post: NDArray[Any], drift: NDArray[Any], truth: NDArray[Any] | None
) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    errs = {
        "post": (np.asarray(st.post_mean - post, np.float64), np.asarray(st.post_sd, np.float64)),
        "drift": (np.asarray(st.drift_mean - drift, np.float64), np.asarray(st.drift_sd, np.float64)),
    }
    if truth is not None:
        errs["drift_truth"] = (
            np.asarray(st.drift_mean - truth, np.float64),
            np.asarray(st.drift_sd, np.float64),
        )
    return errs


def _example(
    dataset: Any,
    te0: NDArray[np.int64],
    te_les: NDArray[Any],
    st: SampleStats,
    scale: dict[str, float],
    thr: float,
) -> dict[str, Any]:
    """The calibrated example: fold 1's first held-out lesion, its largest pre-GTV slice."""
    les_of = np.asarray(dataset.lesion_of_sample)
    le = int(te_les[0])
    sel = np.flatnonzero(les_of[te0] == le)
    j = int(sel[np.argmax(np.asarray(dataset.pre_mask[te0[sel], 0]).sum(axis=(1, 2)))])
    s = int(te0[j])
    pre, post = dataset.pre[s, 0], dataset.post[s, 0]
    return {
        "name": dataset.lesions[le].key,
        "pre": pre,
        "post": post,
        "drift": dataset.drift[s, 0],
        "post_mean": st.post_mean[j],
        "post_sd": st.post_sd[j] * scale["post"],
        "post_err": np.abs(st.post_mean[j] - post),
        "drift_mean": st.drift_mean[j],
        "drift_sd": st.drift_sd[j] * scale["drift"],
        "drift_err": np.abs(st.drift_mean[j] - dataset.drift[s, 0]),
        "scale_post": scale["post"],
        "scale_drift": scale["drift"],
        "threshold": thr,
    }


def _scores(
    out: AnalysisResult,
    dataset: Any,
    result: DriftStudyResult,
    scores: dict[int, dict[str, float]],
    an: AnalysisConfig,
) -> None:
    ls = dataset.lesions
    study = {(r["patient"], r["lesion"]): r for r in result.rows if r["model"] == "method2"}
    obs = {(r["patient"], r["lesion"]): r for r in result.rows if r["model"] == "no_change"}
    names = {
        "area_study": "method2 (study net, one sample): predicted area change",
        "area_k": f"analysis net, mean of {an.samples}: predicted area change",
        "core_k": f"analysis net, mean of {an.samples}: − mean drift in GTV core",
        "margin_k": f"analysis net, mean of {an.samples}: − mean drift in GTV margin",
        "observed": "reference, not a prediction: observed area change at the later MRI",
    }
    for i, le in enumerate(ls):
        sc = scores.get(i, {})
        key = (le.patient_id, le.lesion_id)
        row: dict[str, Any] = {"patient": le.patient_id, "lesion": le.lesion_id, "label": le.label}
        row["area_study"] = float(study[key]["response_score"]) if key in study else math.nan
        row.update({k: sc.get(k, math.nan) for k in ("area_k", "core_k", "margin_k")})
        row["observed"] = 1.0 - float(obs[key]["area_ratio_true"]) if key in obs else math.nan
        out.score_rows.append(row)
    keys = [k for k in names if any(np.isfinite(r[k]) for r in out.score_rows)]
    lab = np.asarray([-1 if le.label is None else le.label for le in ls])
    idx = np.flatnonzero(lab >= 0)
    if len(set(lab[idx].tolist())) < 2:
        out.notes.append("Response scores: fewer than two classes among the labelled lesions; no AUC.")
        return
    y = lab[idx]
    groups = np.asarray([ls[int(i)].patient_id for i in idx])
    from ..splits import grouped_splits

    try:
        sp = grouped_splits(
            y, groups, n_trials=an.response_trials, test_size=an.response_test_size, seed=an.response_seed
        )
        tests = [s.test for s in sp]
        desc = (
            f"adaptrt.splits.grouped_splits(n_trials={an.response_trials}, test_size={an.response_test_size:g}, "
            f"seed={an.response_seed}) on the {len(idx)} labelled lesions: the response study's defaults, i.e. "
            "its Table 1 splits when the cohort and the label are the same"
        )
    except InputError as exc:
        tests = []
        for _tr, te in result.folds:
            t = np.flatnonzero(np.isin(idx, te))
            if len(set(y[t].tolist())) == 2:
                tests.append(t.astype(np.int64))
        desc = (
            f"the study's {len(result.folds)} patient-grouped folds (the response study's splits could not be "
            f"drawn: {exc.problem})"
        )
    out.splits = {"description": desc, "n_splits": len(tests), "test_lesions": [t.tolist() for t in tests]}
    if not tests:
        out.notes.append("Response scores: no split with both classes in its test part; no AUC.")
        return
    rng = as_generator(an.response_seed + 17)
    perm = np.stack([rng.permutation(y) for _ in range(an.permutations)])  # (P, n)
    for sk in keys:
        s_all = np.asarray([out.score_rows[int(i)][sk] for i in idx], float)
        aucs, null = [], []
        for t_all in tests:
            t = t_all[np.isfinite(s_all[t_all])]
            if len(set(y[t].tolist())) < 2:
                continue
            aucs.append(float(_auc_many(y[t][None].astype(float), s_all[t][None])[0]))
            null.append(_auc_many(perm[:, t].astype(float), np.repeat(s_all[t][None], len(perm), 0)))
        if not aucs:
            continue
        with warnings.catch_warnings():  # a permutation with one class in every split: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            null_mean = np.nanmean(np.stack(null), axis=0)
        null_mean = null_mean[np.isfinite(null_mean)]
        mu, sd, n = mean_sd(aucs)
        lo, hi = float(np.percentile(null_mean, 2.5)), float(np.percentile(null_mean, 97.5))
        out.auc_rows.append(
            {
                "score": names[sk],
                "key": sk,
                "auc_mean": mu,
                "auc_sd": sd,
                "splits": n,
                "chance_low": lo,
                "chance_high": hi,
                "verdict": "above chance"
                if mu > hi
                else ("below chance" if mu < lo else "within the chance band"),
            }
        )


def counterfactual_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Good − poor differences of the predicted area ratio and core drift: all lesions and by true class, with
    the share of lesions where "good" shrinks more, a signed-rank p and the Spearman r against the truth's
    sensitive fraction (simulator)."""
    from scipy.stats import wilcoxon

    out = []
    groups: list[tuple[str, list[dict[str, Any]]]] = [("all", rows)]
    for c, cname in ((1, "true good responders"), (0, "true poor responders")):
        groups.append((cname, [r for r in rows if r["label"] == c]))
    for grp, rs in groups:
        if not rs:
            continue
        d = np.asarray([r["area_ratio_good_minus_poor"] for r in rs], float)
        dc = np.asarray([r["core_drift_good_minus_poor"] for r in rs], float)
        p = float(wilcoxon(d).pvalue) if len(d) >= 6 and np.any(d != 0) else math.nan
        sf = [r["sensitive_fraction"] for r in rs]
        rho, rp = _spearman([-v for v in d.tolist()], sf)
        out.append(
            {
                "lesions": grp,
                "n": len(rs),
                "area_ratio_good_minus_poor_mean": float(d.mean()),
                "area_ratio_good_minus_poor_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                "share_good_shrinks_more": float(np.mean(d < 0)),
                "share_equal": float(np.mean(d == 0)),
                "wilcoxon_p": p,
                "core_drift_good_minus_poor_mean": float(np.nanmean(dc)),
                "spearman_shrinkage_gap_vs_sensitive_fraction": rho,
                "spearman_p": rp,
            }
        )
    return out


def comparison_rows(analysis: AnalysisResult, result: DriftStudyResult) -> list[dict[str, Any]]:
    """Mean of K vs one sample (analysis net) vs the study's Method 1, Method 2 and regression baseline and the
    no-change baseline: MAE, SSIM, drift r (and vs the truth drift), drift MAE, mean ± SD over folds."""
    metrics = ("mae", "ssim", "drift_r", "drift_r_truth", "drift_mae")
    rows = [r for r in analysis.lesion_rows] + [
        r for r in result.rows if r["model"] in ("method1", "method2", "regression", "no_change")
    ]
    out = []
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == m]
        rec: dict[str, Any] = {
            "model": m if m not in ("method1", "method2", "regression", "no_change") else f"{m} (study)",
            "lesions": len(rs),
        }
        for key in metrics:
            per_fold = []
            for f in sorted({r["fold"] for r in rs}):
                v = np.asarray([r[key] for r in rs if r["fold"] == f], float)
                per_fold.append(float(np.nanmean(v)) if np.isfinite(v).any() else math.nan)
            mu, sd, _ = mean_sd(per_fold)
            rec[key] = mu
            rec[f"{key}_sd"] = sd
        out.append(rec)
    return out


def paired_k_vs_one(analysis: AnalysisResult, metric: str) -> tuple[float, float]:
    """Median per-lesion difference (mean of K − one sample) of ``metric`` and its Wilcoxon p."""
    from scipy.stats import wilcoxon

    k = [r for r in analysis.lesion_rows if r["model"].startswith("mean of")]
    o = {
        (r["fold"], r["patient"], r["lesion"]): r for r in analysis.lesion_rows if r["model"] == "one sample"
    }
    a = np.asarray([r[metric] for r in k], float)
    b = np.asarray([o[(r["fold"], r["patient"], r["lesion"])][metric] for r in k], float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = a[ok] - b[ok]
    if d.size == 0:
        return math.nan, math.nan
    p = float(wilcoxon(a[ok], b[ok]).pvalue) if d.size >= 6 and np.any(d != 0) else math.nan
    return float(np.median(d)), p


def calibration_summary(analysis: AnalysisResult) -> list[dict[str, Any]]:
    """Per target: mean ± SD over folds of the calibration rows, with the nominal coverages."""
    out = []
    for t in TARGETS:
        rs = [r for r in analysis.calibration_rows if r["target"] == t]
        if not rs:
            continue
        rec: dict[str, Any] = {"target": t, "folds": len(rs)}
        for key in (
            "sigma_scale",
            "coverage1_raw",
            "coverage1_scaled",
            "coverage2_raw",
            "coverage2_scaled",
            "ence_raw",
            "ence_scaled",
            "spearman_sd_vs_mae",
        ):
            mu, sd, _ = mean_sd([r[key] for r in rs])
            rec[key] = mu
            rec[f"{key}_sd"] = sd
        rec["nominal1"] = NOMINAL[1]
        rec["nominal2"] = NOMINAL[2]
        les = [r for r in analysis.lesion_rows if f"{t}_mean_sd" in r]
        rho, p = _spearman([r[f"{t}_mean_sd"] for r in les], [r[f"{t}_mae_of_mean"] for r in les])
        rec["spearman_pooled"] = rho
        rec["spearman_pooled_p"] = p
        out.append(rec)
    return out
