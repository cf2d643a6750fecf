"""Benchmark: the response study's paper protocol (Part I): 50 trials x 150 epochs on 414 augmented samples.

Run: ``python benchmarks/response_protocol.py [--cohort DIR] [--trials N] [--epochs E] [--models LIST]``.

Writes the default simulated brain-metastasis cohort (:class:`adaptrt.simulate.metastases.MetastasisConfig`
defaults: 39 patients, 69 lesions; seed 0) to a temporary folder, or reuses ``--cohort DIR`` (written there
first when ``DIR/manifest.csv`` does not exist), prepares it with the ``paper`` profile (one slice x the six
Part I rotations: 69 x 6 = 414 training samples when every lesion is usable) and times
:func:`adaptrt.response.study.run_trials` once per model, on the same splits.

``--trials`` / ``--epochs`` time a subset; the full-protocol figure is then extrapolated (seconds per trial x
50, and for the networks x 150 / epochs) and labelled ``[extrapolated]``; with neither it is ``[measured]``.
The extrapolation scales a network's whole trial time with the epochs, including the epoch-independent part
(data, prediction and, for ``cam``, the CAMs), so with few epochs it overestimates; every model first runs
one untimed one-epoch trial so that first-call costs (imports, thread pools) are not extrapolated. The
ablation ``cam_sequential`` trains ``epochs`` autoencoder + ``epochs`` classifier epochs.

``--equivalence`` times nothing: it trains the ``cam`` network of the first ``--trials`` splits (give e.g.
``--trials 2``) for ``--epochs`` epochs three ways with the same seeds: with ``--trainer`` (default: the
paper profile's engine), with the plain loop (one ``fit`` per trial, torch's threads) and with the plain loop
on one thread. The last pair is the reference for run-to-run noise: the same loop, its sums taken in another
order. It prints, per pair, the largest difference of Table 1's per-trial metrics (second-MRI test set), of
the test lesions' probabilities and of trial 0's learned weights, and the metrics' spread over trials.

The same code path runs on a GPU when torch sees one (``TrainConfig.device = "auto"``); the figure is printed
for the device it ran on. Preparing the cohort (radiomics with wavelets of 2 x 69 GTVs) is timed separately
and is not part of the figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAPER_TRIALS = 50
PAPER_EPOCHS = 150


def _device_text(device: str) -> str:
    import torch

    from adaptrt.response.train import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _native_text() -> str:
    from adaptrt.response.native import NativeUnavailable, layer1

    try:
        return f"native first block ({layer1().path.name})"
    except NativeUnavailable as exc:
        return f"first block as a matrix product (native kernel unavailable: {exc})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--cohort", type=Path, default=None, help="cohort folder to reuse (or to write and keep)"
    )
    parser.add_argument("--trials", type=int, default=PAPER_TRIALS, help=f"trials to time ({PAPER_TRIALS})")
    parser.add_argument(
        "--epochs", type=int, default=PAPER_EPOCHS, help=f"epochs per network ({PAPER_EPOCHS})"
    )
    parser.add_argument(
        "--models",
        default="radiomics,gradients,cam",
        help="comma-separated models (default: the paper's three)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    parser.add_argument(
        "--trainer",
        choices=("engine", "batched", "plain"),
        default="engine",
        help="engine (fit_fast, the paper profile's), batched (fit_many) or plain (one fit per trial)",
    )
    parser.add_argument(
        "--batch-trials", type=int, default=4, help="trials trained together by --trainer batched (4)"
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes of --trainer engine (torch's threads)"
    )
    parser.add_argument(
        "--equivalence",
        action="store_true",
        help="compare --trainer against the plain loop on the same seeds instead of timing",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.epochs < 1:
        parser.error("--trials and --epochs must be >= 1")

    import torch

    from adaptrt.io.manifest import read_manifest
    from adaptrt.response.study import NETWORK_MODELS, prepare_cohort, response_config, run_trials
    from adaptrt.simulate.metastases import MetastasisConfig, write_metastasis_cohort

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    base = response_config("paper", seed=args.seed, models=models)
    config = dataclasses.replace(
        base,
        n_trials=args.trials,
        train=dataclasses.replace(base.train, epochs=args.epochs, device=args.device),
        fit_final=False,
        trainer=args.trainer,
        batch_trials=args.batch_trials,
        workers=args.workers,
    )
    device = _device_text(args.device)

    with tempfile.TemporaryDirectory(prefix="adaptrt-bench-") as tmp:
        folder = args.cohort if args.cohort is not None else Path(tmp) / "cohort"
        manifest = folder / "manifest.csv"
        t0 = time.perf_counter()
        reused = manifest.is_file()
        if not reused:
            write_metastasis_cohort(folder, config=MetastasisConfig(), seed=0, progress=args.progress)
        written = "reused" if reused else f"written in {time.perf_counter() - t0:.1f} s"
        t0 = time.perf_counter()
        lesions, notes = prepare_cohort(read_manifest(manifest), config, progress=args.progress)
        t_prep = time.perf_counter() - t0
    n_samples = sum(len(d.train) for d in lesions)
    print(f"device: {device}; torch {torch.__version__}")
    print(
        f"cohort: {len(lesions)} usable lesions ({len(notes)} excluded), {n_samples} training samples "
        f"(about {round(n_samples * (1 - config.test_size))} per training split); {written}, prepared in "
        f"{t_prep:.1f} s (not part of the figure)"
    )
    for note in notes:
        print(f"  excluded: {note}")

    if args.equivalence:
        return _equivalence(lesions, config)

    how = {
        "engine": f"fit_fast in {config.workers or torch.get_num_threads()} worker process(es), fused kernels, "
        + _native_text(),
        "batched": f"fit_many, {config.batch_trials} trial(s) at a time",
        "plain": "one fit per trial",
    }[config.trainer]
    print(f"trainer: {config.trainer} ({how})")
    per_trial: dict[str, float] = {}
    for model in models:
        cfg = dataclasses.replace(config, models=(model,))
        # an untimed warm-up (one trial, one epoch): first-call costs (imports, torch's thread pool) would
        # otherwise be extrapolated as if every trial and epoch paid them
        warm = dataclasses.replace(
            cfg, n_trials=1, score_cams=False, train=dataclasses.replace(cfg.train, epochs=1)
        )
        run_trials(lesions, warm)
        t0 = time.perf_counter()
        res = run_trials(lesions, cfg, progress=args.progress)
        seconds = time.perf_counter() - t0
        per_trial[model] = seconds / len(res.splits)
        phases = f"{args.epochs} + {args.epochs}" if model == "cam_sequential" else f"{args.epochs}"
        extra = f" ({phases} epochs{', CAMs scored' if model == 'cam' and cfg.score_cams else ''})"
        print(
            f"  {model}: {per_trial[model]:.2f} s per trial"
            + (extra if model in NETWORK_MODELS else "")
            + f", {seconds:.1f} s for {len(res.splits)} trial(s)"
        )

    measured = args.trials == PAPER_TRIALS and args.epochs == PAPER_EPOCHS
    full = {
        m: s * PAPER_TRIALS * (PAPER_EPOCHS / args.epochs if m in NETWORK_MODELS else 1.0)
        for m, s in per_trial.items()
    }
    label = "measured" if measured else f"extrapolated from {args.trials} trial(s) x {args.epochs} epochs"
    if not measured:
        for m, s in full.items():
            print(f"  {m}: {s:.0f} s for the full protocol [extrapolated]")
    print(
        f"paper protocol ({PAPER_TRIALS} trials x {PAPER_EPOCHS} epochs, {n_samples} samples): "
        f"{sum(full.values()):.0f} s on {device} [{label}]"
    )
    if set(models) != {"radiomics", "gradients", "cam"}:
        print(f"note: the figure is the sum over the models timed here ({', '.join(models)})")
    if n_samples != 414:
        print(f"note: {n_samples} training samples, not the paper's 414 (excluded lesions or another cohort)")
    return 0


def _equivalence(lesions: Any, config: Any) -> int:
    """Train the cam network of ``config.n_trials`` trials with ``config.trainer`` and the plain loop; compare."""
    import numpy as np
    import torch

    from adaptrt.response.study import run_trials

    base = dataclasses.replace(config, models=("cam",), score_cams=False)
    threads = torch.get_num_threads()
    runs = {}
    for name, trainer, n_threads in (
        (f"{base.trainer}", base.trainer, threads),
        (f"plain ({threads} threads)", "plain", threads),
        ("plain (1 thread)", "plain", 1),
    ):
        torch.set_num_threads(n_threads)
        t0 = time.perf_counter()
        runs[name] = run_trials(lesions, dataclasses.replace(base, trainer=trainer))
        torch.set_num_threads(threads)
        print(
            f"trained {len(runs[name].splits)} trial(s) x {base.train.epochs} epochs: {name}, "
            f"{time.perf_counter() - t0:.0f} s"
        )

    def metrics(res: Any) -> dict[str, np.ndarray]:
        rows = [r for r in res.metric_rows if r["model"] == "cam" and r["test_set"] == "mri2"]
        keys = [
            k for k, v in rows[0].items() if k not in ("trial", "model", "test_set") and isinstance(v, float)
        ]
        return {k: np.array([r[k] for r in rows], dtype=float) for k in keys}

    def probabilities(res: Any) -> np.ndarray:
        return np.array([r["probability"] for r in res.prediction_rows if r["model"] == "cam"])

    def weights(res: Any) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in res.first_model.model_.state_dict().items()}

    names = list(runs)
    ref = runs[names[1]]
    m_ref = metrics(ref)
    print("per-trial metrics (mri2) of the plain loop: mean, SD over trials")
    for k, v in m_ref.items():
        print(
            f"  {k:>12s}: {np.nanmean(v):.3f} +- {np.nanstd(v):.3f}  (per trial: {np.round(v, 3).tolist()})"
        )
    for other, label in (
        (names[0], "trainer vs plain"),
        (names[2], "plain 1 thread vs plain (rounding noise)"),
    ):
        res = runs[other]
        m = metrics(res)
        dp = np.abs(probabilities(res) - probabilities(ref))
        w, wr = weights(res), weights(ref)
        dw = max(float((w[k].float() - wr[k].float()).abs().max()) for k in wr if wr[k].is_floating_point())
        scale = max(float(wr[k].float().abs().max()) for k in wr if wr[k].is_floating_point())
        diffs = ", ".join(f"{k} {np.nanmax(np.abs(m[k] - m_ref[k])):.3f}" for k in m_ref)
        print(f"{label}:")
        print(f"  largest per-trial metric difference: {diffs}")
        print(
            f"  test probabilities: largest difference {dp.max():.4f}, mean {dp.mean():.4f} ({dp.size} values)"
        )
        print(f"  trial 0 weights: largest difference {dw:.2e} (largest weight {scale:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
