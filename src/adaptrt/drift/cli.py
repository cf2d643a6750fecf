"""The ``adaptrt drift`` subcommands: a thin layer over :mod:`adaptrt.drift`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["add_parser"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .data import DriftDataConfig
    from .run import run_drift_study
    from .study import drift_config

    changes: dict[str, Any] = {"seed": args.seed, "device": args.device}
    if args.folds is not None:
        changes["folds"] = args.folds
    if args.iterations is not None:
        changes["model_iterations"] = args.iterations
    if args.box is not None:
        changes["box"] = args.box
    if args.size is not None:
        changes["size"] = args.size
    if args.variants is not None:
        changes["variant_names"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.seed < 0:
        raise InputError(
            f"the seed must be >= 0, got {args.seed}", field="--seed", fix="give a seed such as 0"
        )
    _check_samples(args.samples, args.eta)
    if args.samples is not None:
        changes["analysis_samples"] = args.samples
    if args.eta is not None:
        changes["analysis_eta"] = args.eta
    if args.label_dropout is not None:
        if not 0.0 <= args.label_dropout < 1.0:
            raise InputError(
                f"the label dropout must be in [0, 1), got {args.label_dropout}",
                field="--label-dropout",
                fix="give a share such as 0.2",
            )
        changes["analysis_label_dropout"] = args.label_dropout
    if args.no_conditional:
        changes["analysis_conditional"] = False
    if args.no_analyses:
        changes["analysis"] = None
    try:
        cfg = drift_config(args.profile, **changes)
        data = DriftDataConfig(post=args.post, threshold=args.threshold)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc), field="drift configuration", fix="see `adaptrt drift run --help`") from exc
    if not args.toy and args.manifest is None:
        raise InputError("no manifest given", field="--manifest", fix="pass --manifest M (or --toy)")
    out = run_drift_study(
        None if args.toy else args.manifest,
        args.out,
        cfg,
        data=data,
        toy=args.toy,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"drift study finished: {Path(out) / 'report.html'} (table: {Path(out) / 'results' / 'drift_table.csv'})"
    )
    return 0


def _check_samples(samples: int | None, eta: float | None) -> None:
    """``--samples`` K >= 2 and ``--eta`` >= 0, refused with the flag named."""
    if samples is not None and samples < 2:
        raise InputError(
            f"--samples must be at least 2 (a spread needs two samples), got {samples}",
            field="--samples",
            fix="give --samples 16 (or leave it out for a single prediction)",
        )
    if eta is not None and not eta >= 0.0:
        raise InputError(
            f"--eta must be >= 0 (0 = deterministic DDIM steps), got {eta}",
            field="--eta",
            fix="give --eta 0 (or a positive value for stochastic steps)",
        )


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import run_predict

    _check_samples(args.samples, args.eta)
    out = run_predict(
        args.run,
        args.manifest,
        args.out,
        model=args.model,
        seed=args.seed,
        samples=args.samples,
        eta=0.0 if args.eta is None else args.eta,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"drift predictions written: {out} (report: {Path(out) / 'report.html'})")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``adaptrt drift run | predict`` on the top-level subparsers object ``sub``."""
    d = sub.add_parser("drift", help="the drift study of Part II (diffusion models)")
    dsub = d.add_subparsers(dest="drift_command", metavar="ACTION", required=True)
    r = dsub.add_parser("run", help="cross-validate Method 1, Method 2 (DDIM), decoupled and baselines")
    r.add_argument("--manifest", default=None, help="lesion manifest (mri1 and mri2 per lesion)")
    r.add_argument(
        "--toy", action="store_true", help="run the zero-digit toy of the paper instead of a cohort"
    )
    r.add_argument("--out", required=True, help="run folder to create")
    r.add_argument(
        "--profile",
        choices=["quick", "paper"],
        default="quick",
        help="quick: small widths, 150 iterations; paper: 5,000 iterations × batch 64 (default quick)",
    )
    r.add_argument(
        "--post",
        choices=["mri2", "followup"],
        default="mri2",
        help="time point of the post image (default mri2, the paper's pair)",
    )
    r.add_argument("--threshold", type=float, default=0.2, help="shrinkage that defines response (0.2)")
    r.add_argument(
        "--box",
        choices=["pre", "both"],
        default=None,
        help="crop box: pre = the first MRI's GTV box (as for a new lesion; default), both = the paper's box "
        "over both GTVs and the drift region (it depends on the outcome)",
    )
    r.add_argument("--size", type=int, default=None, help="crop size in pixels (profile: quick 32, paper 64)")
    r.add_argument("--folds", type=int, default=None, help="patient-grouped folds (default 5)")
    r.add_argument("--iterations", type=int, default=None, help="training iterations per model (profile)")
    r.add_argument(
        "--variants", default=None, help="comma-separated subset of method1,method2,decoupled,regression"
    )
    r.add_argument(
        "--samples",
        type=int,
        default=None,
        help="K DDIM samples per held-out slice (profile: quick 8, paper 16)",
    )
    r.add_argument("--eta", type=float, default=None, help="DDIM eta of the K samples (default 0)")
    r.add_argument(
        "--label-dropout",
        type=float,
        default=None,
        help="classifier-free label dropout of the conditional network (default 0.2)",
    )
    r.add_argument(
        "--no-conditional",
        action="store_true",
        help="no response-conditioned generation (a cohort without labels of both classes needs this)",
    )
    r.add_argument(
        "--no-analyses",
        action="store_true",
        help="skip the analyses beyond the paper (uncertainty, conditional generation, response scores)",
    )
    r.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)

    p = dsub.add_parser(
        "predict", help="predicted post image and drift of new lesions, as NIfTI on their grid"
    )
    p.add_argument("--run", required=True, help="run folder of `adaptrt drift run` (models/)")
    p.add_argument("--manifest", required=True, help="lesion manifest (an mri1 row per lesion)")
    p.add_argument("--out", required=True, help="folder to create")
    p.add_argument("--model", default="method2", help="which saved model (default method2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument(
        "--samples",
        type=int,
        default=None,
        help="K >= 2: draw K samples per slice and write their mean and SD maps (default: one prediction)",
    )
    p.add_argument("--eta", type=float, default=None, help="DDIM eta of the samples (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)
