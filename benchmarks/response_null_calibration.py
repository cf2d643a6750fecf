"""Benchmark: is the response study's chance verdict calibrated on negative-control cohorts? (issue 14)

Run: ``python benchmarks/response_null_calibration.py --out DIR [--seeds 0-11] [--trials 50]
[--permutations 50]``.

For every cohort seed it simulates a default brain-metastasis cohort with **nothing** in the first MRI that
predicts response (``signature_strength = 0`` and ``size_effect = 0``: the negative control of
docs/simulators.md), prepares its lesions (gradient features and the pixel crops only: no radiomics, no
network), draws the study's patient-grouped splits (``--trials``, as ``adaptrt response run`` draws them) and
computes the permutation null bands of :mod:`adaptrt.response.chance` (``--permutations``; the envelope of the
nulls scored on the permuted and on the true test labels). The two cheap models are then judged with the
true labels exactly as Table 1 judges a model (mean AUC over the trials, Nadeau–Bengio corrected interval,
the conservative rule of :func:`adaptrt.metrics.resampling.chance_verdict`), and their one-sided permutation
p-values are given under each construction (the share of null means at or below the observed mean).

Under the negative control every verdict other than "at chance" is a false one. Over many cohorts the
share of "below chance" (and of "above chance") verdicts per model estimates the rule's false-verdict rate
(nominally at most 5 % per side for the band alone; the interval condition makes it lower), and the
p-values under the exact construction (permuted test labels, first MRI) should be uniform. One cohort
outside its band is what this rate predicts for some cohorts; many would mean the null is too narrow.

What is written (``--out``, a run folder; nothing is overwritten without ``--overwrite``):
``results/calibration.csv`` (one row per cohort, cheap model and test set) and ``report.html``. The cost is
printed: about 1.5-2 min per cohort on 2 CPU cores (simulation 25 s, preparation 20 s, null 30-60 s).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """The benchmark's settings (saved next to its outputs)."""

    seeds: tuple[int, ...]
    trials: int
    permutations: int
    workers: int | None


def _seeds(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return tuple(out)


def cohort_rows(seed: int, cfg: CalibrationConfig) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One negative-control cohort: the cheap models' verdicts and p-values per test set."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from adaptrt.io.manifest import read_manifest
    from adaptrt.metrics.resampling import chance_verdict, corrected_interval
    from adaptrt.response.chance import PIXEL_MODEL, permutation_nulls, pixel_features, pixel_model
    from adaptrt.response.features import feature_model, features_table
    from adaptrt.response.study import prepare_cohort, response_config
    from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort
    from adaptrt.splits import grouped_splits

    rc = response_config("paper", models=("gradients",), n_trials=cfg.trials, workers=cfg.workers)
    sim = dataclasses.replace(MetastasisConfig(signature_strength=0.0), size_effect=0.0)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="adaptrt_calibration_") as tmp:
        t0 = time.perf_counter()
        manifest = write_metastasis_cohort(Path(tmp) / "cohort", config=sim, seed=seed)
        times["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        lesions, _ = prepare_cohort(read_manifest(manifest), rc, progress=False)
        times["prepare_s"] = time.perf_counter() - t0
    y = np.array([d.label for d in lesions], dtype=np.int64)
    groups = np.array([d.lesion.patient_id for d in lesions])
    splits = grouped_splits(y, groups, n_trials=rc.n_trials, test_size=rc.test_size, seed=rc.seed)
    g1, names = features_table([d.features["gradients"]["mri1"] for d in lesions])
    g2, _ = features_table([d.features["gradients"]["mri2"] for d in lesions], names)
    p1 = pixel_features([d.test_mri1.image for d in lesions])
    p2 = pixel_features([d.test_mri2.image for d in lesions])
    tables = {"gradients": (g1, {"mri2": g2, "mri1": g1}), PIXEL_MODEL: (p1, {"mri2": p2, "mri1": p1})}
    t0 = time.perf_counter()
    nulls = permutation_nulls(
        tables,
        y,
        splits,
        n_permutations=cfg.permutations,
        seed=rc.seed,
        n_jobs=cfg.workers or os.cpu_count() or 1,
    )
    times["null_s"] = time.perf_counter() - t0
    ratio = float(np.mean([len(s.test) / len(s.train) for s in splits]))
    rows = []
    for model, (xa, tests) in tables.items():
        per_trial: dict[str, list[float]] = {k: [] for k in tests}
        for s in splits:
            est = (
                pixel_model() if model == PIXEL_MODEL else feature_model("gradients", seed=0, profile="paper")
            )
            est.fit(xa[s.train], y[s.train])
            for k, xt in tests.items():
                per_trial[k].append(float(roc_auc_score(y[s.test], est.predict_proba(xt[s.test])[:, 1])))
        for test_set, aucs in per_trial.items():
            nb = nulls[test_set]
            mean, lo, hi = corrected_interval(aucs, ratio, bounds=(0.0, 1.0))
            t_vals = nb.values[model][np.isfinite(nb.values[model])]
            p_vals = nb.values_permuted_test[model][np.isfinite(nb.values_permuted_test[model])]
            rows.append(
                {
                    "seed": seed,
                    "model": model,
                    "test_set": test_set,
                    "n_lesions": len(lesions),
                    "n_responders": int(y.sum()),
                    "mean_auc": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "null_low": nb.low,
                    "null_high": nb.high,
                    "band_true_test": f"[{nb.band_true_test[0]:.3f}, {nb.band_true_test[1]:.3f}]",
                    "band_permuted_test": f"[{nb.band_permuted_test[0]:.3f}, {nb.band_permuted_test[1]:.3f}]",
                    "p_low_true_test": float(np.mean(t_vals <= mean)),
                    "p_low_permuted_test": float(np.mean(p_vals <= mean)),
                    "verdict": chance_verdict(mean, lo, hi, nb.low, nb.high)[0],
                }
            )
    return rows, times


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and test set: how many cohorts got each verdict, and the p-values' tails."""
    import numpy as np

    out = []
    for model, test_set in sorted({(r["model"], r["test_set"]) for r in rows}):
        rs = [r for r in rows if (r["model"], r["test_set"]) == (model, test_set)]
        p = np.array([r["p_low_permuted_test"] for r in rs])
        out.append(
            {
                "model": model,
                "test_set": test_set,
                "cohorts": len(rs),
                "mean_auc": float(np.mean([r["mean_auc"] for r in rs])),
                "below_chance": sum(r["verdict"] == "below chance" for r in rs),
                "at_chance": sum(r["verdict"] == "at chance" for r in rs),
                "above_chance": sum(r["verdict"] == "above chance" for r in rs),
                "p_low_permuted_test_le_0.05": int(np.sum(p <= 0.05)),
                "p_low_permuted_test_ge_0.95": int(np.sum(p >= 0.95)),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="run folder to write (must not exist)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seeds", default="0-11", help="cohort seeds: e.g. 0-11 or 0,3,5")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--permutations", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    from adaptrt.errors import InputError
    from adaptrt.io.atomic import check_output_writable
    from adaptrt.report.run import RunFolder

    try:
        cfg = CalibrationConfig(_seeds(args.seeds), args.trials, args.permutations, args.workers)
    except ValueError as exc:
        print(f"error: --seeds must be comma-separated integers or ranges a-b ({exc})", file=sys.stderr)
        return 2
    try:
        check_output_writable(args.out, overwrite=args.overwrite)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        cohort, times = cohort_rows(seed, cfg)
        rows.extend(cohort)
        print(
            f"seed {seed}: {time.perf_counter() - t0:.0f} s (simulate {times['simulate_s']:.0f}, prepare "
            f"{times['prepare_s']:.0f}, null {times['null_s']:.0f}); "
            + "; ".join(
                f"{r['model']} {r['test_set']} {r['mean_auc']:.2f} [{r['null_low']:.2f}, {r['null_high']:.2f}] "
                f"p {r['p_low_permuted_test']:.2f} {r['verdict']}"
                for r in cohort
            ),
            flush=True,
        )
    summary = summarise(rows)
    with RunFolder(
        args.out,
        command=" ".join(
            ["python benchmarks/response_null_calibration.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        config=cfg,
        seed=0,
        overwrite=args.overwrite,
        title="adaptrt response study: calibration of the chance verdict on negative-control cohorts",
    ) as run:
        run.write_csv("results/calibration.csv", rows)
        run.write_csv("results/calibration_summary.csv", summary)
        sec = run.report.section("Calibration of the chance verdict (negative control)")
        sec.text(
            f"{len(cfg.seeds)} cohorts with signature strength 0 and size effect 0 (nothing in the first MRI "
            f"predicts response); per cohort {cfg.trials} patient-grouped splits and {cfg.permutations} label "
            "permutations. Every verdict other than 'at chance' is a false one here."
        )
        sec.table(summary, caption="Per cheap model and test set, over cohorts")
        sec.table(rows, caption="Per cohort")
    print(f"calibration: {len(cfg.seeds)} cohorts in {time.perf_counter() - started:.0f} s; {args.out}")
    for r in summary:
        print(
            f"  {r['model']:>9} {r['test_set']}: mean AUC {r['mean_auc']:.2f}; below/at/above chance "
            f"{r['below_chance']}/{r['at_chance']}/{r['above_chance']}; exact p <= 0.05: "
            f"{r['p_low_permuted_test_le_0.05']}, >= 0.95: {r['p_low_permuted_test_ge_0.95']}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
