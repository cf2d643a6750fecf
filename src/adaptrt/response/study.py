"""The response study of Part I: Table 1 over repeated grouped splits, CAMs and their scores on known truth.

Protocol (Peng, Jiang & Timmerman, Part I, Methods; the ``paper`` profile)
--------------------------------------------------------------------------
* Label: a lesion responds when its GTV volume at follow-up has fallen by at least ``threshold`` (20 %)
  relative to the first MRI (:func:`adaptrt.cohort.response_label`).
* Samples: the representative slice of every lesion (the slice of largest GTV area; ``n_slices`` neighbours
  can be added) cropped around the GTV and resampled to 64×64 (:func:`adaptrt.preprocess.prepare_lesion`).
* Training data: the *first* MRI of the training lesions, augmented by rotations of 0, 10, 15, 30, 45 and 90
  degrees (69 × 6 = 414 samples for the whole PULSAR cohort). Test data: the *second* MRI of the test
  lesions, no augmentation, dropout off (the paper's protocol); the first MRI of the test lesions is also
  reported (a prediction before any treatment).
* ``n_trials`` (50) splits of 80 / 20, grouped by patient and stratified by label
  (:func:`adaptrt.splits.grouped_splits`); the same splits for all three models.
* A lesion's probability is the mean of its slices' probabilities (one slice in the paper profile).
* Models: radiomics (PyRadiomics features of the GTV, original + wavelet) and gradient features, each through
  an imputer -> scaler -> F-test selection -> logistic pipeline fitted on the training split only
  (:mod:`adaptrt.response.features`); the autoencoder + classifier (:mod:`adaptrt.response.train`).
* Opt-in ablation ``cam_sequential``: the same autoencoder + classifier trained in the mode the paper set
  aside (autoencoder first, then the encoder frozen and the classifier trained;
  ``TrainConfig(mode="sequential")``), on the same splits and scored with the same metrics; its CAMs are not
  computed.
* After the trials, every selected model can be fitted once more on *all* usable lesions
  (:mod:`adaptrt.response.final`, ``ResponseConfig.fit_final``): those are the models to deploy, and Table 1
  (computed on held-out lesions only) is the estimate of their performance.
  Hyper-parameters are fixed in advance: nothing is selected on the test part, and the test curves in the
  report are for monitoring only.

Beyond the paper
----------------
* CAMs (Grad-CAM, Grad-CAM++, pixel-wise) of every test lesion, for its true class and the other class,
  each from a model that did not train on it; on a simulated cohort (a ``truth/lesions.csv`` next to the
  manifest, as :func:`adaptrt.simulate.metastases.write_metastasis_cohort` writes) they are scored against
  the planted radio-resistant sub-regions (:func:`adaptrt.response.cam.cam_scores`). No model reads
  ``truth/``.
* The Spearman correlation, inside the GTV, of each CAM with the gradient-magnitude and radial-gradient maps
  (the paper's proposed cross-check).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..cohort import FIRST_TIMEPOINT, FOLLOWUP_TIMEPOINT, SECOND_TIMEPOINT, Cohort, Lesion
from ..errors import InputError
from ..preprocess import PART1_ANGLES, Box, LesionSlices, PreprocessConfig, prepare_lesion, sample_like
from ..splits import Split, grouped_splits
from ..types import Volume
from .gradients import GradientConfig
from .radiomics import RadiomicsConfig
from .train import PAPER, QUICK, TrainConfig

__all__ = [
    "CAM_METHODS",
    "MIN_LESIONS_PER_WORKER",
    "MODEL_NAMES",
    "NETWORK_MODELS",
    "TABLE1_METRICS",
    "TRUTH_COLUMNS",
    "LesionData",
    "ResponseConfig",
    "ResponseResults",
    "check_usable_lesions",
    "final_training_data",
    "fov_box",
    "network_train_config",
    "preparation_jobs",
    "prepare_cohort",
    "prepare_first",
    "prepare_later",
    "read_truth_table",
    "response_config",
    "run_trials",
]

Profile = Literal["quick", "paper"]
ModelName = Literal["radiomics", "gradients", "cam", "cam_sequential"]
Trainer = Literal["engine", "batched", "plain"]
LaterCrop = Literal["first", "own"]
_TRAINERS: tuple[str, ...] = ("engine", "batched", "plain")
#: The models of Table 1, in its column order, with the paper's names: the paper's three, then the opt-in
#: ablation ``cam_sequential`` (the same network trained in the paper's set-aside sequential mode).
MODEL_NAMES: dict[str, str] = {
    "radiomics": "Radiomics Model",
    "gradients": "Gradients Model",
    "cam": "Pixel-CAM Model",
    "cam_sequential": "Sequential AE+classifier (ablation)",
}
#: The autoencoder + classifier models: ``cam`` trains with ``ResponseConfig.train`` as given (the paper's
#: joint mode by default), the ablation with ``mode="sequential"`` (see :func:`network_train_config`).
NETWORK_MODELS: tuple[str, ...] = ("cam", "cam_sequential")
#: Table 1's rows.
TABLE1_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "accuracy", "auc", "precision", "f1")
CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "pixelwise")


@dataclass(frozen=True)
class ResponseConfig:
    """Settings of the response study (see the module docstring). Use :func:`response_config` for profiles.

    Attributes
    ----------
    profile
        ``"paper"`` (the paper's protocol) or ``"quick"`` (a CPU-minutes run for the demo and tests).
    threshold
        Fractional shrinkage that defines response (0.2; the paper suggests also 0.3 and 0.5).
    n_trials, test_size
        Repeated grouped splits (50 × 80/20 in the paper).
    seed
        Seed of the splits and of every model.
    models
        Which of ``radiomics``, ``gradients``, ``cam`` and ``cam_sequential`` (the ablation, opt-in: in no
        profile's default) to run.
    preprocess
        Slices of the training data (the paper: one slice, Part I rotations).
    train
        Autoencoder + classifier training.
    radiomics, gradients
        Feature settings.
    score_cams
        Compute CAMs of every test lesion (and score them when truth is available).
    trainer
        How the trials' networks are trained; all give the result of one ``AutoencoderClassifier.fit`` per
        trial up to float32 rounding. ``"engine"`` (the ``paper`` profile's):
        :func:`adaptrt.response.engine.fit_fast`, ``workers`` processes with fused kernels (torch.compile
        where a C++ compiler is present), the fastest for many trials; ``"batched"`` (the ``quick``
        profile's: no start-up cost): :func:`adaptrt.response.batched.fit_many`, ``batch_trials`` trials
        together in this process; ``"plain"``: one ``fit`` after another (the reference).
    batch_trials
        Trials trained together by the ``"batched"`` trainer.
    workers
        Worker processes of the parallel parts: the ``"engine"`` trainer (None: torch's thread count, the CPU
        cores), the lesion preparation (:func:`prepare_cohort`; None: every CPU thread, at least
        :data:`MIN_LESIONS_PER_WORKER` lesions each) and the permutation null band.
    compile
        Let the ``"engine"`` trainer fuse its elementwise kernels with ``torch.compile`` and run its first
        encoder block as a native C kernel (each falls back, with a warning, where it cannot be built;
        false: always the eager kernels and the matrix-product first block, slower, same results).
    fit_final
        After the trials, fit every selected model on all usable lesions and save them in the run folder
        (``models/``; see :mod:`adaptrt.response.final`).
    fov_mm
        None (default): every time point of a lesion is cut with the box fitted to its *first-MRI* GTV
        (extent + 2 × margin). A number: a fixed square field of view of that many mm, centred on the
        first-MRI GTV, for every lesion and time point (no rescaling with the lesion's size).
    later_crop
        ``"first"`` (default, the same-box rule): the second MRI is cut with the first MRI's box and its
        slices (:func:`prepare_later`; co-registered data). ``"own"``: the second MRI gets a box fitted to its
        own GTV and its own slices (the behaviour before the rule: a responder's shrunken GTV rescales and
        re-centres its crop, a cue that goes with the label); kept only to measure that effect.
    n_permutations
        Label permutations for the chance reference of Table 1 (:mod:`adaptrt.response.chance`; 0: none).
        50 in both profiles: 100 pooled null means (two cheap models), whose 5th / 95th percentiles carry a
        Monte Carlo error of about 0.02 AUC against a band about 0.3 wide; 100 permutations would add about
        35 s to the paper profile on 2 CPU cores.
    """

    profile: Profile = "paper"
    threshold: float = 0.2
    n_trials: int = 50
    test_size: float = 0.2
    seed: int = 0
    models: tuple[str, ...] = ("radiomics", "gradients", "cam")
    preprocess: PreprocessConfig = field(
        default_factory=lambda: PreprocessConfig(angles_deg=PART1_ANGLES, n_slices=1)
    )
    train: TrainConfig = field(default_factory=lambda: PAPER)
    radiomics: RadiomicsConfig = field(default_factory=RadiomicsConfig)
    gradients: GradientConfig = field(default_factory=GradientConfig)
    score_cams: bool = True
    fit_final: bool = True
    trainer: Trainer = "engine"
    batch_trials: int = 4
    workers: int | None = None
    compile: bool = True
    fov_mm: float | None = None
    later_crop: LaterCrop = "first"
    n_permutations: int = 50

    def __post_init__(self) -> None:
        fov = self.fov_mm
        if fov is not None and (
            isinstance(fov, bool) or not isinstance(fov, float | int) or not math.isfinite(fov) or fov <= 0
        ):
            raise InputError(
                f"fov_mm must be null or a positive number of mm, got {fov!r}",
                field="fov_mm",
                fix="give e.g. 40 for a 40 mm square field of view, or null for the first MRI's GTV box",
            )
        if self.later_crop not in ("first", "own"):
            raise InputError(
                f"later_crop must be 'first' or 'own', got {self.later_crop!r}", field="later_crop"
            )
        k = self.n_permutations
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"n_permutations must be an int >= 0, got {k!r}", field="n_permutations")
        if self.profile not in ("quick", "paper"):
            raise InputError(f"profile must be 'quick' or 'paper', got {self.profile!r}", field="profile")
        if not (isinstance(self.threshold, float | int) and 0.0 < self.threshold < 1.0):
            raise InputError(
                f"threshold must be in (0, 1), got {self.threshold!r}",
                field="threshold",
                fix="give a fraction such as 0.2 for 20 %",
            )
        if not (isinstance(self.n_trials, int) and self.n_trials >= 1):
            raise InputError(f"n_trials must be an int >= 1, got {self.n_trials!r}", field="n_trials")
        if not (isinstance(self.batch_trials, int) and self.batch_trials >= 1):
            raise InputError(
                f"batch_trials must be an int >= 1, got {self.batch_trials!r}", field="batch_trials"
            )
        if self.trainer not in _TRAINERS:
            raise InputError(
                f"trainer must be one of {list(_TRAINERS)}, got {self.trainer!r}", field="trainer"
            )
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise InputError(f"workers must be null or an int >= 1, got {w!r}", field="workers")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise InputError(f"seed must be an int >= 0, got {self.seed!r}", field="seed")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise InputError(
                f"unknown or no models {unknown or list(self.models)}",
                field="models",
                fix=f"choose from {list(MODEL_NAMES)}",
            )
        if len(set(self.models)) != len(self.models):
            raise InputError(f"models {list(self.models)} has repeats", field="models", fix="list each once")
        for name in ("score_cams", "fit_final", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be true or false, got {getattr(self, name)!r}", field=name)


def response_config(profile: Profile = "paper", **changes: Any) -> ResponseConfig:
    """The study's configuration for a profile, with any field changed.

    ``paper``: 50 trials, 150 epochs, one slice × 6 rotations per lesion, radiomics with wavelets.
    ``quick``: 3 trials, 12 epochs, radiomics without wavelets (about a minute on 2 CPU cores for the
    default simulated cohort).
    Both fit the final models after the trials (``fit_final``; in ``quick`` the network's final fit on the
    414 samples of the default cohort adds about 6 s on 2 CPU threads, 12 s on 1). The ablation
    ``cam_sequential`` is in neither profile's ``models``: add it to run it.
    """
    if profile == "paper":
        base = ResponseConfig(profile="paper")
    elif profile == "quick":
        base = ResponseConfig(
            profile="quick",
            n_trials=3,
            train=dataclasses.replace(QUICK, epochs=12),
            radiomics=RadiomicsConfig(wavelet=False),
            trainer="batched",
            n_permutations=50,
        )
    else:
        raise InputError(f"profile must be 'quick' or 'paper', got {profile!r}", field="--profile")
    return dataclasses.replace(base, **changes) if changes else base


def network_train_config(config: ResponseConfig, name: str) -> TrainConfig:
    """The training settings of the network ``name``: ``config.train`` for ``cam``; for the ablation
    ``cam_sequential`` the same with ``mode="sequential"`` (each phase ``config.train.epochs`` long unless
    ``classifier_epochs`` is set).

    Raises
    ------
    ValueError
        For a name that is not in :data:`NETWORK_MODELS`.
    """
    if name == "cam":
        return config.train
    if name == "cam_sequential":
        return dataclasses.replace(config.train, mode="sequential")
    raise ValueError(f"name must be one of {list(NETWORK_MODELS)}, got {name!r}")


# ---------------------------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class LesionData:
    """Everything the models need from one lesion, plus (simulated cohorts only) its truth for scoring.

    Attributes
    ----------
    lesion
        The cohort record.
    label
        1 responder, 0 non-responder.
    ratio
        Follow-up / first-MRI GTV volume.
    train
        First-MRI samples with the training augmentation.
    test_mri2, test_mri1
        Second- and first-MRI samples without augmentation.
    features
        ``{"radiomics" | "gradients": {"mri1" | "mri2": {name: value}}}``.
    truth_mri2
        ``(n, 64, 64)`` planted resistant sub-region on the ``test_mri2`` samples, or None.
    gradient_maps_mri2
        ``{"magnitude" | "radial": (n, 64, 64)}`` on the ``test_mri2`` samples.
    """

    lesion: Lesion
    label: int
    ratio: float
    train: LesionSlices
    test_mri2: LesionSlices
    test_mri1: LesionSlices
    features: Mapping[str, Mapping[str, Mapping[str, float]]]
    truth_mri2: NDArray[np.bool_] | None
    gradient_maps_mri2: Mapping[str, NDArray[np.float32]]

    @property
    def key(self) -> str:
        return self.lesion.key


#: The columns of the metastasis simulator's ``truth/lesions.csv`` that the study reads.
TRUTH_COLUMNS: tuple[str, ...] = ("patient_id", "lesion_id", f"resistant_{SECOND_TIMEPOINT}")


def read_truth_table(manifest: Path | None) -> tuple[dict[tuple[str, str], dict[str, str]], str | None]:
    """The metastasis simulator's truth table next to a manifest (``truth/lesions.csv``), and a note.

    The table is read only when it is the format expected (UTF-8 CSV with :data:`TRUTH_COLUMNS`); any other
    ``truth/lesions.csv`` (another simulator's, a user's own file) is ignored, and the note says so. Returns
    ``({}, None)`` when there is no such file.
    """
    if manifest is None:
        return {}, None
    path = manifest.parent / "truth" / "lesions.csv"
    if not path.is_file():
        return {}, None
    # the note names the file relative to the manifest: a run's report must not show a staging folder
    ignored = (
        "truth/lesions.csv next to the manifest is not the metastasis simulator's truth table ({}): ignored, "
        "CAMs are not scored"
    )
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                return {}, ignored.format(f"no column {', '.join(repr(c) for c in missing)}")
            return {(r["patient_id"], r["lesion_id"]): r for r in reader}, None
    except (UnicodeDecodeError, csv.Error) as exc:
        return {}, ignored.format(f"not a UTF-8 CSV: {type(exc).__name__}")


def fov_box(gtv: Volume, fov_mm: float) -> Box | None:
    """A square in-plane box of ``fov_mm`` mm centred on the GTV's in-plane bounding box, over its slices.

    Parameters
    ----------
    gtv
        ``(z, y, x)`` GTV mask (non-zero inside), spacing in mm.
    fov_mm
        Side of the field of view in mm (> 0); ``round(fov_mm / spacing)`` pixels along y and x.

    Returns
    -------
    Box or None
        ``(z0, z1, y0, y1, x0, x1)`` (half-open source indices; in-plane it may reach outside the image), or
        None for an empty GTV (:func:`adaptrt.preprocess.prepare_lesion` then says why it is excluded).
    """
    arr = np.asarray(gtv.array) != 0
    if not arr.any():
        return None
    zs, ys, xs = np.nonzero(arr)
    out: list[int] = [int(zs.min()), int(zs.max()) + 1]
    for idx, sp in ((ys, gtv.spacing[1]), (xs, gtv.spacing[2])):
        n = max(1, round(fov_mm / sp))
        centre = (int(idx.min()) + int(idx.max()) + 1) / 2.0
        start = math.floor(centre - n / 2.0 + 0.5)
        out += [start, start + n]
    return (out[0], out[1], out[2], out[3], out[4], out[5])


def prepare_first(
    image: Volume, gtv: Volume, config: PreprocessConfig, *, fov_mm: float | None = None
) -> LesionSlices:
    """The first MRI of a lesion, cut with its GTV box (or a fixed ``fov_mm`` field of view around it).

    The box and slices of the result are those every later time point is cut with (:func:`prepare_later`).

    Raises
    ------
    InputError
        The lesion cannot be preprocessed (see :func:`adaptrt.preprocess.prepare_lesion`).
    """
    box = None if fov_mm is None else fov_box(gtv, fov_mm)
    return prepare_lesion(image, gtv, config, box=box)


def prepare_later(image: Volume, gtv: Volume, first: LesionSlices, config: PreprocessConfig) -> LesionSlices:
    """A later time point of a lesion cut with the first MRI's box and slices (the same-box rule).

    The images must be co-registered and on the first MRI's grid (the box is in source indices): clinical
    data must be registered (rigidly) and resampled onto the first MRI before the study; what is checked is
    that the box's slices lie inside the later image. A box refitted to a shrunken GTV would rescale and
    re-centre a responder's crop, a cue that goes with the label (issue 14).

    Parameters
    ----------
    image, gtv
        The later time point, ``(z, y, x)``, on the first MRI's grid.
    first
        The first MRI prepared by :func:`prepare_first` (its ``box`` and ``slice_index`` are used).
    config
        The preprocessing (its ``angles_deg`` give the rotations; ``n_slices`` is not used).

    Raises
    ------
    InputError
        The later GTV cannot be preprocessed (empty, on the border, ...) or the box is outside its image.
    """
    return prepare_lesion(image, gtv, config, box=first.box, slices=np.unique(first.slice_index))


#: Lesions per worker process below which :func:`prepare_cohort` (``n_jobs=None``) uses fewer processes. A
#: worker costs about 7 s of CPU to start (it imports torch, scikit-learn, SimpleITK and PyRadiomics): the
#: work of about 15 lesions in the quick profile (0.5 s each), 5 in the paper profile (1-2 s each, wavelets).
MIN_LESIONS_PER_WORKER = 16


@dataclass(frozen=True)
class _Failed:
    """An :class:`InputError` raised while preparing one lesion, as plain fields (sent back by a worker)."""

    problem: str
    path: str | None
    field: str | None
    row: int | None
    fix: str | None


def preparation_jobs(config: ResponseConfig, n_lesions: int, n_jobs: int | None = None) -> int:
    """The worker processes :func:`prepare_cohort` uses for ``n_lesions`` lesions.

    ``n_jobs`` given: that many (at most one per lesion). None: ``config.workers``, else every CPU thread
    (:func:`os.cpu_count`), with at least :data:`MIN_LESIONS_PER_WORKER` lesions per process (so a small
    cohort is prepared in this process, without start-up costs).

    Raises
    ------
    InputError
        ``n_jobs`` not None and not an int >= 1.
    """
    import os

    if n_jobs is not None:
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise InputError(f"n_jobs must be None or an int >= 1, got {n_jobs!r}", field="n_jobs")
        return max(1, min(n_jobs, n_lesions))
    want = config.workers or os.cpu_count() or 1
    return max(1, min(want, n_lesions // MIN_LESIONS_PER_WORKER))


def _prepare_one(
    lesion: Lesion, config: ResponseConfig, truth_row: Mapping[str, str] | None, source: Path | None
) -> LesionData | str | _Failed:
    """Load, label and preprocess one lesion (see :func:`prepare_cohort`): its data, an exclusion note, or
    the :class:`InputError` that stopped it. Runs in a worker process or in the caller's."""
    from ..cohort import mask_volume_mm3, response_label
    from ..io.nifti import read_nifti
    from .gradients import gradient_features, gradient_maps
    from .radiomics import radiomics_features

    les = lesion
    missing = [t for t in (FIRST_TIMEPOINT, SECOND_TIMEPOINT, FOLLOWUP_TIMEPOINT) if t not in les.timepoints]
    if missing:
        return f"{les.key}: no {' / '.join(missing)} (needs first MRI, second MRI and follow-up)"
    test_cfg = dataclasses.replace(config.preprocess, angles_deg=(0.0,))
    try:
        img1, gtv1 = les[FIRST_TIMEPOINT].load_image(), les[FIRST_TIMEPOINT].load_mask()
        img2, gtv2 = les[SECOND_TIMEPOINT].load_image(), les[SECOND_TIMEPOINT].load_mask()
        gtv_fu = les[FOLLOWUP_TIMEPOINT].load_mask()
        try:
            train = prepare_first(img1, gtv1, config.preprocess, fov_mm=config.fov_mm)
            t1 = prepare_first(img1, gtv1, test_cfg, fov_mm=config.fov_mm)
            if config.later_crop == "own":
                t2 = prepare_first(img2, gtv2, test_cfg, fov_mm=config.fov_mm)
            else:
                t2 = prepare_later(img2, gtv2, t1, test_cfg)
        except InputError as exc:
            return f"{les.key}: {exc.problem}"
        lab = response_label(mask_volume_mm3(gtv1), mask_volume_mm3(gtv_fu), config.threshold)
        feats: dict[str, dict[str, dict[str, float]]] = {}
        if "radiomics" in config.models:
            feats["radiomics"] = {
                "mri1": radiomics_features(img1, gtv1, config.radiomics),
                "mri2": radiomics_features(img2, gtv2, config.radiomics),
            }
        if "gradients" in config.models:
            feats["gradients"] = {
                "mri1": gradient_features(img1, gtv1, config.gradients),
                "mri2": gradient_features(img2, gtv2, config.gradients),
            }
        mag, rad = gradient_maps(img2, gtv2, config.gradients)
        maps = {"magnitude": sample_like(mag, t2, kind="image"), "radial": sample_like(rad, t2, kind="image")}
        truth_mask = None
        if truth_row is not None and truth_row.get(f"resistant_{SECOND_TIMEPOINT}") and source is not None:
            res = read_nifti(source.parent / truth_row[f"resistant_{SECOND_TIMEPOINT}"], kind="mask")
            truth_mask = sample_like(res, t2, kind="mask") & t2.mask
    except InputError as exc:
        return _Failed(exc.problem, exc.path, exc.field, exc.row, exc.fix)
    return LesionData(les, int(lab.responder), lab.ratio, train, t2, t1, feats, truth_mask, maps)


def _prepare_patient(
    lesions: Sequence[tuple[Lesion, Mapping[str, str] | None]], config: ResponseConfig, source: Path | None
) -> list[LesionData | str | _Failed]:
    """:func:`_prepare_one` for the lesions of one patient (with their truth rows), in order, up to the first
    failure. One task per patient: its lesions share image series, which the loader's cache reads once."""
    out: list[LesionData | str | _Failed] = []
    for lesion, truth_row in lesions:
        out.append(_prepare_one(lesion, config, truth_row, source))
        if isinstance(out[-1], _Failed):
            break
    return out


def _prepare_patient_in_worker(
    lesions: Sequence[tuple[Lesion, Mapping[str, str] | None]], config: ResponseConfig, source: Path | None
) -> list[LesionData | str | _Failed]:
    """:func:`_prepare_patient` in a worker process, on one thread: torch and ITK (PyRadiomics' filters)
    here, BLAS and OpenMP by joblib (``inner_max_num_threads=1``); the workers share the cores, nothing more."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        import SimpleITK

        SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    except ImportError:  # PyRadiomics' dependency; without it only the gradient features run
        pass
    return _prepare_patient(lesions, config, source)


def prepare_cohort(
    cohort: Cohort,
    config: ResponseConfig,
    *,
    progress: bool = False,
    n_jobs: int | None = None,
) -> tuple[list[LesionData], list[str]]:
    """Load, label and preprocess every lesion; return the usable lesions and the exclusion notes.

    A lesion is excluded (with a note) when it has no follow-up (no label) or no second MRI (no test image),
    or when :func:`adaptrt.preprocess.exclusion_reason` rejects its first or second MRI (empty GTV, GTV on
    the image border, GTV smaller than one slice, ...).

    The second MRI is cut with the first MRI's box and slices (:func:`prepare_later`, unless
    ``config.later_crop == "own"``); with ``config.fov_mm`` every crop is a fixed field of view.

    The lesions are prepared in ``n_jobs`` worker processes (joblib's ``loky``; see
    :func:`preparation_jobs` for the default), one task per patient (its lesions share image series, which
    the loader's cache then reads once), each task loading its own files and running on one thread; the
    results come back in manifest order, so they do not depend on the number of processes.

    Parameters
    ----------
    cohort
        The cohort (:func:`adaptrt.io.manifest.read_manifest`).
    config
        The study's settings (preprocessing, features, threshold; ``workers`` for the default ``n_jobs``).
    progress
        Show a progress bar over the lesions.
    n_jobs
        Worker processes; 1: in this process; None: :func:`preparation_jobs`.

    Returns
    -------
    lesions, notes
        The usable lesions (manifest order) and one exclusion note per excluded lesion.

    Raises
    ------
    InputError
        A lesion's image or mask cannot be read (the message names the lesion and the file), or a bad
        ``n_jobs``.
    """
    from tqdm.auto import tqdm

    truth, _ = read_truth_table(cohort.source)
    groups = [
        [(les, truth.get((les.patient_id, les.lesion_id))) for les in patient.lesions]
        for patient in cohort.patients
        if patient.lesions
    ]
    jobs = preparation_jobs(config, sum(len(g) for g in groups), n_jobs)
    outcomes: Iterator[list[LesionData | str | _Failed]]
    if jobs == 1:
        outcomes = (_prepare_patient(g, config, cohort.source) for g in groups)
    else:
        from joblib import Parallel, delayed, parallel_config

        # inner_max_num_threads=1: BLAS / OpenMP in the workers on one thread each (no oversubscription)
        with parallel_config(backend="loky", inner_max_num_threads=1):
            outcomes = Parallel(n_jobs=jobs, return_as="generator", batch_size=1)(
                delayed(_prepare_patient_in_worker)(g, config, cohort.source) for g in groups
            )
    lesions: list[LesionData] = []
    notes: list[str] = []
    try:
        with tqdm(
            total=sum(len(g) for g in groups), desc="preparing lesions", unit="lesion", disable=not progress
        ) as bar:
            for group, outs in zip(groups, outcomes, strict=True):
                for (les, _), out in zip(group, outs, strict=False):  # a failure ends a patient's list
                    if isinstance(out, _Failed):
                        raise InputError(
                            f"lesion {les.key}: {out.problem}",
                            path=out.path,
                            field=out.field,
                            row=out.row,
                            fix=out.fix,
                        )
                    if isinstance(out, str):
                        notes.append(out)
                    else:
                        lesions.append(out)
                    bar.update(1)
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            # joblib warns that it cancels the remaining tasks after an error: that is the aim
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                close()
    return lesions, notes


def check_usable_lesions(
    cohort: Cohort,
    lesions: Sequence[LesionData],
    notes: Sequence[str],
    threshold: float,
    *,
    manifest: str | Path | None = None,
) -> None:
    """Refuse, before any training, a cohort whose usable lesions cannot make a study; say the real cause.

    The study needs at least two usable lesions of each class. When it has fewer, the message names the
    manifest and why: every lesion excluded for lacking follow-up (the label needs the GTV at follow-up),
    every lesion excluded for other reasons (the notes of :func:`prepare_cohort`), or one class only among
    the usable lesions (with the number excluded for lacking follow-up when there are some).

    Parameters
    ----------
    cohort
        The cohort read from the manifest.
    lesions, notes
        From :func:`prepare_cohort`.
    threshold
        The response threshold (GTV shrinkage at follow-up), for the message.
    manifest
        The manifest's path, named in the message (default: ``cohort.source``).

    Raises
    ------
    InputError
        Fewer than two usable lesions of a class.
    """
    path = Path(manifest) if manifest is not None else cohort.source
    n_all = len(cohort.lesions)
    no_followup = [les.key for les in cohort.lesions if FOLLOWUP_TIMEPOINT not in les.timepoints]
    n_resp = sum(int(d.label) for d in lesions)
    n_non = len(lesions) - n_resp
    if min(n_resp, n_non) >= 2:
        return
    fix_followup = (
        f"add the follow-up rows (timepoint '{FOLLOWUP_TIMEPOINT}': image and GTV mask at follow-up) of the "
        "lesions to the manifest; the response label is the GTV's change from the first MRI to follow-up"
    )
    if not lesions and no_followup and len(no_followup) == n_all:
        raise InputError(
            f"every lesion ({n_all}) was excluded for lacking follow-up: no lesion has a "
            f"'{FOLLOWUP_TIMEPOINT}' time point, so none has a response label",
            path=path,
            fix=fix_followup,
        )
    if not lesions:
        shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
        raise InputError(
            f"every lesion ({n_all}) was excluded, none is usable: {shown}",
            path=path,
            fix="correct the lesions named above (see `adaptrt cohort check`)",
        )
    excluded = ""
    if no_followup:
        excluded = (
            f"; {len(no_followup)} of the {n_all} lesions were excluded for lacking follow-up "
            f"({', '.join(no_followup[:5])}{', ...' if len(no_followup) > 5 else ''})"
        )
    elif notes:
        excluded = f"; {len(notes)} of the {n_all} lesions were excluded for other reasons"
    if n_resp == 0 or n_non == 0:
        kind = "responders" if n_non == 0 else "non-responders"
        problem = (
            f"all {len(lesions)} usable lesions are {kind} (response = GTV shrinkage >= {threshold:.0%} at "
            f"follow-up): a response study needs both classes{excluded}"
        )
    else:
        problem = (
            f"the usable lesions hold {n_resp} responder(s) and {n_non} non-responder(s) (response = GTV "
            f"shrinkage >= {threshold:.0%} at follow-up): every class needs at least two{excluded}"
        )
    fix = "add lesions of the missing class, or choose another threshold with --threshold"
    if no_followup:
        fix = f"{fix_followup}; or {fix}"
    raise InputError(problem, path=path, fix=fix)


# ---------------------------------------------------------------------------------------------- trials
@dataclass
class ResponseResults:
    """Everything a run of :func:`run_trials` produced (rows are plain dicts, ready for CSV).

    Attributes
    ----------
    splits
        The trials' splits (indices into ``lesions``).
    metric_rows
        One row per trial, model and test set (``mri2``: the paper's test; ``mri1``) with Table 1's metrics.
    prediction_rows
        One row per trial, model, test set and test lesion: probability and label.
    cam_rows
        One row per trial, test lesion, CAM method and target (``true`` / ``other`` class): scores against
        the truth (when available) and correlations with the gradient maps.
    history
        The autoencoder's training history of trial 0 (per epoch).
    first_model
        The autoencoder + classifier of trial 0 (or None when ``cam`` was not run).
    example_cams
        ``{lesion key: {(method, target): (64, 64) normalised CAM}}`` from the first trial in which the
        lesion was a test lesion (for Fig. 5B / Fig. 6).
    seconds
        Wall seconds of the parts of :func:`run_trials`: ``"networks"`` (training every trial's networks, and
        the final networks when asked), ``"feature models"`` (radiomics and gradient pipelines),
        ``"network predictions and CAMs"``.
    final_networks
        ``{network name: AutoencoderClassifier}`` fitted on all lesions (:func:`final_training_data`,
        ``config.seed``) in the trials' worker pool, when :func:`run_trials` was asked for them
        (``final_networks=True``, engine trainer); empty otherwise. For
        :func:`adaptrt.response.final.fit_final_models`.
    """

    splits: list[Split]
    metric_rows: list[dict[str, Any]] = field(default_factory=list)
    prediction_rows: list[dict[str, Any]] = field(default_factory=list)
    cam_rows: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    first_model: Any = None
    example_cams: dict[str, dict[tuple[str, str], NDArray[np.float32]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    final_networks: dict[str, Any] = field(default_factory=dict)


def _stack(items: Sequence[LesionSlices]) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
    return (
        np.concatenate([s.image for s in items]),
        np.concatenate([s.mask_bottleneck for s in items]),
        np.concatenate([s.mask for s in items]),
    )


def _per_lesion_mean(values: NDArray[np.float64], sizes: Sequence[int]) -> NDArray[np.float64]:
    """Mean of consecutive runs of ``values`` of the given sizes (a lesion's slices -> its probability)."""
    edges = np.cumsum([0, *sizes])
    return np.array([values[a:b].mean() for a, b in itertools.pairwise(edges)])


def _spearman_in(a: NDArray[Any], b: NDArray[Any], region: NDArray[np.bool_]) -> float:
    from scipy.stats import spearmanr

    x, y = a[region], b[region]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def run_trials(
    lesions: Sequence[LesionData],
    config: ResponseConfig,
    *,
    progress: bool = False,
    on_trial: Callable[[int, int], None] | None = None,
    final_networks: bool = False,
) -> ResponseResults:
    """Run every model on every split; see the module docstring for the protocol.

    ``final_networks``: with the ``"engine"`` trainer, also train the final networks (all lesions,
    ``config.seed``: what :func:`adaptrt.response.final.fit_final_models` trains) in the same worker pool as
    the trials, first, so that the workers finish together and the pool starts once; they are in
    ``ResponseResults.final_networks``, identical to a separate :func:`~adaptrt.response.engine.fit_fast`
    call (a model's arithmetic does not depend on the process it runs in). Ignored by the other trainers.

    Raises
    ------
    InputError
        Too few lesions of a class or too few patients for the splits (from :func:`grouped_splits`).
    """
    from tqdm.auto import tqdm

    from ..metrics.classification import binary_metrics
    from .cam import cam_scores
    from .features import feature_model, features_table

    y = np.array([d.label for d in lesions], dtype=int)
    groups = np.array([d.lesion.patient_id for d in lesions])
    splits = grouped_splits(y, groups, n_trials=config.n_trials, test_size=config.test_size, seed=config.seed)
    results = ResponseResults(splits=splits)
    tables: dict[tuple[str, str], NDArray[np.float64]] = {}
    for kind in ("radiomics", "gradients"):
        if kind in config.models:
            x1, names = features_table([d.features[kind]["mri1"] for d in lesions])
            x2, _ = features_table([d.features[kind]["mri2"] for d in lesions], names)
            tables[(kind, "mri1")], tables[(kind, "mri2")] = x1, x2

    def record(trial: int, model: str, test_set: str, idx: NDArray[np.int64], p: NDArray[np.float64]) -> None:
        m = binary_metrics(y[idx], p)
        results.metric_rows.append({"trial": trial, "model": model, "test_set": test_set, **m})
        for i, pi in zip(idx, p, strict=True):
            results.prediction_rows.append(
                {
                    "trial": trial,
                    "model": model,
                    "test_set": test_set,
                    "lesion": lesions[i].key,
                    "label": int(y[i]),
                    "probability": float(pi),
                }
            )

    seconds = results.seconds
    t0 = time.perf_counter()
    networks: dict[tuple[str, int], Any] = {}
    with_final = final_networks and config.trainer == "engine"
    for name in NETWORK_MODELS:
        if name in config.models:
            fitted, final_net = _fit_networks(
                lesions, y, splits, config, name, progress=progress, final=with_final
            )
            networks.update(fitted)
            if final_net is not None:
                results.final_networks[name] = final_net
    seconds["networks"] = time.perf_counter() - t0
    seconds["feature models"] = seconds["network predictions and CAMs"] = 0.0

    for split in tqdm(splits, desc="trials", unit="trial", disable=not progress):
        tr, te = split.train, split.test
        trial_seed = _trial_seed(split)
        t0 = time.perf_counter()
        for kind in ("radiomics", "gradients"):
            if kind not in config.models:
                continue
            pipe = feature_model(kind, seed=trial_seed, profile=config.profile)  # type: ignore[arg-type]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)  # constant features in a split
                warnings.simplefilter("ignore", category=RuntimeWarning)
                pipe.fit(tables[(kind, "mri1")][tr], y[tr])
                for test_set in ("mri2", "mri1"):
                    p = pipe.predict_proba(tables[(kind, test_set)][te])[:, 1]
                    record(split.trial, kind, test_set, te, p)
        t1 = time.perf_counter()
        seconds["feature models"] += t1 - t0
        for name in NETWORK_MODELS:
            if name not in config.models:
                continue
            _cam_trial(
                results,
                lesions,
                y,
                split,
                config,
                record,
                networks[(name, split.trial)],
                cam_scores,
                name=name,
            )
        seconds["network predictions and CAMs"] += time.perf_counter() - t1
        if on_trial is not None:
            on_trial(split.trial, len(splits))
    return results


def _trial_seed(split: Split) -> int:
    return int(split.seed % (2**31))


def _trial_data(
    lesions: Sequence[LesionData], y: NDArray[np.int64], split: Split, *, monitor: bool = True
) -> Any:
    """The network's training data (first MRI, augmented) and monitoring data (second MRI) of one split.

    ``monitor=False``: no monitoring data (the test curves are not computed; training is the same).
    """
    from .batched import TrialData

    fit = final_training_data([lesions[i] for i in split.train])
    if not monitor:
        return fit
    test2 = [lesions[i].test_mri2 for i in split.test]
    xv, mv, _ = _stack(test2)
    yv = np.concatenate([np.full(len(s), y[i]) for s, i in zip(test2, split.test, strict=True)])
    return TrialData(fit.x, fit.mask, fit.y, xv, mv, yv)


def final_training_data(lesions: Sequence[LesionData]) -> Any:
    """The final networks' training data: the first-MRI training samples of every lesion, no monitoring data.

    Returns
    -------
    adaptrt.response.batched.TrialData
        ``x`` ``(n, 64, 64)`` float32 in [0, 1], ``mask`` ``(n, 16, 16)`` bool, ``y`` ``(n,)`` int64 (the
        lesion's label on each of its samples), ``n = sum(len(d.train) for d in lesions)``.
    """
    from .batched import TrialData

    xt, mt, _ = _stack([d.train for d in lesions])
    yt = np.concatenate([np.full(len(d.train), d.label, dtype=np.int64) for d in lesions])
    return TrialData(xt, mt, yt)


def _fit_networks(
    lesions: Sequence[LesionData],
    y: NDArray[np.int64],
    splits: Sequence[Split],
    config: ResponseConfig,
    name: str,
    *,
    progress: bool,
    final: bool = False,
) -> tuple[dict[tuple[str, int], Any], Any]:
    """Fit the network ``name`` of every split with the trainer ``config.trainer``.

    ``final`` (engine trainer only): also fit the final network (:func:`final_training_data`,
    ``config.seed``) in the same :func:`~adaptrt.response.engine.fit_fast` call, first (the longest job).
    Returns the trials' networks and the final network (or None).
    """
    from tqdm.auto import tqdm

    from .batched import fit_many
    from .engine import fit_fast
    from .train import AutoencoderClassifier

    train = network_train_config(config, name)
    seeds = [_trial_seed(s) for s in splits]
    if config.trainer == "engine":
        # the test curves are only read for the first trial (ResponseResults.history): the other trials skip
        # the per-epoch monitoring pass (a few % of their training time; their networks are the same)
        data = [_trial_data(lesions, y, s, monitor=i == 0) for i, s in enumerate(splits)]
        if final:
            data, seeds = [final_training_data(lesions), *data], [config.seed, *seeds]
        models = fit_fast(
            train, data, seeds, workers=config.workers, compile=config.compile, progress=progress
        )
        final_model = models.pop(0) if final else None
        return {(name, s.trial): m for s, m in zip(splits, models, strict=True)}, final_model
    out: dict[tuple[str, int], Any] = {}
    k = config.batch_trials if config.trainer == "batched" else 1
    chunks = [list(range(i, min(i + k, len(splits)))) for i in range(0, len(splits), k)]
    for chunk in tqdm(chunks, desc=f"training {name}", unit=f"x{k} trials", disable=not progress):
        data = [_trial_data(lesions, y, splits[i]) for i in chunk]
        if k == 1:
            d = data[0]
            models = [
                AutoencoderClassifier(train, seed=seeds[chunk[0]]).fit(
                    d.x, d.mask, d.y, x_val=d.x_val, mask_val=d.mask_val, y_val=d.y_val
                )
            ]
        else:
            models = fit_many(train, data, [seeds[i] for i in chunk])
        out.update({(name, splits[i].trial): m for i, m in zip(chunk, models, strict=True)})
    return out, None


def _cam_trial(
    results: ResponseResults,
    lesions: Sequence[LesionData],
    y: NDArray[np.int64],
    split: Split,
    config: ResponseConfig,
    record: Callable[[int, str, str, NDArray[np.int64], NDArray[np.float64]], None],
    model: Any,
    cam_scores: Any,
    *,
    name: str,
) -> None:
    """Record the fitted network ``name`` (``cam`` or the ablation ``cam_sequential``) of one split.

    Only ``cam`` keeps its trial-0 model and history and has its CAMs computed and scored.
    """
    te = split.test
    test2 = [lesions[i].test_mri2 for i in te]
    xv, mv, gv = _stack(test2)
    if name == "cam" and split.trial == results.splits[0].trial:
        results.history = [dict(h) for h in model.history_]
        results.first_model = model
    sizes2 = [len(s) for s in test2]
    record(split.trial, name, "mri2", te, _per_lesion_mean(model.predict_proba(xv, mv), sizes2))
    test1 = [lesions[i].test_mri1 for i in te]
    x1, m1, _ = _stack(test1)
    record(
        split.trial, name, "mri1", te, _per_lesion_mean(model.predict_proba(x1, m1), [len(s) for s in test1])
    )
    if name != "cam" or not config.score_cams:
        return
    sample_lesion = np.concatenate([np.full(n, i) for n, i in zip(sizes2, te, strict=True)])
    true_class = y[sample_lesion]
    for method in CAM_METHODS:
        for target_name, target in (("true", true_class), ("other", 1 - true_class)):
            cam = model.explain(xv, mv, method=method, target=target.astype(np.int64), upsample_mask=gv)
            for s, i in enumerate(sample_lesion):
                d = lesions[i]
                k = s - int(np.flatnonzero(sample_lesion == i)[0])
                region = d.test_mri2.mask[k]
                row: dict[str, Any] = {
                    "trial": split.trial,
                    "lesion": d.key,
                    "label": int(y[i]),
                    "method": method,
                    "target": target_name,
                    "class_explained": int(target[s]),
                }
                if d.truth_mri2 is not None and region.any():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", category=RuntimeWarning)
                        row.update(cam_scores(cam.raw[s], d.truth_mri2[k], region))
                row["spearman_magnitude"] = _spearman_in(
                    cam.raw[s], d.gradient_maps_mri2["magnitude"][k], region
                )
                row["spearman_radial"] = _spearman_in(cam.raw[s], d.gradient_maps_mri2["radial"][k], region)
                results.cam_rows.append(row)
                if k == 0:
                    results.example_cams.setdefault(d.key, {}).setdefault(
                        (method, target_name), cam.normalised[s]
                    )


# ---------------------------------------------------------------------------------------------- summaries
_ROW_KEYS = ("trial", "model", "test_set")


def _metrics_only(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k not in _ROW_KEYS} for r in rows]


def table1(metric_rows: Sequence[Mapping[str, Any]], *, test_set: str = "mri2") -> list[dict[str, Any]]:
    """Table 1: one row per metric, one column per model, ``mean ± SD (n trials)``."""
    from ..metrics.classification import format_mean_sd, summarise_trials

    models = [m for m in MODEL_NAMES if any(r["model"] == m for r in metric_rows)]
    summaries = {
        m: summarise_trials(
            _metrics_only([r for r in metric_rows if r["model"] == m and r["test_set"] == test_set])
        )
        for m in models
    }
    out = []
    for metric in TABLE1_METRICS:
        row: dict[str, Any] = {"metric": metric}
        for m in models:
            mean, sd, n = summaries[m].get(metric, (math.nan, math.nan, 0))
            row[MODEL_NAMES[m]] = format_mean_sd(mean, sd, 3, n=n)
        out.append(row)
    return out


def table1_numbers(metric_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Long-form Table 1 with numbers: model, test set, metric, mean, SD, n trials."""
    from ..metrics.classification import summarise_trials

    out = []
    for test_set in ("mri2", "mri1"):
        for m in MODEL_NAMES:
            rows = [r for r in metric_rows if r["model"] == m and r["test_set"] == test_set]
            if not rows:
                continue
            for metric, (mean, sd, n) in summarise_trials(_metrics_only(rows)).items():
                out.append(
                    {"model": m, "test_set": test_set, "metric": metric, "mean": mean, "sd": sd, "n": n}
                )
    return out


def comparisons(
    metric_rows: Sequence[Mapping[str, Any]], splits: Sequence[Split], *, seed: int
) -> list[dict[str, Any]]:
    """Paired comparison of the CAM model with each other model across trials, per Table 1 metric (mri2).

    The other models are those present among ``radiomics``, ``gradients`` and the ablation
    ``cam_sequential`` (joint minus sequential training); none when ``cam`` was not run.
    """
    from ..metrics.stats import paired_comparison

    ratio = float(np.mean([len(s.test) / len(s.train) for s in splits]))
    out = []
    by = {(r["model"], r["trial"]): r for r in metric_rows if r["test_set"] == "mri2"}
    trials = sorted({s.trial for s in splits})
    for other in ("radiomics", "gradients", "cam_sequential"):
        if not any(k[0] == other for k in by) or not any(k[0] == "cam" for k in by):
            continue
        for metric in TABLE1_METRICS:
            a = [by[("cam", t)][metric] for t in trials]
            b = [by[(other, t)][metric] for t in trials]
            c = paired_comparison(a, b, test_train_ratio=ratio, seed=seed)
            out.append({"comparison": f"cam - {other}", "metric": metric, **dataclasses.asdict(c)})
    return out


def cam_summary(cam_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean CAM scores per method, target and group (A: non-responders, B: responders), NaNs excluded."""
    out = []
    keys = (
        "auc",
        "pointing_game",
        "mass_in_truth",
        "truth_fraction",
        "spearman_magnitude",
        "spearman_radial",
    )
    for method in CAM_METHODS:
        for target in ("true", "other"):
            for group, label in (("A (non-response)", 0), ("B (response)", 1), ("all", None)):
                rows = [
                    r
                    for r in cam_rows
                    if r["method"] == method
                    and r["target"] == target
                    and (label is None or r["label"] == label)
                ]
                if not rows:
                    continue
                row: dict[str, Any] = {"method": method, "target": target, "group": group}
                for k in keys:
                    vals = np.array([r.get(k, math.nan) for r in rows], dtype=float)
                    vals = vals[np.isfinite(vals)]
                    row[k] = float(vals.mean()) if vals.size else None
                    if k == "auc":
                        row["n_scored"] = int(vals.size)
                row["n_samples"] = len(rows)
                out.append(row)
    return out
