"""Benchmark: the response study across signature strengths and cohort seeds (issue 14, the sweep).

Run: ``python benchmarks/response_sweep.py --out runs/response_sweep [--strengths 0,0.5,1,2,4]
[--seeds 0,1,2] [--trials 5] [--epochs 150] [--permutations 50] [--size-effect X]``.

For every (signature strength, cohort seed) it simulates a default brain-metastasis cohort
(:class:`adaptrt.simulate.metastases.MetastasisConfig`, only ``signature_strength`` changed, and
``size_effect`` with ``--size-effect``) into a temporary folder, runs the response study's trials on it
(:func:`adaptrt.response.study.run_trials`: radiomics without wavelets, gradients, the autoencoder +
classifier trained by the engine trainer for ``--epochs`` epochs, the CAMs scored against the planted
sub-regions) with ``--trials`` patient-grouped splits, and the label-permutation null band of the mean AUC on
the same splits (:mod:`adaptrt.response.chance`). It is the honest form of the paper's claim "CAM >=
gradients >= radiomics": from which strength of the simulated signature each method detects response (test
AUC) and where the resistant tissue is (CAM localisation AUC).

What is written (``--out``, a run folder; nothing is overwritten without ``--overwrite``):
``results/sweep_cells.csv`` (one row per strength, seed, model and test set: mean AUC, Nadeau–Bengio
corrected 95 % interval, null band, verdict), ``results/sweep_cams.csv`` (CAM localisation per cell),
``results/sweep_summary.csv`` (per strength and model, over seeds), ``figures/sweep.png`` and ``report.html``.
Each finished cell is also kept in ``<out>.cells/`` so that an interrupted sweep resumes where it stopped.

What it costs is printed: per cell (simulate, prepare, trials, null) and in total. This is a benchmark, not
a test: about 2-4 min per cell on 2 CPU cores with the defaults (15 cells).

Chance: every AUC (the pixel baseline's too) is judged against its cohort's permutation null band for its test
set (cheap models refitted on permuted labels, same splits; the envelope of the permuted- and
true-test-label nulls, :mod:`adaptrt.response.chance`) and its corrected interval, with the project's conservative rule
(:func:`adaptrt.response.chance.auc_verdicts`): above chance only when the mean lies above the band *and* the
interval excludes 0.5. With 5 trials per cohort the band is wide; the sweep's evidence is the pattern over
strengths and seeds, not one cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MODELS = {
    "radiomics": "Radiomics",
    "gradients": "Gradients",
    "cam": "Pixel-CAM (network)",
    "pixels": "Pixels",
}
CAMS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "pixelwise": "pixel-wise CAM"}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The sweep's settings (saved next to its outputs)."""

    strengths: tuple[float, ...]
    seeds: tuple[int, ...]
    trials: int
    epochs: int
    permutations: int
    size_effect: float | None
    workers: int | None


def _cell_name(strength: float, seed: int) -> str:
    return f"strength{strength:g}_seed{seed}"


#: Version of the null-band construction stored in a cell; a cached cell of another version gets its null
#: recomputed (cohort simulated and prepared again, same splits) while its trained models' AUCs are kept.
NULL_VERSION = 2


def _study_config(cfg: SweepConfig) -> Any:
    from adaptrt.response.radiomics import RadiomicsConfig
    from adaptrt.response.study import response_config

    rc = response_config("paper")
    return response_config(
        "paper",
        n_trials=cfg.trials,
        train=dataclasses.replace(rc.train, epochs=cfg.epochs),
        radiomics=RadiomicsConfig(wavelet=False),
        fit_final=False,
        n_permutations=cfg.permutations,
        workers=cfg.workers,
    )


def _prepared_cohort(
    strength: float, seed: int, cfg: SweepConfig, rc: Any, progress: bool
) -> tuple[Any, dict]:
    """Simulate the cell's cohort into a temporary folder and prepare its lesions."""
    from adaptrt.io.manifest import read_manifest
    from adaptrt.response.study import check_usable_lesions, prepare_cohort
    from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort

    sim = MetastasisConfig(signature_strength=strength)
    if cfg.size_effect is not None:
        sim = dataclasses.replace(sim, size_effect=cfg.size_effect)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="adaptrt_sweep_") as tmp:
        t0 = time.perf_counter()
        manifest = write_metastasis_cohort(Path(tmp) / "cohort", config=sim, seed=seed)
        times["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cohort = read_manifest(manifest)
        lesions, notes = prepare_cohort(cohort, rc, progress=progress)
        check_usable_lesions(cohort, lesions, notes, rc.threshold, manifest=manifest)
        times["prepare_s"] = time.perf_counter() - t0
    return (lesions, notes), times


def _null_part(lesions: Any, splits: Any, rc: Any) -> dict[str, Any]:
    """The cell's null bands by test set and the pixel baseline's per-trial AUCs (true labels)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from adaptrt.response.chance import pixel_features, pixel_model
    from adaptrt.response.run import chance_reference
    from adaptrt.response.study import ResponseResults

    nulls = chance_reference(lesions, ResponseResults(splits=list(splits)), rc)
    assert nulls is not None
    y = np.array([d.label for d in lesions])
    p1 = pixel_features([d.test_mri1.image for d in lesions])
    tests = {"mri2": pixel_features([d.test_mri2.image for d in lesions]), "mri1": p1}
    pix: dict[str, list[float]] = {k: [] for k in tests}
    for s in splits:
        model = pixel_model().fit(p1[s.train], y[s.train])
        for k, x in tests.items():
            pix[k].append(float(roc_auc_score(y[s.test], model.predict_proba(x[s.test])[:, 1])))
    return {
        "null_version": NULL_VERSION,
        "nulls": {
            k: {
                "low": nb.low,
                "high": nb.high,
                "true_test": list(nb.band_true_test),
                "permuted_test": list(nb.band_permuted_test),
            }
            for k, nb in nulls.items()
        },
        "pixels_per_trial": pix,
        "test_over_train": float(np.mean([len(s.test) / len(s.train) for s in splits])),
    }


def apply_null(cell: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """The cell's rows with the null bands of ``part``: each model's verdict again (its mean and corrected
    interval are the trained models'), and the pixel baseline judged by the same rule (its per-trial AUCs)."""
    from adaptrt.metrics.resampling import chance_verdict, corrected_interval

    rows = [r for r in cell["rows"] if r["model"] != "pixels"]
    for test_set, aucs in part["pixels_per_trial"].items():
        mean, lo, hi = corrected_interval(aucs, part["test_over_train"], bounds=(0.0, 1.0))
        rows.append({"model": "pixels", "test_set": test_set, "mean_auc": mean, "ci_low": lo, "ci_high": hi})
    for r in rows:
        band = part["nulls"][r["test_set"]]
        r["verdict"] = chance_verdict(r["mean_auc"], r["ci_low"], r["ci_high"], band["low"], band["high"])[0]
        r.update(
            strength=cell["strength"],
            seed=cell["seed"],
            null_low=band["low"],
            null_high=band["high"],
            null_true_test=f"[{band['true_test'][0]:.3f}, {band['true_test'][1]:.3f}]",
            null_permuted_test=f"[{band['permuted_test'][0]:.3f}, {band['permuted_test'][1]:.3f}]",
        )
    return {**cell, "rows": rows, **{k: v for k, v in part.items() if k != "pixels_per_trial"}}


def refresh_null(cell: dict[str, Any], cfg: SweepConfig, *, progress: bool) -> dict[str, Any]:
    """Recompute a cached cell's null bands (:data:`NULL_VERSION`): the cohort is simulated and prepared
    again (deterministic in its seed) and the splits drawn again as the study draws them."""
    import numpy as np

    from adaptrt.splits import grouped_splits

    rc = _study_config(cfg)
    (lesions, _), times = _prepared_cohort(cell["strength"], cell["seed"], cfg, rc, progress)
    y = np.array([d.label for d in lesions])
    if len(lesions) != cell["n_lesions"] or int(y.sum()) != cell["n_responders"]:
        raise RuntimeError(
            f"cell {_cell_name(cell['strength'], cell['seed'])}: the cohort changed since it ran"
        )
    groups = np.array([d.lesion.patient_id for d in lesions])
    splits = grouped_splits(y, groups, n_trials=rc.n_trials, test_size=rc.test_size, seed=rc.seed)
    t0 = time.perf_counter()
    part = _null_part(lesions, splits, rc)
    times["null_s"] = time.perf_counter() - t0
    return {**apply_null(cell, part), "refresh_times": times}


def run_cell(strength: float, seed: int, cfg: SweepConfig, *, progress: bool) -> dict[str, Any]:
    """Simulate one cohort, run the trials and the null band; return the cell's rows and timings."""
    from adaptrt.response.chance import auc_verdicts, cam_verdicts
    from adaptrt.response.study import run_trials

    rc = _study_config(cfg)
    (lesions, notes), times = _prepared_cohort(strength, seed, cfg, rc, progress)
    t0 = time.perf_counter()
    results = run_trials(lesions, rc, progress=progress)
    times["trials_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    part = _null_part(lesions, results.splits, rc)
    times["null_s"] = time.perf_counter() - t0
    names = {k: v for k, v in MODELS.items() if k != "pixels"}
    rows: list[dict[str, Any]] = []
    for test_set in ("mri2", "mri1"):
        for v in auc_verdicts(results.metric_rows, results.splits, None, names, test_set=test_set):
            rows.append({k: v[k] for k in ("model", "test_set", "mean_auc", "ci_low", "ci_high")})
    cams = [
        {
            "strength": strength,
            "seed": seed,
            "method": r["method"],
            "explains": r["explains"],
            "score": r["score"],
            "mean": r["mean"],
            "chance": r["chance"],
            "excess_ci_low": r["excess_ci_low"],
            "excess_ci_high": r["excess_ci_high"],
            "verdict": r["verdict"],
        }
        for r in cam_verdicts(results.cam_rows, results.splits, methods=tuple(CAMS))
    ]
    train_acc = [float(h["train_acc"]) for h in results.history if h.get("train_acc") is not None]
    cell = {
        "strength": strength,
        "seed": seed,
        "n_lesions": len(lesions),
        "n_responders": int(sum(d.label for d in lesions)),
        "excluded": len(notes),
        "trial0_final_train_accuracy": train_acc[-1] if train_acc else None,
        "times": times,
        "rows": rows,
        "cams": cams,
    }
    return apply_null(cell, part)


def summarise(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per strength, model and test set: mean AUC over seeds, range, and how many cohorts beat chance."""
    import numpy as np

    out = []
    keys = sorted({(r["strength"], r["model"], r["test_set"]) for c in cells for r in c["rows"]})
    for s, m, t in keys:
        rs = [r for c in cells for r in c["rows"] if (r["strength"], r["model"], r["test_set"]) == (s, m, t)]
        a = np.array([r["mean_auc"] for r in rs], float)
        out.append(
            {
                "strength": s,
                "model": MODELS.get(m, m),
                "test_set": t,
                "cohorts": len(rs),
                "mean_auc": float(np.nanmean(a)),
                "min_auc": float(np.nanmin(a)),
                "max_auc": float(np.nanmax(a)),
                "null_band_mean": f"[{np.mean([r['null_low'] for r in rs]):.2f}, "
                f"{np.mean([r['null_high'] for r in rs]):.2f}]",
                "above_chance": sum(r["verdict"] == "above chance" for r in rs),
                "at_chance": sum(r["verdict"] == "at chance" for r in rs),
                "below_chance": sum(r["verdict"] == "below chance" for r in rs),
            }
        )
    return out


def figure(cells: list[dict[str, Any]]) -> Any:
    """Test AUC (second and first MRI) and CAM localisation AUC against signature strength."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    strengths = sorted({c["strength"] for c in cells})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), sharey=True)
    colours = {"radiomics": "tab:blue", "gradients": "tab:orange", "cam": "tab:red", "pixels": "tab:gray"}
    for ax, test_set, title in (
        (axes[0], "mri2", "test AUC, second MRI (the paper's test)"),
        (axes[1], "mri1", "test AUC, first MRI of held-out lesions"),
    ):
        band = {
            s: [next(r for r in c["rows"] if r["test_set"] == test_set) for c in cells if c["strength"] == s]
            for s in strengths
        }
        lo = [np.mean([r["null_low"] for r in band[s]]) for s in strengths]
        hi = [np.mean([r["null_high"] for r in band[s]]) for s in strengths]
        ax.fill_between(strengths, lo, hi, color="0.85", label="90 % permutation null band (mean over seeds)")
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        for k, (m, name) in enumerate(MODELS.items()):
            pts = [
                (c["strength"], r["mean_auc"])
                for c in cells
                for r in c["rows"]
                if r["model"] == m and r["test_set"] == test_set
            ]
            if not pts:
                continue
            xs = np.array([p[0] for p in pts]) + (k - 1.5) * 0.04
            ax.scatter(xs, [p[1] for p in pts], s=14, color=colours[m], alpha=0.5)
            means = [np.nanmean([p[1] for p in pts if p[0] == s]) for s in strengths]
            ax.plot(
                strengths, means, "-o", color=colours[m], label=f"{name} (mean over seeds; dots: cohorts)"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("signature strength (0 = resistant tissue invisible)")
        ax.set_xticks(strengths)
    axes[0].set_ylabel("AUC (responder = positive class)")
    axes[0].legend(fontsize=7, loc="lower right")
    ax = axes[2]
    ax.axhline(0.5, color="0.5", lw=0.8, ls=":", label="chance (AUC 0.5)")
    for k, (m, name) in enumerate(CAMS.items()):
        pts = [
            (c["strength"], r["mean"])
            for c in cells
            for r in c["cams"]
            if r["method"] == m and r["explains"] == "non-response" and r["score"] == "auc"
        ]
        if not pts:
            continue
        xs = np.array([p[0] for p in pts]) + (k - 1) * 0.04
        ax.scatter(xs, [p[1] for p in pts], s=14, alpha=0.5, color=f"C{k + 4}")
        means = [np.nanmean([p[1] for p in pts if p[0] == s]) for s in strengths]
        ax.plot(strengths, means, "-o", color=f"C{k + 4}", label=f"{name}, CAM of the non-response class")
    ax.set_title(
        "CAM localisation AUC (non-response-class CAM inside vs outside\n"
        "the resistant sub-region; > 0.5: points at it)",
        fontsize=10,
    )
    ax.set_xlabel("signature strength")
    ax.set_xticks(strengths)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--strengths", default="0,0.5,1,2,4")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--permutations", type=int, default=50)
    parser.add_argument("--size-effect", type=float, default=None, help="simulator size_effect (default 0.8)")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    from adaptrt.errors import InputError
    from adaptrt.io.atomic import atomic_file, check_output_writable
    from adaptrt.report.run import RunFolder

    try:
        cfg = SweepConfig(
            strengths=tuple(float(s) for s in args.strengths.split(",")),
            seeds=tuple(int(s) for s in args.seeds.split(",")),
            trials=args.trials,
            epochs=args.epochs,
            permutations=args.permutations,
            size_effect=args.size_effect,
            workers=args.workers,
        )
    except ValueError as exc:
        print(f"error: --strengths / --seeds must be comma-separated numbers ({exc})", file=sys.stderr)
        return 2
    try:
        check_output_writable(args.out, overwrite=args.overwrite)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cache = args.out.with_name(args.out.name + ".cells")
    cache.mkdir(parents=True, exist_ok=True)
    tag = f"v2_t{cfg.trials}_e{cfg.epochs}_p{cfg.permutations}_se{cfg.size_effect}"
    cells = []
    started = time.perf_counter()
    for strength in cfg.strengths:
        for seed in cfg.seeds:
            path = cache / f"{_cell_name(strength, seed)}_{tag}.json"
            if path.exists():
                cell = json.loads(path.read_text())
                if cell.get("null_version") != NULL_VERSION:
                    t0 = time.perf_counter()
                    cell = refresh_null(cell, cfg, progress=args.progress)
                    with atomic_file(path, overwrite=True) as tmp:
                        tmp.write_text(json.dumps(cell, indent=1))
                    print(
                        f"{_cell_name(strength, seed)}: null bands recomputed ({time.perf_counter() - t0:.0f} s), "
                        f"trained models reused from {path}",
                        flush=True,
                    )
                else:
                    print(f"{_cell_name(strength, seed)}: reused {path}", flush=True)
                cells.append(cell)
                continue
            t0 = time.perf_counter()
            cell = run_cell(strength, seed, cfg, progress=args.progress)
            cell["wall_s"] = time.perf_counter() - t0
            with atomic_file(path, overwrite=True) as tmp:
                tmp.write_text(json.dumps(cell, indent=1))
            cells.append(cell)
            aucs = ", ".join(
                f"{r['model']} {r['mean_auc']:.2f} ({r['verdict']})"
                for r in cell["rows"]
                if r["test_set"] == "mri2"
            )
            t = cell["times"]
            print(
                f"{_cell_name(strength, seed)}: {cell['wall_s']:.0f} s (simulate {t['simulate_s']:.0f}, prepare "
                f"{t['prepare_s']:.0f}, trials {t['trials_s']:.0f}, null {t['null_s']:.0f}); null band "
                f"[{cell['rows'][0]['null_low']:.2f}, {cell['rows'][0]['null_high']:.2f}]; mri2 AUC: {aucs}",
                flush=True,
            )
    total = time.perf_counter() - started
    summary = summarise(cells)
    with RunFolder(
        args.out,
        command=" ".join(
            ["python benchmarks/response_sweep.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        config=cfg,
        seed=0,
        overwrite=args.overwrite,
        title="adaptrt response study: signature-strength sweep (issue 14)",
    ) as run:
        run.write_csv("results/sweep_cells.csv", [r for c in cells for r in c["rows"]])
        run.write_csv("results/sweep_cams.csv", [r for c in cells for r in c["cams"]])
        run.write_csv("results/sweep_summary.csv", summary)
        run.write_json(
            "results/sweep_cells.json",
            [{k: v for k, v in c.items() if k not in ("rows", "cams")} for c in cells],
        )
        png = run.save_figure(figure(cells), "sweep")
        sec = run.report.section("Signature-strength sweep")
        sec.text(
            f"{len(cfg.strengths)} strengths × {len(cfg.seeds)} cohort seeds; per cohort {cfg.trials} "
            f"patient-grouped 80/20 splits, the network trained {cfg.epochs} epochs (engine trainer), radiomics "
            f"without wavelets, null band from {cfg.permutations} label permutations on the same splits (per test "
            "set, the envelope of the nulls scored on the permuted and on the true test labels). "
            "Verdicts: above chance only when the mean AUC lies above the cohort's null band and its "
            "Nadeau–Bengio corrected interval excludes 0.5."
        )
        sec.figure(png, caption="Test AUC and CAM localisation AUC against the simulated signature strength.")
        sec.table(summary, caption="Per strength and model, over cohort seeds")
    per_cell = sum(c.get("wall_s", 0.0) for c in cells) / max(len(cells), 1)
    print(
        f"sweep: {len(cells)} cells in {total:.0f} s this run ({per_cell:.0f} s per computed cell); {args.out}"
    )
    for r in summary:
        print(
            f"  strength {r['strength']:g} {r['model']:>20} {r['test_set']}: mean AUC {r['mean_auc']:.2f} "
            f"[{r['min_auc']:.2f}, {r['max_auc']:.2f}] null {r['null_band_mean']} above/at/below "
            f"{r['above_chance']}/{r['at_chance']}/{r['below_chance']}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
