"""Final (deployment) models of the response study, saved in its run folder, and predictions on new lesions.

What the final models are
-------------------------
The trials of :func:`adaptrt.response.study.run_trials` answer "how well does a model *trained this way*
predict response on lesions it has not seen?": Table 1 is that estimate, over repeated held-out splits. The
model to use on new patients is the same recipe fitted once more on *all* usable lesions
(:func:`fit_final_models`): the autoencoder + classifier on every lesion's first-MRI training samples (the
study's augmentation), the radiomics and gradient pipelines on every lesion's first-MRI features. Nothing is
held out of it, so it has no test score of its own: **Table 1 of the same run estimates its performance**
(if anything slightly pessimistically, as it learns from ~25 % more lesions than each trial's model).

Files (``models/`` of a run folder, :func:`save_final_models`)
---------------------------------------------------------------
``final_cam.pt`` (and ``final_cam_sequential.pt`` when the ablation was run)
    :meth:`adaptrt.response.train.AutoencoderClassifier.save`: weights, training config, seed, history;
    read with ``torch.load(weights_only=True)``, which runs no code.
``final_radiomics.joblib``, ``final_gradients.joblib``
    :func:`joblib.dump` of the fitted scikit-learn pipeline with its feature names (the column order) and the
    feature config.
``manifest.json``
    What each file is, its SHA-256, the adaptrt and library versions, the preprocessing / radiomics /
    gradient configs, the response threshold, the number of lesions and a fingerprint of every training
    lesion (to tell a new cohort from the training one at prediction time).

.. warning::
   ``.joblib`` files are pickles: **loading one executes code** stored in it. Load only run folders you
   trust (your own runs, or ones from a source you would run code from). :func:`load_final_models` checks
   each file's SHA-256 against ``manifest.json`` before unpickling it, which catches a damaged or swapped
   file, not a forged folder.

Prediction (:func:`predict_cohort`, :func:`run_predict`)
--------------------------------------------------------
Every lesion of a manifest is read at one time point (``mri1``, the first MRI, by default: a prediction
before treatment; or ``mri2``, the paper's test images) and preprocessed exactly as the test lesions of the
study were (the saved :class:`~adaptrt.preprocess.PreprocessConfig` without the rotations; the saved
radiomics / gradient configs). A lesion's CNN probability is the mean over its slices. Labels are not needed;
when the manifest has follow-ups, :func:`run_predict` also reports the metrics against them, as an *external
test* only when no lesion was among the training lesions (same identifier or same pixels).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import __version__
from ..cohort import FIRST_TIMEPOINT, FOLLOWUP_TIMEPOINT, SECOND_TIMEPOINT, Cohort, Lesion
from ..config import from_dict, to_jsonable
from ..errors import InputError
from ..io.atomic import atomic_file, check_writable
from ..preprocess import LesionSlices, PreprocessConfig
from ..types import Volume
from .gradients import GradientConfig
from .radiomics import RadiomicsConfig
from .study import (
    MODEL_NAMES,
    NETWORK_MODELS,
    LesionData,
    ResponseConfig,
    final_training_data,
    network_train_config,
    prepare_first,
    prepare_later,
)

__all__ = [
    "FEATURE_KINDS",
    "MODELS_FOLDER",
    "PREDICT_TIMEPOINTS",
    "FeatureModel",
    "FinalModels",
    "fit_final_models",
    "lesion_fingerprint",
    "load_final_models",
    "predict_cohort",
    "run_predict",
    "save_final_models",
]

#: Folder of the final models inside a run folder.
MODELS_FOLDER = "models"
#: The handcrafted-feature models (scikit-learn pipelines).
FEATURE_KINDS: tuple[str, ...] = ("radiomics", "gradients")
#: Time points :func:`predict_cohort` can predict from.
PREDICT_TIMEPOINTS: tuple[str, ...] = (FIRST_TIMEPOINT, SECOND_TIMEPOINT)
_FORMAT = "adaptrt.response.FinalModels"
_FORMAT_VERSION = 1
_PIPELINE_FORMAT = "adaptrt.response.FeatureModel"
_TRUST_NOTE = (
    ".joblib files are pickles: loading one executes code stored in it; load only run folders you trust"
)


@dataclass(frozen=True, eq=False)
class FeatureModel:
    """A fitted radiomics or gradient pipeline with the column order it was fitted on.

    Attributes
    ----------
    kind
        ``"radiomics"`` or ``"gradients"``.
    pipeline
        The fitted :func:`adaptrt.response.features.feature_model` pipeline; ``predict_proba(X)[:, 1]`` with
        ``X`` of shape ``(n_lesions, len(feature_names))``.
    feature_names
        The feature (column) names in the order of ``X``.
    """

    kind: str
    pipeline: Any
    feature_names: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class FinalModels:
    """The study's models fitted on all usable lesions (the models to deploy), with what prediction needs.

    Their performance on new lesions is estimated by Table 1 of the run that made them (held-out splits);
    they have no held-out test of their own.

    Attributes
    ----------
    networks
        ``{"cam" | "cam_sequential": AutoencoderClassifier}`` (the autoencoder + classifier, and the ablation
        when it was run).
    features
        ``{"radiomics" | "gradients": FeatureModel}``.
    threshold
        Fractional GTV shrinkage at follow-up that defines response (what the probability is of).
    preprocess
        The study's preprocessing (with the training rotations; prediction uses it without them).
    radiomics, gradients
        Feature settings of the study.
    seed
        Seed of the fits.
    n_lesions, n_responders, n_patients
        The lesions the models were fitted on.
    n_samples
        ``{model name: training samples}`` (a network: slices × rotations of every lesion; a pipeline: one
        row per lesion).
    training_lesions
        ``{lesion key: fingerprint}`` of the training lesions (:func:`lesion_fingerprint` of the first MRI).
    adaptrt_version
        Version of adaptrt that fitted the models.
    fov_mm
        The study's fixed field of view in mm, or None (the first MRI's GTV box); see
        :class:`adaptrt.response.study.ResponseConfig`.
    """

    networks: Mapping[str, Any]
    features: Mapping[str, FeatureModel]
    threshold: float
    preprocess: PreprocessConfig
    radiomics: RadiomicsConfig
    gradients: GradientConfig
    seed: int
    n_lesions: int
    n_responders: int
    n_patients: int
    n_samples: Mapping[str, int]
    training_lesions: Mapping[str, str]
    adaptrt_version: str = __version__
    fov_mm: float | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The models held, in Table 1's column order."""
        return tuple(m for m in MODEL_NAMES if m in self.networks or m in self.features)


def lesion_fingerprint(slices: LesionSlices) -> str:
    """SHA-256 (hex) of a prepared lesion's images and masks: equal pixels give equal fingerprints.

    Used to recognise a training lesion under another identifier. Pixels are compared bit for bit, so the
    same lesion prepared by another version of the libraries may not match (the check can miss a repeat,
    never invent one).
    """
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(slices.image, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(slices.mask, dtype=np.bool_).tobytes())
    return h.hexdigest()


def _stack(items: Sequence[LesionSlices]) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    return np.concatenate([s.image for s in items]), np.concatenate([s.mask_bottleneck for s in items])


def _fit_pipeline(kind: str, x: NDArray[np.float64], y: NDArray[np.int64], seed: int, profile: str) -> Any:
    from .features import feature_model

    pipe = feature_model(kind, seed=seed, profile=profile)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # constant features
        warnings.simplefilter("ignore", category=RuntimeWarning)
        pipe.fit(x, y)
    return pipe


def fit_final_models(
    lesions: Sequence[LesionData],
    config: ResponseConfig,
    *,
    progress: bool = False,
    networks: Mapping[str, Any] | None = None,
) -> FinalModels:
    """Fit every model of ``config.models`` on all ``lesions`` (the deployment models).

    The recipe of each trial, without a test part: networks on the first-MRI training samples of every
    lesion (``sum(len(d.train))`` samples, e.g. 69 × 6 = 414), pipelines on the first-MRI features of every
    lesion (one row each), all with ``config.seed``. Table 1 of the trials estimates how these models
    perform on new lesions.

    The networks are trained like the trials': with ``config.trainer == "engine"`` by
    :func:`adaptrt.response.engine.fit_fast` (``config.compile``; no monitoring data), otherwise by
    :meth:`adaptrt.response.train.AutoencoderClassifier.fit` (``"batched"`` and ``"plain"``: one network is
    not worth stacking). Either way the result is an ``AutoencoderClassifier`` equal to ``fit``'s up to
    float32 rounding, saved and loaded the same way.

    Parameters
    ----------
    lesions
        The usable lesions from :func:`adaptrt.response.study.prepare_cohort` with ``config``.
    config
        The study's settings.
    progress
        Show a progress bar over each network's epochs.
    networks
        Final networks already trained with this recipe, ``{name: AutoencoderClassifier}``: those of
        ``ResponseResults.final_networks`` (:func:`adaptrt.response.study.run_trials` with
        ``final_networks=True`` trains them in the trials' worker pool). The networks not given are trained
        here.

    Returns
    -------
    FinalModels

    Raises
    ------
    InputError
        Fewer than two lesions of either class.
    ValueError
        A network in ``networks`` with another training config or seed than this recipe's.
    """
    from .engine import fit_fast
    from .features import features_table
    from .train import AutoencoderClassifier

    y = np.array([d.label for d in lesions], dtype=np.int64)
    n_pos = int(y.sum())
    if min(n_pos, len(y) - n_pos) < 2:
        raise InputError(
            f"final models need at least two lesions of each class, got {n_pos} responders and "
            f"{len(y) - n_pos} non-responders",
            field="threshold",
            fix="check the labels of the cohort (adaptrt cohort check) or the response threshold",
        )
    fitted: dict[str, Any] = {}
    features: dict[str, FeatureModel] = {}
    n_samples: dict[str, int] = {}
    for kind in FEATURE_KINDS:
        if kind not in config.models:
            continue
        x, names = features_table([d.features[kind][FIRST_TIMEPOINT] for d in lesions])
        pipe = _fit_pipeline(kind, x, y, config.seed, config.profile)
        features[kind] = FeatureModel(kind, pipe, tuple(names))
        n_samples[kind] = len(lesions)
    if any(name in config.models for name in NETWORK_MODELS):
        data = final_training_data(lesions)
        for name in NETWORK_MODELS:
            if name not in config.models:
                continue
            train = network_train_config(config, name)
            given = (networks or {}).get(name)
            if given is not None:
                if given.config != train or given.seed != config.seed:
                    raise ValueError(
                        f"the given {name!r} network was trained with another config or seed than the final "
                        f"recipe (seed {given.seed}, expected {config.seed})"
                    )
                fitted[name] = given
            elif config.trainer == "engine":
                # the trials' fast trainer: the same network as fit up to float32 rounding, several times faster
                (fitted[name],) = fit_fast(
                    train,
                    [data],
                    [config.seed],
                    workers=config.workers,
                    compile=config.compile,
                    progress=progress,
                )
            else:
                est = AutoencoderClassifier(train, seed=config.seed)
                fitted[name] = est.fit(data.x, data.mask, data.y, progress=progress)
            n_samples[name] = len(data.y)
    return FinalModels(
        networks=fitted,
        features=features,
        threshold=float(config.threshold),
        preprocess=config.preprocess,
        radiomics=config.radiomics,
        gradients=config.gradients,
        seed=config.seed,
        n_lesions=len(lesions),
        n_responders=n_pos,
        n_patients=len({d.lesion.patient_id for d in lesions}),
        n_samples=n_samples,
        training_lesions={d.key: lesion_fingerprint(d.test_mri1) for d in lesions},
        fov_mm=config.fov_mm,
    )


# ---------------------------------------------------------------------------------------------- files
def _versions() -> dict[str, str]:
    import joblib
    import sklearn
    import torch

    return {
        "adaptrt": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _what(name: str, models: FinalModels) -> str:
    if name in models.networks:
        mode = models.networks[name].config.mode
        return (
            f"{MODEL_NAMES[name]}: autoencoder + classifier ({mode} training) fitted on the first-MRI "
            "training samples of all lesions; AutoencoderClassifier.save (torch, weights only)"
        )
    return (
        f"{MODEL_NAMES[name]}: scikit-learn pipeline (impute, variance filter, scale, F-test top-k, logistic) "
        f"fitted on the first-MRI {name} features of all lesions, with its feature names and feature config; "
        "joblib (a pickle: loading it executes code)"
    )


def save_final_models(models: FinalModels, folder: str | Path, *, overwrite: bool = False) -> Path:
    """Write the final models into ``folder/models/`` (see the module docstring); return the manifest's path.

    Parameters
    ----------
    models
        From :func:`fit_final_models`.
    folder
        The run folder (or its staging folder); ``models/`` is created in it.
    overwrite
        Replace existing files.

    Returns
    -------
    pathlib.Path
        ``folder/models/manifest.json``.

    Raises
    ------
    InputError
        A file exists and ``overwrite`` is False.
    """
    import joblib

    out = Path(folder) / MODELS_FOLDER
    entries: dict[str, dict[str, Any]] = {}
    for name in models.names:
        entry: dict[str, Any] = {"title": MODEL_NAMES[name], "what": _what(name, models)}
        if name in models.networks:
            path = out / f"final_{name}.pt"
            # save() writes the archive from a buffer: identical runs give identical bytes
            models.networks[name].save(path, overwrite=overwrite)
            entry["train"] = to_jsonable(models.networks[name].config)
        else:
            fm = models.features[name]
            path = out / f"final_{name}.joblib"
            cfg = models.radiomics if name == "radiomics" else models.gradients
            payload = {
                "format": _PIPELINE_FORMAT,
                "version": _FORMAT_VERSION,
                "kind": name,
                "pipeline": fm.pipeline,
                "feature_names": list(fm.feature_names),
                "feature_config": to_jsonable(cfg),
                "versions": _versions(),
            }
            with atomic_file(path, overwrite=overwrite) as tmp:
                joblib.dump(payload, tmp)
            entry["n_features"] = len(fm.feature_names)
        entry.update(file=path.name, sha256=_sha256(path), n_samples=int(models.n_samples[name]))
        entries[name] = entry
    manifest = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "adaptrt_version": models.adaptrt_version,
        "versions": _versions(),
        "note": (
            f"Models fitted on all {models.n_lesions} usable lesions after the trials: the models to deploy. "
            "Table 1 of this run (held-out splits) estimates their performance; they have no test of their "
            f"own. Probability of response = GTV shrinkage >= {models.threshold:.0%} at follow-up. "
            f"{_TRUST_NOTE}."
        ),
        "threshold": models.threshold,
        "seed": models.seed,
        "n_lesions": models.n_lesions,
        "n_responders": models.n_responders,
        "n_patients": models.n_patients,
        "preprocess": to_jsonable(models.preprocess),
        "fov_mm": models.fov_mm,
        "radiomics": to_jsonable(models.radiomics),
        "gradients": to_jsonable(models.gradients),
        "models": entries,
        "training_lesions": [{"lesion": k, "fingerprint": v} for k, v in models.training_lesions.items()],
    }
    path = out / "manifest.json"
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(to_jsonable(manifest), indent=2, allow_nan=False) + "\n")
    return path


def _read_manifest_json(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise InputError(
            "run folder not found", path=folder, fix="pass the folder written by `adaptrt response run`"
        )
    path = folder / MODELS_FOLDER / "manifest.json"
    if not path.is_file():
        raise InputError(
            f"has no saved final models ({MODELS_FOLDER}/manifest.json is missing)",
            path=folder,
            fix="pass the run folder of `adaptrt response run` made with final models (fit_final, the default)",
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            f"is not valid JSON ({exc})", path=path, fix="re-run the study to write the models again"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise InputError("is not a manifest of adaptrt final models", path=path, field="format")
    if data.get("format_version") != _FORMAT_VERSION:
        raise InputError(
            f"has format version {data.get('format_version')!r}; adaptrt {__version__} reads version "
            f"{_FORMAT_VERSION}",
            path=path,
            field="format_version",
            fix=f"use the adaptrt version that wrote it ({data.get('adaptrt_version')}) or re-run the study",
        )
    return data


def _version_note(saved: Mapping[str, Any]) -> str:
    now = _versions()
    diffs = [
        f"{k} {saved.get(k)} (now {now[k]})"
        for k in ("adaptrt", "sklearn", "torch")
        if saved.get(k) != now[k]
    ]
    return ("saved with " + ", ".join(diffs)) if diffs else ""


def load_final_models(run_folder: str | Path, *, device: str | None = None) -> FinalModels:
    """Read the final models of a run folder written by :func:`save_final_models`.

    .. warning::
       The ``.joblib`` files are pickles: loading them **executes code**. Load only run folders you trust.
       Each file's SHA-256 is checked against ``models/manifest.json`` before it is unpickled.

    Parameters
    ----------
    run_folder
        The run folder (holding ``models/manifest.json``).
    device
        Device of the networks (see :attr:`adaptrt.response.train.TrainConfig.device`); None keeps the saved
        one (``"auto"`` by default).

    Returns
    -------
    FinalModels

    Raises
    ------
    InputError
        Missing folder, manifest or model file; a file changed since it was saved (checksum); an unknown
        format version; a file that cannot be read (the message notes the versions it was saved with when
        they differ from the running ones).

    Warns
    -----
    UserWarning
        When the models were saved by another version of adaptrt, scikit-learn or torch (predictions may
        differ slightly).
    """
    import joblib

    from .train import AutoencoderClassifier

    folder = Path(run_folder)
    data = _read_manifest_json(folder)
    mpath = folder / MODELS_FOLDER / "manifest.json"
    saved_versions = data.get("versions")
    note = _version_note(saved_versions if isinstance(saved_versions, dict) else {})
    if note:
        warnings.warn(f"{mpath}: models {note}; predictions may differ slightly", UserWarning, stacklevel=2)
    try:
        preprocess = from_dict(PreprocessConfig, data["preprocess"])
        radiomics = from_dict(RadiomicsConfig, data["radiomics"])
        gradients = from_dict(GradientConfig, data["gradients"])
        entries: dict[str, dict[str, Any]] = {str(k): dict(v) for k, v in data["models"].items()}
        threshold = float(data["threshold"])
        seed = int(data["seed"])
        counts = (int(data["n_lesions"]), int(data["n_responders"]), int(data["n_patients"]))
        lesions = {str(r["lesion"]): str(r["fingerprint"]) for r in data["training_lesions"]}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        problem = exc.problem if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        raise InputError(
            f"is damaged or incomplete ({problem})",
            path=mpath,
            fix="re-run the study to write the models again",
        ) from exc
    unknown = [n for n in entries if n not in MODEL_NAMES]
    if unknown or not entries:
        raise InputError(
            f"lists unknown or no models {unknown}", path=mpath, field="models", fix="re-run the study"
        )
    networks: dict[str, Any] = {}
    features: dict[str, FeatureModel] = {}
    n_samples: dict[str, int] = {}
    paths: dict[str, Path] = {}
    # every file is checked before any is unpickled
    for name, entry in entries.items():
        path = folder / MODELS_FOLDER / Path(str(entry.get("file", ""))).name
        if not path.is_file():
            raise InputError(
                f"model file listed in {MODELS_FOLDER}/manifest.json is missing",
                path=path,
                fix="copy the whole run folder, or re-run the study",
            )
        if _sha256(path) != entry.get("sha256"):
            raise InputError(
                "does not match its SHA-256 in manifest.json: it changed after it was saved (not loaded)",
                path=path,
                fix="restore the run folder as it was written, or re-run the study",
            )
        paths[name] = path
    for name, entry in entries.items():
        path = paths[name]
        n_samples[name] = int(entry.get("n_samples", 0))
        if name in NETWORK_MODELS:
            networks[name] = AutoencoderClassifier.load(path, device=device)
            continue
        try:
            payload = joblib.load(path)
        except Exception as exc:
            raise InputError(
                f"cannot be read ({type(exc).__name__}: {exc})"
                + (f"; the models were {note}" if note else ""),
                path=path,
                fix="load it with the versions it was saved with, or re-run the study with this version",
            ) from exc
        cfg = radiomics if name == "radiomics" else gradients
        if (
            not isinstance(payload, dict)
            or payload.get("format") != _PIPELINE_FORMAT
            or payload.get("kind") != name
            or payload.get("feature_config") != to_jsonable(cfg)
        ):
            raise InputError(
                f"is not the saved {name} model of this manifest (format, kind or feature config differ)",
                path=path,
                fix="restore the run folder as it was written, or re-run the study",
            )
        features[name] = FeatureModel(
            name, payload["pipeline"], tuple(str(n) for n in payload["feature_names"])
        )
    return FinalModels(
        networks=networks,
        features=features,
        threshold=threshold,
        preprocess=preprocess,
        radiomics=radiomics,
        gradients=gradients,
        seed=seed,
        n_lesions=counts[0],
        n_responders=counts[1],
        n_patients=counts[2],
        n_samples=n_samples,
        training_lesions=lesions,
        adaptrt_version=str(data.get("adaptrt_version", "?")),
        fov_mm=_saved_fov(data.get("fov_mm"), path=mpath),
    )


# ---------------------------------------------------------------------------------------------- predict
def _saved_fov(value: Any, *, path: Path) -> float | None:
    """The ``fov_mm`` of a saved manifest.json (absent in older runs: None)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(
            f"fov_mm must be null or a positive number, got {value!r}", path=path, field="fov_mm"
        )
    return float(value)


def _check_timepoint(timepoint: str, cohort: Cohort) -> None:
    if timepoint not in PREDICT_TIMEPOINTS:
        raise InputError(
            f"cannot predict from time point {timepoint!r}",
            field="timepoint",
            fix=f"use {FIRST_TIMEPOINT!r} (first MRI, before treatment) or {SECOND_TIMEPOINT!r} (second MRI)",
        )
    if not any(timepoint in les.timepoints for les in cohort.lesions):
        raise InputError(
            f"no lesion of the manifest has a {timepoint!r} row, the time point to predict from",
            path=cohort.source,
            field="timepoint",
            fix=f"add the {timepoint!r} rows (image and GTV of that MRI) to the manifest, or predict from "
            f"{FIRST_TIMEPOINT!r}",
        )


def _seen_by(les: Lesion, fingerprint: str | None, keys: Set[str], fingerprints: Set[str]) -> str:
    how = []
    if les.key in keys:
        how.append("identifier")
    if fingerprint is not None and fingerprint in fingerprints:
        how.append("pixels")
    return "+".join(how)


def predict_cohort(
    models: FinalModels,
    cohort: Cohort,
    *,
    timepoint: str = FIRST_TIMEPOINT,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Probability of response of every lesion of a cohort from each final model.

    Each lesion's image and GTV at ``timepoint`` are preprocessed exactly as the study's test lesions were
    (``models.preprocess`` without rotations; ``models.radiomics`` / ``models.gradients`` for the
    features): the second MRI with the first MRI's box and slices (the same-box rule,
    :func:`adaptrt.response.study.prepare_later`), so a lesion needs its ``mri1`` row for ``mri2`` too.
    Labels (follow-ups) are not needed.

    Parameters
    ----------
    models
        From :func:`fit_final_models` or :func:`load_final_models`.
    cohort
        The lesions to predict (:func:`adaptrt.io.manifest.read_manifest`; it requires an ``mri1`` row for
        every lesion).
    timepoint
        ``"mri1"`` (first MRI: a prediction before treatment) or ``"mri2"`` (second MRI, the paper's test).
    progress
        Show a progress bar over the lesions.

    Returns
    -------
    list of dict
        One row per lesion, in manifest order: ``lesion``, ``patient_id``, ``lesion_id``, ``timepoint``,
        ``status`` (``"ok"``; ``"partial"`` when a feature model could not be applied; ``"excluded"`` when the
        lesion could not be read or preprocessed), ``reason`` (why, or ``""``), ``n_slices``, one
        ``p_<model>`` per model (probability of response in [0, 1], None where not computed) and
        ``seen_in_training`` / ``seen_by`` (the lesion's identifier or its first-MRI pixels match a training
        lesion of the models: ``"identifier"``, ``"pixels"``, ``"identifier+pixels"`` or ``""``).

    Raises
    ------
    InputError
        An unknown ``timepoint``, or no lesion with a row for it.
    """
    from tqdm.auto import tqdm

    from .features import features_table
    from .gradients import gradient_features
    from .radiomics import radiomics_features

    _check_timepoint(timepoint, cohort)
    test_cfg = dataclasses.replace(models.preprocess, angles_deg=(0.0,))
    keys, fingerprints = set(models.training_lesions), set(models.training_lesions.values())
    rows: list[dict[str, Any]] = []
    samples: list[LesionSlices | None] = []
    feats: dict[str, list[tuple[int, Mapping[str, float]]]] = {k: [] for k in models.features}
    for les in tqdm(cohort.lesions, desc="predicting", unit="lesion", disable=not progress):
        row: dict[str, Any] = {
            "lesion": les.key,
            "patient_id": les.patient_id,
            "lesion_id": les.lesion_id,
            "timepoint": timepoint,
            "status": "ok",
            "reason": "",
            "n_slices": None,
            **{f"p_{m}": None for m in models.names},
            "seen_in_training": False,
            "seen_by": "",
        }
        rows.append(row)
        samples.append(None)
        # the first MRI is read in any case: the training lesions' fingerprints are of their first MRI
        first: tuple[Volume, Volume, LesionSlices] | None = None
        first_problem = f"no {FIRST_TIMEPOINT!r} row in the manifest"
        if FIRST_TIMEPOINT in les.timepoints:
            try:
                img1, gtv1 = les[FIRST_TIMEPOINT].load_image(), les[FIRST_TIMEPOINT].load_mask()
                first = (img1, gtv1, prepare_first(img1, gtv1, test_cfg, fov_mm=models.fov_mm))
            except InputError as exc:
                first_problem = exc.problem
        seen = _seen_by(les, None if first is None else lesion_fingerprint(first[2]), keys, fingerprints)
        row.update(seen_in_training=bool(seen), seen_by=seen)
        if timepoint == FIRST_TIMEPOINT:
            if first is None:
                row.update(status="excluded", reason=first_problem)
                continue
            image, gtv, ls = first
        else:
            if timepoint not in les.timepoints:
                row.update(status="excluded", reason=f"no {timepoint!r} row in the manifest")
                continue
            if first is None:
                row.update(
                    status="excluded",
                    reason=f"{first_problem} (the {timepoint} image is cut with the first MRI's box)",
                )
                continue
            try:
                image, gtv = les[timepoint].load_image(), les[timepoint].load_mask()
                ls = prepare_later(image, gtv, first[2], test_cfg)
            except InputError as exc:
                row.update(status="excluded", reason=exc.problem)
                continue
        samples[-1] = ls
        row["n_slices"] = len(np.unique(ls.slice_index))
        problems = []
        for kind in models.features:
            try:
                if kind == "radiomics":
                    values = radiomics_features(image, gtv, models.radiomics)
                else:
                    values = gradient_features(image, gtv, models.gradients)
            except InputError as exc:
                problems.append(f"{kind}: {exc.problem}")
                continue
            feats[kind].append((len(rows) - 1, values))
        if problems:
            row.update(status="partial", reason="; ".join(problems))

    ok = [i for i, s in enumerate(samples) if s is not None]
    if ok and models.networks:
        items = [s for s in samples if s is not None]
        x, m = _stack(items)
        edges = np.cumsum([0, *(len(s) for s in items)])
        for name, net in models.networks.items():
            p = net.predict_proba(x, m)
            for i, a, b in zip(ok, edges[:-1], edges[1:], strict=True):
                rows[i][f"p_{name}"] = float(np.mean(p[a:b]))
    for kind, fm in models.features.items():
        if not feats[kind]:
            continue
        xf, _ = features_table([f for _, f in feats[kind]], fm.feature_names)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            warnings.simplefilter("ignore", category=RuntimeWarning)
            p = fm.pipeline.predict_proba(xf)[:, 1]
        for (i, _), pi in zip(feats[kind], p, strict=True):
            rows[i][f"p_{kind}"] = float(pi)
    return rows


def _labels(cohort: Cohort, threshold: float) -> dict[str, tuple[int | None, float | None, str]]:
    """``{lesion key: (label, follow-up / mri1 volume ratio, reason when unlabelled)}``."""
    from ..cohort import mask_volume_mm3, response_label

    out: dict[str, tuple[int | None, float | None, str]] = {}
    for les in cohort.lesions:
        if FOLLOWUP_TIMEPOINT not in les.timepoints:
            out[les.key] = (None, None, f"no {FOLLOWUP_TIMEPOINT!r} row")
            continue
        try:
            v1 = mask_volume_mm3(les[FIRST_TIMEPOINT].load_mask())
            vf = mask_volume_mm3(les[FOLLOWUP_TIMEPOINT].load_mask())
            lab = response_label(v1, vf, threshold)
        except (InputError, ValueError) as exc:
            problem = exc.problem if isinstance(exc, InputError) else str(exc)
            out[les.key] = (None, None, f"no label: {problem}")
            continue
        out[les.key] = (int(lab.responder), lab.ratio, "")
    return out


def _fmt(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3f}"


def run_predict(
    run_folder: str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    timepoint: str = FIRST_TIMEPOINT,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Predict the response of every lesion of a manifest with a run's final models; write a run folder.

    The run folder ``out`` holds ``results/predictions.csv`` and ``results/predictions.json`` (one row per
    lesion, see :func:`predict_cohort`, plus ``label`` and ``volume_ratio`` where the manifest has a
    follow-up), ``results/metrics.csv`` when some lesions are labelled, and ``report.html``. Labels are not
    needed. Metrics against the follow-up labels are called an *external test* only when no predicted
    lesion was among the models' training lesions (same identifier or same first-MRI pixels).

    .. warning::
       Loading the models unpickles ``.joblib`` files, which executes code: use only run folders you trust.

    Parameters
    ----------
    run_folder
        A run folder of ``adaptrt response run`` with final models (``models/manifest.json``).
    manifest
        Lesion manifest of the lesions to predict; the ``timepoint`` rows are needed (and, as for every
        manifest, an ``mri1`` row per lesion).
    out
        Run folder to create.
    timepoint
        ``"mri1"`` or ``"mri2"``.
    overwrite
        Replace an existing ``out``.
    progress
        Show progress bars.

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    InputError
        ``out`` exists (without ``overwrite``), bad run folder or manifest, unknown time point or none of
        its rows. Nothing is written then.
    """
    from ..io.manifest import read_manifest
    from ..metrics.classification import binary_metrics
    from ..report.run import RunFolder, command_line
    from .study import TABLE1_METRICS

    started = _dt.datetime.now(_dt.UTC)
    check_writable(out, overwrite=overwrite)
    models = load_final_models(run_folder)
    cohort = read_manifest(manifest)
    rows = predict_cohort(models, cohort, timepoint=timepoint, progress=progress)
    labels = _labels(cohort, models.threshold)
    for r in rows:
        lab, ratio, _ = labels[r["lesion"]]
        r["label"], r["volume_ratio"] = lab, ratio
    labelled = [r for r in rows if r["label"] is not None]
    n_seen = sum(bool(r["seen_in_training"]) for r in rows)
    external = n_seen == 0
    metrics: list[dict[str, Any]] = []
    for name in models.names:
        use = [r for r in labelled if r[f"p_{name}"] is not None]
        if not use:
            continue
        m = binary_metrics([r["label"] for r in use], [r[f"p_{name}"] for r in use])
        metrics.append(
            {
                "model": name,
                "title": MODEL_NAMES[name],
                "external_test": external,
                **{k: m[k] for k in TABLE1_METRICS},
                "n": len(use),
                "n_responders": int(sum(r["label"] for r in use)),
            }
        )
    command = command_line("run_predict")
    config = {
        "run_folder": str(Path(run_folder).resolve()),
        "manifest": str(Path(manifest).resolve()),
        "timepoint": timepoint,
        "threshold": models.threshold,
        "models": list(models.names),
        "models_adaptrt_version": models.adaptrt_version,
    }
    excluded = [f"{r['lesion']}: {r['reason']}" for r in rows if r["status"] == "excluded"]
    with RunFolder(
        out,
        command=command,
        config=config,
        seed=models.seed,
        overwrite=overwrite,
        title="adaptrt response predict",
        started=started,
    ) as run:
        run.write_csv("results/predictions.csv", rows)
        run.write_json(
            "results/predictions.json",
            {
                "timepoint": timepoint,
                "threshold": models.threshold,
                "models": {m: MODEL_NAMES[m] for m in models.names},
                "n_lesions": len(rows),
                "n_predicted": sum(r["status"] != "excluded" for r in rows),
                "excluded": excluded,
                "n_seen_in_training": n_seen,
                "external_test": external if metrics else None,
                "metrics": metrics,
                "rows": rows,
            },
        )
        if metrics:
            run.write_csv("results/metrics.csv", metrics)
        _predict_report(run.report, models, rows, metrics, timepoint, excluded, n_seen, external)
    return Path(out)


def _predict_report(
    report: Any,
    models: FinalModels,
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[Mapping[str, Any]],
    timepoint: str,
    excluded: Sequence[str],
    n_seen: int,
    external: bool,
) -> None:
    sec = report.section("Predicted response")
    sec.text(
        f"Probability that each lesion responds (GTV shrinkage >= {models.threshold:.0%} at follow-up), from "
        f"its {'first' if timepoint == FIRST_TIMEPOINT else 'second'} MRI ({timepoint}), by the final models of "
        f"the response study: fitted on all {models.n_lesions} lesions ({models.n_responders} responders) of "
        f"{models.n_patients} patients, with adaptrt {models.adaptrt_version}. Table 1 of that run (held-out "
        "splits) estimates how well they predict; these models have no test of their own. Each lesion was "
        "preprocessed exactly as the study's test lesions (same crop, slices, normalisation, feature "
        "settings). Labels are not needed: "
        + (
            "a manifest with only the mri1 rows is enough."
            if timepoint == FIRST_TIMEPOINT
            else "a manifest with the mri2 rows and the mri1 rows (every manifest needs those) is enough."
        )
    )
    if excluded:
        sec.note(f"{len(excluded)} lesion(s) not predicted: " + "; ".join(excluded))
    partial = [f"{r['lesion']}: {r['reason']}" for r in rows if r["status"] == "partial"]
    if partial:
        sec.note(f"{len(partial)} lesion(s) without a feature model's prediction: " + "; ".join(partial))
    table = []
    for r in rows:
        t = {"lesion": r["lesion"], "status": r["status"]}
        t.update({MODEL_NAMES[m]: _fmt(r[f"p_{m}"]) for m in models.names})
        if any(x.get("label") is not None for x in rows):
            t["label (follow-up)"] = r.get("label")
        if n_seen:
            t["in training"] = r["seen_by"] or "no"
        table.append(t)
    sec.table(table)
    if not metrics:
        return
    msec = report.section(
        "External test against the follow-up labels" if external else "Metrics against the follow-up labels"
    )
    if external:
        msec.text(
            "No lesion of this manifest was among the models' training lesions (neither its identifier nor "
            "its first-MRI pixels match), so these metrics are an external test of the final models."
        )
    else:
        msec.note(
            f"NOT an external test: {n_seen} of {len(rows)} lesions were used to fit these models (same "
            "identifier or same pixels), so these metrics are optimistic. Table 1 of the study is the "
            "held-out estimate."
        )
    msec.table(
        [
            {
                "model": m["title"],
                **{
                    k: _fmt(m[k])
                    for k in ("sensitivity", "specificity", "accuracy", "auc", "precision", "f1")
                },
                "n": m["n"],
                "responders": m["n_responders"],
            }
            for m in metrics
        ]
    )
