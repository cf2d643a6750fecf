"""Figures of the target study, part 1 (matplotlib, Agg backend; every function returns a Figure).

* :func:`pattern_bars` — recurrence zones per cohort, simulated/measured next to the paper (item 1);
* :func:`category_boxplots` — Supplementary Fig. 1: per-patient medians of every map per voxel category;
* :func:`roc_grid` — Fig. 1: cross-validated ROC curves per fold, the mean curve and chance;
* :func:`importance_bars` — impurity and permutation importance per feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .pattern import PAPER_PATTERN, ZONES, PatientPattern
from .voxels import CATEGORIES, CATEGORY_LABELS, COMPARISONS, MODEL_LABELS, ForestResult, PatientVoxels

__all__ = ["category_boxplots", "importance_bars", "pattern_bars", "roc_grid"]

_ZONE_LABELS = {"inside": "inside T2L", "margin": "T2L to 2 cm", "beyond": "beyond 2 cm"}
_ZONE_COLOURS = {"inside": "tab:green", "margin": "tab:orange", "beyond": "tab:red"}
_CAT_COLOURS = {"nav_nav": "tab:gray", "nav_nel": "tab:orange", "nav_cel": "tab:red", "nel_cel": "tab:purple"}


def pattern_bars(patterns: Sequence[PatientPattern]) -> Any:
    """Share of patients per recurrence zone, per cohort, with the paper's 101 patients as reference.

    One stacked bar per group (this cohort: all and each treatment; the paper: all); y axis in percent of the
    patients with new progression.
    """
    treatments = sorted({p.treatment for p in patterns})
    groups: list[tuple[str, list[float]]] = []
    for name, pats in [("all", list(patterns))] + (
        [(t, [p for p in patterns if p.treatment == t]) for t in treatments] if len(treatments) > 1 else []
    ):
        pats = [p for p in pats if p.n_new_voxels > 0]
        n = max(len(pats), 1)
        groups.append(
            (f"{name}\n(n={len(pats)})", [100.0 * sum(p.category == z for p in pats) / n for z in ZONES])
        )
    paper_n = sum(sum(v.values()) for v in PAPER_PATTERN.values())
    groups.append(
        (f"paper, all\n(n={paper_n})", [100.0 * sum(PAPER_PATTERN[z].values()) / paper_n for z in ZONES])
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(groups) + 2.5, 3.6))
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for k, z in enumerate(ZONES):
        vals = np.array([g[1][k] for g in groups])
        ax.bar(x, vals, bottom=bottom, color=_ZONE_COLOURS[z], label=_ZONE_LABELS[z], width=0.6)
        for xi, v, b in zip(x, vals, bottom, strict=True):
            if v >= 6:
                ax.text(float(xi), b + v / 2, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white")
        bottom += vals
    ax.set_xticks(x, [g[0] for g in groups], fontsize=8)
    ax.set_ylabel("patients with new progression (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Furthest zone reached by new progression", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def category_boxplots(
    patients: Sequence[PatientVoxels],
    map_names: Sequence[str],
    tests: Sequence[Mapping[str, Any]],
    *,
    cohort: str = "all",
    ncols: int = 5,
) -> Any:
    """Supplementary Fig. 1 style: per map, box plots of the per-patient medians of each voxel category.

    Parameters
    ----------
    patients
        The voxel patients (of ``cohort``, or all for ``"all"``).
    map_names
        One panel per map.
    tests
        Rows of :func:`adaptrt.target.voxels.category_tests`: stars (Holm-adjusted) above each progressed box.
    cohort
        The cohort name (title, and the test rows to use).
    """
    pats = [p for p in patients if cohort == "all" or p.treatment == cohort]
    star = {(r["comparison"], r["map"]): r["significance"] for r in tests if r["cohort"] == cohort}
    ncols = max(1, min(ncols, len(map_names)))
    nrows = int(np.ceil(len(map_names) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.5 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.ravel()[len(map_names) :]:
        ax.axis("off")
    for ax, m in zip(axes.ravel(), map_names, strict=False):
        data = [[p.medians[c][m] for p in pats if m in p.medians[c]] for c in CATEGORIES]
        pos = np.arange(len(CATEGORIES))
        filled = [i for i, d in enumerate(data) if d]
        if filled:
            bp = ax.boxplot(
                [data[i] for i in filled],
                positions=pos[filled],
                widths=0.6,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "k"},
            )
            for patch, i in zip(bp["boxes"], filled, strict=True):
                patch.set_facecolor(_CAT_COLOURS[CATEGORIES[i]])
                patch.set_alpha(0.7)
            for i in filled:
                jitter = np.linspace(-0.15, 0.15, len(data[i])) if len(data[i]) > 1 else np.zeros(1)
                ax.plot(pos[i] + jitter, data[i], ".", color="k", ms=2, alpha=0.6)
            top = max(max(d) for d in data if d)
            low = min(min(d) for d in data if d)
            span = top - low if top > low else 1.0
            for comp in COMPARISONS:
                s = star.get((f"{CATEGORY_LABELS[comp]} vs NAV→NAV", m), "")
                if s and data[CATEGORIES.index(comp)]:
                    ax.text(CATEGORIES.index(comp), top + 0.05 * span, s, ha="center", fontsize=7)
            ax.set_ylim(low - 0.05 * span, top + 0.18 * span)
        ax.set_xticks(pos, [CATEGORY_LABELS[c] for c in CATEGORIES], rotation=45, fontsize=6)
        ax.set_title(m, fontsize=8)
        ax.tick_params(axis="y", labelsize=6)
    for r in range(nrows):
        axes[r, 0].set_ylabel("patient median\n(normalised units)", fontsize=7)
    fig.suptitle(
        f"Per-patient medians by voxel category, cohort {cohort} (n={len(pats)}); stars: Wilcoxon signed-rank "
        "vs NAV→NAV, Holm-adjusted (ns, * <0.05, ** <0.01, *** <0.001, **** <0.0001)",
        fontsize=8,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def roc_grid(forests: Sequence[ForestResult]) -> Any:
    """Fig. 1: one panel per model (rows) and patient subset (columns): ROC per fold, mean ROC, chance."""
    models = list(dict.fromkeys(f.model for f in forests))
    subsets = list(dict.fromkeys(f.subset for f in forests))
    fig, axes = plt.subplots(
        len(models), len(subsets), figsize=(3.3 * len(subsets), 3.3 * len(models)), squeeze=False
    )
    grid = np.linspace(0.0, 1.0, 101)
    for f in forests:
        ax = axes[models.index(f.model), subsets.index(f.subset)]
        curves = []
        for fold in f.folds:
            if fold.auc is None:
                continue
            ax.plot(fold.fpr, fold.tpr, lw=0.8, alpha=0.5, label=f"fold {fold.fold + 1} (AUC {fold.auc:.2f})")
            curves.append(np.interp(grid, fold.fpr, fold.tpr))
        if curves:
            mean = np.mean(curves, axis=0)
            mean[0] = 0.0
            lab = f"mean (AUC {f.mean_auc:.2f}" + (f" ± {f.sd_auc:.2f})" if f.sd_auc is not None else ")")
            ax.plot(grid, mean, color="k", lw=2, label=lab)
        else:
            ax.text(0.5, 0.5, "no fold with both classes", ha="center", va="center", fontsize=8)
        ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=0.8, label="chance (AUC 0.5)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.set_title(f"{MODEL_LABELS[f.model]}, {f.subset} (n={f.n_patients})", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
        ax.tick_params(labelsize=7)
    for r, m in enumerate(models):
        for c, s in enumerate(subsets):
            if not any(f.model == m and f.subset == s for f in forests):
                axes[r, c].axis("off")
    fig.tight_layout()
    return fig


def importance_bars(forests: Sequence[ForestResult]) -> Any:
    """Impurity importance (mean over folds) and permutation importance (AUC drop on the held-out fold,
    mean ± SD over folds) per feature, one panel per model; features sorted by permutation importance."""
    with_imp = [f for f in forests if f.impurity]
    fig, axes = plt.subplots(
        1, max(len(with_imp), 1), figsize=(4.2 * max(len(with_imp), 1), 4.2), squeeze=False
    )
    for ax, f in zip(axes[0], with_imp, strict=False):
        names = sorted(f.feature_names, key=lambda n: f.permutation.get(n, f.impurity.get(n, 0.0)))
        y = np.arange(len(names))
        ax.barh(
            y - 0.2, [f.impurity.get(n, 0.0) for n in names], height=0.4, color="tab:blue", label="impurity"
        )
        if f.permutation:
            ax.barh(
                y + 0.2,
                [f.permutation.get(n, 0.0) for n in names],
                xerr=[f.permutation_sd.get(n, 0.0) for n in names],
                height=0.4,
                color="tab:orange",
                label="permutation (AUC drop, held-out)",
                error_kw={"lw": 0.6},
            )
        ax.set_yticks(y, names, fontsize=7)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("importance (impurity: share; permutation: AUC drop)", fontsize=7)
        ax.set_title(f"{MODEL_LABELS[f.model]}, {f.subset}", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
        ax.tick_params(axis="x", labelsize=7)
    if not with_imp:
        axes[0, 0].axis("off")
    fig.tight_layout()
    return fig
