"""Benchmark of the glioblastoma cohort simulator: wall time, peak RSS, recurrence pattern and TTP.

Usage::

    python benchmarks/simulate_glioblastoma.py [--patients 30] [--seed 0] [--out DIR]

Writes the cohort (NIfTI + manifest + truth) to a temporary folder unless ``--out`` is given, and prints e.g.
``glioblastoma: 30 patients: 38.0 s, peak RSS 450 MB`` followed by the cohort's recurrence-pattern
percentages (from ``truth/truth.csv``), the TTP median / split, and the patients per recurrence zone and per
progression type next to the paper's (the classes of ``adaptrt.target.pattern``, as ``adaptrt target run``
prints them in ``pattern_vs_paper.csv``).
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptrt.simulate.glioblastoma import (
    GlioblastomaConfig,
    RecurrencePattern,
    summarise_recurrence,
    write_glioblastoma_cohort,
)
from adaptrt.target.pattern import PAPER_PATTERN, PAPER_TYPES


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out", type=Path, default=None, help="keep the cohort here (default: a temporary folder)"
    )
    args = ap.parse_args(argv)
    cfg = GlioblastomaConfig(n_patients=args.patients)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out if args.out is not None else Path(tmp) / "gbm"
        t0 = time.perf_counter()
        manifest = write_glioblastoma_cohort(out, config=cfg, seed=args.seed, overwrite=args.out is not None)
        elapsed = time.perf_counter() - t0
        with (manifest.parent / "truth" / "truth.csv").open(newline="") as fh:
            truth = list(csv.DictReader(fh))
    print(f"glioblastoma: {args.patients} patients: {elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB")
    pats = [
        RecurrencePattern(
            n_new_voxels=round(float(r["new_lesion_ml"]) * 1000.0 / cfg.voxel_mm**3),
            new_volume_ml=float(r["new_lesion_ml"]),
            inside_percent=float(r["inside_t2l_percent"]),
            margin_percent=float(r["margin_percent"]),
            beyond_percent=float(r["beyond_margin_percent"]),
            category=r["recurrence_category"],  # type: ignore[arg-type]
        )
        for r in truth
    ]
    s = summarise_recurrence(pats)
    print(
        "recurrence pattern (new voxels, pooled): "
        f"inside T2L {s['voxels_inside_percent']:.1f} %, T2L..2 cm {s['voxels_margin_percent']:.1f} %, "
        f"beyond 2 cm {s['voxels_beyond_percent']:.1f} %"
    )
    print(
        "recurrence pattern (mean of patients):   "
        f"inside T2L {s['mean_inside_percent']:.1f} %, T2L..2 cm {s['mean_margin_percent']:.1f} %, "
        f"beyond 2 cm {s['mean_beyond_percent']:.1f} %"
    )
    print(
        "patients by zone (>= 10 % of new voxels beyond / within the margin): "
        f"inside {s['patients_inside_percent']:.0f} %, margin {s['patients_margin_percent']:.0f} %, "
        f"beyond {s['patients_beyond_percent']:.0f} %"
    )
    ttp = np.array([float(r["ttp_months"]) for r in truth])
    arms = np.array([r["treatment"] for r in truth])
    med = float(np.median(ttp))
    print(
        f"TTP months: median {med:.1f} (range {ttp.min():.1f}-{ttp.max():.1f}); "
        f"< 7 months: {int((ttp < 7).sum())}, >= 7 months: {int((ttp >= 7).sum())}; "
        f"median soc {np.median(ttp[arms == 'soc']):.1f}, "
        f"antiangiogenic {np.median(ttp[arms == 'antiangiogenic']):.1f}; "
        f"censored {sum(r['progressed'] != 'true' for r in truth)}"
    )
    kinds = [r["progression_type"] for r in truth]
    print(
        "progression type: "
        + ", ".join(f"{k} {kinds.count(k)}" for k in ("cel", "t2l", "both"))
        + "; resection: "
        + ", ".join(
            f"{k} {sum(r['extent_of_resection'] == k for r in truth)}" for k in ("gtr", "str", "biopsy")
        )
    )
    # the same classes as the target study's pattern_vs_paper (adaptrt.target.pattern: furthest zone holding
    # >= 10 % of the new voxels; Table 1 types with 1 mL per kind for "both")
    n_paper = sum(sum(v.values()) for v in PAPER_PATTERN.values())
    cats = [p.category for p in pats if p.n_new_voxels > 0]
    print(f"patients by zone, this cohort (n={len(cats)}) vs the paper (n={n_paper}):")
    for zone, label in (("inside", "inside T2L"), ("margin", "T2L to 2 cm"), ("beyond", "beyond 2 cm")):
        k, paper = cats.count(zone), sum(PAPER_PATTERN[zone].values())
        print(
            f"  {label:<12} {k:3d} = {100 * k / max(len(cats), 1):3.0f} %   paper {paper:3d} = "
            f"{100 * paper / n_paper:3.0f} %"
        )
    print(f"progression type, this cohort (n={len(kinds)}) vs the paper's Table 1 (n={n_paper}):")
    for kind, label in (("cel", "CEL"), ("t2l", "T2L"), ("both", "both")):
        k, paper = kinds.count(kind), sum(PAPER_TYPES[kind].values())
        print(
            f"  {label:<12} {k:3d} = {100 * k / max(len(kinds), 1):3.0f} %   paper {paper:3d} = "
            f"{100 * paper / n_paper:3.0f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
