"""The ``adaptrt target`` subcommands: a thin layer over :mod:`adaptrt.target`.

* ``adaptrt target run --manifest M --out RUN [--profile quick|paper] [--seed S] [--overwrite] [--quiet]``
* ``adaptrt target ctv --manifest M --out DIR [--reference-series DICOM_DIR] [--overwrite] [--quiet]``
* ``adaptrt target predict --run RUN --manifest M --out DIR [--reference-series DICOM_DIR] [--device D]``
* ``adaptrt target search --manifest M --out DIR [--storage URL] [--study-name N] [--stage grid|random|both]
  [--grid-trials N] [--random-trials N] [--epochs N] [--profile quick|paper] [--seed S] [--device D]``

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
    if args.no_dl:
        changes["dl"] = False
    if args.device is not None:
        changes["dl_device"] = args.device
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


def _cmd_predict(args: argparse.Namespace) -> int:
    from .predict import run_predict

    out = run_predict(
        args.run,
        args.manifest,
        args.out,
        reference_series=args.reference_series,
        overwrite=args.overwrite,
        device=args.device,
        progress=not args.quiet,
    )
    print(f"DL, RTOG and EORTC CTVs written: {out}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    import csv
    import dataclasses
    import json

    from ..io.atomic import atomic_dir, check_writable
    from ..io.manifest import read_glioblastoma_manifest
    from .dl import split_patients
    from .search import open_storage, run_search, trial_rows
    from .study import dl_config, dl_hook, prepare_target_data, target_config

    out = check_writable(args.out, overwrite=args.overwrite)
    cfg = target_config(args.profile, seed=args.seed, compare_ctvs=False, dl_device=args.device)
    if args.storage is not None:
        open_storage(args.storage)  # a bad URL stops here, before any work and any file
    cohort = read_glioblastoma_manifest(args.manifest)
    data = prepare_target_data(cohort, cfg, per_patient={"dl": dl_hook}, progress=not args.quiet)
    samples = [s for s in data.hooks["dl"] if not hasattr(s, "scope")]  # Exclusions have a scope
    split = split_patients([s.treatment for s in samples], cfg.seed)
    train = [samples[i] for i in split.train]
    val = [samples[i] for i in split.val]  # the test patients (split.test) are dropped here, unseen
    base = dl_config(cfg)
    if args.epochs is not None:
        base = dataclasses.replace(base, epochs=args.epochs)
    with atomic_dir(out, overwrite=args.overwrite) as tmp:
        # default storage: SQLite inside the run folder (staged, then committed with it)
        storage = args.storage or f"sqlite:///{tmp / 'search.sqlite3'}"
        study = run_search(
            train,
            val,
            base,
            storage=storage,
            study_name=args.study_name,
            stage=args.stage,
            n_grid=args.grid_trials,
            n_random=args.random_trials,
            seed=args.seed,
        )
        rows = trial_rows(study)
        with open(tmp / "trials.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            w.writeheader()
            w.writerows(rows)
        summary = {
            "storage": args.storage or f"sqlite:///{out / 'search.sqlite3'}",
            "study_name": args.study_name,
            "best_params": study.best_params,
            "best_val_tversky": study.best_value,
            "test_patients_left_out": [samples[i].patient_id for i in split.test],
        }
        (tmp / "best.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"search: best validation Tversky {study.best_value:.3f} with {study.best_params}; {out / 'trials.csv'}"
    )
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
    r.add_argument("--no-dl", action="store_true", help="skip part 2 (the deep-learning CTV)")
    r.add_argument("--device", default=None, help="torch device of part 2: auto (default), cpu, cuda, cuda:N")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=_cmd_run)

    pr = tsub.add_parser("predict", help="DL, RTOG and EORTC CTVs of new patients with a run's model")
    pr.add_argument("--run", required=True, help="run folder of `adaptrt target run` (with the DL CTV)")
    pr.add_argument("--manifest", required=True, help="glioblastoma manifest CSV of the patients")
    pr.add_argument("--out", required=True, help="folder to create")
    pr.add_argument("--reference-series", default=None, help="folder of <patient_id>/ planning DICOM series")
    pr.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    pr.add_argument("--quiet", action="store_true", help="no progress bars")
    pr.set_defaults(func=_cmd_predict)

    se = tsub.add_parser("search", help="Optuna hyper-parameter search of the DL CTV (grid, then random)")
    se.add_argument("--manifest", required=True, help="glioblastoma manifest CSV")
    se.add_argument("--out", required=True, help="folder to create (trials.csv, best.json)")
    se.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL shared by workers (sqlite:///PATH, postgresql://..., journal:PATH); default: "
        "sqlite in .OUT.search/ next to OUT",
    )
    se.add_argument("--study-name", default="adaptrt-dl-ctv", help="study name (workers share it)")
    se.add_argument("--stage", choices=["grid", "random", "both"], default="both")
    se.add_argument("--grid-trials", type=int, default=None, help="grid trials of this worker (default: all)")
    se.add_argument("--random-trials", type=int, default=30, help="random trials of this worker (default 30)")
    se.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the profile's)")
    se.add_argument("--profile", choices=["quick", "paper"], default="quick")
    se.add_argument(
        "--seed", type=int, default=0, help="split and sampler seed (the split must match the run)"
    )
    se.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    se.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    se.add_argument("--quiet", action="store_true", help="no progress bars")
    se.set_defaults(func=_cmd_search)

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
