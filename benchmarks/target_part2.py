"""Speed and memory of the target study's part 2 (the DL CTV), printed.

* inference: one patient at 3 mm (a default simulated patient, cropped to the brain's box) through the
  ``paper``-width network (48 base features); the issue's goal is <= 2 s on 2 CPU cores;
* training: seconds per training step (one patient, batch 1, augmentation + forward + backward + Ranger) and
  per epoch (``--train-patients`` steps + validation of ``--val-patients``) for the ``quick`` (4 features) and
  ``paper`` (48) widths, with the peak memory (CPU: the process's maximum resident set; CUDA: the peak
  allocated by torch);
* ``--quick-study N``: the whole quick part 2 (:func:`adaptrt.target.study.run_dl_study`) on an N-patient
  default cohort (the demo's goal: <= 3 min on 2 CPU cores).

Usage: ``python benchmarks/target_part2.py [--device cpu|cuda] [--threads 2] [--quick-study 30]``
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any


def _cohort(n: int, folder: Path) -> list[Any]:
    from adaptrt.io.manifest import read_glioblastoma_manifest
    from adaptrt.simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort
    from adaptrt.target.data import iter_patients
    from adaptrt.target.dl import make_sample

    write_glioblastoma_cohort(folder, config=GlioblastomaConfig(n_patients=n), seed=0)
    cohort = read_glioblastoma_manifest(folder / "manifest.csv")
    return [make_sample(v) for v, _ in iter_patients(cohort) if v is not None]


def _peak(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (CUDA peak allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process max RSS)"


def main() -> None:
    import torch

    from adaptrt.target.dl import DLConfig, predict_probability, resolve_device, train_model
    from adaptrt.target.unet3d import UNet3D

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-patients", type=int, default=4)
    ap.add_argument("--val-patients", type=int, default=1)
    ap.add_argument("--quick-study", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.train_patients + args.val_patients, 2)
        samples = _cohort(n, Path(tmp) / "cohort")
        s = samples[0]
        print(f"patient crop (padded) {s.shape} at {s.spacing_mm} mm, {len(s.channels)} channels")

        net = UNet3D(6, 48).to(device).eval()
        predict_probability(net, s, device)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            predict_probability(net, s, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        goal = "meets" if min(times) <= 2.0 else "misses"
        print(
            f"inference, paper width (48): best {min(times):.2f} s, all {[round(t, 2) for t in times]} "
            f"({goal} the 2 s goal on this machine)"
        )

        for name, feats in (("quick", 4), ("paper", 48)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            cfg = DLConfig(base_features=feats, epochs=2, device=str(device), learning_rate=1e-4)
            tr, va = samples[: args.train_patients], samples[args.train_patients : n]
            t0 = time.perf_counter()
            m = train_model(tr, va, cfg)
            total = time.perf_counter() - t0
            ep = m.history[-1].seconds  # the second epoch (the first includes one-off set-up)
            print(
                f"training, {name} width ({feats}): {ep:.2f} s per epoch of {len(tr)} patients + {len(va)} "
                f"validation ({ep / len(tr):.2f} s per patient-step incl. validation share); "
                f"2 epochs {total:.1f} s; peak memory {_peak(device)}"
            )

        if args.quick_study:
            from adaptrt.target.study import run_dl_study, target_config

            study = _cohort(args.quick_study, Path(tmp) / "study")
            cfg = target_config("quick", dl_device=str(device))
            t0 = time.perf_counter()
            res = run_dl_study(study, cfg)
            print(
                f"whole quick part 2 on {len(study)} patients: {time.perf_counter() - t0:.0f} s "
                f"(goal <= 180 s on 2 CPU cores); {len(res.split['test'])} test patients"
            )


if __name__ == "__main__":
    main()
