"""``adaptrt target run``: the target study (part 1) from a manifest to a run folder with tables and figures.

Run folder::

    config.json, run.json, report.html
    results/patients.csv               item 1 per patient: zone shares, class, new CEL / NEL, progression type
    results/pattern_summary.csv        item 1 per cohort; pattern_vs_paper.csv, progression_types.csv,
                                       zone_threshold_sweep.csv
    results/category_counts.csv        item 2: voxels per category and patient; category_medians.csv (long)
    results/category_tests.csv         item 2: Wilcoxon signed-rank tests, raw and Holm-adjusted p-values
    results/forests.csv                item 3: mean AUC, SD, 95 % CI, pooled AUC, chance; forest_folds.csv;
                                       feature_importance.csv
    results/ctv_*.csv                  item 6 (when the CTV modules are installed)
    results/dl_*.csv                   part 2 (dl = true): split, test metrics of DL / RTOG / EORTC and the
                                       equal-volume CTVs, Wilcoxon tests, training history, loss comparison,
                                       β sweep, modality ablation, repeated splits
    models/dl_ctv.pt, dl_ctv.json      the DL-CTV model and its SHA-256 (``adaptrt target predict``)
    results/target_exclusions.csv, results/target_summary.json
    figures/*.png
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import check_writable
from ..report.html import Report
from ..report.run import RunFolder, command_line
from .data import PatientVolumes
from .pattern import (
    PAPER_PATTERN,
    PAPER_TYPES,
    ZONES,
    PatientPattern,
    pattern_rows,
    pattern_table,
    progression_type_table,
    zone_threshold_sweep,
)
from .study import TargetConfig, TargetResults, prepare_target_data, run_analyses
from .voxels import CATEGORIES, CATEGORY_LABELS, MODEL_LABELS, ForestResult

__all__ = [
    "add_dl_section",
    "add_target_section",
    "pattern_vs_paper",
    "run_target_study",
    "target_hooks",
    "wilson_interval",
    "write_dl_results",
    "write_results",
]


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion ``k / n`` (as fractions; (0, 1) when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def pattern_vs_paper(patterns: Sequence[PatientPattern]) -> list[dict[str, Any]]:
    """This cohort's shares of patients per zone and per progression type next to the paper's (101 patients).

    Each share has its Wilson 95 % interval, and ``paper in interval`` says whether the paper's share lies in it.
    """
    rows: list[dict[str, Any]] = []
    with_new = [p for p in patterns if p.n_new_voxels > 0]
    n_paper = sum(sum(v.values()) for v in PAPER_PATTERN.values())
    labels = {"inside": "inside T2L", "margin": "T2L to 2 cm", "beyond": "beyond 2 cm"}
    for z in ZONES:
        k, n = sum(p.category == z for p in with_new), len(with_new)
        lo, hi = wilson_interval(k, n)
        paper = 100.0 * sum(PAPER_PATTERN[z].values()) / n_paper
        rows.append(
            {
                "quantity": f"patients: recurrence {labels[z]}",
                "this cohort": f"{k}/{n} = {100.0 * k / n:.0f} %" if n else "–",
                "95% CI": f"[{100 * lo:.0f}, {100 * hi:.0f}] %",
                "paper": f"{paper:.0f} %",
                "paper in interval": lo <= paper / 100 <= hi,
            }
        )
    n_paper_t = sum(sum(v.values()) for v in PAPER_TYPES.values())
    for t, label in (("cel", "CEL"), ("t2l", "T2L"), ("both", "both")):
        k, n = sum(p.progression_type == t for p in patterns), len(patterns)
        lo, hi = wilson_interval(k, n)
        paper = 100.0 * sum(PAPER_TYPES[t].values()) / n_paper_t
        rows.append(
            {
                "quantity": f"patients: progression type {label}",
                "this cohort": f"{k}/{n} = {100.0 * k / n:.0f} %" if n else "–",
                "95% CI": f"[{100 * lo:.0f}, {100 * hi:.0f}] %",
                "paper": f"{sum(PAPER_TYPES[t].values())}/{n_paper_t} = {paper:.0f} %",
                "paper in interval": lo <= paper / 100 <= hi,
            }
        )
    return rows


def run_target_study(
    manifest: str | Path,
    out: str | Path,
    config: TargetConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run the target study (part 1) and write the run folder ``out``; return its path.

    The output is checked first (an existing folder without ``overwrite`` stops before any work); bad input
    raises :class:`~adaptrt.errors.InputError` before anything is written. Exclusions are printed (when
    ``progress``) and listed in the report.
    """
    from ..io.manifest import read_glioblastoma_manifest

    started = _dt.datetime.now(_dt.UTC)
    check_writable(out, overwrite=overwrite)
    cohort = read_glioblastoma_manifest(manifest)
    hooks = target_hooks(config)
    data = prepare_target_data(cohort, config, per_patient=hooks, progress=progress)
    if progress:
        for note in data.notes:
            print(f"note: {note}")
        for e in data.exclusions:
            print(f"{'note' if e.scope == 'note' else 'excluded'}: {e.text()}")
    results = run_analyses(data, config, progress=progress)
    with RunFolder(
        out,
        command=command_line("run_target_study"),
        config=config,
        seed=config.seed,
        overwrite=overwrite,
        title="adaptrt target study (glioblastoma), part 1",
        started=started,
    ) as run:
        write_results(run, results)
        add_target_section(run, run.report, results, config)
        _ctv_section(run, run.report, results)
        if results.dl is not None:
            write_dl_results(run, results.dl)
            add_dl_section(run, run.report, results.dl, config)
    return Path(out)


def target_hooks(config: TargetConfig) -> dict[str, Any]:
    """The per-patient hooks of :func:`prepare_target_data`: item 6 (``"ctv"``) and part 2 (``"dl"``)."""
    from .study import dl_hook

    hooks = _ctv_hooks(config)
    if config.dl:
        hooks["dl"] = dl_hook
    return hooks


# ---------------------------------------------------------------------------------------------- item 6 hook
def _ctv_hooks(config: TargetConfig) -> dict[str, Any]:
    """Per-patient CTV comparison (item 6) when :mod:`adaptrt.target.ctv` / :mod:`.compare` are installed."""
    if not config.compare_ctvs:
        return {}
    try:
        from .compare import composite_lesion, evaluate_ctvs, family_curves
        from .ctv import eortc_ctv, rtog_ctv
    except ImportError:
        return {}

    def compare_patient(v: PatientVolumes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        masks = {
            "brain": v.brain,
            "cavity": v.cavity,
            "cel_baseline": v.cel_baseline,
            "t2l_baseline": v.t2l_baseline,
            "cel_progression": v.cel_progression,
            "t2l_progression": v.t2l_progression,
        }
        ctvs = [
            rtog_ctv(v.t2l_baseline, v.cel_baseline, v.brain, v.spacing_mm, critical=v.critical),
            eortc_ctv(v.cel_baseline, v.cavity, v.brain, v.spacing_mm, critical=v.critical),
        ]
        rows = evaluate_ctvs(
            ctvs,
            composite_lesion(masks),
            v.brain,
            patient_id=v.patient_id,
            extra={"treatment": v.treatment, "ttp_months": v.ttp_months},
        )
        curves = family_curves(masks, v.spacing_mm, patient_id=v.patient_id, critical=v.critical)
        return rows, curves

    return {"ctv": compare_patient}


def _ctv_section(run: RunFolder, report: Report, results: TargetResults) -> None:
    """Item 6: RTOG and EORTC CTVs against the composite lesion, Wilcoxon, coverage-volume curves."""
    per_patient = results.data.hooks.get("ctv")
    if not per_patient:
        return
    from .compare import pooled_curve, summarise_ctvs, wilcoxon_ctvs
    from .figures_ctv import coverage_volume_figure, metric_boxplots

    rows = [r for patient_rows, _ in per_patient for r in patient_rows]
    curves: dict[str, list[Any]] = {}
    for _, fam in per_patient:
        for name, c in fam.items():
            curves.setdefault(name, []).append(c)
    summary = summarise_ctvs(rows)
    tests = wilcoxon_ctvs(rows)
    run.write_csv("results/ctv_metrics.csv", rows)
    run.write_csv("results/ctv_summary.csv", summary)
    run.write_csv("results/ctv_wilcoxon.csv", tests)
    pooled = {name: pooled_curve(cs) for name, cs in curves.items()}
    run.write_csv(
        "results/ctv_coverage_volume.csv", [r | {"family": n} for n, c in pooled.items() for r in c.rows()]
    )
    sec = report.section("Item 6: RTOG and EORTC CTVs against the composite progression lesion")
    sec.text(
        "Per patient, the RTOG CTV ((T2L ∪ CEL) + 2 cm) and the EORTC CTV ((CEL ∪ cavity) + 1.5 cm), both in mm "
        "on the grid's spacing, clipped to the brain, critical structures removed, scored against the composite "
        "lesion (T2L ∪ CEL at baseline and at progression); Wilcoxon signed-rank tests between the CTVs, paired "
        "by patient. The coverage-volume curves show the share of new progression covered against CTV volume, so "
        "that a more specific CTV can be told from a smaller one. Per-patient table: results/ctv_metrics.csv."
    )
    sec.table(summary, caption="Metrics per CTV (median [IQR], mean ± SD)")
    sec.table(tests, caption="Wilcoxon signed-rank tests between the CTVs (paired by patient)")
    sec.figure(run.save_figure(metric_boxplots(rows), "ctv_metrics"), caption="Fig. 3 style: metrics per CTV")
    sec.figure(
        run.save_figure(coverage_volume_figure(curves), "ctv_coverage_volume"),
        caption="Coverage of the new progression against CTV volume, RTOG-style and EORTC-style margin families",
    )


# ---------------------------------------------------------------------------------------------- tables
def _forest_rows(forests: Sequence[ForestResult]) -> list[dict[str, Any]]:
    return [f.summary_row() for f in forests]


def _fold_rows(forests: Sequence[ForestResult]) -> list[dict[str, Any]]:
    return [
        {
            "model": f.model,
            "subset": f.subset,
            "fold": k.fold + 1,
            "test_patients": " ".join(k.test_patients),
            "n_train_voxels": k.n_train,
            "n_test_voxels": k.n_test,
            "n_test_positive": k.n_test_positive,
            "auc": k.auc,
        }
        for f in forests
        for k in f.folds
    ]


def _importance_rows(forests: Sequence[ForestResult]) -> list[dict[str, Any]]:
    return [
        {
            "model": f.model,
            "subset": f.subset,
            "feature": n,
            "impurity": f.impurity.get(n),
            "permutation_auc_drop": f.permutation.get(n),
            "permutation_sd": f.permutation_sd.get(n),
        }
        for f in forests
        if f.impurity
        for n in f.feature_names
    ]


def write_results(run: RunFolder, results: TargetResults) -> None:
    """The study's tables (CSV) and ``results/target_summary.json``."""
    d = results.data
    run.write_csv("results/patients.csv", pattern_rows(d.patterns))
    run.write_csv("results/pattern_summary.csv", pattern_table(d.patterns))
    run.write_csv("results/pattern_vs_paper.csv", pattern_vs_paper(d.patterns))
    run.write_csv("results/progression_types.csv", progression_type_table(d.patterns))
    run.write_csv("results/zone_threshold_sweep.csv", zone_threshold_sweep(d.patterns))
    run.write_csv(
        "results/category_counts.csv",
        [{"patient_id": p.patient_id, "treatment": p.treatment, **p.counts} for p in d.voxels],
    )
    run.write_csv(
        "results/category_medians.csv",
        [
            {"patient_id": p.patient_id, "treatment": p.treatment, "category": c, "map": m, "median": v}
            for p in d.voxels
            for c in CATEGORIES
            for m, v in p.medians[c].items()
        ],
    )
    run.write_csv("results/category_tests.csv", results.tests)
    run.write_csv("results/forests.csv", [{"model_key": f.model, **f.summary_row()} for f in results.forests])
    run.write_csv("results/forest_folds.csv", _fold_rows(results.forests))
    imp = _importance_rows(results.forests)
    if imp:
        run.write_csv("results/feature_importance.csv", imp)
    run.write_csv(
        "results/target_exclusions.csv",
        [{"patient_id": e.patient_id, "scope": e.scope, "reason": e.reason} for e in d.exclusions]
        or [{"patient_id": "", "scope": "", "reason": "none"}],
    )
    run.write_json(
        "results/target_summary.json",
        {
            "n_patients_pattern": len(d.patterns),
            "n_patients_voxel": len(d.voxels),
            "maps": list(d.map_names),
            "notes": list(d.notes),
            "exclusions": [e.text() for e in d.exclusions],
            "ttp_median_months": results.ttp_median,
            "forests": [
                {k: v for k, v in f.summary_row().items() if k != "95% CI"}
                | {"ci_low": f.ci_low, "ci_high": f.ci_high, "notes": list(f.notes)}
                for f in results.forests
            ],
            "voxel_table_bytes": results.table_bytes,
        },
    )


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------- report
def add_target_section(
    run: RunFolder, report: Report, results: TargetResults, config: TargetConfig, *, short: bool = False
) -> None:
    """The study's report sections (``short``: the demo's one-section summary with two figures)."""
    from . import figures as tf

    d = results.data
    with_new = [p for p in d.patterns if p.n_new_voxels > 0]
    k_beyond = sum(p.category == "beyond" for p in with_new)
    lo, hi = wilson_interval(k_beyond, len(with_new))
    headline = (
        f"Recurrence beyond the 2 cm margin (the RTOG CTV): {k_beyond} of {len(with_new)} patients "
        f"({100 * k_beyond / max(len(with_new), 1):.0f} %, 95 % CI {100 * lo:.0f}–{100 * hi:.0f} %); the paper: "
        f"29 % of 101 patients (28 % in its Discussion), which "
        f"{'lies inside' if lo <= 0.29 <= hi else 'lies outside'} this interval."
    )
    forest_lines = []
    for f in results.forests:
        if f.subset != "all":
            continue
        verdict = (
            "beats chance (the interval lies above 0.5)"
            if f.beats_chance
            else "does not clearly beat chance (the interval reaches 0.5 or is undefined)"
        )
        forest_lines.append(
            f"{MODEL_LABELS[f.model]} forest: mean AUC over folds {_fmt(f.mean_auc)} (95 % CI "
            f"{_fmt(f.ci_low)}–{_fmt(f.ci_high)}, SD {_fmt(f.sd_auc)}), chance 0.5: it {verdict}."
        )
    if short:
        sec = report.section("Target study (glioblastoma), part 1: summary")
        sec.text(
            f"Profile {config.profile!r}: {len(d.patterns)} patients in the recurrence pattern, {len(d.voxels)} "
            f"in the voxel analyses. {headline} " + " ".join(forest_lines)
        )
        sec.figure(run.save_figure(tf.pattern_bars(d.patterns), "target_pattern"), caption=_PATTERN_CAPTION)
        sec.figure(run.save_figure(tf.roc_grid(results.forests), "target_roc"), caption=_ROC_CAPTION)
        if results.dl is not None:
            add_dl_section(run, report, results.dl, config, short=True)
        return

    sec = report.section("Target study (part 1): data and protocol")
    treatments: dict[str, int] = {}
    for p in d.patterns:
        treatments[p.treatment] = treatments.get(p.treatment, 0) + 1
    sec.text(
        f"Profile {config.profile!r}. {len(d.patterns)} patients analysed ("
        + ", ".join(f"{t} {n}" for t, n in sorted(treatments.items()))
        + f"); {len(d.voxels)} of them in the voxel analyses and forests (every map and MRSI data needed). "
        f"Maps: {', '.join(d.map_names)}. Margins are Euclidean in mm on each grid's own spacing: recurrence "
        f"zones at {config.margin_mm:g} mm, voxel analyses within the baseline lesion + {config.region_mm:g} mm "
        "(clipped to the brain). Definitions and every choice the paper leaves open: docs/target.md."
    )
    for note in d.notes:
        sec.note(note)
    excl = [e for e in d.exclusions]
    if excl:
        sec.note(f"{len(excl)} exclusion(s) / note(s): " + "; ".join(e.text() for e in excl))
    else:
        sec.text("No patient was excluded.")

    s1 = report.section("Item 1: recurrence pattern and progression types")
    s1.text(
        "New progression = progression lesion (T2L ∪ CEL) outside the baseline lesion, plus newly enhancing "
        "voxels. A patient's class is the furthest zone holding at least "
        f"{config.min_zone_percent:g} % of its new voxels (the paper counts each patient once; see "
        f"docs/target.md). Progression type 'both' when new CEL and new NEL each reach {config.min_type_ml:g} mL. "
        + headline
    )
    s1.table(pattern_table(d.patterns), caption="Patients per zone, and shares of new voxels per zone")
    s1.table(pattern_vs_paper(d.patterns), caption="This cohort against the paper (Wilson 95 % intervals)")
    s1.table(progression_type_table(d.patterns), caption="Progression type (Table 1 of the paper)")
    s1.table(
        zone_threshold_sweep(d.patterns),
        caption="Sensitivity of the patient classes to the zone threshold (percent of patients)",
    )
    beyond_4 = [p for p in with_new if p.beyond_region_percent > 0]
    s1.text(
        f"New progression beyond the {config.region_mm:g} mm analysis region: {len(beyond_4)} patient(s) "
        "(the paper saw none, which is why it restricted the voxel analyses to 4 cm)."
    )
    s1.figure(run.save_figure(tf.pattern_bars(d.patterns), "pattern_bars"), caption=_PATTERN_CAPTION)

    s2 = report.section("Item 2: voxel categories, per-patient medians and signed-rank tests")
    counts = [
        {
            "category": CATEGORY_LABELS[c],
            "voxels (all patients)": sum(p.counts[c] for p in d.voxels),
            f"patients with >= {config.min_voxels} voxels": sum(
                p.counts[c] >= config.min_voxels for p in d.voxels
            ),
        }
        for c in CATEGORIES
    ]
    s2.table(counts, caption="Voxels per category within the analysis region")
    n_tests = sum(r["p"] is not None for r in results.tests)
    n_sig = sum(r["p_holm"] is not None and r["p_holm"] < 0.05 for r in results.tests)
    s2.text(
        "Test: Wilcoxon signed-rank (two-sided) on the per-patient medians, progressed category against "
        "NAV→NAV of the same patients (paired; the paper's 'Mann–Whitney signed-rank' read as the signed-rank "
        "test). MRSI medians use the voxels inside the PRESS box only. Multiple comparisons: Holm's correction "
        f"within each cohort group (pooled and per treatment). {n_sig} of {n_tests} tests are significant at "
        "0.05 after the correction (under the null hypothesis about 5 % of uncorrected tests would be). The "
        "full table, with raw p-values, is results/category_tests.csv."
    )
    pooled = [r for r in results.tests if r["cohort"] == "all"]
    s2.table(
        [
            {
                "comparison": r["comparison"],
                "map": r["map"],
                "n patients": r["n_patients"],
                "median stable": r["median_stable"],
                "median progressed": r["median_progressed"],
                "p": r["p"],
                "p (Holm)": r["p_holm"],
                "": r["significance"],
            }
            for r in pooled
        ],
        caption="Pooled cohort: stable (NAV→NAV) against progressed voxels",
    )
    groups = (
        ["all", *sorted({p.treatment for p in d.voxels})]
        if len({p.treatment for p in d.voxels}) > 1
        else ["all"]
    )
    for g in groups:
        s2.figure(
            run.save_figure(
                tf.category_boxplots(d.voxels, d.map_names, results.tests, cohort=g), f"category_boxplots_{g}"
            ),
            caption=f"Supplementary Fig. 1 style, cohort {g}: box = interquartile range of the per-patient medians "
            "(line: median; whiskers: 1.5 IQR), dots: patients; y axis in the map's normalised units.",
        )

    s3 = report.section("Item 3: voxel-wise random forests (five-fold CV grouped by patient)")
    s3.text(
        f"Random forests ({config.n_estimators} trees, min {config.min_samples_leaf} voxels per leaf, balanced "
        f"classes) on all maps + the in-PRESS-box indicator (press_box={config.press_box!r}); up to "
        f"{config.max_voxels_per_class} voxels per patient and category, drawn with the patient's own seeded "
        f"generator. Folds: StratifiedGroupKFold over patients, stratified by treatment; no patient on both "
        f"sides (checked). Early / late progressors: TTP below / at or above the median of "
        f"{results.ttp_median:.1f} months, each with its own folds. Interval: mean of the fold AUCs ± t × SD / "
        "√folds (approximate: folds share training patients). " + " ".join(forest_lines)
    )
    s3.table(_forest_rows(results.forests), caption="Cross-validated AUC (chance level 0.5)")
    notes = [f"{MODEL_LABELS[f.model]}, {f.subset}: {n}" for f in results.forests for n in f.notes]
    if notes:
        s3.note("; ".join(notes))
    s3.figure(run.save_figure(tf.roc_grid(results.forests), "roc"), caption=_ROC_CAPTION)
    s3.figure(
        run.save_figure(tf.importance_bars(results.forests), "importance"),
        caption="Feature importance of the models on all patients: impurity (mean over folds) and permutation "
        "importance (drop of the held-out fold's AUC when the feature is shuffled; mean ± SD over folds).",
    )
    s3.text(
        "MRSI maps are 0 outside the PRESS box (no data). "
        + (
            "Every voxel is used and the feature in_press_box tells the forest where the MRSI features are "
            "missing; a voxel outside the box is predicted from the other maps only."
            if config.press_box == "indicator"
            else "Only voxels inside the PRESS box are used."
        )
        + " The paper's models saw the same limitation (MRSI did not cover the whole brain)."
    )


_PATTERN_CAPTION = (
    "Share of patients (with new progression) whose progression reaches each zone at the furthest: inside the "
    "baseline T2L, between the T2L and its 2 cm expansion, beyond 2 cm; this cohort per treatment, and the paper."
)
_ROC_CAPTION = (
    "Fig. 1 style: ROC curves of the held-out folds (thin), their mean (black) and chance (dashed, AUC 0.5); "
    "rows: CEL- and NEL-progression models; columns: all patients, early and late progressors."
)


# ---------------------------------------------------------------------------------------------- part 2
_DL_CTVS = ("DL", "RTOG", "EORTC")
_DL_METRICS = ("sensitivity", "specificity", "dice", "hd95_mm", "tversky", "pcc", "volume_cm3")


def _history_rows(name: str, model: Any) -> list[dict[str, Any]]:
    return [
        {"model": name, **dataclasses.asdict(r), "selected": r.epoch == model.best_epoch}
        for r in model.history
    ]


def _mean_sd(values: Sequence[float]) -> str:
    import numpy as np

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    return "–" if v.size == 0 else f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0.0:.3f}"


def _dl_tables(dl: Any) -> dict[str, list[dict[str, Any]]]:
    from .compare import summarise_ctvs, wilcoxon_ctvs

    main = [r for r in dl.test_rows if r["ctv"] in _DL_CTVS]
    tables: dict[str, list[dict[str, Any]]] = {
        "dl_split": [{"part": k, "n": len(v), "patients": " ".join(v)} for k, v in dl.split.items()],
        "dl_test_metrics": dl.test_rows,
        "dl_summary": summarise_ctvs(dl.test_rows),
        "dl_wilcoxon": wilcoxon_ctvs(
            dl.test_rows, pairs=[("DL", "RTOG"), ("DL", "EORTC"), ("DL", "RTOG@DL"), ("DL", "EORTC@DL")]
        ),
        "dl_equal_volume": dl.equal_volume,
        "dl_history": [r for name, (m, _) in dl.losses.items() for r in _history_rows(f"loss {name}", m)]
        + [r for name, (m, _) in dl.modalities.items() for r in _history_rows(f"inputs {name}", m)]
        or _history_rows("final", dl.model),
    }
    groups = []
    for key in ("progressor", "treatment"):
        for g in sorted({str(r[key]) for r in main}):
            sub = [r for r in main if str(r[key]) == g]
            for name in _DL_CTVS:
                rows = [r for r in sub if r["ctv"] == name]
                groups.append(
                    {"by": key, "group": g, "ctv": name, "n": len(rows)}
                    | {m: _mean_sd([float(r[m]) for r in rows]) for m in _DL_METRICS}
                )
    tables["dl_subgroups"] = groups
    if dl.losses:
        rows = [r for _, (_, rr) in dl.losses.items() for r in rr]
        tables["dl_losses"] = rows
        tables["dl_losses_summary"] = _prediction_summary(rows)
    if dl.betas:
        rows = [r | {"beta": b} for b, rr in dl.betas.items() for r in rr]
        tables["dl_beta_sweep"] = rows
        tables["dl_beta_summary"] = _prediction_summary(rows)
    if dl.modalities:
        rows = [r for _, (_, rr) in dl.modalities.items() for r in rr]
        tables["dl_modalities"] = rows
        tables["dl_modalities_summary"] = _prediction_summary(rows)
        if "all" in dl.modalities and len(dl.modalities) > 1:
            tables["dl_modalities_wilcoxon"] = wilcoxon_ctvs(
                rows,
                metrics=("sensitivity", "specificity", "pcc"),
                pairs=[("all", n) for n in dl.modalities if n != "all"],
            )
    if dl.repeats:
        per = []
        for k in sorted({r["repeat"] for r in dl.repeats}):
            for name in _DL_CTVS:
                rows = [r for r in dl.repeats if r["repeat"] == k and r["ctv"] == name]
                per.append(
                    {"repeat": k, "ctv": name, "n_test": len(rows)}
                    | {m: _mean_sd([float(r[m]) for r in rows]).split(" ± ")[0] for m in _DL_METRICS}
                )
        tables["dl_repeats"] = dl.repeats
        tables["dl_repeats_summary"] = per
    return tables


def _prediction_summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name in dict.fromkeys(str(r["ctv"]) for r in rows):
        sub = [r for r in rows if r["ctv"] == name]
        out.append(
            {"model": name, "n_test": len(sub)}
            | {m: _mean_sd([float(r[m]) for r in sub]) for m in ("sensitivity", "specificity", "pcc", "dice")}
            | {"components (median)": float(sorted(r["components"] for r in sub)[len(sub) // 2])}
        )
    return out


def write_dl_results(run: RunFolder, dl: Any) -> None:
    """Part 2's tables (``results/dl_*.csv``) and the model with its checksum (``models/``)."""
    from .predict import save_model

    for name, rows in _dl_tables(dl).items():
        if rows:
            run.write_csv(f"results/{name}.csv", rows)
    digest = save_model(run.stage, dl.model)
    run.write_json(
        "results/dl_summary.json",
        {
            "split": {k: list(v) for k, v in dl.split.items()},
            "best_epoch": dl.model.best_epoch,
            "model_sha256": digest,
            "seconds": dl.seconds,
            "exclusions": [e.text() for e in dl.exclusions],
        },
    )


def _curves_figure(models: Mapping[str, Any], title: str) -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, m in models.items():
        ep = [r.epoch for r in m.history]
        axes[0].plot(ep, [r.val_pcc for r in m.history], label=name)
        axes[1].plot(ep, [r.train_loss for r in m.history], label=name)
    axes[0].set(xlabel="epoch", ylabel="validation PCC (thresholded, mean)", title=title, ylim=(0, 1))
    axes[1].set(xlabel="epoch", ylabel="training loss", title="training loss")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _beta_figure(summary: Sequence[Mapping[str, Any]], betas: Sequence[float]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for metric in ("sensitivity", "specificity", "pcc"):
        ys = [float(r[metric].split(" ± ")[0]) if r[metric] != "–" else math.nan for r in summary]
        ax.plot(betas, ys, marker="o", label=metric)
    ax.set(xlabel="Tversky loss β (α = 1 - β)", ylabel="mean over test patients", ylim=(0, 1.02))
    ax.set_title("Supplementary Fig. 2 style: β sweep")
    ax.legend()
    fig.tight_layout()
    return fig


def _overlay_figure(overlays: Sequence[Any], n: int = 4) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    from .ctv import CTV_COLOURS

    use = list(overlays)[:n]
    fig, axes = plt.subplots(1, max(len(use), 1), figsize=(3.2 * max(len(use), 1), 3.4), squeeze=False)
    for ax, (pid, flair, masks, lesion) in zip(axes[0], use, strict=False):
        z = int(np.argmax(lesion.sum(axis=(1, 2)))) if lesion.any() else lesion.shape[0] // 2
        bg = flair[z] if flair is not None else np.zeros(lesion.shape[1:])
        ax.imshow(bg, cmap="gray", vmin=0, vmax=1)
        ax.contourf(lesion[z].astype(float), levels=[0.5, 1.5], colors=["magenta"], alpha=0.35)
        for name, m in masks.items():
            if m[z].any():
                ax.contour(
                    m[z].astype(float),
                    levels=[0.5],
                    colors=[np.asarray(CTV_COLOURS.get(name, (0, 0, 255))) / 255],
                )
        ax.set_title(f"{pid}, slice {z}", fontsize=8)
        ax.axis("off")
    handles: list[Any] = [plt.Line2D([], [], color=_rgb(CTV_COLOURS[k]), label=k) for k in _DL_CTVS]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="magenta", alpha=0.35, label="composite lesion"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def add_dl_section(
    run: RunFolder, report: Report, dl: Any, config: TargetConfig, *, short: bool = False
) -> None:
    """Part 2's report sections (``short``: one section with Fig. 3, for the demo)."""
    from .figures_ctv import metric_boxplots

    tables = _dl_tables(dl)
    main = [r for r in dl.test_rows if r["ctv"] in _DL_CTVS]
    wil = {(r["ctv_b"], r["metric"]): r for r in tables["dl_wilcoxon"]}
    summ = {(r["ctv"], r["metric"]): r for r in tables["dl_summary"]}

    def line(metric: str) -> str:
        parts = [f"{c} {summ[(c, metric)]['text']}" for c in _DL_CTVS if (c, metric) in summ]
        ps = [
            f"p(DL vs {c}) = {_fmt(wil[(c, metric)]['p'], 3)}"
            for c in ("RTOG", "EORTC")
            if (c, metric) in wil
        ]
        return f"{metric}: " + "; ".join(parts) + " (" + ", ".join(ps) + ")"

    n_test = len(dl.split["test"])
    headline = (
        f"DL CTV (3D U-Net, {config.dl_base_features} base features, {config.dl_loss} loss, selected at epoch "
        f"{dl.model.best_epoch} of {config.dl_epochs} on the validation Tversky α 0.02 / β 0.98) on {n_test} test "
        f"patients (split {len(dl.split['train'])} / {len(dl.split['val'])} / {n_test}, stratified by cohort). "
        + " ".join(line(m) + "." for m in ("sensitivity", "specificity", "pcc"))
    )
    caption3 = (
        "Fig. 3 style: test patients' metrics of the DL, RTOG and EORTC CTVs against the composite lesion "
        "(median [IQR] in results/dl_summary.csv; Wilcoxon in results/dl_wilcoxon.csv)"
    )
    if short:
        sec = report.section("Target study, part 2: the deep-learning CTV")
        sec.text(headline + f" Part 2 took {dl.seconds:.0f} s.")
        sec.figure(
            run.save_figure(metric_boxplots(main, ctv_order=_DL_CTVS), "target_dl_ctvs"), caption=caption3
        )
        return
    sec = report.section("Part 2: the deep-learning CTV against RTOG and EORTC (test patients)")
    sec.text(
        headline
        + " Inputs: baseline nADC, nFA, CNI, CCrI, nT1c, nFLAIR, min-max normalised over the brain, cropped to the "
        "brain's box. The DL CTV is the thresholded probability (>= 0.5) in the brain with the critical structures "
        "removed, its largest connected component with holes filled (one contiguous volume). Every test patient "
        f"was used once, after training and selection. Part 2 took {dl.seconds:.0f} s. The model is in "
        "models/dl_ctv.pt (checksum in models/dl_ctv.json): `adaptrt target predict` applies it to new patients."
    )
    for e in dl.exclusions:
        sec.note(e.text())
    sec.table(tables["dl_summary"], caption="Supplementary Table 1 style: metrics per CTV (test patients)")
    sec.table(
        tables["dl_wilcoxon"], caption="Wilcoxon signed-rank tests, DL against each CTV (paired by patient)"
    )
    sec.figure(run.save_figure(metric_boxplots(main, ctv_order=_DL_CTVS), "dl_ctvs"), caption=caption3)
    sec.text("Supplementary Table 2 (every test patient and CTV): results/dl_test_metrics.csv.")
    sec.table(
        tables["dl_subgroups"],
        caption="Early / late progressors and treatment cohorts (Supplementary Fig. 4): mean ± SD",
    )
    sec.figure(
        run.save_figure(_overlay_figure(dl.overlays), "dl_overlays"),
        caption="Fig. 4 style: DL (red), RTOG (yellow) and EORTC (green) CTVs on the normalised nFLAIR, the "
        "composite lesion (baseline and progression) shaded, on the slice where the lesion is largest",
    )
    ev = report.section("Part 2: equal volume, and the spread over splits (beyond the paper)")
    ev.text(
        "RTOG@DL and EORTC@DL are the RTOG-style ((T2L ∪ CEL) + m) and EORTC-style ((CEL ∪ cavity) + m) CTVs "
        "whose margin m gives the DL CTV's volume (results/dl_equal_volume.csv; 'reachable' is false when the "
        "DL CTV is smaller than the base itself). If the DL CTV beats them at equal volume, its specificity "
        "gain is not a gain in smallness alone."
    )
    eqsum = [r for r in tables["dl_summary"] if r["ctv"] in ("RTOG@DL", "EORTC@DL", "DL")]
    ev.table(eqsum, caption="DL against the equal-volume margin CTVs")
    if dl.repeats:
        ev.table(
            tables["dl_repeats_summary"], caption="Mean test metrics per repeated split (spread over splits)"
        )
    else:
        ev.text("Repeated splits: not run in this profile (dl_repeats = 0).")
    if dl.losses:
        ls = report.section("Part 2: loss comparison (Supplementary Fig. 3) and contiguity")
        ls.text(
            "Each loss trained with the same split, seed and settings; metrics of the thresholded prediction "
            "(before the component selection) on the test patients, and its number of connected components "
            "(1 = one contiguous volume; the paper chose PCC alone because PCC + BCE gave non-contiguous volumes)."
        )
        ls.table(tables["dl_losses_summary"], caption="Test metrics (mean ± SD) per loss")
        ls.figure(
            run.save_figure(
                _curves_figure({n: m for n, (m, _) in dl.losses.items()}, "loss comparison"), "dl_losses"
            ),
            caption="Validation PCC and training loss per epoch for each loss",
        )
    if dl.betas:
        bs = report.section("Part 2: β sweep of the Tversky loss (Supplementary Fig. 2)")
        bs.table(tables["dl_beta_summary"], caption="Test metrics per β (α = 1 - β)")
        bs.figure(
            run.save_figure(_beta_figure(tables["dl_beta_summary"], list(dl.betas)), "dl_beta_sweep"),
            caption="β sweep",
        )
    if dl.modalities:
        ms = report.section("Part 2: modality ablation with PCC + BCE (Fig. 2)")
        ms.table(tables["dl_modalities_summary"], caption="Test metrics (mean ± SD) per input set")
        if "dl_modalities_wilcoxon" in tables:
            ms.table(
                tables["dl_modalities_wilcoxon"], caption="Wilcoxon signed-rank: all six against each set"
            )
        ms.figure(
            run.save_figure(
                _curves_figure({n: m for n, (m, _) in dl.modalities.items()}, "input sets"), "dl_modalities"
            ),
            caption="Fig. 2a style: validation PCC during training per input set",
        )
        rows = [r for _, (_, rr) in dl.modalities.items() for r in rr]
        ms.figure(
            run.save_figure(
                metric_boxplots(rows, ("sensitivity", "specificity", "pcc"), ctv_order=list(dl.modalities)),
                "dl_modalities_test",
            ),
            caption="Fig. 2b style: test sensitivity, specificity and PCC per input set",
        )
    not_run = [
        n
        for n, v in (
            ("loss comparison", dl.losses),
            ("β sweep", dl.betas),
            ("modality ablation", dl.modalities),
        )
        if not v
    ]
    if not_run or config.profile == "quick":
        report.section("Part 2: what this profile ran").text(
            f"Profile {config.profile!r}: losses {list(config.dl_losses)}, β {list(config.dl_betas)}, input sets "
            f"{list(config.dl_modalities)}, {config.dl_repeats} repeated split(s)"
            + (f"; not run: {', '.join(not_run)}" if not_run else "")
            + ". The paper profile runs every comparison."
        )


def _rgb(c: tuple[int, int, int]) -> tuple[float, float, float]:
    return (c[0] / 255, c[1] / 255, c[2] / 255)
