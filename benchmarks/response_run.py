"""Benchmark: ``adaptrt response run --profile paper`` end to end, as a user runs it (issue 14's goal: <= 900 s).

Run: ``python benchmarks/response_run.py [--seed 5] [--cohort DIR] [--trials N] [--workers W] [--keep DIR]``.

Simulates the default brain-metastasis cohort (:class:`adaptrt.simulate.metastases.MetastasisConfig`
defaults: 39 patients, 69 lesions) with ``--seed`` (5 by default: the cohort of the user's measurement in
issue 14) into a temporary folder, or reuses ``--cohort DIR`` (written there first when ``DIR/manifest.csv``
does not exist). Writing the cohort is not timed. Then it runs the real command

    adaptrt response run --profile paper --manifest DIR/manifest.csv --out RUN [--trials N] [--workers W]

as a subprocess and measures its wall time: the number the goal is about (Python start-up and imports
included). The parts are read from the run's ``results/timings.json`` (written by
:func:`adaptrt.response.run.run_response_study`): cohort check, lesion preparation, trials (networks,
feature models, network predictions and CAM scoring), permutation null band, final models, results and
report; "other" is the wall time not in any part (start-up, imports, rendering report.html).

``--trials N`` shortens the run for a smoke check (the goal is about the full 50 trials; the verdict line says
so). The full run takes 15+ minutes of both cores; do not run it next to other heavy work, which it would
slow and be slowed by.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 900.0
PAPER_TRIALS = 50
#: The top-level parts of ``results/timings.json`` (the ``trials: ...`` entries are parts of ``trials``).
TOP_PARTS = ("cohort check", "prepare lesions", "trials", "null band", "final models", "results and report")


def _adaptrt_command() -> list[str]:
    """The ``adaptrt`` command of this Python environment (the console script, else ``python -m adaptrt``)."""
    script = Path(sys.executable).parent / "adaptrt"
    if script.is_file():
        return [str(script)]
    found = shutil.which("adaptrt")
    return [found] if found else [sys.executable, "-m", "adaptrt"]


def _cohort(folder: Path, seed: int) -> tuple[Path, str]:
    from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort

    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest, "reused"
    t0 = time.perf_counter()
    write_metastasis_cohort(folder, config=MetastasisConfig(), seed=seed)
    return manifest, f"written in {time.perf_counter() - t0:.0f} s (seed {seed}, not timed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seed", type=int, default=5, help="seed of the simulated cohort (5)")
    parser.add_argument(
        "--cohort", type=Path, default=None, help="cohort folder to reuse (or to write and keep)"
    )
    parser.add_argument(
        "--trials", type=int, default=None, help=f"trials (default: the profile's {PAPER_TRIALS})"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: the CPU threads)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="write the run folder here and keep it")
    parser.add_argument("--progress", action="store_true", help="show the command's progress bars")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be >= 1")

    with tempfile.TemporaryDirectory(prefix="adaptrt-run-bench-") as tmp:
        folder = args.cohort if args.cohort is not None else Path(tmp) / "cohort"
        manifest, written = _cohort(folder, args.seed)
        out = args.keep if args.keep is not None else Path(tmp) / "run"
        command = [
            *_adaptrt_command(),
            "response",
            "run",
            "--profile",
            "paper",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
        ]
        if args.trials is not None:
            command += ["--trials", str(args.trials)]
        if args.workers is not None:
            command += ["--workers", str(args.workers)]
        if args.keep is not None and out.exists():
            command.append("--overwrite")
        if not args.progress:
            command.append("--quiet")
        print(f"cohort: {manifest} ({written})")
        print("command: " + " ".join(command), flush=True)
        t0 = time.perf_counter()
        done = subprocess.run(command, check=False)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            print(f"the command failed (exit {done.returncode}) after {wall:.0f} s")
            return 1
        timings = json.loads((out / "results" / "timings.json").read_text())
    seconds: dict[str, float] = timings["seconds"]
    print(
        f"machine: {os.cpu_count()} CPU threads; trainer {timings['trainer']}, workers "
        f"{timings['workers'] or 'default (CPU threads)'}, compile {timings['compile']}; "
        f"{timings['n_trials']} trials x {timings['epochs']} epochs"
    )
    print(f"{'part':42s} {'seconds':>8s}")
    for name, value in seconds.items():
        indent = "  " if name.startswith("trials: ") else ""
        print(f"{indent + name:42s} {value:8.1f}")
    other = wall - sum(seconds.get(k, 0.0) for k in TOP_PARTS)
    print(f"{'other (start-up, imports, report.html)':42s} {other:8.1f}")
    print(f"{'wall time of the command':42s} {wall:8.1f}")
    n_trials = int(timings["n_trials"])
    verdict = "meets" if wall <= GOAL_S else "misses"
    if n_trials == PAPER_TRIALS:
        print(f"goal: <= {GOAL_S:.0f} s end to end: {verdict} it ({wall:.0f} s)")
    else:
        print(
            f"goal: <= {GOAL_S:.0f} s end to end is about the full {PAPER_TRIALS} trials; this run had "
            f"{n_trials} (a smoke check): {wall:.0f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
