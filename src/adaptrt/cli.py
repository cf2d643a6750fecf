"""The ``adaptrt`` command: a thin layer over the library.

Exit codes: 0 success; 2 bad input or configuration (a message naming the file, the field and the fix,
no traceback); 1 internal error (a bug: the traceback is printed so that it can be reported).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError

__all__ = ["main"]

EXIT_OK, EXIT_INTERNAL, EXIT_INPUT = 0, 1, 2


def _config_error(exc: Exception, what: str) -> InputError:
    return InputError(str(exc), field=what, fix="see `adaptrt --help` for the allowed values")


def _check_out(args: argparse.Namespace, option: str = "--out") -> None:
    """Before any work: the output folder can be created (free, or --overwrite; its parent writable)."""
    from .io.atomic import check_output_writable

    try:
        check_output_writable(args.out, overwrite=args.overwrite)
    except InputError as exc:
        raise InputError(exc.problem, path=exc.path, field=option, fix=exc.fix) from exc


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise InputError(
            f"the seed must be >= 0, got {seed}",
            field="--seed",
            fix="give a non-negative integer, e.g. --seed 0",
        )


def _check_utf8(path: Path, what: str, fix: str) -> None:
    """Refuse a text file that is not UTF-8, naming it (before a parser fails on it)."""
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})", path=path, fix=fix
        ) from exc
    except OSError:
        return  # a missing or unreadable file is reported by the reader that follows


def _manifest_path(value: str) -> Path:
    """The manifest argument; a folder that holds a manifest.csv is answered with that suggestion."""
    path = Path(value)
    if path.is_dir():
        inside = path / "manifest.csv"
        hint = (
            f"did you mean {inside}?"
            if inside.is_file()
            else "give the CSV file (see docs/manifest.md), not its folder"
        )
        raise InputError("is a folder, not a manifest CSV file", path=path, fix=hint[0].upper() + hint[1:])
    return path


# ----------------------------------------------------------------------------- commands
def _lesions_for(patients: int, lesions: int | None) -> int:
    """Default lesion count for a patient count: the PULSAR cohort's 69 lesions per 39 patients."""
    if lesions is not None:
        return lesions
    return int(min(max(round(patients * 69 / 39), patients), 4 * patients))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo
    from .drift.study import drift_config
    from .response.study import response_config
    from .simulate.metastases import MetastasisConfig
    from .target.study import target_config

    _check_seed(args.seed)
    _check_out(args)
    try:
        mcfg = MetastasisConfig(n_patients=args.patients, n_lesions=_lesions_for(args.patients, args.lesions))
        cfg = DemoConfig(
            seed=args.seed,
            threshold=args.threshold,
            metastases=mcfg,
            glioblastoma_patients=args.glioblastoma_patients,
            response=None if args.no_response else response_config("quick", threshold=args.threshold),
            drift=None if args.no_drift else drift_config("quick", seed=args.seed),
            target=None if args.no_target else target_config("quick", seed=args.seed),
        )
    except ValueError as exc:
        raise _config_error(exc, "demo configuration") from exc
    out = run_demo(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"demo finished: {out / 'report.html'}")
    return EXIT_OK


def _detect_layout(path: Path) -> str:
    import csv

    if not path.is_file():
        raise InputError("manifest not found", path=path, fix="check the path to the CSV file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except UnicodeDecodeError as exc:
        raise InputError(
            f"is not UTF-8 text ({exc.reason} at byte {exc.start})",
            path=path,
            fix="save the manifest as CSV in UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)",
        ) from exc
    except csv.Error as exc:
        raise InputError(f"is not a valid CSV file ({exc})", path=path, fix="save it again as CSV") from exc
    return "glioblastoma" if "ttp_months" in [h.strip() for h in header] else "lesions"


def _cmd_cohort_check(args: argparse.Namespace) -> int:
    from .io import manifest as mf

    path = _manifest_path(args.manifest)
    if args.out is not None:
        _check_out(args)
    layout = args.layout if args.layout != "auto" else _detect_layout(path)
    summary: mf.CohortSummary | mf.GlioblastomaSummary
    if layout == "glioblastoma":
        gcohort = mf.read_glioblastoma_manifest(path)
        summary = mf.check_glioblastoma_cohort(gcohort, progress=not args.quiet)
    else:
        if not 0.0 < args.threshold < 1.0:
            raise InputError(
                f"threshold must be in (0, 1), got {args.threshold}",
                field="--threshold",
                fix="give a fraction such as 0.2 for 20 %",
            )
        # one pass: the rows' problems and the files' problems are reported together
        summary = mf.check_manifest(path, threshold=args.threshold, progress=not args.quiet)
    print(summary.to_text())
    if args.out is not None:
        from .report.run import RunFolder, command_line

        config = {"manifest": str(path.resolve()), "layout": layout, "threshold": args.threshold}
        with RunFolder(
            args.out,
            command=command_line("adaptrt cohort check"),
            config=config,
            seed=None,
            title=f"adaptrt cohort check: {path.name}",
            overwrite=args.overwrite,
        ) as run:
            rows = summary.to_rows()
            run.write_csv("results/cohort_summary.csv", rows)
            run.write_json("results/cohort_summary.json", {"text": summary.to_text(), "rows": rows})
            sec = run.report.section("Cohort")
            sec.preformatted(summary.to_text())
            sec.table(rows)
        print(f"report: {Path(args.out) / 'report.html'}")
    return EXIT_OK


def _cmd_simulate_phantom(args: argparse.Namespace) -> int:
    from .simulate.phantom import PhantomConfig, write_phantom_cohort

    _check_seed(args.seed)
    _check_out(args)
    try:
        cfg = PhantomConfig(n_patients=args.patients, responder_share=args.responder_share)
    except ValueError as exc:
        raise _config_error(exc, "phantom configuration") from exc
    manifest = write_phantom_cohort(
        args.out, config=cfg, fmt=args.format, seed=args.seed, overwrite=args.overwrite
    )
    print(f"phantom cohort written: {manifest}")
    return EXIT_OK


def _cmd_response_run(args: argparse.Namespace) -> int:
    from .response.run import run_response_study
    from .response.study import response_config

    _manifest_path(args.manifest)
    _check_out(args)
    changes: dict[str, object] = {"threshold": args.threshold, "seed": args.seed}
    if args.trials is not None:
        changes["n_trials"] = args.trials
    if args.test_size is not None:
        changes["test_size"] = args.test_size
    if args.models is not None:
        changes["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.final is not None:
        changes["fit_final"] = args.final
    if args.trainer is not None:
        changes["trainer"] = args.trainer
    if args.workers is not None:
        changes["workers"] = args.workers
    cfg = response_config(args.profile, **changes)
    out = run_response_study(args.manifest, args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"response study finished: {out / 'report.html'} (Table 1: {out / 'results' / 'table1.csv'})")
    return EXIT_OK


def _cmd_response_predict(args: argparse.Namespace) -> int:
    from .response.final import run_predict

    _manifest_path(args.manifest)
    _check_out(args)
    out = run_predict(
        args.run,
        args.manifest,
        args.out,
        timepoint=args.timepoint,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(
        f"predictions written: {out / 'results' / 'predictions.csv'} (report: {out / 'report.html'}); models: "
        f"the final models of {args.run} (models/final_*), on {args.timepoint} cut with the first MRI's box "
        "and the run's slices per lesion (column n_slices)"
    )
    return EXIT_OK


def _cmd_response_explain(args: argparse.Namespace) -> int:
    import json

    from .response.explain import ExplainConfig, explain_from_manifest

    _manifest_path(args.manifest)
    _check_out(args)
    try:
        cfg = ExplainConfig(target=args.target, boost_threshold=args.threshold)
    except InputError as exc:
        raise InputError(exc.problem, field="--threshold", fix="give a fraction in (0, 1], e.g. 0.5") from exc
    if args.model is not None:
        print(
            "warning: --model is deprecated; use --run (the same run folder or model file)", file=sys.stderr
        )
    out = explain_from_manifest(
        args.run if args.run is not None else args.model,
        args.manifest,
        args.lesion,
        args.out,
        timepoint=args.timepoint,
        config=cfg,
        overwrite=args.overwrite,
    )
    info = json.loads((out / "explanation.json").read_text())
    boost = info["boost"]
    size = (
        "empty"
        if boost["empty"]
        else f"{boost['volume_mm3']:.0f} mm³ ({100 * boost['fraction_of_gtv']:.0f} % of the GTV)"
    )
    rt = ", RTSTRUCT boost_rtstruct.dcm" if info["rtstruct"] else ""
    print(
        f"lesion {info['lesion']} ({info['timepoint']}): P(responder) = {info['probability_responder']:.3f} "
        f"from the {info.get('model_kind', 'model')} {info['model']['path'] if info.get('model') else ''}, on "
        f"slice(s) {info.get('probability_slices')} ({info.get('crop', 'its box')}); CAMs on slices "
        f"{info['slices']}; boost {size}; written to {out} (CAMs as NIfTI and PNG{rt}, summary explanation.json)"
    )
    return EXIT_OK


def _cmd_simulate_metastases(args: argparse.Namespace) -> int:
    from .config import load_config
    from .simulate.metastases import MetastasisConfig, write_metastasis_cohort

    _check_seed(args.seed)
    _check_out(args)
    if args.config:
        _check_utf8(Path(args.config), "the configuration file", "save the JSON file as UTF-8 text")
    try:
        base = load_config(MetastasisConfig, args.config) if args.config else MetastasisConfig()
        changes: dict[str, object] = {}
        if args.patients is not None:
            changes["n_patients"] = args.patients
            changes["n_lesions"] = _lesions_for(args.patients, args.lesions)
        elif args.lesions is not None:
            changes["n_lesions"] = args.lesions
        for name in ("responder_share", "signature_strength", "biological_noise"):
            if getattr(args, name) is not None:
                changes[name] = getattr(args, name)
        cfg = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise _config_error(exc, "metastasis configuration") from exc
    manifest = write_metastasis_cohort(
        args.out, config=cfg, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet
    )
    print(f"metastasis cohort written: {manifest} (ground truth in {manifest.parent / 'truth'})")
    return EXIT_OK


def _cmd_simulate_glioblastoma(args: argparse.Namespace) -> int:
    from .simulate.glioblastoma import GlioblastomaConfig, write_glioblastoma_cohort

    _check_seed(args.seed)  # refused here: the simulator's own check is another module's
    _check_out(args)
    try:
        cfg = GlioblastomaConfig(n_patients=args.patients, antiangiogenic_share=args.antiangiogenic_share)
    except ValueError as exc:
        raise _config_error(exc, "glioblastoma configuration") from exc
    manifest = write_glioblastoma_cohort(
        args.out, config=cfg, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet
    )
    print(f"glioblastoma cohort written: {manifest}")
    return EXIT_OK


def _cmd_simulate_digits(args: argparse.Namespace) -> int:
    import numpy as np

    from .io.atomic import atomic_dir
    from .report.figures import lesion_gallery
    from .simulate.digits import zero_digit_pairs

    _check_out(args)
    try:
        pairs = zero_digit_pairs(args.n, size=args.size, seed=args.seed)
    except ValueError as exc:
        raise _config_error(exc, "digits configuration") from exc
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        np.savez_compressed(
            tmp / "zero_digit_pairs.npz",
            pre=pairs.pre,
            post=pairs.post,
            drift=pairs.drift,
            scale=pairs.scale,
            area_ratio=pairs.area_ratio,
            source_index=pairs.source_index,
        )
        k = min(6, len(pairs.scale))
        imgs = [*pairs.pre[:k], *pairs.post[:k], *pairs.drift[:k]]
        titles = [f"pre {i}" for i in range(k)] + [f"post x{s:.2f}" for s in pairs.scale[:k]]
        titles += [f"drift {i}" for i in range(k)]
        fig = lesion_gallery(imgs, [np.zeros(pairs.pre.shape[1:], bool)] * len(imgs), titles, ncols=k)
        fig.savefig(tmp / "preview.png", dpi=90)
    print(f"zero-digit pairs written: {args.out}/zero_digit_pairs.npz ({len(pairs.scale)} pairs)")
    return EXIT_OK


def _cmd_compare_response_drift(args: argparse.Namespace) -> int:
    from .compare import add_comparison_section, compare_response_drift, format_table, write_comparison
    from .report.run import RunFolder, command_line

    _check_seed(args.seed)
    if args.permutations < 0:
        raise InputError(
            f"the number of permutations must be >= 0, got {args.permutations}",
            field="--permutations",
            fix="give e.g. --permutations 1000 (0: no null band for the drift scores)",
        )
    _check_out(args)
    result = compare_response_drift(args.response, args.drift, permutations=args.permutations, seed=args.seed)
    config = {
        "response_run": str(Path(args.response).resolve()),
        "drift_run": str(Path(args.drift).resolve()),
        "permutations": args.permutations,
        "seed": args.seed,
    }
    with RunFolder(
        args.out,
        command=command_line("compare_response_drift"),
        config=config,
        seed=args.seed,
        title="adaptrt compare: Part I vs Part II on the same splits",
        overwrite=args.overwrite,
    ) as run:
        write_comparison(result, run.stage)
        add_comparison_section(run.report, result)
    print(format_table(result))
    for note in result.notes:
        print(f"note: {note}")
    out = Path(args.out)
    print(f"comparison written: {out / 'results' / 'part1_vs_part2.csv'} (report: {out / 'report.html'})")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adaptrt",
        description="AI-guided personalised radiotherapy of brain tumours (response, drift, target studies).",
    )
    p.add_argument("--version", action="version", version=f"adaptrt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser("demo", help="run the main job on the embedded simulated cohort")
    d.add_argument("--out", default="runs/demo", help="run folder to write (default: runs/demo)")
    d.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    d.add_argument("--patients", type=int, default=39, help="patients in the simulated cohort (default 39)")
    d.add_argument("--lesions", type=int, default=None, help="lesions (default: 69 per 39 patients)")
    d.add_argument(
        "--glioblastoma-patients", type=int, default=1, help="simulated glioblastoma patients shown (0-4)"
    )
    d.add_argument(
        "--threshold", type=float, default=0.2, help="shrinkage that defines response (default 0.2)"
    )
    d.add_argument("--no-response", action="store_true", help="skip the response study (quick profile)")
    d.add_argument("--no-drift", action="store_true", help="skip the drift study (quick profile)")
    d.add_argument(
        "--no-target", action="store_true", help="skip the target study (quick profile, glioblastoma cohort)"
    )
    d.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_cmd_demo)

    c = sub.add_parser("cohort", help="cohort manifests")
    csub = c.add_subparsers(dest="cohort_command", metavar="ACTION", required=True)
    cc = csub.add_parser("check", help="validate every row and file of a manifest and summarise the cohort")
    cc.add_argument("manifest", help="manifest CSV (see docs/manifest.md)")
    cc.add_argument(
        "--layout",
        choices=["auto", "lesions", "glioblastoma"],
        default="auto",
        help="manifest layout (default: detected from the columns)",
    )
    cc.add_argument(
        "--threshold", type=float, default=0.2, help="shrinkage that defines response (default 0.2)"
    )
    cc.add_argument("--out", default=None, help="also write a run folder with the summary and a report")
    cc.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    cc.add_argument("--quiet", action="store_true", help="no progress bars")
    cc.set_defaults(func=_cmd_cohort_check)

    r = sub.add_parser("response", help="the response study of Part I")
    rsub = r.add_subparsers(dest="response_command", metavar="ACTION", required=True)
    rr = rsub.add_parser("run", help="Table 1 over repeated grouped splits, CAMs, figures")
    rr.add_argument("--manifest", required=True, help="lesion manifest (mri1, mri2 and followup per lesion)")
    rr.add_argument("--out", required=True, help="run folder to create")
    rr.add_argument(
        "--profile",
        choices=["quick", "paper"],
        default="quick",
        help="quick: 3 trials, 12 epochs; paper: 50 trials, 150 epochs (default quick)",
    )
    rr.add_argument("--threshold", type=float, default=0.2, help="shrinkage that defines response (0.2)")
    rr.add_argument("--trials", type=int, default=None, help="number of 80/20 splits (profile default)")
    rr.add_argument("--test-size", type=float, default=None, help="test fraction of each split (0.2)")
    rr.add_argument(
        "--models",
        default=None,
        help="comma-separated subset of radiomics,gradients,cam,cam_sequential (cam_sequential: the sequential "
        "training ablation, opt-in; default: the paper's three)",
    )
    rr.add_argument(
        "--final",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="after the trials, fit every model on all lesions and save it in models/ for "
        "`adaptrt response predict` (default: yes)",
    )
    rr.add_argument(
        "--trainer",
        choices=["engine", "batched", "plain"],
        default=None,
        help="how the networks are trained, all to the same result up to float32 rounding: engine (worker "
        "processes, fused kernels; paper default), batched (in this process; quick default), plain",
    )
    rr.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of the parallel parts: lesion preparation, --trainer engine, the null band "
        "(default: the CPU threads)",
    )
    rr.add_argument("--seed", type=int, default=0)
    rr.add_argument("--overwrite", action="store_true")
    rr.add_argument("--quiet", action="store_true", help="no progress bars")
    rr.set_defaults(func=_cmd_response_run)

    rp = rsub.add_parser("predict", help="probability of response of lesions from a run's final models")
    rp.add_argument(
        "--run",
        required=True,
        help="run folder of `adaptrt response run` with final models (models/); its .joblib files are "
        "pickles that execute code when loaded: use only run folders you trust",
    )
    rp.add_argument(
        "--manifest",
        required=True,
        help="lesion manifest (an mri1 row per lesion; mri2 rows for --timepoint mri2; follow-ups optional)",
    )
    rp.add_argument("--out", required=True, help="run folder to create")
    rp.add_argument(
        "--timepoint",
        choices=["mri1", "mri2"],
        default="mri1",
        help="MRI to predict from: mri1 (first MRI, before treatment; default) or mri2 (the paper's test)",
    )
    rp.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    rp.add_argument("--quiet", action="store_true", help="no progress bars")
    rp.set_defaults(func=_cmd_response_predict)

    re_ = rsub.add_parser(
        "explain",
        help="CAMs of one lesion on its image grid and a boost sub-volume (NIfTI, PNG, RTSTRUCT) for review",
    )
    which = re_.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--run",
        default=None,
        help="response run folder (its final model models/final_cam.pt, the one `response predict` uses), or "
        "a model file",
    )
    which.add_argument("--model", default=None, help="deprecated alias of --run")
    re_.add_argument("--manifest", required=True, help="lesion manifest that lists the lesion")
    re_.add_argument("--lesion", required=True, help="patient_id/lesion_id, e.g. P001/1")
    re_.add_argument("--timepoint", default="mri1", help="time point whose image is explained (default mri1)")
    re_.add_argument(
        "--target",
        choices=["neg", "pos"],
        default="neg",
        help="class explained: neg = non-responder, i.e. candidate radio-resistant tissue (default); pos = responder",
    )
    re_.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="boost = GTV voxels with pixel-wise CAM >= this fraction of its lesion-wide maximum, (0, 1] (0.5)",
    )
    re_.add_argument("--out", required=True, help="folder to create")
    re_.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    re_.set_defaults(func=_cmd_response_explain)

    cmp_ = sub.add_parser("compare", help="compare the studies' results")
    cmpsub = cmp_.add_subparsers(dest="compare_command", metavar="ACTION", required=True)
    crd = cmpsub.add_parser(
        "response-drift",
        help="Part I's models and Part II's drift scores on the response run's splits: one table of AUCs with "
        "corrected intervals, null bands and verdicts",
    )
    crd.add_argument(
        "--response", required=True, help="run folder of `adaptrt response run` (or of `adaptrt demo`)"
    )
    crd.add_argument(
        "--drift",
        required=True,
        help="run folder of `adaptrt drift run` with its analyses (or of `adaptrt demo`: the same folder)",
    )
    crd.add_argument("--out", required=True, help="folder to create (CSV, JSON, report.html)")
    crd.add_argument(
        "--permutations",
        type=int,
        default=1000,
        help="label permutations of the drift scores' null band (default 1000; 0: none)",
    )
    crd.add_argument("--seed", type=int, default=0, help="seed of the permutations (default 0)")
    crd.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    crd.set_defaults(func=_cmd_compare_response_drift)

    from .drift.cli import add_parser as add_drift_parser
    from .target.cli import add_parser as add_target_parser

    add_drift_parser(sub)
    add_target_parser(sub)

    s = sub.add_parser("simulate", help="write simulated cohorts")
    ssub = s.add_subparsers(dest="simulate_command", metavar="KIND", required=True)
    sp = ssub.add_parser("phantom", help="a tiny lesion phantom cohort (tests, demos)")
    sp.add_argument("--out", required=True, help="folder to create")
    sp.add_argument("--patients", type=int, default=4)
    sp.add_argument("--responder-share", type=float, default=0.5)
    sp.add_argument("--format", choices=["dicom", "nifti"], default="dicom")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--overwrite", action="store_true")
    sp.set_defaults(func=_cmd_simulate_phantom)

    sm = ssub.add_parser("metastases", help="a brain-metastasis (PULSAR) cohort: DICOM + RTSTRUCT + manifest")
    sm.add_argument("--out", required=True, help="folder to create")
    sm.add_argument("--config", default=None, help="JSON file of MetastasisConfig settings")
    sm.add_argument("--patients", type=int, default=None, help="patients (default 39)")
    sm.add_argument("--lesions", type=int, default=None, help="lesions, 1-4 per patient (default 69)")
    sm.add_argument("--responder-share", type=float, default=None, help="target share of responders [0, 1]")
    sm.add_argument(
        "--signature-strength", type=float, default=None, help="imaging signature of resistant tissue (>= 0)"
    )
    sm.add_argument("--biological-noise", type=float, default=None, help="spread of the treatment effect")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--overwrite", action="store_true")
    sm.add_argument("--quiet", action="store_true", help="no progress bar")
    sm.set_defaults(func=_cmd_simulate_metastases)

    sg = ssub.add_parser("glioblastoma", help="a glioblastoma cohort at 3 mm (target study)")
    sg.add_argument("--out", required=True, help="folder to create")
    sg.add_argument("--patients", type=int, default=30)
    sg.add_argument("--antiangiogenic-share", type=float, default=0.55)
    sg.add_argument("--seed", type=int, default=0)
    sg.add_argument("--overwrite", action="store_true")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    sg.set_defaults(func=_cmd_simulate_glioblastoma)

    sd = ssub.add_parser("digits", help="the zero-digit toy of Part II (pre/post pairs and drift, .npz)")
    sd.add_argument("--out", required=True, help="folder to create")
    sd.add_argument("--n", type=int, default=178, help="number of pairs")
    sd.add_argument("--size", type=int, default=32, help="image size in pixels")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--overwrite", action="store_true")
    sd.set_defaults(func=_cmd_simulate_digits)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adaptrt`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    previous = _stop_on_sigterm()
    try:
        return func(args)
    except InputError as exc:
        print(f"adaptrt: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt as exc:
        # the atomic writers have removed their staging folders while the exception passed through them
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        name = signal.Signals(signum).name
        print(
            f"adaptrt: stopped by {name}; the unfinished output was removed, nothing was written",
            file=sys.stderr,
        )
        return 128 + int(signum)
    except Exception:
        traceback.print_exc()
        print(
            "adaptrt: internal error (a bug in adaptrt, not in your data): please report it with the traceback "
            "above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Stopped(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``with`` block (atomic writers) cleans up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _stop_on_sigterm() -> Any:
    """Turn SIGTERM into :class:`_Stopped` while a command runs; returns the previous handler (or None)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal handlers can only be set from the main thread
    return signal.signal(signal.SIGTERM, _raise_stopped)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
