"""``adaptrt response run``: the response study from a manifest to a run folder with Table 1 and figures.

With ``ResponseConfig.fit_final`` (the default) the run folder also holds the final models, fitted on all
usable lesions after the trials (``models/``, :mod:`adaptrt.response.final`): the models to deploy, whose
performance Table 1 estimates; ``adaptrt response predict`` applies them to new lesions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io.atomic import check_writable
from ..report.html import Report
from ..report.run import RunFolder, command_line
from .chance import NullBand, auc_verdicts, cam_verdicts, study_null
from .study import (
    CAM_METHODS,
    MODEL_NAMES,
    LesionData,
    ResponseConfig,
    ResponseResults,
    cam_summary,
    check_usable_lesions,
    comparisons,
    network_train_config,
    prepare_cohort,
    read_truth_table,
    run_trials,
    table1,
    table1_numbers,
)

if TYPE_CHECKING:
    from .final import FinalModels

__all__ = ["add_report_sections", "run_response_study"]


def run_response_study(
    manifest: str | Path,
    out: str | Path,
    config: ResponseConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run the whole study and write the run folder ``out``; return its path.

    With ``config.fit_final`` every selected model is then fitted on all usable lesions and saved in
    ``out/models/`` (:func:`adaptrt.response.final.save_final_models`): the deployment models, whose
    performance on new lesions is what Table 1 estimates.

    Nothing is written when the manifest, a file it lists, or the cohort's size is bad (an
    :class:`~adaptrt.errors.InputError` names the problem).

    With the ``"engine"`` trainer the final networks are trained in the trials' worker pool
    (:func:`adaptrt.response.study.run_trials` with ``final_networks=True``). ``results/timings.json``
    records the wall seconds of each part of the run (cohort check, lesion preparation, trials and their
    parts, null band, final models, results and report; ``benchmarks/response_run.py`` prints them).
    """
    from ..io.manifest import check_cohort, read_manifest
    from .final import fit_final_models, save_final_models

    started = _dt.datetime.now(_dt.UTC)
    seconds: dict[str, float] = {}
    check_writable(out, overwrite=overwrite)
    with _timed(seconds, "cohort check"):
        cohort = read_manifest(manifest)
        check_cohort(cohort, threshold=config.threshold, progress=progress)
    _, truth_note = read_truth_table(cohort.source)
    if truth_note is not None and progress:
        print(f"note: {truth_note}")
    with _timed(seconds, "prepare lesions"):
        lesions, notes = prepare_cohort(cohort, config, progress=progress)
    check_usable_lesions(cohort, lesions, notes, config.threshold, manifest=manifest)
    with _timed(seconds, "trials"):
        # with the engine trainer the final networks are trained in the trials' worker pool
        results = run_trials(lesions, config, progress=progress, final_networks=config.fit_final)
    seconds.update({f"trials: {k}": v for k, v in results.seconds.items()})
    with _timed(seconds, "null band"):
        nulls = chance_reference(lesions, results, config)
    with _timed(seconds, "final models"):
        final = (
            fit_final_models(lesions, config, progress=progress, networks=results.final_networks)
            if config.fit_final
            else None
        )
    command = command_line("run_response_study")
    with RunFolder(
        out,
        command=command,
        config=config,
        seed=config.seed,
        overwrite=overwrite,
        title="adaptrt response study (Part I)",
        started=started,
    ) as run:
        with _timed(seconds, "results and report"):
            write_results(run, lesions, notes, results, config, nulls=nulls)
            if final is not None:
                save_final_models(final, run.stage)
            add_report_sections(
                run,
                run.report,
                lesions,
                notes,
                results,
                config,
                final=final,
                truth_note=truth_note,
                nulls=nulls,
            )
        run.write_json("results/timings.json", _timings(seconds, config))
    return Path(out)


@contextlib.contextmanager
def _timed(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the block to ``seconds[name]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0


def _timings(seconds: Mapping[str, float], config: ResponseConfig) -> dict[str, Any]:
    """``results/timings.json``: wall seconds of each part of the run and the settings that set them."""
    return {
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "note": (
            "wall-clock seconds of each part in this process; 'trials: ...' are parts of 'trials'; not "
            "included: starting Python and importing adaptrt, and rendering report.html after 'results and "
            "report'"
        ),
        "cpu_count": os.cpu_count(),
        "workers": config.workers,
        "trainer": config.trainer,
        "compile": config.compile,
        "n_trials": config.n_trials,
        "epochs": config.train.epochs,
    }


def chance_reference(
    lesions: Sequence[LesionData], results: ResponseResults, config: ResponseConfig
) -> dict[str, NullBand] | None:
    """The permutation null bands of the mean AUC with the study's splits (:mod:`adaptrt.response.chance`),
    ``{"mri2": ..., "mri1": ...}`` by test set; None when ``config.n_permutations`` is 0."""
    return study_null(
        lesions,
        results.splits,
        models=config.models,
        n_permutations=config.n_permutations,
        seed=config.seed,
        profile=config.profile,
        n_jobs=config.workers or os.cpu_count() or 1,
    )


def _null_of(nulls: Mapping[str, NullBand] | None, test_set: str) -> NullBand | None:
    return None if nulls is None else nulls.get(test_set)


def _shown_models(results: ResponseResults) -> dict[str, str]:
    present = {r["model"] for r in results.metric_rows}
    return {k: v for k, v in MODEL_NAMES.items() if k in present}


def write_results(
    run: RunFolder,
    lesions: Sequence[LesionData],
    notes: Sequence[str],
    results: ResponseResults,
    config: ResponseConfig,
    *,
    nulls: Mapping[str, NullBand] | None = None,
) -> None:
    """The study's tables (CSV + JSON) and the trial-0 model checkpoint.

    ``nulls``: the permutation null bands by test set (:func:`chance_reference`); with them ``results/chance.csv`` (and
    ``results/chance_cams.csv`` for scored CAMs) state each model's verdict against chance.
    """
    run.write_csv("results/metrics_per_trial.csv", results.metric_rows)
    run.write_csv("results/predictions.csv", results.prediction_rows)
    run.write_csv("results/table1.csv", table1(results.metric_rows, test_set="mri2"))
    run.write_csv("results/table1_mri1.csv", table1(results.metric_rows, test_set="mri1"))
    numbers = table1_numbers(results.metric_rows)
    run.write_csv("results/table1_numbers.csv", numbers)
    comp = comparisons(results.metric_rows, results.splits, seed=config.seed)
    if comp:
        run.write_csv("results/comparisons.csv", comp)
    if results.cam_rows:
        run.write_csv("results/cam_scores_per_lesion.csv", results.cam_rows)
        run.write_csv("results/cam_scores.csv", cam_summary(results.cam_rows))
    verdicts = [
        v
        for test_set in ("mri2", "mri1")
        for v in auc_verdicts(
            results.metric_rows,
            results.splits,
            _null_of(nulls, test_set),
            _shown_models(results),
            test_set=test_set,
        )
    ]
    run.write_csv("results/chance.csv", verdicts)
    cam_v = cam_verdicts(results.cam_rows, results.splits, methods=CAM_METHODS)
    if cam_v:
        run.write_csv("results/chance_cams.csv", cam_v)
    if nulls:
        run.write_csv(
            "results/permutation_null.csv",
            [
                {
                    "permutation": i,
                    "model": m,
                    "test_set": test_set,
                    "mean_auc_true_test_labels": float(v),
                    "mean_auc_permuted_test_labels": float(nb.values_permuted_test[m][i]),
                }
                for test_set, nb in nulls.items()
                for m, vals in nb.values.items()
                for i, v in enumerate(vals)
            ],
        )
    null = _null_of(nulls, "mri2")
    run.write_csv(
        "results/splits.csv",
        [
            {
                "trial": s.trial,
                "seed": s.seed,
                "train": " ".join(lesions[i].key for i in s.train),
                "test": " ".join(lesions[i].key for i in s.test),
            }
            for s in results.splits
        ],
    )
    run.write_csv(
        "results/lesions.csv",
        [
            {
                "lesion": d.key,
                "patient_id": d.lesion.patient_id,
                "label": d.label,
                "ratio": d.ratio,
                "train_samples": len(d.train),
                "truth_available": d.truth_mri2 is not None,
            }
            for d in lesions
        ],
    )
    run.write_json(
        "results/summary.json",
        {
            "n_lesions": len(lesions),
            "n_responders": int(sum(d.label for d in lesions)),
            "n_patients": len({d.lesion.patient_id for d in lesions}),
            "excluded": list(notes),
            "n_trials": len(results.splits),
            "table1": numbers,
            "comparisons": comp,
            "positive_class": f"responder (GTV shrinkage >= {config.threshold:.0%} at follow-up)",
            "chance": {
                "null_band_90": None if null is None else [null.low, null.high],
                "null_median": None if null is None else null.median,
                "n_permutations": 0 if null is None else null.n_permutations,
                "null_models": [] if null is None else list(null.models),
                "cheap_models_true_labels": {} if null is None else dict(null.observed),
                "null_bands": {
                    test_set: {
                        "envelope_90": [nb.low, nb.high],
                        "true_test_labels_90": list(nb.band_true_test),
                        "permuted_test_labels_90": list(nb.band_permuted_test),
                        "cheap_models_true_labels": dict(nb.observed),
                    }
                    for test_set, nb in (nulls or {}).items()
                },
                "verdicts": verdicts,
                "cams": cam_v,
            },
        },
    )
    if results.first_model is not None:
        results.first_model.save(run.file("models/cam_trial00.pt"))
    if results.history:
        run.write_csv("results/training_history_trial00.csv", results.history)


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def add_report_sections(
    run: RunFolder,
    report: Report,
    lesions: Sequence[LesionData],
    notes: Sequence[str],
    results: ResponseResults,
    config: ResponseConfig,
    *,
    final: FinalModels | None = None,
    truth_note: str | None = None,
    nulls: Mapping[str, NullBand] | None = None,
) -> None:
    """The study's sections of a report (also used by ``adaptrt demo``).

    ``final``: the saved final models; ``truth_note``: why a ``truth/lesions.csv`` next to the manifest was
    ignored (:func:`adaptrt.response.study.read_truth_table`); ``nulls``: the permutation null bands by
    test set (:func:`chance_reference`), stated next to Table 1 and in the summary at the top.
    """
    from . import figures as rf

    n_resp = sum(d.label for d in lesions)
    null = _null_of(nulls, "mri2")
    verdicts = auc_verdicts(results.metric_rows, results.splits, null, _shown_models(results))
    cam_v = cam_verdicts(results.cam_rows, results.splits, methods=CAM_METHODS)
    memorised = memorisation_note(results.history)
    _summary_section(report, lesions, results, config, verdicts, cam_v, null, memorised)
    sec = report.section("Response study (Part I): protocol")
    n_train = int(np.mean([len(s.train) for s in results.splits]))
    n_test = int(np.mean([len(s.test) for s in results.splits]))
    sec.text(
        f"Profile {config.profile!r}: {len(lesions)} lesions of {len({d.lesion.patient_id for d in lesions})} "
        f"patients ({n_resp} responders, {len(lesions) - n_resp} non-responders; response = GTV shrinkage >= "
        f"{config.threshold:.0%} at follow-up). {len(results.splits)} trials of grouped (by patient), stratified "
        f"splits, about {n_train} training / {n_test} test lesions each, the same splits for every model. "
        f"Training: first MRI, {len(config.preprocess.angles_deg)} rotations "
        f"({', '.join(f'{a:g}' for a in config.preprocess.angles_deg)} degrees) of {_slices_text(config)} per "
        f"lesion; test: the same slice(s) of the second MRI (the paper's test images), cut with "
        f"{_crop_text(config)}, no augmentation, dropout off; a lesion's probability is the mean over its "
        f"slices. Positive class: responder. Autoencoder + classifier: {config.train.epochs} "
        f"epochs, batch {config.train.batch_size}, AdamW lr {config.train.lr:g}, mode {config.train.mode}. "
        "Hyper-parameters are fixed in advance; no model is selected on the test part."
        + (
            f" Ablation ({MODEL_NAMES['cam_sequential']}): the same network trained sequentially, the "
            f"autoencoder for {config.train.epochs} epochs, then the encoder frozen and the classifier trained "
            f"for {network_train_config(config, 'cam_sequential').n_classifier_epochs} epochs, on the same "
            "splits (the variant the paper set aside); its CAMs are not computed."
            if "cam_sequential" in config.models
            else ""
        )
    )
    if notes:
        sec.note(f"{len(notes)} lesion(s) excluded: " + "; ".join(notes))
    if truth_note is not None:
        sec.note(truth_note)

    t1 = report.section("Table 1: test on the second MRI (mean ± SD over trials)")
    t1.table(table1(results.metric_rows, test_set="mri2"))
    _chance_block(t1, verdicts, null, results)
    t1.text(
        "The same models tested on the first MRI of the held-out lesions (a prediction before treatment):"
    )
    t1.table(table1(results.metric_rows, test_set="mri1"))
    comp = comparisons(results.metric_rows, results.splits, seed=config.seed)
    if comp:
        t1.text(
            "Paired comparison across trials (CAM model minus the other model): mean difference, bootstrap 95 % "
            "CI, Nadeau–Bengio corrected resampled t-test (primary; the trials' test sets overlap, so plain tests "
            "are optimistic) and Wilcoxon signed-rank."
        )
        t1.table(
            [
                {
                    "comparison": c["comparison"],
                    "metric": c["metric"],
                    "mean diff": c["mean_diff"],
                    "95% CI": f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]",
                    "p (corrected t)": c["p_corrected"],
                    "p (Wilcoxon)": c["p_wilcoxon"],
                    "n trials": c["n"],
                }
                for c in comp
            ]
        )

    if results.history:
        fig_sec = report.section("Autoencoder + classifier (trial 0)")
        fig_sec.figure(
            run.save_figure(rf.training_curves(results.history), "training_curves"),
            caption="Fig. 4B: loss and accuracy per epoch (test curves are for monitoring only)",
        )
        if memorised:
            fig_sec.note(memorised)
        model = results.first_model
        test = [lesions[i] for i in results.splits[0].test][:6]
        if model is not None and test:
            x = np.stack([d.test_mri2.image[0] for d in test])
            m = np.stack([d.test_mri2.mask_bottleneck[0] for d in test])
            fig_sec.figure(
                run.save_figure(
                    rf.reconstructions(x, model.reconstruct(x, m), [d.key for d in test]), "reconstructions"
                ),
                caption="Fig. 4A: second-MRI test slices and their reconstructions by the autoencoder",
            )
            maps, grads = _bottleneck_and_gradients(model, x[:1], m[:1])
            fig_sec.figure(
                run.save_figure(rf.feature_maps(x[0], maps[0], grads[0], test[0].key), "feature_maps"),
                caption="Fig. 5A: the five masked bottleneck feature maps and the gradient of the class score "
                "(logit) with respect to them",
            )
    if results.example_cams:
        _cam_sections(run, report, lesions, results, cam_v)
    if final is not None:
        _final_section(report, final)


def _slices_text(config: ResponseConfig) -> str:
    n = config.preprocess.n_slices
    return (
        "1 slice (the slice of largest GTV area)"
        if n == 1
        else f"up to {n} slices (the slice of largest GTV area and its GTV-holding neighbours)"
    )


def _crop_text(config: ResponseConfig) -> str:
    if config.later_crop == "own":
        return "a box refitted to its own GTV (later_crop='own': the measurement of the old, label-correlated rule)"
    if config.fov_mm is not None:
        return f"the first MRI's fixed {config.fov_mm:g} mm field of view"
    return "the first MRI's box (same box, same slices)"


def memorisation_note(history: Sequence[dict[str, Any]]) -> str | None:
    """A note when the test loss rises while the training accuracy climbs (the network memorises).

    Rule: over the last half of the epochs the training accuracy ends >= 0.9 and above its value at the
    half, while the final test (second-MRI) loss is more than 10 % above its minimum. None otherwise, or
    without test curves.
    """
    rows = [h for h in history if h.get("val_loss") is not None and h.get("train_acc") is not None]
    if len(rows) < 4:
        return None
    half = rows[len(rows) // 2]
    last = rows[-1]
    best = min(float(h["val_loss"]) for h in rows)
    if (
        float(last["train_acc"]) >= 0.9
        and float(last["train_acc"]) > float(half["train_acc"])
        and float(last["val_loss"]) > 1.1 * best
    ):
        return (
            f"Memorisation: in trial 0 the training accuracy climbs to {float(last['train_acc']):.2f} while the "
            f"test loss rises from its minimum {best:.3f} to {float(last['val_loss']):.3f} at the last epoch: "
            "the network learns its training lesions, not a rule that transfers to new ones (the test curves "
            "are monitoring only; no epoch is chosen on them)."
        )
    return None


def _chance_block(
    sec: Any, verdicts: Sequence[dict[str, Any]], null: NullBand | None, results: ResponseResults
) -> None:
    n_trials = len(results.splits)
    if null is not None:
        sec.text(
            f"Chance, stated. The labels of the lesions were permuted {null.n_permutations} times; for each "
            f"permutation the cheap models ({', '.join(null.models)}; 'pixels' = logistic regression on the "
            "16×16 block means of the crop) were refitted on every trial's training lesions and scored on its "
            f"test lesions with the SAME {n_trials} splits, and the AUC averaged over the trials as in Table 1. "
            "Each fit is scored against the permuted test labels (the classical permutation test: it keeps "
            "the chance alignment of a cohort's labels with its images, which moves every model's mean the "
            f"same way; 90 % band [{null.band_permuted_test[0]:.2f}, {null.band_permuted_test[1]:.2f}]) "
            "and against the true ones (it keeps the second MRI's label-related shrinkage, on which arbitrary "
            f"weights score far from 0.5; [{null.band_true_test[0]:.2f}, {null.band_true_test[1]:.2f}]). "
            f"The null band is their envelope, [{null.low:.2f}, {null.high:.2f}] (median {null.median:.2f}): "
            "a model without signal lands there under this protocol on this cohort. The network is not refitted "
            "per permutation (minutes per fit); the cheap models share its splits and test sets. The ± SD "
            "above is the spread over trials that reuse the same lesions, not a standard error; the interval "
            "below is the Nadeau–Bengio corrected 95 % interval of the mean."
        )
    else:
        sec.text(
            "Chance, stated (no permutation null: n_permutations = 0). The interval is the Nadeau–Bengio "
            "corrected 95 % interval of the mean over trials; the ± SD above is a spread, not a standard error."
        )
    sec.table(
        [
            {
                "model": v["title"],
                "mean AUC (mri2)": _fmt(v["mean_auc"]),
                "corrected 95% interval": f"[{_fmt(v['ci_low'])}, {_fmt(v['ci_high'])}]",
                "null band (90%)": "–"
                if v["null_low"] is None
                else f"[{_fmt(v['null_low'])}, {_fmt(v['null_high'])}]",
                "verdict": v["verdict"],
            }
            for v in verdicts
        ]
    )
    for v in verdicts:
        sec.text(v["sentence"])
    if null is not None and null.observed:
        sec.text(
            "Cheap models with the true labels (mean AUC over the same splits): "
            + ", ".join(f"{m} {_fmt(a, 2)}" for m, a in null.observed.items())
            + "."
        )


def _summary_section(
    report: Report,
    lesions: Sequence[LesionData],
    results: ResponseResults,
    config: ResponseConfig,
    verdicts: Sequence[dict[str, Any]],
    cam_v: Sequence[dict[str, Any]],
    null: NullBand | None,
    memorised: str | None,
) -> None:
    sec = report.section("Response study (Part I): what it found")
    n_resp = sum(d.label for d in lesions)
    above = [v for v in verdicts if v["verdict"] == "above chance"]
    lines = [
        f"Question: does a lesion respond (positive class = responder: GTV shrinkage >= {config.threshold:.0%} "
        f"at follow-up)? {len(lesions)} lesions ({n_resp} responders), {len(results.splits)} trials, tested on "
        "the second MRI of held-out lesions."
    ]
    if above:
        lines.append(
            "Beats chance: "
            + "; ".join(
                f"{v['title']} (mean AUC {v['mean_auc']:.2f}, corrected 95 % [{v['ci_low']:.2f}, "
                f"{v['ci_high']:.2f}]"
                + (
                    f", {v['mean_auc'] - null.high:+.2f} above the null band's top"
                    if null is not None
                    else ""
                )
                + ")"
                for v in above
            )
            + "."
        )
    else:
        lines.append("No model beats chance on this cohort.")
    for v in verdicts:
        if v["verdict"] != "above chance":
            lines.append(v["sentence"])
    loc = [c for c in cam_v if c["explains"] == "non-response" and c["score"] == "auc"]
    if loc:
        lines.append(
            "CAM localisation of the planted radio-resistant sub-region by the CAM of the non-response class "
            "(evidence of resistance; every test lesion, AUC inside vs outside, chance 0.5, above 0.5 if it "
            "points at the resistant tissue): "
            + "; ".join(
                f"{c['method']} {c['mean']:.2f} ({c['verdict']}, excess corrected 95 % "
                f"[{c['excess_ci_low']:+.2f}, {c['excess_ci_high']:+.2f}])"
                for c in loc
            )
            + "."
        )
    if null is not None:
        lines.append(
            f"Null band of the mean AUC (label permutations, same splits, envelope of the true- and "
            f"permuted-test-label nulls): [{null.low:.2f}, {null.high:.2f}]."
        )
    if memorised:
        lines.append(memorised)
    for line in lines:
        sec.note(line)


def _final_section(report: Report, final: FinalModels) -> None:
    sec = report.section("Final models (for deployment)")
    sec.text(
        f"After the trials every model was fitted once more on all {final.n_lesions} usable lesions "
        f"({final.n_responders} responders, {final.n_patients} patients), nothing held out, and saved in "
        "models/ with models/manifest.json (configs, versions, checksums). These are the models to use on new "
        "lesions (adaptrt response predict); Table 1 above, computed on held-out lesions only, is the estimate "
        "of their performance; they have no test of their own."
    )
    sec.table(
        [
            {
                "model": MODEL_NAMES[m],
                "file": f"models/final_{m}.{'pt' if m in final.networks else 'joblib'}",
                "training samples": final.n_samples[m],
            }
            for m in final.names
        ]
    )
    if final.features:
        sec.note(
            "The .joblib files are pickles: loading one executes code stored in it. Load only run folders you "
            "trust."
        )


def _bottleneck_and_gradients(model: Any, x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import torch

    net = model.model_
    net.eval()
    xt = torch.as_tensor(x, dtype=torch.float32, device=model.device_)[:, None]
    mt = torch.as_tensor(m, dtype=torch.float32, device=model.device_)[:, None]
    with torch.enable_grad():
        out = net(xt, mt)
        (g,) = torch.autograd.grad(out.logit.sum(), out.bottleneck)
    return out.bottleneck.detach().cpu().numpy(), g.detach().cpu().numpy()


def _cam_sections(
    run: RunFolder,
    report: Report,
    lesions: Sequence[LesionData],
    results: ResponseResults,
    cam_v: Sequence[dict[str, Any]] = (),
) -> None:
    from . import figures as rf

    by_key = {d.key: d for d in lesions}
    sec = report.section("Class activation maps")
    sec.text(
        "Every lesion's CAMs come from a model that did not train on it (the first trial in which it was a test "
        "lesion), on its second-MRI slice, upsampled to 64×64 and masked to the GTV; maps are normalised by "
        "their maximum (never inverted). POS: the lesion's true class; NEG: the other class. A panel without "
        "colour is a CAM that is 0 everywhere: the model found no evidence for that class in the lesion "
        "(the ReLU of the weighted maps is 0); its title says so."
    )
    pick = []
    for label in (0, 1):
        pick += [k for k in results.example_cams if by_key[k].label == label][:1]
    rows = [
        (
            f"{k} ({'R' if by_key[k].label else 'NR'})",
            by_key[k].test_mri2.image[0],
            by_key[k].test_mri2.mask[0],
            results.example_cams[k],
        )
        for k in pick
    ]
    if rows:
        sec.figure(
            run.save_figure(rf.cam_examples(rows), "cam_examples"),
            caption="Fig. 5B: Grad-CAM, Grad-CAM++ and pixel-wise CAM for the true and the other class",
        )
    for label, name in ((0, "Group A (non-response)"), (1, "Group B (response)")):
        keys = [k for k in results.example_cams if by_key[k].label == label][:6]
        items = []
        for k in keys:
            d = by_key[k]
            truth = None if d.truth_mri2 is None else d.truth_mri2[0]
            cam = results.example_cams[k][("pixelwise", "true")]
            items.append((k, d.test_mri2.image[0], d.test_mri2.mask[0], cam, truth))
        if items:
            sec.figure(
                run.save_figure(rf.cam_gallery(items), f"cam_group_{'AB'[label]}"),
                caption=f"Fig. 6: pixel-wise CAMs (true class), {name}; GTV red, true resistant region "
                "cyan (simulated cohorts only)",
            )
    summary = cam_summary(results.cam_rows)
    if not summary:
        return
    scored = any(r.get("n_scored") for r in summary)
    sec2 = report.section("CAMs against the truth and the gradient maps (beyond the paper)")
    if scored:
        # over both groups only the CAM of one class has one expected direction (see cam_verdicts)
        best = max(
            (c for c in cam_v if c["explains"] == "non-response" and c["score"] == "auc"),
            key=lambda c: c["mean"],
            default=None,
        )
        sec2.text(
            "On a simulated cohort the planted radio-resistant sub-regions are known. For every test lesion and "
            "CAM, 'auc' is the ROC AUC of CAM values inside vs outside the true sub-region within the GTV (0.5 = "
            "chance), 'pointing_game' whether the CAM's maximum falls in it, 'mass_in_truth' the share of CAM mass "
            "in it (chance level: 'truth_fraction'). Means over lesions and trials where the score is defined."
            + (
                f" Highest localisation AUC of the non-response-class CAM: {best['method']} "
                f"({_fmt(best['mean'])}, {best['verdict']})."
                if best
                else ""
            )
        )
    else:
        sec2.text(
            "No ground truth next to this manifest (truth/lesions.csv), so CAMs are not scored against "
            "sub-regions; only their correlation with the gradient maps is reported."
        )
    sec2.text(
        "spearman_magnitude / spearman_radial: Spearman correlation inside the GTV of the CAM with the "
        "gradient-magnitude and radial-gradient maps of the same slice."
    )
    sec2.table(summary)
    if cam_v:
        sec2.text(
            "Against chance, by the class the CAM explains (over every test lesion, responder or not): the CAM "
            "of the non-response class should point at the resistant sub-region (above chance), that of the "
            "response class away from it (below chance). Each score minus its chance level (AUC: 0.5; pointing "
            "game and CAM mass in the truth: the fraction of the GTV covered by the true sub-region), averaged "
            "per trial; the interval is the Nadeau–Bengio corrected 95 % interval of that excess over the trials."
        )
        sec2.table(
            [
                {
                    "method": c["method"],
                    "CAM of class": c["explains"],
                    "score": c["score"],
                    "mean": _fmt(c["mean"]),
                    "chance": _fmt(c["chance"]),
                    "excess 95% interval": f"[{_fmt(c['excess_ci_low'])}, {_fmt(c['excess_ci_high'])}]",
                    "verdict": c["verdict"],
                }
                for c in cam_v
            ]
        )
