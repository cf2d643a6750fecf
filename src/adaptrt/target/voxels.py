"""Items 2 and 3 of the target study: voxel categories, per-patient medians and tests, voxel random forests.

Voxel categories (Tran et al. 2025, Methods "Image and spectral processing" and "Voxel-based
categorizations, analyses, and predictions")
-----------------------------------------------------------------------------------------------------------
At baseline: CEL; NEL = T2L minus CEL; NAV (normal-appearing voxels) = brain minus cavity, ventricles (when the
manifest gives them) and the baseline lesion (T2L ∪ CEL). At progression: CEL, NEL = T2L minus CEL, and
"normal" = neither. The categories, only inside the **region** (the baseline lesion expanded by 40 mm, in mm
on the grid's spacing, clipped to the brain):

* ``nav_nav`` NAV→NAV (stable), ``nav_nel`` NAV→NEL, ``nav_cel`` NAV→CEL, ``nel_cel`` NEL→CEL.

Other transitions (NEL→NEL, CEL→anything, NEL→normal) are in no category.

Per-patient medians and tests
-----------------------------
For every patient, category and map the median over the category's voxels, when the category has at least
``min_voxels`` (5) voxels in that patient. MRSI maps are 0 outside the PRESS box (no data, not a value), so
their medians use the in-box voxels only (and need ``min_voxels`` of them). Stable versus progressed: for each
progressed category and map, the patients that have both medians give *paired* values (two medians of the
same patient), so the test is the **Wilcoxon signed-rank test** (two-sided) on the per-patient differences.
The paper names a "Mann–Whitney signed-rank" test; Mann–Whitney is the unpaired rank-sum test and
"signed-rank" is Wilcoxon's paired test, and the medians are paired within patients, so we read it as the
signed-rank test (an unpaired test would ignore that the two medians share a patient's normalisation and
anatomy). Per cohort and pooled; Holm's step-down correction over all tests of one cohort group (3
comparisons × the maps), reported next to the raw p-values (the paper reports raw p-values).

Random forests
--------------
Two models on all maps (+ a PRESS-box indicator, see below): CEL progression (``nav_cel`` or ``nel_cel``
versus ``nav_nav``) and NEL progression (``nav_nel`` versus ``nav_nav``); five-fold cross-validation over
*patients* (:class:`sklearn.model_selection.StratifiedGroupKFold` on one row per patient, the treatment cohort
as the stratum, so every fold holds whole patients and about the cohorts' proportions; checked: no patient on
both sides); ROC curves per fold, the mean AUC over folds with a t-interval, and chance level 0.5; the same
for early (TTP below the cohort's median) and late progressors, each with its own folds; permutation
importance (AUC drop) on the held-out fold next to the impurity importance.

PRESS box: MRSI maps are 0 outside the box. ``press_box="indicator"`` (default) keeps every voxel and adds the
feature ``in_press_box`` (1 inside, 0 outside), so a tree can tell "no data" from a low value;
``press_box="inside"`` trains and tests on in-box voxels only. The paper's models saw the same limitation
(its Discussion: MRSI did not cover the whole brain, giving inaccurate predictions outside the box).

Voxel sampling: per patient and category at most ``max_voxels_per_class`` voxels are drawn without
replacement from the patient's own child generator (so the sample is stratified by patient and category and
does not depend on the other patients); the medians use all voxels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .data import MRSI_MAPS, PatientVolumes
from .pattern import LesionZones

__all__ = [
    "CATEGORIES",
    "CATEGORY_LABELS",
    "COMPARISONS",
    "MODELS",
    "FoldResult",
    "ForestResult",
    "PatientVoxels",
    "VoxelTable",
    "category_tests",
    "holm",
    "patient_folds",
    "run_forest",
    "summarise_patient",
    "voxel_categories",
    "voxel_table",
]

#: Voxel categories, in code order (code = index; -1: no category).
CATEGORIES: tuple[str, ...] = ("nav_nav", "nav_nel", "nav_cel", "nel_cel")
CATEGORY_LABELS: dict[str, str] = {
    "nav_nav": "NAV→NAV",
    "nav_nel": "NAV→NEL",
    "nav_cel": "NAV→CEL",
    "nel_cel": "NEL→CEL",
}
#: Stable-versus-progressed comparisons of item 2.
COMPARISONS: tuple[str, ...] = ("nav_nel", "nav_cel", "nel_cel")
#: The forests: positives (category names) against ``nav_nav``.
MODELS: dict[str, tuple[str, ...]] = {"cel": ("nav_cel", "nel_cel"), "nel": ("nav_nel",)}
MODEL_LABELS: dict[str, str] = {"cel": "CEL progression", "nel": "NEL progression"}
PRESS_FEATURE = "in_press_box"


def voxel_categories(vols: PatientVolumes, zones: LesionZones) -> NDArray[np.int8]:
    """Category code of every voxel (index into :data:`CATEGORIES`; -1 outside the region or no category).

    Returns
    -------
    ndarray of int8, shape (z, y, x)
    """
    cel_b, t2l_b = vols.cel_baseline, vols.t2l_baseline
    nav_b = vols.brain & ~vols.cavity & ~(t2l_b | cel_b)
    if vols.ventricles is not None:
        nav_b &= ~vols.ventricles
    nel_b = t2l_b & ~cel_b
    cel_p = vols.cel_progression
    nel_p = vols.t2l_progression & ~cel_p
    normal_p = ~(vols.t2l_progression | cel_p)
    codes = np.full(vols.shape, -1, dtype=np.int8)
    for code, m in enumerate((nav_b & normal_p, nav_b & nel_p, nav_b & cel_p, nel_b & cel_p)):
        codes[m & zones.region] = code
    return codes


@dataclass(frozen=True, eq=False)
class PatientVoxels:
    """What items 2-3 keep of one patient (everything else is dropped after :func:`summarise_patient`).

    Attributes
    ----------
    counts
        Voxels per category in the region.
    medians
        ``{category: {map: median}}``, only where the category has ``min_voxels`` voxels (for an MRSI map:
        in-box voxels).
    features
        ``float32 (n, n_maps + 1)`` sampled voxels: the maps in ``map_names`` order, then ``in_press_box``.
    codes
        ``int8 (n,)`` category of each sampled voxel.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    counts: Mapping[str, int]
    medians: Mapping[str, Mapping[str, float]]
    features: NDArray[np.float32]
    codes: NDArray[np.int8]


def summarise_patient(
    vols: PatientVolumes,
    zones: LesionZones,
    map_names: Sequence[str],
    *,
    min_voxels: int = 5,
    max_voxels_per_class: int = 2000,
    rng: np.random.Generator,
) -> PatientVoxels:
    """Per-category medians of every map (all voxels) and a sample of voxels for the forests.

    Parameters
    ----------
    vols, zones
        The patient and its region (:func:`adaptrt.target.pattern.lesion_zones`).
    map_names
        The maps (features), in order; every one must be in ``vols.maps``.
    min_voxels
        Voxels a category needs for its median.
    max_voxels_per_class
        Largest sample per category (without replacement, from ``rng``).
    rng
        The patient's own generator.
    """
    codes = voxel_categories(vols, zones)
    idx_all = np.flatnonzero(codes.ravel() >= 0)
    code_all = codes.ravel()[idx_all]
    box = vols.press_box.ravel()[idx_all]
    flat_maps = {m: vols.maps[m].ravel()[idx_all] for m in map_names}
    counts: dict[str, int] = {}
    medians: dict[str, dict[str, float]] = {}
    chosen: list[NDArray[np.int64]] = []
    for code, cat in enumerate(CATEGORIES):
        sel = np.flatnonzero(code_all == code)
        counts[cat] = int(sel.size)
        med: dict[str, float] = {}
        for m in map_names:
            vals = flat_maps[m][sel]
            if m in MRSI_MAPS:
                vals = vals[box[sel]]
            if vals.size >= min_voxels:
                med[m] = float(np.median(vals))
        medians[cat] = med
        if sel.size > max_voxels_per_class:
            sel = np.sort(rng.choice(sel, size=max_voxels_per_class, replace=False))
        chosen.append(sel)
    pick = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    feats = np.empty((pick.size, len(map_names) + 1), dtype=np.float32)
    for j, m in enumerate(map_names):
        feats[:, j] = flat_maps[m][pick]
    feats[:, -1] = box[pick]
    return PatientVoxels(
        patient_id=vols.patient_id,
        treatment=vols.treatment,
        ttp_months=vols.ttp_months,
        counts=counts,
        medians=medians,
        features=feats,
        codes=code_all[pick].astype(np.int8),
    )


# ---------------------------------------------------------------------------------------------- item 2
def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count as a test)."""
    items = sorted((p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p))
    m = len(items)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(items):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def _stars(p: float | None) -> str:
    if p is None:
        return ""
    return "****" if p < 1e-4 else "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "ns"


def category_tests(
    patients: Sequence[PatientVoxels], map_names: Sequence[str], *, min_pairs: int = 5
) -> list[dict[str, Any]]:
    """Stable (NAV→NAV) versus each progressed category, per map, per cohort and pooled.

    Wilcoxon signed-rank test (two-sided, scipy's default method) on the paired per-patient medians; Holm's
    correction within each cohort group. A test needs ``min_pairs`` patients with both medians (with fewer
    the p-value is left empty, never NaN).

    Returns
    -------
    list of dict
        ``cohort, comparison, map, n_patients, median_stable, median_progressed, median_difference,
        statistic, p, p_holm, significance`` (significance from the Holm-adjusted p: ``ns``, ``*`` < 0.05,
        ``**`` < 0.01, ``***`` < 0.001, ``****`` < 0.0001).
    """
    from scipy.stats import wilcoxon

    treatments = sorted({p.treatment for p in patients})
    groups: list[tuple[str, list[PatientVoxels]]] = [("all", list(patients))]
    if len(treatments) > 1:
        groups += [(t, [p for p in patients if p.treatment == t]) for t in treatments]
    rows: list[dict[str, Any]] = []
    for gname, pats in groups:
        group_rows: list[dict[str, Any]] = []
        for comp in COMPARISONS:
            for m in map_names:
                pairs = [
                    (p.medians["nav_nav"][m], p.medians[comp][m])
                    for p in pats
                    if m in p.medians["nav_nav"] and m in p.medians[comp]
                ]
                a = np.array([x for x, _ in pairs], dtype=float)
                b = np.array([y for _, y in pairs], dtype=float)
                stat: float | None = None
                pval: float | None = None
                if len(pairs) >= min_pairs and np.any(b - a != 0):
                    res = wilcoxon(b, a)
                    stat, pval = float(res.statistic), float(res.pvalue)
                group_rows.append(
                    {
                        "cohort": gname,
                        "comparison": f"{CATEGORY_LABELS[comp]} vs NAV→NAV",
                        "map": m,
                        "n_patients": len(pairs),
                        "median_stable": float(np.median(a)) if len(pairs) else None,
                        "median_progressed": float(np.median(b)) if len(pairs) else None,
                        "median_difference": float(np.median(b - a)) if len(pairs) else None,
                        "statistic": stat,
                        "p": pval,
                    }
                )
        adjusted = holm([r["p"] for r in group_rows])
        for r, q in zip(group_rows, adjusted, strict=True):
            r["p_holm"] = q
            r["significance"] = _stars(q)
        rows += group_rows
    return rows


# ---------------------------------------------------------------------------------------------- item 3
@dataclass(frozen=True, eq=False)
class VoxelTable:
    """The sampled voxels of all voxel-usable patients, for the forests.

    Attributes
    ----------
    features
        ``float32 (n, f)``; columns ``feature_names``.
    codes
        ``int8 (n,)`` category codes.
    patient
        ``int32 (n,)`` index into ``patient_ids``.
    patient_ids, treatments, ttp_months
        One entry per patient.
    """

    features: NDArray[np.float32]
    codes: NDArray[np.int8]
    patient: NDArray[np.int32]
    feature_names: tuple[str, ...]
    patient_ids: tuple[str, ...]
    treatments: tuple[str, ...]
    ttp_months: NDArray[np.float64]

    @property
    def nbytes(self) -> int:
        return int(self.features.nbytes + self.codes.nbytes + self.patient.nbytes)


def voxel_table(patients: Sequence[PatientVoxels], map_names: Sequence[str]) -> VoxelTable:
    """Stack the patients' samples into one table."""
    n = [p.codes.size for p in patients]
    return VoxelTable(
        features=(
            np.concatenate([p.features for p in patients])
            if patients
            else np.zeros((0, len(map_names) + 1), dtype=np.float32)
        ),
        codes=np.concatenate([p.codes for p in patients]) if patients else np.zeros(0, dtype=np.int8),
        patient=np.repeat(np.arange(len(patients), dtype=np.int32), n),
        feature_names=(*map_names, PRESS_FEATURE),
        patient_ids=tuple(p.patient_id for p in patients),
        treatments=tuple(p.treatment for p in patients),
        ttp_months=np.array([p.ttp_months for p in patients], dtype=float),
    )


def patient_folds(
    treatments: Sequence[str], n_folds: int, seed: int
) -> tuple[list[NDArray[np.int64]], list[str]]:
    """Test patients of each fold: :class:`~sklearn.model_selection.StratifiedGroupKFold` over patients.

    One row per patient (the group), the treatment cohort as the stratum; the number of folds is
    ``min(n_folds, n_patients)``. Returns the folds (patient indices) and notes.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    n = len(treatments)
    k = min(n_folds, n)
    notes = []
    if k < n_folds:
        notes.append(f"{n} patients: {k} folds instead of {n_folds}")
    if k < 2:
        return [], [*notes, f"{n} patient(s): no cross-validation possible"]
    y = np.unique(np.asarray(treatments), return_inverse=True)[1]
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():
            # a cohort smaller than the number of folds cannot be in every fold: sklearn warns, the split is valid
            warnings.simplefilter("ignore", UserWarning)
            folds = [test for _, test in cv.split(np.zeros((n, 1)), y, groups=np.arange(n))]
    except ValueError:
        # every treatment group has fewer patients than folds: deal the patients of each group round-robin
        # over the folds in a seeded random order (still whole patients, still balanced by group)
        order = np.random.default_rng(seed).permutation(n)
        order = order[np.argsort(y[order], kind="stable")]
        fold_of = np.empty(n, dtype=np.int64)
        fold_of[order] = np.arange(n) % k
        folds = [np.flatnonzero(fold_of == f) for f in range(k)]
        notes.append(
            f"every treatment group has fewer than {k} patients: patients dealt round-robin over the folds "
            "within each group"
        )
    return [np.sort(f).astype(np.int64) for f in folds], notes


@dataclass(frozen=True, eq=False)
class FoldResult:
    """One held-out fold: its patients, sizes, AUC (None when the fold lacks a class) and ROC curve."""

    fold: int
    test_patients: tuple[str, ...]
    n_train: int
    n_test: int
    n_test_positive: int
    auc: float | None
    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class ForestResult:
    """Cross-validated forest of one model (``cel`` / ``nel``) on one patient subset (``all``/``early``/``late``).

    Attributes
    ----------
    folds
        Per-fold results.
    mean_auc, sd_auc, ci_low, ci_high
        Mean and SD of the folds' AUCs and a 95 % t-interval of the mean (approximate: folds share training
        patients); None when fewer than two folds have an AUC.
    pooled_auc
        AUC of all out-of-fold predictions together.
    impurity, permutation, permutation_sd
        Mean impurity importance over folds and mean (SD over folds) permutation importance (drop of AUC when
        the feature is shuffled in the held-out fold), per feature.
    """

    model: str
    subset: str
    n_patients: int
    n_positive: int
    n_negative: int
    folds: tuple[FoldResult, ...]
    mean_auc: float | None
    sd_auc: float | None
    ci_low: float | None
    ci_high: float | None
    pooled_auc: float | None
    feature_names: tuple[str, ...]
    impurity: Mapping[str, float] = field(default_factory=dict)
    permutation: Mapping[str, float] = field(default_factory=dict)
    permutation_sd: Mapping[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def beats_chance(self) -> bool:
        """True when the 95 % interval of the mean AUC lies above 0.5."""
        return self.ci_low is not None and self.ci_low > 0.5

    def summary_row(self) -> dict[str, Any]:
        return {
            "model": MODEL_LABELS.get(self.model, self.model),
            "patients": self.subset,
            "n_patients": self.n_patients,
            "voxels (pos / neg)": f"{self.n_positive} / {self.n_negative}",
            "folds with AUC": sum(f.auc is not None for f in self.folds),
            "mean AUC": self.mean_auc,
            "SD": self.sd_auc,
            "95% CI": (
                f"[{self.ci_low:.3f}, {self.ci_high:.3f}]"
                if self.ci_low is not None and self.ci_high is not None
                else None
            ),
            "pooled out-of-fold AUC": self.pooled_auc,
            "chance": 0.5,
            "beats chance": self.beats_chance,
        }


@dataclass(frozen=True)
class ForestSettings:
    """Random-forest and cross-validation settings (a view of :class:`adaptrt.target.study.TargetConfig`)."""

    n_folds: int = 5
    n_estimators: int = 200
    min_samples_leaf: int = 5
    max_depth: int | None = None
    press_box: Literal["indicator", "inside"] = "indicator"
    permutation_repeats: int = 5
    permutation_max_voxels: int = 5000
    n_jobs: int | None = -1
    seed: int = 0


def run_forest(
    table: VoxelTable,
    model: str,
    subset: Sequence[int] | None,
    settings: ForestSettings,
    *,
    subset_name: str = "all",
    importance: bool = True,
) -> ForestResult:
    """Cross-validate one forest (see the module docstring).

    Parameters
    ----------
    table
        The sampled voxels.
    model
        ``"cel"`` or ``"nel"`` (:data:`MODELS`).
    subset
        Patient indices to use (None: all).
    settings
        Forest and CV settings.
    subset_name
        Name used in the result (``all``, ``early``, ``late``).
    importance
        Compute permutation importances (the slowest part).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_auc_score, roc_curve

    from ..seeding import as_generator

    pos_codes = [CATEGORIES.index(c) for c in MODELS[model]]
    patients = np.arange(len(table.patient_ids)) if subset is None else np.asarray(sorted(subset), dtype=int)
    use = np.isin(table.patient, patients) & (
        np.isin(table.codes, pos_codes) | (table.codes == CATEGORIES.index("nav_nav"))
    )
    names = table.feature_names
    cols = np.arange(len(names))
    if settings.press_box == "inside":
        use &= table.features[:, -1] > 0.5
        cols = cols[:-1]
        names = names[:-1]
    rows = np.flatnonzero(use)
    x = table.features[np.ix_(rows, cols)]
    y = np.isin(table.codes[rows], pos_codes).astype(np.int8)
    pat = table.patient[rows]
    rng = as_generator(settings.seed + 1000 * list(MODELS).index(model))
    folds, notes = patient_folds([table.treatments[i] for i in patients], settings.n_folds, settings.seed)
    fold_results: list[FoldResult] = []
    oof = np.full(rows.size, np.nan)
    imp: list[NDArray[np.float64]] = []
    perm: list[NDArray[np.float64]] = []
    for k, test_local in enumerate(folds):
        test_pat = patients[test_local]
        test = np.isin(pat, test_pat)
        train = ~test
        # the grouping guarantee: no patient's voxels on both sides of a fold
        if np.intersect1d(np.unique(pat[train]), np.unique(pat[test])).size:
            raise RuntimeError("a patient is on both sides of a cross-validation fold")
        ids = tuple(table.patient_ids[i] for i in test_pat)
        empty = np.zeros(0)
        if len(np.unique(y[train])) < 2:
            notes.append(f"fold {k + 1}: the training patients have one class only; fold skipped")
            fold_results.append(FoldResult(k, ids, int(train.sum()), int(test.sum()), 0, None, empty, empty))
            continue
        clf = RandomForestClassifier(
            n_estimators=settings.n_estimators,
            min_samples_leaf=settings.min_samples_leaf,
            max_depth=settings.max_depth,
            max_features="sqrt",
            class_weight="balanced",
            n_jobs=settings.n_jobs,
            random_state=int(rng.integers(2**31 - 1)),
        )
        clf.fit(x[train], y[train])
        imp.append(np.asarray(clf.feature_importances_, dtype=float))
        n_pos = int(y[test].sum())
        if test.sum() == 0 or n_pos in (0, int(test.sum())):
            notes.append(f"fold {k + 1} ({', '.join(ids)}): the held-out voxels have one class only; no AUC")
            fold_results.append(
                FoldResult(k, ids, int(train.sum()), int(test.sum()), n_pos, None, empty, empty)
            )
            if test.any():
                oof[test] = clf.predict_proba(x[test])[:, 1]
            continue
        prob = clf.predict_proba(x[test])[:, 1]
        oof[test] = prob
        fpr, tpr, _ = roc_curve(y[test], prob)
        auc = float(roc_auc_score(y[test], prob))
        fold_results.append(
            FoldResult(
                k, ids, int(train.sum()), int(test.sum()), n_pos, auc, fpr.astype(float), tpr.astype(float)
            )
        )
        if importance and settings.permutation_repeats > 0:
            ti = np.flatnonzero(test)
            if ti.size > settings.permutation_max_voxels:
                ti = np.sort(rng.choice(ti, size=settings.permutation_max_voxels, replace=False))
            if len(np.unique(y[ti])) == 2:
                r = permutation_importance(
                    clf,
                    x[ti],
                    y[ti],
                    scoring="roc_auc",
                    n_repeats=settings.permutation_repeats,
                    random_state=int(rng.integers(2**31 - 1)),
                    n_jobs=settings.n_jobs,
                )
                perm.append(np.asarray(r.importances_mean, dtype=float))
    aucs = np.array([f.auc for f in fold_results if f.auc is not None], dtype=float)
    mean = sd = lo = hi = None
    if aucs.size >= 2:
        from scipy.stats import t as student_t

        mean, sd = float(aucs.mean()), float(aucs.std(ddof=1))
        half = float(student_t.ppf(0.975, aucs.size - 1)) * sd / math.sqrt(aucs.size)
        lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    elif aucs.size == 1:
        mean = float(aucs[0])
    done = np.isfinite(oof)
    pooled = float(roc_auc_score(y[done], oof[done])) if done.any() and len(np.unique(y[done])) == 2 else None
    return ForestResult(
        model=model,
        subset=subset_name,
        n_patients=int(patients.size),
        n_positive=int(y.sum()),
        n_negative=int(y.size - y.sum()),
        folds=tuple(fold_results),
        mean_auc=mean,
        sd_auc=sd,
        ci_low=lo,
        ci_high=hi,
        pooled_auc=pooled,
        feature_names=tuple(names),
        impurity=dict(zip(names, np.mean(imp, axis=0), strict=True)) if imp else {},
        permutation=dict(zip(names, np.mean(perm, axis=0), strict=True)) if perm else {},
        permutation_sd=(
            dict(
                zip(
                    names,
                    np.std(perm, axis=0, ddof=1) if len(perm) > 1 else np.zeros(len(names)),
                    strict=True,
                )
            )
            if perm
            else {}
        ),
        notes=tuple(notes),
    )
