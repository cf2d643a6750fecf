"""The drift study's protocol: patient-grouped K-fold cross-validation of every variant and baseline.

For each fold (lesions of one patient are never on both sides):

1. the GTV threshold of :func:`adaptrt.drift.evaluate.fit_gtv_threshold` is fitted on the training lesions;
2. baselines: **no change** (post = pre, drift = 0) and **mean drift** (the pixel-wise mean drift of the
   training samples added to the pre image);
3. every variant of ``DriftConfig.variants`` is trained on the training samples (all slices and rotations)
   and predicts the held-out lesions' angle-0 slices; Method 2 from seeded noise;
4. per-lesion metrics (:func:`adaptrt.drift.evaluate.lesion_metrics`).

Fold 0 also holds the figures' material: Method 1's outputs across noise steps for the loss-ratio sweep (the
paper's Fig. 5: drift weights 1, 1.5, 3), and Method 2's reverse trajectories (Fig. 6).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from ..validation import bad_parameter, is_int, is_real
from .evaluate import fit_gtv_threshold, lesion_metrics, mean_sd
from .methods import DriftModel, DriftModelConfig

__all__ = [
    "BASELINES",
    "AnalysisConfig",
    "DriftConfig",
    "DriftStudyResult",
    "Variant",
    "drift_config",
    "lesion_folds",
    "run_folds",
]

Profile = Literal["quick", "paper"]
BASELINES = ("no_change", "mean_drift")


@dataclass(frozen=True)
class Variant:
    """A named model of the study."""

    name: str
    model: DriftModelConfig
    description: str = ""


def _variants(base: DriftModelConfig) -> tuple[Variant, ...]:
    r = dataclasses.replace
    return (
        Variant(
            "method1",
            r(base, method="method1", head="shared", drift_weight=3.0),
            "Method 1: one-step denoising to the post image, shared drift head, recon:drift 1:3 (Fig. 5C)",
        ),
        Variant(
            "method2",
            r(base, method="method2", head="separate", drift_weight=1.0, drift_ssim=0.5),
            "Method 2: DDIM, noise + drift on separate decoder layers, drift loss MSE + SSIM (Fig. 6)",
        ),
        Variant(
            "decoupled",
            r(base, method="method2", head="decoupled", drift_weight=1.0, drift_ssim=0.5),
            "Method 2 with two fully decoupled networks (Fig. 3C)",
        ),
        Variant(
            "regression",
            r(base, method="regression", head="shared", drift_weight=3.0),
            "baseline: the same U-Net, no noise, pre -> post + drift in one pass",
        ),
    )


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of the analyses beyond the paper (issue 11): uncertainty, conditional generation, response scores.

    Attributes
    ----------
    samples
        ``K`` DDIM samples per held-out slice (>= 2).
    eta
        DDIM eta of the samples (>= 0; 0 = the samples differ by their starting noise only).
    label_dropout
        Classifier-free dropout of the response label while training the conditional Method-2 network: the
        share of each batch shown the "no label" row, so that the same network also samples unconditionally.
    val_fraction
        Share of each fold's training patients carved out as validation patients (the sigma scale is fitted
        on their lesions only; the analysis network trains on the rest).
    conditional
        Train the analysis network on the response label and generate each held-out lesion under both labels.
        Needs labels of both classes.
    response_trials, response_test_size, response_seed
        The response study's patient-grouped splits (:func:`adaptrt.splits.grouped_splits`: 50 trials, test
        size 0.2, seed 0 by default) on which the drift scores' AUCs are computed.
    permutations
        Label permutations of the chance band (computed on the same splits).
    n_examples
        Lesions per true class in the counterfactual figures.
    counterfactual_samples
        Samples per slice and label of the counterfactual generation (>= 1; 0 = ``samples``). The quick profile
        uses 2 to keep the demo's cost down.
    """

    samples: int = 16
    eta: float = 0.0
    label_dropout: float = 0.2
    val_fraction: float = 0.2
    conditional: bool = True
    response_trials: int = 50
    response_test_size: float = 0.2
    response_seed: int = 0
    permutations: int = 1000
    n_examples: int = 3
    counterfactual_samples: int = 0

    def __post_init__(self) -> None:
        from .uncertainty import check_samples

        check_samples(self.samples, self.eta, owner="AnalysisConfig")
        name = "AnalysisConfig"
        if not (is_real(self.label_dropout) and 0.0 <= self.label_dropout < 1.0):
            raise bad_parameter(name, "label_dropout", "a fraction in [0, 1)", self.label_dropout)
        if not (is_real(self.val_fraction) and 0.0 < self.val_fraction < 1.0):
            raise bad_parameter(name, "val_fraction", "a fraction in (0, 1)", self.val_fraction)
        if not (is_real(self.response_test_size) and 0.0 < self.response_test_size <= 0.5):
            raise bad_parameter(name, "response_test_size", "a fraction in (0, 0.5]", self.response_test_size)
        checks = (
            ("response_trials", 1),
            ("permutations", 10),
            ("n_examples", 1),
            ("response_seed", 0),
            ("counterfactual_samples", 0),
        )
        for f, lo in checks:
            v = getattr(self, f)
            if not (is_int(v) and v >= lo):
                raise bad_parameter(name, f, f"an int >= {lo}", v)


@dataclass(frozen=True)
class DriftConfig:
    """Settings of a drift study run (validated).

    Attributes
    ----------
    profile
        ``"quick"`` (CPU minutes) or ``"paper"`` (the paper's optimiser, batch 64, 5,000 iterations).
    folds
        K of the patient-grouped K-fold (>= 2).
    model
        The base model configuration; each variant changes method, head and loss weights.
    variant_names
        Which of ``method1``, ``method2``, ``decoupled``, ``regression`` to run.
    ratio_sweep
        Train Method 1 at drift weights 1, 1.5 and 3 on fold 0 (the paper's Fig. 5).
    n_trajectory
        Held-out lesions of fold 0 whose Method 2 trajectory is kept (Fig. 6).
    size
        Crop size in pixels (64 in the paper; 32 in the quick profile, 4× cheaper to train on a CPU).
    box
        ``"pre"`` (default): the crop box and slices of the first MRI alone, as for a new lesion at prediction
        time, so nothing about a held-out lesion's input depends on its outcome; ``"both"``: the paper's box
        over both GTVs and the drift region (see :func:`adaptrt.preprocess.prepare_pair`).
    seed, device
    analysis
        The analyses beyond the paper (:class:`AnalysisConfig`), or None to skip them.
    """

    profile: Profile = "quick"
    folds: int = 5
    model: DriftModelConfig = field(default_factory=DriftModelConfig)
    variant_names: tuple[str, ...] = ("method1", "method2", "decoupled", "regression")
    ratio_sweep: bool = True
    n_trajectory: int = 5
    size: int = 64
    box: Literal["pre", "both"] = "pre"
    seed: int = 0
    device: str = "auto"
    analysis: AnalysisConfig | None = None

    def __post_init__(self) -> None:
        if self.profile not in ("quick", "paper"):
            raise bad_parameter("DriftConfig", "profile", "'quick' or 'paper'", self.profile)
        if not (is_int(self.folds) and self.folds >= 2):
            raise bad_parameter("DriftConfig", "folds", "an int >= 2", self.folds)
        known = [v.name for v in _variants(self.model)]
        names = tuple(self.variant_names)
        if not names or any(n not in known for n in names) or len(set(names)) != len(names):
            raise bad_parameter("DriftConfig", "variant_names", f"distinct names from {known}", names)
        object.__setattr__(self, "variant_names", names)
        if not (is_int(self.seed) and self.seed >= 0):
            raise bad_parameter("DriftConfig", "seed", "an int >= 0", self.seed)
        if not (is_int(self.size) and self.size >= 16 and self.size % 4 == 0):
            raise bad_parameter("DriftConfig", "size", "an int >= 16, a multiple of 4", self.size)
        if self.box not in ("pre", "both"):
            raise bad_parameter("DriftConfig", "box", "'pre' or 'both'", self.box)
        if not (is_int(self.n_trajectory) and self.n_trajectory >= 0):
            raise bad_parameter("DriftConfig", "n_trajectory", "an int >= 0", self.n_trajectory)
        if self.analysis is not None and not isinstance(self.analysis, AnalysisConfig):
            raise bad_parameter("DriftConfig", "analysis", "an AnalysisConfig or None", self.analysis)

    @property
    def variants(self) -> tuple[Variant, ...]:
        """The variants that run, in order."""
        return tuple(v for v in _variants(self.model) if v.name in self.variant_names)


#: Network widths: see docs/drift.md ("Widths") for the measurements behind them.
PAPER_WIDTHS = (8, 16, 32)
QUICK_WIDTHS = (4, 8, 16)


def drift_config(profile: Profile = "quick", **changes: Any) -> DriftConfig:
    """The configuration of a profile, with ``changes`` applied (``model_*`` keys change the model config,
    ``analysis_*`` keys the analysis config)."""
    if profile == "paper":
        model = DriftModelConfig(widths=PAPER_WIDTHS, iterations=5000, batch_size=64, lr=1e-4, log_every=50)
        base = DriftConfig(profile="paper", folds=5, model=model, analysis=AnalysisConfig())
    elif profile == "quick":
        model = DriftModelConfig(widths=QUICK_WIDTHS, iterations=200, batch_size=32, lr=2e-3, log_every=10)
        quick_analysis = AnalysisConfig(
            samples=4, response_trials=20, permutations=200, n_examples=1, counterfactual_samples=2
        )
        base = DriftConfig(
            profile="quick",
            folds=3,
            model=model,
            n_trajectory=3,
            size=32,
            ratio_sweep=False,
            analysis=quick_analysis,
        )
    else:
        raise bad_parameter("drift_config", "profile", "'quick' or 'paper'", profile)
    model_changes = {k[len("model_") :]: v for k, v in changes.items() if k.startswith("model_")}
    an_changes = {k[len("analysis_") :]: v for k, v in changes.items() if k.startswith("analysis_")}
    other = {k: v for k, v in changes.items() if not k.startswith(("model_", "analysis_"))}
    if model_changes:
        other["model"] = dataclasses.replace(base.model, **model_changes)
    if an_changes and "analysis" not in other and base.analysis is not None:
        other["analysis"] = dataclasses.replace(base.analysis, **an_changes)
    return dataclasses.replace(base, **other)


def lesion_folds(
    groups: NDArray[Any], labels: NDArray[Any], k: int, seed: int
) -> list[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """K folds of lesions grouped by patient, stratified by response label where one exists.

    Returns
    -------
    list of (train lesion indices, test lesion indices)
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        from ..errors import InputError

        raise InputError(
            f"{n_groups} patients cannot be split into {k} patient-grouped folds",
            field="folds",
            fix=f"use --folds {max(2, n_groups)} or fewer, or add patients",
        )
    y = np.asarray([-1 if lab is None else int(lab) for lab in labels])
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = []
    for tr, te in cv.split(np.zeros(len(y)), y, groups):
        assert not set(groups[tr]) & set(groups[te])
        out.append((tr.astype(np.int64), te.astype(np.int64)))
    return out


@dataclass
class DriftStudyResult:
    """Everything a run writes (held-out predictions only).

    Attributes
    ----------
    rows
        One dict per (model, lesion): fold, patient, lesion, label, volumes and :func:`lesion_metrics`.
    oof_post, oof_drift
        Per model: ``(n0, h, w)`` held-out predictions of every lesion's angle-0 samples (dataset order).
    histories
        Per variant: the loss history of each fold.
    sweep
        Fold 0's Method 1 ratio sweep: weight -> (metrics rows, outputs across steps of one lesion).
    trajectories
        Fold 0's Method 2 trajectories: lesion index -> (steps, x̂0 (s, h, w), drift (s, h, w)).
    n_parameters, train_seconds, thresholds
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    oof_post: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    oof_drift: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    histories: dict[str, list[list[dict[str, float]]]] = field(default_factory=dict)
    sweep: dict[float, dict[str, Any]] = field(default_factory=dict)
    trajectories: dict[int, dict[str, Any]] = field(default_factory=dict)
    n_parameters: dict[str, int] = field(default_factory=dict)
    train_seconds: dict[str, float] = field(default_factory=dict)
    thresholds: list[float] = field(default_factory=list)
    folds: list[tuple[list[int], list[int]]] = field(default_factory=list)

    def summary(self) -> list[dict[str, Any]]:
        """Per model: mean ± SD over folds of the per-fold mean of each metric, and the pooled AUC."""
        models = list(dict.fromkeys(r["model"] for r in self.rows))
        metrics = [
            "mae",
            "psnr",
            "ssim",
            "mae_roi",
            "drift_r",
            "drift_mae",
            "drift_r_truth",
            "dice_post_gtv",
        ]
        out = []
        for m in models:
            rows = [r for r in self.rows if r["model"] == m]
            rec: dict[str, Any] = {"model": m}
            for key in metrics:
                per_fold = [
                    float(np.nanmean([r[key] for r in rows if r["fold"] == f]))
                    if any(np.isfinite(r[key]) for r in rows if r["fold"] == f)
                    else math.nan
                    for f in sorted({r["fold"] for r in rows})
                ]
                mu, sd, _n = mean_sd(per_fold)
                rec[key] = mu
                rec[f"{key}_sd"] = sd
            lab = [(r["label"], r["response_score"]) for r in rows if r["label"] is not None]
            y = np.asarray([a for a, _ in lab])
            s = np.asarray([b for _, b in lab])
            rec["auc"] = float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else math.nan
            lo, hi = _bootstrap_auc(y, s, seed=0)
            rec["auc_ci_low"], rec["auc_ci_high"] = lo, hi
            rec["n_lesions"] = len(rows)
            out.append(rec)
        return out


def _auc_many(y: NDArray[Any], s: NDArray[Any]) -> NDArray[np.float64]:
    """AUC (Mann-Whitney, ties counted half) of each row of ``s`` (r, n) against the rows of ``y`` (r, n)."""
    from scipy.stats import rankdata

    ranks = rankdata(s, axis=1)
    pos = y.sum(axis=1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(((ranks * y).sum(axis=1) - pos * (pos + 1) / 2) / (pos * neg), dtype=np.float64)


def _bootstrap_auc(y: NDArray[Any], s: NDArray[Any], seed: int, n: int = 2000) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the AUC over lesions (resamples with one class dropped)."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if len(set(y.tolist())) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(y), (n, len(y)))
    vals = _auc_many(y[i], s[i])
    vals = vals[np.isfinite(vals)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def run_folds(dataset: Any, config: DriftConfig, *, progress: bool = False) -> DriftStudyResult:
    """Cross-validate every variant and baseline on a :class:`adaptrt.drift.data.DriftDataset`."""
    res = DriftStudyResult()
    ls = dataset.lesions
    n_les = len(ls)
    groups = np.asarray([le.patient_id for le in ls])
    labels = np.asarray([le.label for le in ls], dtype=object)
    folds = lesion_folds(groups, labels, config.folds, config.seed)
    res.folds = [(tr.tolist(), te.tolist()) for tr, te in folds]
    les_of = np.asarray(dataset.lesion_of_sample)
    angle0 = np.asarray(dataset.angle_deg) == 0.0
    idx0 = np.flatnonzero(angle0)  # the evaluation samples, dataset order
    pos0 = {int(i): k for k, i in enumerate(idx0)}
    pl = dataset.planes()
    pre, post, drift, pre_m, post_m, truth = (
        pl.pre,
        pl.post,
        pl.drift,
        pl.pre_mask,
        pl.post_mask,
        pl.truth_drift,
    )
    shape = (len(idx0), *pre.shape[1:])
    names = [*BASELINES, *config.variant_names]
    for m in names:
        res.oof_post[m] = np.zeros(shape, np.float32)
        res.oof_drift[m] = np.zeros(shape, np.float32)
    for fi, (tr_les, te_les) in enumerate(folds):
        tr = np.flatnonzero(np.isin(les_of, tr_les))
        tr0 = tr[angle0[tr]]
        thr = fit_gtv_threshold(post[tr0], post_m[tr0], pre_m[tr0], les_of[tr0])
        res.thresholds.append(thr)
        mean_drift = drift[tr].mean(axis=0)
        te0 = np.flatnonzero(np.isin(les_of, te_les) & angle0)
        preds: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {
            "no_change": (pre[te0], np.zeros_like(pre[te0])),
            "mean_drift": (pre[te0] + mean_drift[None], np.repeat(mean_drift[None], len(te0), 0)),
        }
        for k, v in enumerate(config.variants):
            seed = config.seed * 1000 + fi * 10 + k
            t0 = time.perf_counter()
            model = DriftModel(v.model, seed=seed, device=config.device).fit(
                pre[tr], post[tr], drift[tr], progress=progress, desc=f"fold {fi + 1}/{config.folds} {v.name}"
            )
            res.train_seconds[v.name] = res.train_seconds.get(v.name, 0.0) + time.perf_counter() - t0
            res.n_parameters[v.name] = model.n_parameters_
            res.histories.setdefault(v.name, []).append(model.history_)
            pr = model.predict(pre[te0], seed=seed + 7)
            preds[v.name] = (pr.post, pr.drift)
            if fi == 0 and v.model.method == "method2" and config.n_trajectory > 0:
                picks = [int(x) for x in te_les[: config.n_trajectory]]
                sel = np.flatnonzero(np.isin(les_of[te0], picks))
                first = [int(sel[np.flatnonzero(les_of[te0][sel] == p)[0]]) for p in picks]
                tr_pred = model.predict(pre[te0][first], seed=seed + 7, keep_trajectory=True)
                for j, p in enumerate(picks):
                    assert tr_pred.trajectory_post is not None and tr_pred.trajectory_drift is not None
                    res.trajectories.setdefault(p, {})[v.name] = {
                        "steps": tr_pred.steps,
                        "post": tr_pred.trajectory_post[:, j],
                        "drift": tr_pred.trajectory_drift[:, j],
                        "sample": int(te0[first[j]]),
                    }
        if fi == 0 and config.ratio_sweep and "method1" in config.variant_names:
            base = next(v for v in config.variants if v.name == "method1").model
            show = int(te0[0])
            for w in (1.0, 1.5, 3.0):
                m1 = DriftModel(
                    dataclasses.replace(base, drift_weight=w), seed=config.seed + 99, device=config.device
                )
                m1.fit(pre[tr], post[tr], drift[tr], progress=progress, desc=f"fold 1 method1 1:{w:g}")
                p1 = m1.predict(pre[te0], seed=config.seed + 5)
                steps = m1.predict(pre[[show]], seed=config.seed + 5, keep_trajectory=True)
                rows = [
                    lesion_metrics(
                        p1.post[les_of[te0] == le],
                        p1.drift[les_of[te0] == le],
                        pre[te0][les_of[te0] == le],
                        post[te0][les_of[te0] == le],
                        pre_m[te0][les_of[te0] == le],
                        post_m[te0][les_of[te0] == le],
                        thr,
                    )
                    for le in te_les
                ]
                res.sweep[w] = {"rows": rows, "steps": steps, "sample": show, "history": m1.history_}
        for name, (pp, pd) in preds.items():
            for j, s in enumerate(te0):
                res.oof_post[name][pos0[int(s)]] = pp[j]
                res.oof_drift[name][pos0[int(s)]] = pd[j]
            for le in te_les:
                sel = les_of[te0] == le
                src = te0[sel]
                met = lesion_metrics(
                    pp[sel],
                    pd[sel],
                    pre[src],
                    post[src],
                    pre_m[src],
                    post_m[src],
                    thr,
                    None if truth is None else truth[src],
                )
                rec = ls[int(le)]
                res.rows.append(
                    {
                        "model": name,
                        "fold": fi,
                        "patient": rec.patient_id,
                        "lesion": rec.lesion_id,
                        "label": rec.label,
                        **met,
                    }
                )
    del n_les
    return res
