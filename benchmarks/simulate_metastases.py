"""Benchmark: write the default simulated brain-metastasis cohort (39 patients, 69 lesions, 3 time points).

Run: ``python benchmarks/simulate_metastases.py [--keep DIR] [--seed N]``. Prints the wall time, the peak
resident memory of the process (``resource.getrusage``), the size on disk and the cohort's response summary.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

from adaptrt.simulate.metastases import TIMEPOINTS, MetastasisConfig, write_metastasis_cohort


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in kilobytes on Linux, bytes on macOS
    return peak / 1e6 if sys.platform == "darwin" else peak / 1024.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="write here (must not exist) and keep it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = MetastasisConfig()
    with tempfile.TemporaryDirectory(prefix="adaptrt-bench-") as tmp:
        out = args.keep if args.keep is not None else Path(tmp) / "cohort"
        t0 = time.perf_counter()
        manifest = write_metastasis_cohort(out, config=cfg, seed=args.seed, progress=args.progress)
        seconds = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in manifest.parent.rglob("*") if f.is_file()) / 1e6
        with (manifest.parent / "truth" / "lesions.csv").open() as fh:
            rows = list(csv.DictReader(fh))
    n_resp = sum(r["responder"] == "True" for r in rows)
    vols = sorted(float(r["volume_mri1_mm3"]) for r in rows)
    print(
        f"metastases: {cfg.n_patients} patients, {len(rows)} lesions, {len(TIMEPOINTS)} timepoints: "
        f"{seconds:.1f} s, peak RSS {_peak_rss_mb():.0f} MB, {size_mb:.0f} MB on disk"
    )
    print(
        f"responders {n_resp}/{len(rows)} ({n_resp / len(rows):.0%}); GTV at mri1 {vols[0]:g} to {vols[-1]:g} mm³ "
        f"(median {vols[len(vols) // 2]:g})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
