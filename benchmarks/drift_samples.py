"""Benchmark: K DDIM samples of one lesion (issue 11) and the cost of the quick profile's analyses.

Run: ``python benchmarks/drift_samples.py [--device cpu|cuda] [--threads 2] [--k 16] [--repeats 5]``.

Prints (best of ``--repeats``, after one warm-up):

* K = 16 samples of one lesion through :func:`adaptrt.drift.uncertainty.sample_stats` (one batch of K copies,
  21 DDIM steps, eta 0) with a fitted Method-2 model of the paper profile's widths (8, 16, 32) at 64 × 64:
  one slice and the lesion's three slices (issue budget: <= 0.5 s for one lesion on 2 CPU cores);
* the quick profile's analysis cost on a PULSAR-sized cohort (69 lesions × 3 slices, 3 folds): the time of one
  analysis network's training (quick widths, 200 iterations × 32 at 32 × 32) and of its sampling (K samples
  of the validation and held-out slices, then under both labels), i.e. what the demo's drift section gains
  (budget: <= 60 s on 2 CPU cores).

Weights are from a few training steps: sampling time does not depend on how well a network is trained.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Literal

import numpy as np


def _best(fn: object, repeats: int) -> float:
    assert callable(fn)
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch threads (1 is faster when other processes load the cores)",
    )
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import torch

    from adaptrt.drift.methods import DriftModel
    from adaptrt.drift.study import drift_config
    from adaptrt.drift.uncertainty import sample_stats

    torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    rng = np.random.default_rng(0)
    profiles: tuple[tuple[Literal["paper", "quick"], int], ...] = (("paper", 64), ("quick", 32))
    for profile, size in profiles:
        cfg = drift_config(profile)
        m2 = next(v for v in cfg.variants if v.name == "method2").model
        import dataclasses

        m2 = dataclasses.replace(m2, iterations=2, batch_size=8)
        pre = rng.uniform(0, 1, (16, size, size)).astype(np.float32)
        model = DriftModel(m2, seed=0, device=args.device).fit(pre, pre)
        for n_slices in (1, 3):
            t = _best(lambda n=n_slices, m=model, x=pre: sample_stats(m, x[:n], args.k, seed=1), args.repeats)
            print(
                f"{profile:5s} widths {m2.widths} {size}x{size}: K = {args.k} samples of {n_slices} slice(s) "
                f"(one batch of {args.k * n_slices}, {m2.T} DDIM steps): {t:.3f} s"
            )
    # the quick profile's analysis cost on a PULSAR-sized cohort
    cfg = drift_config("quick")
    an = cfg.analysis
    assert an is not None
    m2 = next(v for v in cfg.variants if v.name == "method2").model
    m2 = dataclasses.replace(m2, n_classes=2, label_dropout=an.label_dropout)
    n_slices, folds = 69 * 3, cfg.folds
    train = rng.uniform(0, 1, (n_slices * 4 * 2 // 3, 32, 32)).astype(np.float32)
    t0 = time.perf_counter()
    model = DriftModel(m2, seed=0, device=args.device).fit(
        train, train, labels=rng.integers(0, 3, len(train))
    )
    t_train = time.perf_counter() - t0
    held = rng.uniform(0, 1, (n_slices // folds, 32, 32)).astype(np.float32)
    val = held[: max(1, len(held) // 4)]

    def fold_sampling() -> None:
        sample_stats(model, val, an.samples, seed=1)
        sample_stats(model, held, an.samples, seed=2)
        kc = an.counterfactual_samples or an.samples
        sample_stats(model, held, kc, seed=3, label=0)
        sample_stats(model, held, kc, seed=3, label=1)

    t_sample = _best(fold_sampling, 1)
    print(
        f"quick analysis per fold: training {t_train:.1f} s ({m2.iterations} iterations x {m2.batch_size}), "
        f"sampling {t_sample:.1f} s (K = {an.samples}, {len(val)} validation + {len(held)} held-out slices, "
        f"unconditional, then K = {an.counterfactual_samples or an.samples} under each label); "
        f"{folds} folds: about {folds * (t_train + t_sample):.0f} s"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
