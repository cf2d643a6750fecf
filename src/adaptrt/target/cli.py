"""The ``adaptrt target`` subcommands: a thin layer over :mod:`adaptrt.target`.

* ``adaptrt target run --manifest M --out RUN [--profile quick|paper] [--seed S] [--overwrite] [--quiet]``
* ``adaptrt target ctv --manifest M --out DIR [--reference-series DICOM_DIR] [--overwrite] [--quiet]``

An :class:`~adaptrt.errors.InputError` propagates to ``adaptrt.cli.main`` (exit code 2, nothing written).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run_target_study
    from .study import target_config

    changes: dict[str, Any] = {"seed": args.seed}
    if args.press_box is not None:
        changes["press_box"] = args.press_box
    if args.jobs is not None:
        changes["n_jobs"] = args.jobs
    cfg = target_config(args.profile, **changes)
    out = run_target_study(args.manifest, args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"target study finished: {out / 'report.html'} (tables in {out / 'results'})")
    return 0


def _cmd_ctv(args: argparse.Namespace) -> int:
    from ..errors import InputError

    try:
        from .export import run_ctv_export
    except ImportError as exc:  # the exporter is built separately (issue 12, item 7)
        raise InputError(
            "the CTV exporter (adaptrt.target.export) is not installed in this version",
            fix="update adaptrt",
        ) from exc
    out = run_ctv_export(
        args.manifest,
        args.out,
        reference_series=args.reference_series,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(f"CTVs written: {out}")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``adaptrt target ...`` on the top-level subparsers object ``sub``."""
    t = sub.add_parser("target", help="the glioblastoma target-definition study")
    tsub = t.add_subparsers(dest="target_command", metavar="ACTION", required=True)

    r = tsub.add_parser(
        "run", help="recurrence pattern, voxel categories and tests, voxel random forests (part 1)"
    )
    r.add_argument("--manifest", required=True, help="glioblastoma manifest CSV (docs/manifest.md)")
    r.add_argument("--out", required=True, help="run folder to create")
    r.add_argument(
        "--profile",
        choices=["quick", "paper"],
        default="quick",
        help="quick: 60 trees, 400 voxels per patient and category; paper: 300 trees, 3000 (default quick)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of sampling, folds and forests (default 0)")
    r.add_argument(
        "--press-box",
        choices=["indicator", "inside"],
        default=None,
        help="voxels outside the MRSI PRESS box: keep them with an in-box feature (indicator, default) or "
        "use in-box voxels only (inside)",
    )
    r.add_argument(
        "--jobs", type=int, default=None, help="parallel jobs of the forests (default -1: all cores)"
    )
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)

    c = tsub.add_parser("ctv", help="export the RTOG and EORTC CTVs as NIfTI and RTSTRUCT per patient")
    c.add_argument("--manifest", required=True, help="glioblastoma manifest CSV (docs/manifest.md)")
    c.add_argument("--out", required=True, help="folder to create")
    c.add_argument(
        "--reference-series",
        default=None,
        help="the planning DICOM series (one folder) to reference; default: a series written from nT1c",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=_cmd_ctv)
