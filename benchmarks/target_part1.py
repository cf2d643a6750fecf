"""Benchmark of the target study, part 1: wall time of the whole analysis and peak memory.

Usage::

    python benchmarks/target_part1.py [--patients 30] [--profile quick|paper] [--manifest M] [--jobs -1]

Simulates the default glioblastoma cohort (3 mm, seed 0) into a temporary folder unless ``--manifest`` is
given (the simulation is not timed), then times ``run_target_study`` (loading and checks, recurrence pattern,
voxel categories and tests, the six cross-validated forests with permutation importance, figures, report)
and prints e.g. ``target part 1 (quick, 30 patients): 34.0 s, peak RSS 310 MB``. Goals (issue 12): the 30-patient
cohort in <= 90 s on 2 cores; 100 patients in <= 4 GiB peak.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def main(argv: list[str] | None = None) -> int:
    from adaptrt.simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort
    from adaptrt.target.run import run_target_study
    from adaptrt.target.study import target_config

    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--profile", choices=["quick", "paper"], default="quick")
    ap.add_argument("--manifest", type=Path, default=None, help="an existing cohort (default: simulate one)")
    ap.add_argument("--jobs", type=int, default=-1, help="n_jobs of the forests (default -1: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            t0 = time.perf_counter()
            manifest = write_glioblastoma_cohort(
                Path(tmp) / "gbm", config=GlioblastomaConfig(n_patients=args.patients), seed=args.seed
            )
            print(f"simulated {args.patients} patients in {time.perf_counter() - t0:.1f} s (not counted)")
        rss_before = _peak_rss_mb()
        cfg = target_config(args.profile, seed=args.seed, n_jobs=args.jobs, dl=False)  # part 1 only
        t0 = time.perf_counter()
        out = run_target_study(manifest, Path(tmp) / "run", cfg, progress=False)
        elapsed = time.perf_counter() - t0
        n = sum(1 for _ in (out / "results" / "patients.csv").open()) - 1
        print(
            f"target part 1 ({args.profile}, {n} patients): {elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB "
            f"(before the study: {rss_before:.0f} MB; the simulation's peak is included when it ran here)"
        )
        forests = (out / "results" / "forests.csv").read_text().splitlines()
        print("\n".join(forests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
