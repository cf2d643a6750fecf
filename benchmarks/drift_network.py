"""Benchmark: Part II's diffusion U-Net (adaptrt.drift.unet): size, FLOPs, training throughput, DDIM sampling time.

Run: ``python benchmarks/drift_network.py [--device cpu|cuda] [--threads 2] [--widths 8,16,32 16,32,64]
[--heads shared,separate,decoupled] [--memory-format contiguous,channels_last] [--compile]``.

For each head variant, width choice and memory format, prints

* the parameter count;
* FLOPs per sample of one forward pass and of one training step (forward + backward), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; normalisation and
  activations are not counted);
* training throughput: samples/s of forward + backward + AdamW step at batch 64, 64×64 (best of
  ``--repeats`` timings of ``--steps`` steps, after warm-up steps), the achieved GFLOP/s, and the time of
  one ``paper``-profile model (5,000 iterations × 64, the issue's budget: <= 20 min on 2 CPU cores);
* the time of one 21-step DDIM sampling (eta = 0, no_grad, eval mode) of one lesion (batch 1) and of K = 16
  samples of one lesion in one batch (issue budgets: <= 0.1 s and <= 0.5 s on 2 CPU cores).

The machine's load average is printed before and after: on a shared 2-core VM other processes make the
figures slower (best-of-repeats reduces, but does not remove, the effect).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

PAPER_ITERATIONS = 5000
BATCH = 64


def _parse_widths(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _measure(
    model: Any, fwd: Any, device: Any, memory_format: Any, args: argparse.Namespace
) -> tuple[float, float, float, float, float]:
    """FLOPs per sample (forward, training step), training samples/s, DDIM seconds for batch 1 and batch K."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from adaptrt.drift.schedule import ddim_sample, make_schedule, q_sample, time_input

    schedule = make_schedule()
    s = args.size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4)
    x = torch.rand(BATCH, 1, s, s, device=device).contiguous(memory_format=memory_format)
    target = torch.rand(BATCH, 1, s, s, device=device)
    tt = torch.rand(BATCH, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def best_time(fn: Callable[[], object], repeats: int) -> float:
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    def loss_of(n: int) -> Any:
        image, drift = fwd(x[:n], tt[:n])
        loss = (image - target[:n]).square().mean()
        return loss if drift is None else loss + (drift - target[:n]).square().mean()

    with FlopCounterMode(display=False) as fc:
        model(x[:1], tt[:1])
    fwd_flops = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        model_loss = loss_of(1) if fwd is model else None
        if model_loss is not None:
            model_loss.backward()
    step_flops = fc.get_total_flops() if fwd is model else 3 * fwd_flops
    opt.zero_grad(set_to_none=True)

    def train() -> None:
        for _ in range(args.steps):
            loss = loss_of(BATCH)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    train()  # warm-up (and compilation)
    rate = BATCH / (best_time(train, args.repeats) / args.steps)

    model.eval()
    pre = torch.rand(1, 1, s, s, device=device)  # one lesion; K samples are K noisy copies of it

    def sample(b: int) -> None:
        lesion = pre.expand(b, -1, -1, -1)
        x_start = q_sample(lesion, schedule.T - 1, torch.randn_like(lesion), schedule, 0.2)
        with torch.no_grad():
            ddim_sample(
                lambda xt, t: fwd(xt.contiguous(memory_format=memory_format), time_input(t, schedule)),
                x_start,
                schedule.T - 1,
                schedule,
                noise_scale=0.2,
            )

    sample(1)
    sample(args.samples)
    one = best_time(lambda: sample(1), 2 * args.repeats)
    many = best_time(lambda: sample(args.samples), args.repeats)
    model.train()
    return fwd_flops, step_flops, rate, one, many


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default=default_device, help=f"({default_device})"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    parser.add_argument(
        "--widths", nargs="+", type=_parse_widths, default=[(8, 16, 32), (16, 32, 64), (32, 64, 128)]
    )
    parser.add_argument("--heads", default="shared,separate,decoupled", help="comma-separated variants")
    parser.add_argument("--memory-format", default="channels_last", help="contiguous and/or channels_last")
    parser.add_argument("--size", type=int, default=64, help="image size (64)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per repeat (3)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats; the best is printed (3)")
    parser.add_argument("--samples", type=int, default=16, help="K of the K-sample DDIM timing (16)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd training")
    args = parser.parse_args(argv)

    from adaptrt.drift.unet import DecoupledPair, DriftUNet, count_parameters

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    )
    print(f"device: {device.type} ({name}); torch {torch.__version__}; load average {os.getloadavg()}")
    print(
        f"training: batch {BATCH}, {args.size}×{args.size}, fwd + bwd + AdamW; DDIM: 21 steps, eta 0, no_grad"
    )
    header = (
        f"{'variant':<10} {'widths':<14} {'format':<22} {'params':>9} {'MFLOP fwd':>10} {'MFLOP step':>11} "
        f"{'samples/s':>10} {'GFLOP/s':>8} {'paper min':>10} {'DDIM b=1 s':>11} {'DDIM K s':>9}"
    )
    print(header)
    print("-" * len(header))
    for head in args.heads.split(","):
        for widths in args.widths:
            for fmt in args.memory_format.split(","):
                memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                model = DecoupledPair(widths) if head == "decoupled" else DriftUNet(widths, drift_head=head)
                model = model.to(device)
                model.to(memory_format=memory_format)  # type: ignore[call-overload]
                runs: list[tuple[str, Any]] = [(fmt, model)]
                if args.compile:
                    runs.append((fmt + "+compile", torch.compile(model)))
                for label, fwd in runs:
                    fwd_flops, step_flops, rate, one, many = _measure(model, fwd, device, memory_format, args)
                    print(
                        f"{head:<10} {','.join(map(str, widths)):<14} {label:<22} {count_parameters(model):>9,} "
                        f"{fwd_flops / 1e6:>10.1f} {step_flops / 1e6:>11.1f} {rate:>10.1f} "
                        f"{step_flops * rate / 1e9:>8.1f} {PAPER_ITERATIONS * BATCH / rate / 60:>10.1f} "
                        f"{one:>11.3f} {many:>9.3f}",
                        flush=True,
                    )
    print(f"K = {args.samples} samples in one batch; load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
