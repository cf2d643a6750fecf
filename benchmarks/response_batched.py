"""Benchmark: one training epoch of Part I's network, the plain loop vs :func:`adaptrt.response.batched.fit_many`.

Run: ``python benchmarks/response_batched.py [--trials T] [--epochs E] [--threads 1,2] [--samples N]``.

For each torch thread count, times ``E`` epochs of :meth:`AutoencoderClassifier.fit` (one model) and of
``fit_many`` (``T`` models at once), each on ``N`` synthetic 64×64 samples per model (default 414, the paper
protocol's training set), after one untimed warm-up epoch, and extrapolates to the paper protocol
(50 trials × 150 epochs), e.g.::

    threads 2  plain: 0.80 s/epoch/trial -> 50x150: 6000 s   batched(T=4): 0.85 s/epoch -> 1594 s

No validation set (the study evaluates one after every epoch: a forward pass over a few dozen samples).
With ``--profile`` it also prints the torch.profiler table (top operators by self CPU time) of one epoch of
each. Timings on a shared 2-core VM vary by +-15 % between runs; glibc returning freed 16 MB activation
buffers to the OS (page faults on the next step) costs a further 10-30 %; ``MALLOC_TRIM_THRESHOLD_=
100000000000 MALLOC_MMAP_THRESHOLD_=33554432`` in the environment avoids it.
"""

from __future__ import annotations

import argparse
import sys
import time

PAPER_TRIALS = 50
PAPER_EPOCHS = 150


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="models trained at once by fit_many (4)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (2)")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (1,2)")
    parser.add_argument("--samples", type=int, default=414, help="training samples per model (414)")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one epoch")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from adaptrt.response.batched import TrialData, fit_many
    from adaptrt.response.train import AutoencoderClassifier, TrainConfig

    rng = np.random.default_rng(0)
    n = args.samples
    data = [
        TrialData(rng.random((n, 64, 64), dtype=np.float32), rng.random((n, 16, 16)) < 0.3, np.arange(n) % 2)
        for _ in range(args.trials)
    ]
    seeds = list(range(args.trials))
    one = TrainConfig(epochs=1, device="cpu")
    timed = TrainConfig(epochs=args.epochs, device="cpu")

    def plain(cfg: TrainConfig) -> None:
        d = data[0]
        AutoencoderClassifier(cfg, seed=0).fit(d.x, d.mask, d.y)

    def batched(cfg: TrainConfig) -> None:
        fit_many(cfg, data, seeds)

    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        plain(one)
        batched(one)
        t0 = time.perf_counter()
        plain(timed)
        t_plain = (time.perf_counter() - t0) / args.epochs
        t0 = time.perf_counter()
        batched(timed)
        t_batched = (time.perf_counter() - t0) / args.epochs
        full = PAPER_TRIALS * PAPER_EPOCHS
        print(
            f"threads {threads}  plain: {t_plain:.2f} s/epoch/trial -> {PAPER_TRIALS}x{PAPER_EPOCHS}: "
            f"{t_plain * full:.0f} s   batched(T={args.trials}): {t_batched:.2f} s/epoch "
            f"({t_batched / args.trials:.3f} s/epoch/trial) -> {t_batched / args.trials * full:.0f} s   "
            f"speed-up {t_plain * args.trials / t_batched:.2f}x",
            flush=True,
        )
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            for name, run in (("plain", plain), ("batched", batched)):
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    run(one)
                print(f"--- {name}, threads {threads}")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    sys.exit(main())
