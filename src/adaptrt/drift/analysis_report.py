"""Tables, figures and the report section of the drift analyses (issue 11), written into a run folder."""

from __future__ import annotations

import math
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..report.run import RunFolder
from .analyses import (
    AnalysisResult,
    calibration_summary,
    comparison_rows,
    counterfactual_summary,
    paired_k_vs_one,
)
from .figures import image_grid
from .study import DriftConfig, DriftStudyResult

__all__ = ["calibration_plot", "counterfactual_effect_plot", "write_analyses"]

_TARGET_NAMES = {"post": "post image", "drift": "drift (post − pre)", "drift_truth": "noise-free truth drift"}


def calibration_plot(curves: dict[str, dict[str, list[dict[str, float]]]]) -> Figure:
    """Expected (RMV) vs observed (RMSE) error by SD bin, before and after sigma scaling, one panel per target."""
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for ax, (t, c) in zip(axes[0], curves.items(), strict=False):
        top = 0.0
        for key, style in (("before", "o--"), ("after", "s-")):
            rmv = [b["rmv"] for b in c[key]]
            rmse = [b["rmse"] for b in c[key]]
            ax.plot(rmv, rmse, style, ms=4, label=f"{key} sigma scaling")
            top = max(top, *rmv, *rmse) if rmv else top
        lo = min(min(b["rmv"], b["rmse"]) for w in c.values() for b in w) if any(c.values()) else 1e-6
        ax.plot([max(lo, 1e-9), top], [max(lo, 1e-9), top], color="grey", lw=1, label="calibrated (y = x)")
        ax.set_xscale("log")  # before and after scaling can differ by orders of magnitude
        ax.set_yscale("log")
        ax.set_xlabel("expected error: RMS of predicted SD (a.u.)")
        ax.set_ylabel("observed RMS error (a.u.)")
        ax.set_title(_TARGET_NAMES.get(t, t), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle("Calibration of the K-sample SD on held-out lesions (10 equal-count SD bins)", fontsize=9)
    fig.tight_layout()
    return fig


def counterfactual_effect_plot(rows: list[dict[str, Any]]) -> Figure:
    """Per held-out lesion: predicted area ratio under "good" minus under "poor", against the truth's sensitive
    fraction when known, else by true class."""
    fig, ax = plt.subplots(figsize=(5.0, 3.4))
    d = np.asarray([r["area_ratio_good_minus_poor"] for r in rows], float)
    sf = np.asarray([r["sensitive_fraction"] for r in rows], float)
    lab = [r["label"] for r in rows]
    colours = ["tab:green" if v == 1 else ("tab:red" if v == 0 else "grey") for v in lab]
    if np.isfinite(sf).any():
        ax.scatter(sf, d, c=colours, s=14)
        ax.set_xlabel("sensitive fraction of the lesion (truth, 1 − resistant fraction)")
    else:
        x = np.asarray([0 if v == 0 else (1 if v == 1 else 2) for v in lab], float)
        ax.scatter(x + np.random.default_rng(0).uniform(-0.15, 0.15, len(x)), d, c=colours, s=14)
        ax.set_xticks([0, 1, 2], ["true poor", "true good", "no label"])
    ax.axhline(0, color="grey", lw=1)
    ax.set_ylabel("area ratio | good − area ratio | poor\n(< 0: 'good' generates more shrinkage)", fontsize=8)
    ax.set_title(
        "Counterfactual generation per held-out lesion (green: true good, red: true poor)", fontsize=8
    )
    fig.tight_layout()
    return fig


def _f(v: float, d: int = 3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{d}f}"


def _p(v: float) -> str:
    """A p-value: two significant digits, never a bare 0.000."""
    return "n/a" if not math.isfinite(v) else f"{v:.2g}"


def _pm(rec: dict[str, Any], key: str, d: int = 3) -> str:
    mu, sd = rec[key], rec.get(f"{key}_sd", math.nan)
    return "n/a" if not math.isfinite(mu) else f"{mu:.{d}f} ± {_f(sd, d)}"


def write_analyses(
    run: RunFolder, sec: Any, config: DriftConfig, result: DriftStudyResult, analysis: AnalysisResult
) -> dict[str, Any]:
    """Write the analyses' CSV tables, figures and report text; return the numbers for the summary JSON."""
    an = config.analysis
    assert an is not None
    k = analysis.k
    run.write_csv("results/drift_uncertainty_lesions.csv", analysis.lesion_rows)
    comp = comparison_rows(analysis, result)
    run.write_csv("results/drift_uncertainty_table.csv", comp)
    run.write_csv("results/drift_calibration_folds.csv", analysis.calibration_rows)
    cal = calibration_summary(analysis)
    run.write_csv("results/drift_calibration.csv", cal)
    run.write_csv(
        "results/drift_calibration_curve.csv",
        [
            {"target": t, "when": w, **b}
            for t, c in analysis.curves.items()
            for w, bins in c.items()
            for b in bins
        ],
    )
    run.write_csv("results/drift_response_scores.csv", analysis.score_rows)
    run.write_csv("results/drift_response_auc.csv", analysis.auc_rows)
    run.write_json("results/drift_response_splits.json", analysis.splits)
    cf_sum: list[dict[str, Any]] = []
    if analysis.counterfactual_rows:
        run.write_csv("results/drift_counterfactual_lesions.csv", analysis.counterfactual_rows)
        cf_sum = counterfactual_summary(analysis.counterfactual_rows)
        run.write_csv("results/drift_counterfactual_summary.csv", cf_sum)
    d_mae, p_mae = paired_k_vs_one(analysis, "mae")
    d_dmae, p_dmae = paired_k_vs_one(analysis, "drift_mae")

    sec.text(
        f"Beyond the paper (issue 11), on the same folds ({analysis.seconds:.0f} s). Per fold, "
        f"{an.val_fraction:.0%} of the training patients are carved out as validation patients; an analysis "
        f"network (Method 2, separate drift decoder{', conditioned on the response label with classifier-free label dropout ' + format(an.label_dropout, 'g') if an.conditional else ''}) "  # noqa: E501
        f"trains on the other training patients and draws K = {k} samples (DDIM, η = {an.eta:g}) of every held-out "
        "slice: the per-pixel mean and SD of the post image and the drift."
    )
    table = [
        {
            "model": r["model"],
            "lesions": r["lesions"],
            "post MAE": _pm(r, "mae", 4),
            "SSIM": _pm(r, "ssim"),
            "drift r": _pm(r, "drift_r"),
            "drift r (truth)": _pm(r, "drift_r_truth"),
            "drift MAE": _pm(r, "drift_mae", 4),
        }
        for r in comp
    ]
    sec.table(
        table,
        caption=f"Mean of {k} samples vs one sample (analysis net, trained without the validation "
        "patients) vs the study's Method 1, Method 2, regression and no-change baselines (trained on all "
        "training patients): held-out lesions, mean ± SD over folds",
    )
    better = "lower" if d_mae < 0 else "not lower"
    sec.note(
        f"Mean of {k} vs one sample, per held-out lesion: post-image MAE {better} (median difference "
        f"{_f(d_mae, 4)}, Wilcoxon p = {_p(p_mae)}); drift MAE median difference {_f(d_dmae, 4)} "
        f"(p = {_p(p_dmae)})."
    )
    cal_table = [
        {
            "target": _TARGET_NAMES[r["target"]],
            "sigma scale (validation)": _pm(r, "sigma_scale", 2),
            "±1 SD coverage raw → scaled (nominal 68 %)": f"{_f(100 * r['coverage1_raw'], 0)} → "
            f"{_f(100 * r['coverage1_scaled'], 0)} %",
            "±2 SD coverage raw → scaled (nominal 95 %)": f"{_f(100 * r['coverage2_raw'], 0)} → "
            f"{_f(100 * r['coverage2_scaled'], 0)} %",
            "ENCE raw → scaled": f"{_f(r['ence_raw'], 2)} → {_f(r['ence_scaled'], 2)}",
            "Spearman lesion SD vs MAE": f"{_f(r['spearman_pooled'], 2)} (p = {_p(r['spearman_pooled_p'])})",
        }
        for r in cal
    ]
    sec.table(
        cal_table,
        caption="Calibration on held-out lesions' pixels (mean over folds); sigma scale fitted "
        "on the validation lesions only; ENCE = mean |expected − observed| / expected RMS error over SD "
        "bins (0 = calibrated); Spearman over held-out lesions",
    )
    for r in cal:
        if r["target"] != "post" and math.isfinite(r["sigma_scale"]) and r["sigma_scale"] > 10:
            sec.note(
                f"{_TARGET_NAMES[r['target']]}: the drift head's K outputs barely differ (sigma scale "
                f"{r['sigma_scale']:.0f}), so its raw SD says little about its error; the post image's SD (and so "
                "the SD of the drift implied by the image, x̂0 − pre, which has the same error) is the usable one."
            )
    if analysis.curves:
        sec.figure(
            run.save_figure(calibration_plot(analysis.curves), "drift_calibration"),
            caption="Calibration curves: expected vs observed error by SD bin.",
        )
    ex = analysis.example
    if ex:
        # one figure per target: the post image's and the drift head's SDs live on different scales
        for what, unit in (("post", "post image"), ("drift", "drift head")):
            first = [ex["pre"], ex["post"]] if what == "post" else [ex["pre"], ex["drift"]]
            kinds = ["image", "image"] if what == "post" else ["image", "drift"]
            fig = image_grid(
                [[*first, ex[f"{what}_mean"], ex[f"{what}_sd"], ex[f"{what}_err"]]],
                [[*kinds, "image" if what == "post" else "drift", "sd", "sd"]],
                [
                    [
                        "pre",
                        f"true {what}",
                        f"mean of {k}",
                        f"SD × {ex[f'scale_{what}']:.2f} (calibrated)",
                        "|error|",
                    ]
                ],
                [unit],
                suptitle=f"Calibrated uncertainty of held-out lesion {ex['name']}: {unit}",
            )
            sec.figure(
                run.save_figure(fig, f"drift_uncertainty_example_{what}"),
                caption=f"One calibrated example ({unit}): mean of {k} samples, SD after sigma scaling (fitted on "
                "validation lesions) and the actual error, on one colour scale.",
            )
    out: dict[str, Any] = {
        "calibration": cal,
        "comparison": comp,
        "mean_vs_one": {
            "mae_median_difference": d_mae,
            "mae_p": p_mae,
            "drift_mae_median_difference": d_dmae,
            "drift_mae_p": p_dmae,
        },
    }
    if analysis.counterfactual_rows:
        rows = [
            {
                "lesions": r["lesions"],
                "n": r["n"],
                "area ratio good − poor": f"{r['area_ratio_good_minus_poor_mean']:+.3f} ± "
                f"{r['area_ratio_good_minus_poor_sd']:.3f}",
                "'good' shrinks more": f"{100 * r['share_good_shrinks_more']:.0f} % (equal "
                f"{100 * r['share_equal']:.0f} %)",
                "Wilcoxon p": _p(r["wilcoxon_p"]),
                "core drift good − poor": f"{r['core_drift_good_minus_poor_mean']:+.4f}",
                "Spearman gap vs sensitive fraction": _f(r["spearman_shrinkage_gap_vs_sensitive_fraction"], 2)
                + f" (p = {_p(r['spearman_p'])})",
            }
            for r in cf_sum
        ]
        sec.table(
            rows,
            caption="Counterfactual generation: each held-out lesion sampled under both labels from the "
            f"same starting noise (mean of {an.counterfactual_samples or k} samples); area ratio = predicted post "
            "GTV / pre GTV on its slices",
        )
        a = cf_sum[0]
        sec.note(
            f"'Good response' generates {'more' if a['area_ratio_good_minus_poor_mean'] < 0 else 'no more'} "
            f"shrinkage than 'poor response': mean area-ratio difference {a['area_ratio_good_minus_poor_mean']:+.3f} "
            f"(good − poor; {100 * a['share_good_shrinks_more']:.0f} % of lesions shrink more under 'good', "
            f"Wilcoxon p = {_p(a['wilcoxon_p'])})."
        )
        sec.figure(
            run.save_figure(
                counterfactual_effect_plot(analysis.counterfactual_rows), "drift_counterfactual_effect"
            ),
            caption="Predicted area-ratio difference (good − poor label) per held-out lesion.",
        )
        for cls, nm in ((0, "poor"), (1, "good")):
            ps = [p for p in analysis.pairs if p["label"] == cls]
            if not ps:
                continue
            fig = image_grid(
                [
                    [
                        p["pre"],
                        p["post"],
                        p["post_poor"],
                        p["post_good"],
                        p["drift_poor"],
                        p["drift_good"],
                        p["drift_good"] - p["drift_poor"],
                    ]
                    for p in ps
                ],
                [["image", "image", "image", "image", "drift", "drift", "drift"]] * len(ps),
                [
                    [
                        "pre",
                        "true post",
                        f"post | poor ({p['area_poor']:.2f})",
                        f"post | good ({p['area_good']:.2f})",
                        "drift | poor",
                        "drift | good",
                        "good − poor",
                    ]
                    for p in ps
                ],
                [p["name"] for p in ps],
                suptitle=f"Counterfactual pairs: held-out lesions with true {nm} response under both labels "
                "(area ratio in brackets; Figs. 7-8)",
            )
            sec.figure(
                run.save_figure(fig, f"drift_counterfactual_{nm}"),
                caption=f"Same lesion, both labels, true {nm} responders.",
            )
        out["counterfactual"] = cf_sum
    if analysis.auc_rows:
        sec.table(
            [
                {
                    "response score": r["score"],
                    "AUC (mean ± SD over splits)": f"{r['auc_mean']:.2f} ± {r['auc_sd']:.2f}",
                    "chance band (95 %, permuted labels)": f"{r['chance_low']:.2f}-{r['chance_high']:.2f}",
                    "verdict": r["verdict"],
                }
                for r in analysis.auc_rows
            ],
            caption=f"Drift as a response predictor on {analysis.splits.get('description', '')} "
            f"({analysis.splits.get('n_splits', 0)} splits). Each lesion's score is a held-out prediction (the "
            f"fold model never saw its patient); chance band: {an.permutations} label permutations on the same "
            "splits. Scores are oriented before looking (larger = responder).",
        )
        out["response_auc"] = analysis.auc_rows
        out["splits"] = {k2: v for k2, v in analysis.splits.items() if k2 != "test_lesions"}
    for n in analysis.notes:
        sec.note(n)
    return out
