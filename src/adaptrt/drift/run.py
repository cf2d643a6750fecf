"""The drift study's run folder: tables, figures, final models and the report section.

``adaptrt drift run --manifest M --out RUN [--profile quick|paper]`` and ``adaptrt drift run --toy --out RUN``
call :func:`run_drift_study`; the demo calls :func:`drift_section` on its own run folder.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..report.run import RunFolder, command_line
from .figures import image_grid, loss_curves, metric_points
from .study import BASELINES, DriftConfig, DriftStudyResult, run_folds

__all__ = ["drift_section", "run_drift_study", "save_models", "verdicts"]

MODELS_FOLDER = "models/drift"
_SUMMARY_COLS = ("mae", "psnr", "ssim", "mae_roi", "drift_r", "drift_mae", "drift_r_truth", "dice_post_gtv")


def _fmt(mu: float, sd: float, digits: int = 3) -> str:
    if not math.isfinite(mu):
        return "n/a"
    return f"{mu:.{digits}f} ± {sd:.{digits}f}"


def summary_table(result: DriftStudyResult) -> list[dict[str, Any]]:
    """The evaluation table: mean ± SD over folds per model, pooled AUC with its 95 % bootstrap interval."""
    out = []
    for rec in result.summary():
        row: dict[str, Any] = {"model": rec["model"], "lesions": rec["n_lesions"]}
        for k in _SUMMARY_COLS:
            row[k] = _fmt(rec[k], rec[f"{k}_sd"], 2 if k == "psnr" else 3)
        auc = rec["auc"]
        row["AUC (response score)"] = (
            "n/a"
            if not math.isfinite(auc)
            else f"{auc:.2f} [{rec['auc_ci_low']:.2f}, {rec['auc_ci_high']:.2f}]"
        )
        out.append(row)
    return out


def verdicts(result: DriftStudyResult) -> list[str]:
    """Plain-language sentences: does each model beat the no-change baseline (post image MAE, paired per lesion,
    Wilcoxon signed-rank) and the mean-drift baseline (drift MAE), and is its response AUC above chance?"""
    from scipy.stats import wilcoxon

    rows = result.rows
    key = {(r["model"], r["patient"], r["lesion"]): r for r in rows}
    lesions = [(r["patient"], r["lesion"]) for r in rows if r["model"] == "no_change"]
    summary = {s["model"]: s for s in result.summary()}
    out = []
    for m in summary:
        if m in BASELINES:
            continue
        parts = []
        for metric, base in (("mae", "no_change"), ("drift_mae", "mean_drift")):
            a = np.asarray([key[(m, *le)][metric] for le in lesions], float)
            b = np.asarray([key[(base, *le)][metric] for le in lesions], float)
            d = a - b
            if np.all(d == 0) or len(d) < 6:
                p = math.nan
            else:
                p = float(wilcoxon(a, b).pvalue)
            better = float(np.median(d)) < 0
            sig = math.isfinite(p) and p < 0.05
            what = "post-image MAE" if metric == "mae" else "drift MAE"
            verdict = (
                "beats" if better and sig else "does not beat"
            ) + f" the {base.replace('_', '-')} baseline"
            parts.append(
                f"{verdict} on {what} (median per-lesion difference {np.median(d):+.4f}, Wilcoxon p = {p:.3g})"
            )
        s = summary[m]
        if math.isfinite(s["auc"]):
            lo, hi = s["auc_ci_low"], s["auc_ci_high"]
            if lo > 0.5:
                chance = f"its response score is above chance (AUC {s['auc']:.2f}, 95 % CI {lo:.2f}-{hi:.2f})"
            elif hi < 0.5:
                chance = f"its response score is BELOW chance (AUC {s['auc']:.2f}, 95 % CI {lo:.2f}-{hi:.2f})"
            else:
                chance = (
                    f"its response score is not distinguishable from chance (AUC {s['auc']:.2f}, "
                    f"95 % CI {lo:.2f}-{hi:.2f}; chance 0.5)"
                )
        else:
            chance = "no response AUC (one class only)"
        out.append(f"{m}: " + "; ".join(parts) + f"; {chance}.")
    return out


def save_models(run: RunFolder, models: dict[str, Any]) -> None:
    """Save fitted :class:`DriftModel`s as ``models/drift/<name>.pt`` with a SHA-256 ``models/drift/manifest.json``.

    The checkpoint bytes are made in memory, so identical runs give byte-identical files (no staging name in
    the archive)."""
    import torch

    entries = []
    for name, model in models.items():
        buf = io.BytesIO()
        torch.save(model.state(), buf)
        data = buf.getvalue()
        run.file(f"{MODELS_FOLDER}/{name}.pt").write_bytes(data)
        entries.append({"name": name, "file": f"{name}.pt", "sha256": hashlib.sha256(data).hexdigest()})
    run.write_json(f"{MODELS_FOLDER}/manifest.json", {"kind": "adaptrt drift models", "models": entries})


def _figures(run: RunFolder, sec: Any, dataset: Any, result: DriftStudyResult, cfg: DriftConfig) -> None:
    ls = dataset.lesions
    les_of = np.asarray(dataset.lesion_of_sample)
    angle = np.asarray(dataset.angle_deg)
    pre, post, drift = dataset.pre[:, 0], dataset.post[:, 0], dataset.drift[:, 0]
    idx0 = np.flatnonzero(angle == 0.0)
    first0 = {int(les_of[i]): k for k, i in reversed(list(enumerate(idx0)))}
    # Fig. 2A: examples
    ex = list(first0)[:6]
    rows = [[pre[idx0[first0[e]]], post[idx0[first0[e]]], drift[idx0[first0[e]]]] for e in ex]
    fig = image_grid(
        rows,
        [["image", "image", "drift"]] * len(rows),
        [["pre", "post", "drift"]] * len(rows),
        [f"{ls[e].patient_id}/{ls[e].lesion_id}" for e in ex],
        suptitle="Pre/post pairs and their drift (eq. 1), same box and intensity scale (Fig. 2A)",
    )
    sec.figure(run.save_figure(fig, "drift_examples"), caption="Examples: pre, post and drift = post − pre.")
    # Fig. 4A/B: rotations and noise
    e0 = ex[0]
    rot = [pre[i] for i in np.flatnonzero(les_of == e0)[:4]]
    from . import schedule as sch

    sched = sch.make_schedule(
        T=cfg.model.T,
        start=cfg.model.schedule_start,
        end=cfg.model.schedule_end,
        kind=cfg.model.schedule_kind,
    )
    import torch

    x0 = torch.as_tensor(pre[idx0[first0[e0]]][None, None].astype(np.float32))
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x0.shape, generator=g)
    steps = [0, cfg.model.T // 4, cfg.model.T // 2, 3 * cfg.model.T // 4, cfg.model.T - 1]
    noisy = [
        sch.q_sample(x0, torch.tensor([t]), eps, sched, noise_scale=cfg.model.noise_scale)[0, 0].numpy()
        for t in steps
    ]
    fig = image_grid(
        [rot, noisy],
        [["image"] * 4, ["image"] * len(steps)],
        [[f"{a:g}°" for a in angle[np.flatnonzero(les_of == e0)[:4]]], [f"t = {t}" for t in steps]],
        ["rotations", "forward process"],
        suptitle=(
            "Augmentation by rotation (Fig. 4A) and noising of the pre image, "
            f"noise scale {cfg.model.noise_scale:g} (Fig. 4B)"
        ),
    )
    sec.figure(run.save_figure(fig, "drift_augmentation_noise"), caption="Rotations and the forward process.")
    # Fig. 4C
    fig = loss_curves(result.histories)
    sec.figure(
        run.save_figure(fig, "drift_loss_curves"), caption="Training loss terms (Fig. 4C), mean over folds."
    )
    # Fig. 5: ratio sweep
    if result.sweep:
        first = next(iter(result.sweep.values()))
        s_idx = first["sample"]
        rows, kinds, titles, labels = [], [], [], []
        for w, item in result.sweep.items():
            st = item["steps"]
            picks = list(range(0, len(st.steps), max(1, len(st.steps) // 5)))[:5]
            rows.append([st.trajectory_post[k][0] for k in picks] + [st.trajectory_drift[picks[0]][0]])
            kinds.append(["image"] * len(picks) + ["drift"])
            titles.append([f"post, t={st.steps[k]}" for k in picks] + [f"drift, t={st.steps[picks[0]]}"])
            labels.append(f"1:{w:g}")
        rows.append([pre[s_idx], post[s_idx], drift[s_idx]])
        kinds.append(["image", "image", "drift"])
        titles.append(["pre", "true post", "true drift"])
        labels.append("truth")
        fig = image_grid(
            rows,
            kinds,
            titles,
            labels,
            suptitle="Method 1 across noise steps at recon:drift weights 1:1, 1:1.5, 1:3 (Fig. 5), held-out lesion",
        )
        sec.figure(
            run.save_figure(fig, "drift_method1_ratios"), caption="Method 1 loss-ratio sweep (fold 1)."
        )
        sweep_rows = []
        for w, item in result.sweep.items():
            r = item["rows"]
            sweep_rows.append(
                {
                    "recon:drift": f"1:{w:g}",
                    "post MAE": f"{np.mean([x['mae'] for x in r]):.4f}",
                    "drift r": f"{np.nanmean([x['drift_r'] for x in r]):.3f}",
                    "drift MAE": f"{np.mean([x['drift_mae'] for x in r]):.4f}",
                }
            )
        sec.table(sweep_rows, caption="Method 1 loss ratios on fold 1's held-out lesions")
    # Fig. 6: trajectories
    if result.trajectories:
        rows, kinds, titles, labels = [], [], [], []
        for le, per in list(result.trajectories.items())[:5]:
            for name, tr in per.items():
                n = len(tr["steps"])
                picks = sorted(set(np.linspace(0, n - 1, 4).round().astype(int).tolist()))
                rows.append([tr["post"][k] for k in picks] + [tr["drift"][picks[-1]], drift[tr["sample"]]])
                kinds.append(["image"] * len(picks) + ["drift", "drift"])
                titles.append([f"x̂0, t={tr['steps'][k]}" for k in picks] + ["pred. drift", "true drift"])
                labels.append(f"{ls[le].patient_id}/{ls[le].lesion_id} {name}")
        fig = image_grid(
            rows, kinds, titles, labels, suptitle="DDIM reverse trajectories of held-out lesions (Fig. 6)"
        )
        sec.figure(
            run.save_figure(fig, "drift_trajectories"), caption="Method 2: x̂0 along the reverse steps."
        )
    # Figs. 7-8: poor vs good responders (held-out predictions of the DDIM model)
    m2 = "method2" if "method2" in result.oof_post else next(iter(cfg.variant_names))
    for lab, name, figname in (
        (0, "poor response (< 20 % shrinkage)", "drift_poor"),
        (1, "good response (≥ 20 % shrinkage)", "drift_good"),
    ):
        les = [e for e in first0 if ls[e].label == lab][:4]
        if not les:
            sec.note(f"No held-out lesion with {name}: figure not drawn.")
            continue
        rows = [
            [
                pre[idx0[first0[e]]],
                post[idx0[first0[e]]],
                result.oof_post[m2][first0[e]],
                drift[idx0[first0[e]]],
                result.oof_drift[m2][first0[e]],
            ]
            for e in les
        ]
        fig = image_grid(
            rows,
            [["image", "image", "image", "drift", "drift"]] * len(rows),
            [["pre", "true post", f"{m2} post", "true drift", f"{m2} drift"]] * len(rows),
            [f"{ls[e].patient_id}/{ls[e].lesion_id}" for e in les],
            suptitle=f"{m2} on held-out lesions with {name} (Figs. 7-8)",
        )
        sec.figure(run.save_figure(fig, figname), caption=f"Held-out lesions, {name}.")
    fig = metric_points(result.rows, "drift_r", "Pearson r, predicted vs true drift")
    sec.figure(run.save_figure(fig, "drift_r_per_lesion"), caption="Drift correlation per held-out lesion.")


def drift_section(
    run: RunFolder,
    dataset: Any,
    config: DriftConfig,
    data: Any = None,
    *,
    progress: bool = False,
    title: str = "Drift study (Part II)",
    final: Sequence[str] = ("method1", "method2"),
    analyses: bool = True,
) -> DriftStudyResult:
    """Run the cross-validation on ``dataset`` and write its tables, figures and report section into ``run``.

    With ``analyses`` and ``config.analysis`` set, the analyses beyond the paper (uncertainty from K samples,
    response-conditioned generation, drift as a response score; :mod:`adaptrt.drift.analyses`) follow on the
    same folds. Without response labels of both classes, conditional generation is skipped with a note here
    (``adaptrt drift run`` refuses such a cohort up front instead).
    """
    import dataclasses

    from .methods import DriftModel

    an_cfg = config.analysis if analyses else None
    an_note = ""
    if an_cfg is not None and an_cfg.conditional:
        from .analyses import check_conditional_labels

        try:
            check_conditional_labels([le.label for le in dataset.lesions])
        except InputError as exc:
            an_cfg = dataclasses.replace(an_cfg, conditional=False)
            an_note = f"Conditional generation skipped: {exc.problem}."
    result = run_folds(dataset, config, progress=progress)
    run.write_csv("results/drift_lesions.csv", result.rows)
    summary = result.summary()
    run.write_json(
        "results/drift_summary.json",
        {
            "summary": summary,
            "thresholds": result.thresholds,
            "n_parameters": result.n_parameters,
            "train_seconds": result.train_seconds,
        },
    )
    table = summary_table(result)
    run.write_csv("results/drift_table.csv", table)
    with run.section(title) as sec:
        n_les = len(dataset.lesions)
        n_pat = len({le.patient_id for le in dataset.lesions})
        sec.text(
            f"{n_les} lesions of {n_pat} patients, {len(dataset.pre)} samples (slices × rotations), "
            f"{config.folds}-fold cross-validation grouped by patient: every number below comes from lesions the "
            f"model never trained on. Profile '{config.profile}': widths {config.model.widths}, "
            f"{config.model.iterations} iterations × batch {config.model.batch_size}, noise scale "
            f"{config.model.noise_scale:g}, schedule 1 − ᾱ = linspace({config.model.schedule_start:g}, "
            f"{config.model.schedule_end:g}, {config.model.T}) ({config.model.schedule_kind})."
        )
        sec.text(
            "Parameters: "
            + ", ".join(f"{k} {v:,}" for k, v in result.n_parameters.items())
            + "; training time (all folds): "
            + ", ".join(f"{k} {v:.0f} s" for k, v in result.train_seconds.items())
        )
        excl = getattr(dataset, "exclusions", [])
        if excl:
            sec.note("Excluded lesions: " + "; ".join(f"{a}: {b}" for a, b in excl))
        sec.table(
            table,
            caption="Held-out evaluation: mean ± SD over folds; AUC of the predicted area change "
            "(pooled over folds, 95 % bootstrap CI; chance 0.5). Baselines: no_change (post = pre), "
            "mean_drift (pre + mean training drift).",
        )
        for sentence in verdicts(result):
            sec.note(sentence)
        if config.profile == "quick":
            sec.note(
                f"Quick profile: {config.model.iterations} iterations of batch {config.model.batch_size} per "
                f"model on {config.size}×{config.size} crops, chosen to fit the demo's time on a CPU. The networks "
                "are far from trained (see the loss curves), so these numbers say whether the pipeline runs, not "
                "what Method 1 or 2 can do; run `adaptrt drift run --profile paper` (5,000 iterations × 64) for "
                "that."
            )
        _figures(run, sec, dataset, result, config)
        if an_cfg is not None:
            from .analyses import run_analyses
            from .analysis_report import write_analyses

            acfg = dataclasses.replace(config, analysis=an_cfg)
            analysis = run_analyses(dataset, acfg, result, progress=progress)
            if an_note:
                analysis.notes.append(an_note)
            numbers = write_analyses(run, sec, acfg, result, analysis)
            run.write_json("results/drift_analyses.json", numbers)
            fold_scales = {
                t: [
                    r["sigma_scale"]
                    for r in analysis.calibration_rows
                    if r["target"] == t and math.isfinite(r["sigma_scale"])
                ]
                for t in ("post", "drift")
            }
            if final and all(fold_scales.values()):
                run.write_json(
                    f"{MODELS_FOLDER}/calibration.json",
                    {
                        "note": "sigma scales fitted on the validation lesions of the cross-validation (median "
                        "over the folds that had validation patients); `adaptrt drift predict --samples` "
                        "multiplies the K-sample SD by them",
                        "samples": analysis.k,
                        "eta": an_cfg.eta,
                        **{t: float(np.median(v)) for t, v in fold_scales.items()},
                    },
                )
        if final:
            models = {}
            for v in config.variants:
                if v.name in final:
                    models[v.name] = DriftModel(v.model, seed=config.seed, device=config.device).fit(
                        dataset.pre[:, 0],
                        dataset.post[:, 0],
                        dataset.drift[:, 0],
                        progress=progress,
                        desc=f"final {v.name}",
                    )
            save_models(run, models)
            if data is not None:
                run.write_json(f"{MODELS_FOLDER}/drift_data.json", data)
            sec.text(
                f"Final models ({', '.join(models)}) fitted on all lesions, saved in models/drift/ with SHA-256 "
                "checksums, for `adaptrt drift predict`."
            )
    return result


def data_config(config: DriftConfig, data: Any = None) -> Any:
    """The data settings of a study: ``data`` (a :class:`DriftDataConfig`) with the study's crop size and box."""
    import dataclasses

    from .data import DriftDataConfig

    base = data if data is not None else DriftDataConfig()
    pre = dataclasses.replace(base.preprocess, size=config.size, bottleneck=1)
    return dataclasses.replace(base, preprocess=pre, reference=config.box)


def run_drift_study(
    manifest: str | Path | None,
    out: str | Path,
    config: DriftConfig,
    *,
    data: Any = None,
    toy: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """``adaptrt drift run``: load pairs (or the zero-digit toy), cross-validate, write the run folder."""
    from ..io.atomic import check_writable
    from .data import digits_dataset, load_pairs

    target = check_writable(out, overwrite=overwrite)
    dcfg = data_config(config, data)
    if toy:
        dataset = digits_dataset(178, size=32, seed=config.seed)
        what = "zero-digit toy (178 pairs, 32×32)"
    else:
        if manifest is None:
            raise InputError("no manifest given", field="--manifest", fix="pass --manifest M, or --toy")
        dataset = load_pairs(manifest, dcfg, progress=progress)
        what = f"manifest {manifest}"
    if config.analysis is not None and config.analysis.conditional:
        from .analyses import check_conditional_labels

        check_conditional_labels(
            [le.label for le in dataset.lesions], where=what
        )  # before anything is written
    cmd = command_line("adaptrt drift run")
    with RunFolder(
        target,
        command=cmd,
        config={"drift": config, "data": dcfg, "toy": toy},
        seed=config.seed,
        title=f"adaptrt drift study: {what}",
        overwrite=overwrite,
    ) as run:
        drift_section(run, dataset, config, None if toy else dcfg, progress=progress)
    return target
