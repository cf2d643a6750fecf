"""The target study's protocol (part 1): data -> recurrence pattern -> voxel categories -> forests -> tables.

Tran et al. 2025 (Results; Methods "Voxel-based categorizations, analyses, and predictions", "Model
evaluation"). Each step's definitions are in its module: :mod:`adaptrt.target.pattern` (item 1),
:mod:`adaptrt.target.voxels` (items 2-3); the choices the paper leaves open are listed in ``docs/target.md``.

One pass over the patients (:func:`prepare_target_data`) keeps, per patient, only the recurrence pattern,
the per-category medians and a sample of voxels of the 4 cm region (a float32 table), plus whatever the
``per_patient`` hooks return (the CTV comparison of item 6; part 2's data); :func:`run_analyses` then runs the
tests and the cross-validated forests on that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..io.manifest import GlioblastomaCohort
from ..seeding import spawn
from ..validation import bad_parameter, is_int, is_real
from .data import Exclusion, PatientVolumes, check_cohort_design, iter_patients
from .pattern import PatientPattern, lesion_zones, patient_pattern
from .voxels import (
    MODELS,
    ForestResult,
    ForestSettings,
    PatientVoxels,
    VoxelTable,
    category_tests,
    run_forest,
    summarise_patient,
    voxel_table,
)

__all__ = [
    "TargetConfig",
    "TargetData",
    "TargetResults",
    "prepare_target_data",
    "run_analyses",
    "target_config",
]

Profile = Literal["quick", "paper"]
PatientHook = Callable[[PatientVolumes], Any]


@dataclass(frozen=True)
class TargetConfig:
    """Settings of the target study, part 1 (use :func:`target_config` for the profiles).

    Attributes
    ----------
    profile
        ``"paper"`` or ``"quick"`` (fewer trees and voxels: the demo's CPU-seconds run).
    seed
        Seed of the voxel sampling, the folds and the forests.
    margin_mm
        The CTV margin of the recurrence zones (20 mm: RTOG).
    region_mm
        The analysis region of items 2-3: the baseline lesion expanded by this many mm (40).
    min_zone_percent
        Share of a patient's new voxels (percent) that a zone needs to count as reached (item 1).
    min_type_ml
        New CEL and new NEL volume (mL) above which a patient's progression type is "both".
    min_voxels
        Voxels a category needs in a patient for its median (5, as the paper).
    min_pairs
        Patients with both medians that a signed-rank test needs.
    n_folds
        Cross-validation folds over patients (5).
    n_estimators, min_samples_leaf, max_depth
        Random forest (scikit-learn ``RandomForestClassifier``; ``max_features="sqrt"``, balanced classes).
    max_voxels_per_class
        Largest sample of voxels per patient and category for the forests.
    press_box
        ``"indicator"``: every voxel plus an in-box feature; ``"inside"``: in-box voxels only.
    permutation_repeats, permutation_max_voxels
        Permutation importance on the held-out fold (repeats; largest sample of held-out voxels).
    time_split
        Also cross-validate the forests on early (TTP below the median) and late progressors.
    outside_tolerance
        Largest share of a lesion mask allowed outside the brain mask (clipped with a note).
    n_jobs
        Parallel jobs of the forests and permutation importances (scikit-learn / joblib; -1: all cores).
    compare_ctvs
        Compare the RTOG and EORTC CTVs with the progression (item 6), when :mod:`adaptrt.target.ctv` and
        :mod:`adaptrt.target.compare` are installed.
    dl
        Part 2: train, select and test the 3D U-Net CTV and run its comparisons (:func:`run_dl_study`).
    dl_base_features, dl_epochs, dl_learning_rate, dl_batch_size, dl_loss
        The final model (paper: 48 features, lr 5e-5, batch 1, PCC loss; it converged at epoch 123).
    dl_losses
        The loss comparison (Supplementary Fig. 3); empty: none.
    dl_betas
        The β sweep of the Tversky loss (α = 1 - β; Supplementary Fig. 2); empty: none.
    dl_modalities
        The modality ablation with PCC + BCE (Fig. 2): names of :data:`adaptrt.target.dl.MODALITY_SETS`.
    dl_repeats
        Further random splits on which the final model's protocol is repeated (the spread of the test metrics).
    dl_device
        ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:N]"``.
    """

    profile: Profile = "paper"
    seed: int = 0
    margin_mm: float = 20.0
    region_mm: float = 40.0
    min_zone_percent: float = 10.0
    min_type_ml: float = 1.0
    min_voxels: int = 5
    min_pairs: int = 5
    n_folds: int = 5
    n_estimators: int = 300
    min_samples_leaf: int = 5
    max_depth: int | None = None
    max_voxels_per_class: int = 3000
    press_box: Literal["indicator", "inside"] = "indicator"
    permutation_repeats: int = 5
    permutation_max_voxels: int = 5000
    time_split: bool = True
    outside_tolerance: float = 0.01
    n_jobs: int | None = -1
    compare_ctvs: bool = True
    dl: bool = True
    dl_base_features: int = 48
    dl_epochs: int = 150
    dl_learning_rate: float = 5e-5
    dl_batch_size: int = 1
    dl_loss: str = "pcc"
    dl_losses: tuple[str, ...] = ("dice", "tversky", "pcc", "pcc+bce", "pcc+0.5bce")
    dl_betas: tuple[float, ...] = (0.5, 0.7, 0.9, 0.95, 0.98, 0.99)
    dl_modalities: tuple[str, ...] = ("anatomical", "anatomical+diffusion", "anatomical+MRSI", "all")
    dl_repeats: int = 4
    dl_device: str = "auto"

    def __post_init__(self) -> None:
        name = "TargetConfig"
        if self.profile not in ("quick", "paper"):
            raise bad_parameter(name, "profile", "'quick' or 'paper'", self.profile)
        if not (is_int(self.seed) and self.seed >= 0):
            raise bad_parameter(name, "seed", "an int >= 0", self.seed)
        for f in ("margin_mm", "region_mm"):
            v = getattr(self, f)
            if not (is_real(v) and 0 < v < 200):
                raise bad_parameter(name, f, "a number of mm in (0, 200)", v)
        if self.region_mm < self.margin_mm:
            raise bad_parameter(name, "region_mm", f"at least margin_mm ({self.margin_mm})", self.region_mm)
        if not (is_real(self.min_zone_percent) and 0 <= self.min_zone_percent <= 100):
            raise bad_parameter(name, "min_zone_percent", "a percentage in [0, 100]", self.min_zone_percent)
        if not (is_real(self.min_type_ml) and self.min_type_ml >= 0):
            raise bad_parameter(name, "min_type_ml", "a volume in mL >= 0", self.min_type_ml)
        for f, lo in (
            ("min_voxels", 1),
            ("min_pairs", 2),
            ("n_folds", 2),
            ("n_estimators", 1),
            ("min_samples_leaf", 1),
            ("max_voxels_per_class", 10),
            ("permutation_repeats", 0),
            ("permutation_max_voxels", 10),
        ):
            v = getattr(self, f)
            if not (is_int(v) and v >= lo):
                raise bad_parameter(name, f, f"an int >= {lo}", v)
        if self.max_depth is not None and not (is_int(self.max_depth) and self.max_depth >= 1):
            raise bad_parameter(name, "max_depth", "null or an int >= 1", self.max_depth)
        if self.press_box not in ("indicator", "inside"):
            raise bad_parameter(name, "press_box", "'indicator' or 'inside'", self.press_box)
        if not (is_real(self.outside_tolerance) and 0 <= self.outside_tolerance < 1):
            raise bad_parameter(name, "outside_tolerance", "a fraction in [0, 1)", self.outside_tolerance)
        if self.n_jobs is not None and not (is_int(self.n_jobs) and self.n_jobs != 0):
            raise bad_parameter(name, "n_jobs", "null or a non-zero int (-1: all cores)", self.n_jobs)
        self._check_dl(name)
        for f in ("time_split", "compare_ctvs", "dl"):
            if not isinstance(getattr(self, f), bool):
                raise bad_parameter(name, f, "true or false", getattr(self, f))

    def _check_dl(self, name: str) -> None:
        from .dl import MODALITY_SETS
        from .losses import LOSSES

        for f in ("dl_losses", "dl_betas", "dl_modalities"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        for f, lo in (("dl_base_features", 1), ("dl_epochs", 1), ("dl_batch_size", 1), ("dl_repeats", 0)):
            v = getattr(self, f)
            if not (is_int(v) and v >= lo):
                raise bad_parameter(name, f, f"an int >= {lo}", v)
        if not (is_real(self.dl_learning_rate) and 0 < self.dl_learning_rate < 1):
            raise bad_parameter(name, "dl_learning_rate", "a number in (0, 1)", self.dl_learning_rate)
        if self.dl_loss not in LOSSES or any(x not in LOSSES for x in self.dl_losses):
            raise bad_parameter(
                name, "dl_loss", f"one of {', '.join(LOSSES)}", (self.dl_loss, self.dl_losses)
            )
        if any(not (is_real(b) and 0 < b < 1) for b in self.dl_betas):
            raise bad_parameter(name, "dl_betas", "weights in (0, 1)", self.dl_betas)
        if any(m not in MODALITY_SETS for m in self.dl_modalities):
            raise bad_parameter(
                name, "dl_modalities", f"names among {', '.join(MODALITY_SETS)}", self.dl_modalities
            )
        if not (
            isinstance(self.dl_device, str)
            and (self.dl_device in ("auto", "cpu") or self.dl_device.startswith("cuda"))
        ):
            raise bad_parameter(name, "dl_device", "'auto', 'cpu' or 'cuda[:N]'", self.dl_device)

    @property
    def forest(self) -> ForestSettings:
        """The forest and cross-validation settings."""
        return ForestSettings(
            n_folds=self.n_folds,
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_depth=self.max_depth,
            press_box=self.press_box,
            permutation_repeats=self.permutation_repeats,
            permutation_max_voxels=self.permutation_max_voxels,
            n_jobs=self.n_jobs,
            seed=self.seed,
        )


def target_config(profile: Profile = "paper", **changes: Any) -> TargetConfig:
    """The study's configuration for a profile, with any field changed.

    ``paper``: 300 trees, up to 3000 voxels per patient and category, 5 permutation repeats.
    ``quick``: 60 trees of depth <= 12, up to 400 voxels per patient and category, 2 permutation repeats on
    at most 2000 held-out voxels (the demo's run). Part 2 (the DL CTV) in ``quick``: a 4-feature U-Net for 5
    epochs at lr 3e-3, a reduced set of comparisons (losses PCC and PCC + BCE, modalities anatomical and
    all six, no β sweep, no repeated split); ``paper`` runs them all (a GPU is advisable).
    """
    if profile == "paper":
        base = TargetConfig(profile="paper")
    elif profile == "quick":
        base = TargetConfig(
            profile="quick",
            n_estimators=60,
            max_depth=12,
            max_voxels_per_class=400,
            permutation_repeats=2,
            permutation_max_voxels=2000,
            dl_base_features=4,
            dl_epochs=5,
            dl_learning_rate=3e-3,
            dl_losses=("pcc", "pcc+bce"),
            dl_betas=(),
            dl_modalities=("anatomical", "all"),
            dl_repeats=0,
        )
    else:
        raise InputError(f"profile must be 'quick' or 'paper', got {profile!r}", field="--profile")
    return dataclasses.replace(base, **changes) if changes else base


@dataclass(frozen=True, eq=False)
class TargetData:
    """What one pass over the patients keeps (see :func:`prepare_target_data`).

    Attributes
    ----------
    patterns
        Item 1, one per analysed patient.
    voxels
        Items 2-3, one per voxel-usable patient.
    map_names
        The maps used as features (the cohort's, in manifest order).
    exclusions
        Patients left out of some analyses, and notes.
    notes
        Cohort-level notes (e.g. one treatment group).
    hooks
        ``{hook name: [result per analysed patient]}`` of the ``per_patient`` hooks.
    """

    patterns: tuple[PatientPattern, ...]
    voxels: tuple[PatientVoxels, ...]
    map_names: tuple[str, ...]
    exclusions: tuple[Exclusion, ...]
    notes: tuple[str, ...]
    hooks: dict[str, list[Any]] = field(default_factory=dict)


def prepare_target_data(
    cohort: GlioblastomaCohort,
    config: TargetConfig,
    *,
    per_patient: dict[str, PatientHook] | None = None,
    progress: bool = False,
) -> TargetData:
    """One pass over the patients: checks, pattern, categories, medians, voxel sample, hooks.

    Parameters
    ----------
    cohort
        From :func:`adaptrt.io.manifest.read_glioblastoma_manifest`.
    config
        The study's settings.
    per_patient
        Functions called with each analysed patient's :class:`PatientVolumes` (while its arrays are in
        memory); their results are collected in :attr:`TargetData.hooks`.
    progress
        Show a progress bar.

    Raises
    ------
    InputError
        Bad files (every patient's problems at once), too few patients, no patient usable for an analysis.
    """
    notes = check_cohort_design(cohort, n_folds=config.n_folds)
    map_names = tuple(cohort.map_names)
    rngs = spawn(config.seed, len(cohort))
    hooks = per_patient or {}
    patterns: list[PatientPattern] = []
    voxels: list[PatientVoxels] = []
    exclusions: list[Exclusion] = []
    hook_out: dict[str, list[Any]] = {k: [] for k in hooks}
    for i, (vols, excl) in enumerate(
        iter_patients(cohort, outside_tolerance=config.outside_tolerance, progress=progress)
    ):
        exclusions += excl
        if vols is None:
            continue
        zones = lesion_zones(vols, margin_mm=config.margin_mm, region_mm=config.region_mm)
        patterns.append(
            patient_pattern(
                vols, zones, min_zone_percent=config.min_zone_percent, min_type_ml=config.min_type_ml
            )
        )
        if vols.voxel_usable:
            voxels.append(
                summarise_patient(
                    vols,
                    zones,
                    map_names,
                    min_voxels=config.min_voxels,
                    max_voxels_per_class=config.max_voxels_per_class,
                    rng=rngs[i],
                )
            )
        for name, fn in hooks.items():
            hook_out[name].append(fn(vols))
        del vols, zones
    if not patterns:
        raise InputError(
            "no patient can be analysed: " + "; ".join(e.text() for e in exclusions),
            path=cohort.source,
            fix="give patients with a progression lesion (see docs/target.md)",
        )
    if len(voxels) < config.n_folds:
        raise InputError(
            f"only {len(voxels)} patient(s) can enter the voxel analyses (they need every map and MRSI data), "
            f"fewer than the {config.n_folds} folds: "
            + "; ".join(e.text() for e in exclusions if e.scope != "note"),
            path=cohort.source,
            fix="give every patient all maps (MRSI maps with data inside the PRESS box), or lower n_folds",
        )
    return TargetData(
        patterns=tuple(patterns),
        voxels=tuple(voxels),
        map_names=map_names,
        exclusions=tuple(exclusions),
        notes=tuple(notes),
        hooks=hook_out,
    )


@dataclass(frozen=True, eq=False)
class TargetResults:
    """Typed results of :func:`run_analyses`.

    Attributes
    ----------
    data
        The prepared data (patterns, medians, samples, exclusions).
    tests
        Item 2: rows of :func:`adaptrt.target.voxels.category_tests`.
    forests
        Item 3: one :class:`ForestResult` per model and subset (``all``, then ``early`` / ``late``).
    ttp_median
        The TTP (months) that splits early from late progressors (the median of the voxel patients).
    table_bytes
        Size of the forests' voxel table (memory check).
    dl
        Part 2 (:func:`run_dl_study`) when ``config.dl`` and the data hold the ``"dl"`` hook's samples
        (:func:`dl_hook`); else None.
    """

    data: TargetData
    tests: list[dict[str, Any]]
    forests: tuple[ForestResult, ...]
    ttp_median: float
    table_bytes: int
    dl: Any = None


def _subsets(table: VoxelTable, time_split: bool) -> tuple[list[tuple[str, Sequence[int] | None]], float]:
    ttp = table.ttp_months
    median = float(np.median(ttp)) if ttp.size else float("nan")
    subsets: list[tuple[str, Sequence[int] | None]] = [("all", None)]
    if time_split:
        subsets += [
            ("early", np.flatnonzero(ttp < median).tolist()),
            ("late", np.flatnonzero(ttp >= median).tolist()),
        ]
    return subsets, median


def run_analyses(data: TargetData, config: TargetConfig, *, progress: bool = False) -> TargetResults:
    """Items 2-3 on the prepared data: the signed-rank tests and the cross-validated forests."""
    from tqdm.auto import tqdm

    tests = category_tests(data.voxels, data.map_names, min_pairs=config.min_pairs)
    table = voxel_table(data.voxels, data.map_names)
    subsets, median = _subsets(table, config.time_split)
    jobs = [(m, s) for s in subsets for m in MODELS]
    forests = []
    for model, (name, subset) in tqdm(jobs, desc="random forests", unit="model", disable=not progress):
        forests.append(
            run_forest(table, model, subset, config.forest, subset_name=name, importance=name == "all")
        )
    dl = None
    if config.dl and "dl" in data.hooks:
        samples = [x for x in data.hooks["dl"] if not isinstance(x, Exclusion)]
        excluded = tuple(x for x in data.hooks["dl"] if isinstance(x, Exclusion))
        if len(samples) >= 3:
            dl = dataclasses.replace(run_dl_study(samples, config, progress=progress), exclusions=excluded)
    return TargetResults(
        data=data, tests=tests, forests=tuple(forests), ttp_median=median, table_bytes=table.nbytes, dl=dl
    )


# ---------------------------------------------------------------------------------------------- part 2
@dataclass(frozen=True, eq=False)
class DLResults:
    """Typed results of :func:`run_dl_study` (part 2: the deep-learning CTV and its comparisons).

    Attributes
    ----------
    model
        The final model (trained on the training split, selected on the validation split).
    split
        Patient ids per part: ``{"train": (...), "val": (...), "test": (...)}``.
    test_rows
        Per test patient and CTV (DL, RTOG, EORTC, and the equal-volume RTOG / EORTC at the DL CTV's volume):
        the rows of :func:`adaptrt.target.compare.evaluate_ctvs` plus ``treatment``, ``ttp_months``,
        ``progressor`` (early / late: TTP below / at or above the cohort's median), ``dl_components``.
    equal_volume
        Per test patient: the margins that give RTOG's and EORTC's bases the DL CTV's volume.
    losses
        ``{loss: (TrainedModel, rows)}``: rows per test patient of the thresholded prediction's metrics (ctv =
        loss name) with ``components`` (connected components of the raw prediction).
    betas
        ``{beta: rows}`` of the Tversky-loss β sweep (α = 1 - β), as ``losses``.
    modalities
        ``{modality set: (TrainedModel, rows)}`` with the PCC + BCE loss.
    repeats
        Per repeated split: rows of the DL / RTOG / EORTC comparison (``repeat`` column).
    overlays
        Per test patient: ``(patient_id, nFLAIR crop or None, {name: mask}, composite lesion)``.
    exclusions
        Patients left out of part 2 and why.
    seconds
        Wall time of part 2.
    """

    model: Any
    split: dict[str, tuple[str, ...]]
    test_rows: list[dict[str, Any]]
    equal_volume: list[dict[str, Any]]
    losses: dict[str, tuple[Any, list[dict[str, Any]]]]
    betas: dict[float, list[dict[str, Any]]]
    modalities: dict[str, tuple[Any, list[dict[str, Any]]]]
    repeats: list[dict[str, Any]]
    overlays: list[tuple[str, Any, dict[str, Any], Any]]
    exclusions: tuple[Exclusion, ...]
    seconds: float


def dl_hook(vols: PatientVolumes) -> Any:
    """The per-patient hook of part 2: a :class:`~adaptrt.target.dl.DLSample`, or an :class:`Exclusion`."""
    from .dl import DL_CHANNELS, make_sample

    missing = [c for c in DL_CHANNELS if c not in vols.maps]
    if missing:
        return Exclusion(
            vols.patient_id,
            "note",
            f"left out of the DL CTV: model input map(s) {', '.join(missing)} missing",
        )
    return make_sample(vols, DL_CHANNELS)


def dl_config(config: TargetConfig, **changes: Any) -> Any:
    """The :class:`~adaptrt.target.dl.DLConfig` of the final model of ``config`` (with any field changed)."""
    from .dl import DLConfig

    base = DLConfig(
        base_features=config.dl_base_features,
        learning_rate=config.dl_learning_rate,
        batch_size=config.dl_batch_size,
        epochs=config.dl_epochs,
        loss=config.dl_loss,
        seed=config.seed,
        device=config.dl_device,
    )
    return dataclasses.replace(base, **changes) if changes else base


def _prediction_rows(model: Any, test: Sequence[Any], name: str) -> list[dict[str, Any]]:
    """Metrics of the thresholded prediction (no component selection) per test patient, with its components."""
    from ..metrics.segmentation import segmentation_metrics
    from .dl import contiguity, predict_probability

    net = model.network(model.config.device)
    rows = []
    for s in test:
        pred = (predict_probability(net, s) >= model.config.threshold) & s.brain
        rows.append(
            {
                "patient_id": s.patient_id,
                "ctv": name,
                **segmentation_metrics(pred, s.target, s.brain, s.spacing_mm),
            }
            | {"components": contiguity(pred), "treatment": s.treatment}
        )
    return rows


def _compare_rows(
    model: Any, test: Sequence[Any], ttp_median: float, *, equal_volume: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, Any, dict[str, Any], Any]]]:
    from .compare import equal_volume_ctv, evaluate_ctvs
    from .ctv import eortc_ctv, rtog_ctv
    from .dl import dl_ctv, predict_probability

    net = model.network(model.config.device)
    rows: list[dict[str, Any]] = []
    eq: list[dict[str, Any]] = []
    overlays = []
    for s in test:
        m = s.masks
        prob = predict_probability(net, s)
        dl, n_comp = dl_ctv(
            prob, s.brain, s.spacing_mm, threshold=model.config.threshold, critical=s.critical
        )
        ctvs = [
            dl,
            rtog_ctv(m["t2l_baseline"], m["cel_baseline"], s.brain, s.spacing_mm, critical=s.critical),
            eortc_ctv(m["cel_baseline"], m["cavity"], s.brain, s.spacing_mm, critical=s.critical),
        ]
        if equal_volume:
            bases = {"RTOG": m["t2l_baseline"] | m["cel_baseline"], "EORTC": m["cel_baseline"] | m["cavity"]}
            for name, base in bases.items():
                c, found = equal_volume_ctv(
                    base,
                    dl.volume_cm3,
                    brain=s.brain,
                    spacing_mm=s.spacing_mm,
                    name=f"{name}@DL",
                    critical=s.critical,
                )
                ctvs.append(c)
                eq.append(
                    {
                        "patient_id": s.patient_id,
                        "family": name,
                        "dl_volume_cm3": dl.volume_cm3,
                        "margin_mm": found.margin_mm,
                        "volume_cm3": found.volume_cm3,
                        "reachable": found.reachable,
                    }
                )
        extra = {
            "treatment": s.treatment,
            "ttp_months": s.ttp_months,
            "progressor": "early" if s.ttp_months < ttp_median else "late",
            "dl_components": n_comp,
        }
        rows += evaluate_ctvs(ctvs, s.target, s.brain, patient_id=s.patient_id, extra=extra)
        flair = s.image[s.channels.index("nFLAIR")] if "nFLAIR" in s.channels else None
        overlays.append((s.patient_id, flair, {c.name: c.mask for c in ctvs[:3]}, s.target))
    return rows, eq, overlays


def run_dl_study(
    samples: Sequence[Any],
    config: TargetConfig,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> DLResults:
    """Part 2: split, train and select the DL CTV, test it against RTOG / EORTC, and the comparisons.

    The test patients are used once per model, after its training and selection (their rows are all that is
    kept of them). Every model of a comparison uses the same split and seed as the final model.
    """
    import time

    from .dl import MODALITY_SETS, split_patients, train_model

    t0 = time.perf_counter()
    say = log or (lambda _m: None)
    split = split_patients([s.treatment for s in samples], config.seed)
    train = [samples[i] for i in split.train]
    val = [samples[i] for i in split.val]
    test = [samples[i] for i in split.test]
    ttp_median = float(np.median([s.ttp_months for s in samples]))
    base = dl_config(config)

    def fit(cfg: Any, tr: Sequence[Any], va: Sequence[Any], what: str) -> Any:
        say(f"DL CTV: training {what}")
        return train_model(tr, va, cfg, progress=progress)

    model = fit(base, train, val, f"the final model ({config.dl_loss} loss)")
    rows, eq, overlays = _compare_rows(model, test, ttp_median, equal_volume=True)

    losses: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for loss in config.dl_losses:
        m = (
            model
            if loss == config.dl_loss
            else fit(dataclasses.replace(base, loss=loss), train, val, f"loss {loss}")
        )
        losses[loss] = (m, _prediction_rows(m, test, loss))
    betas: dict[float, list[dict[str, Any]]] = {}
    for beta in config.dl_betas:
        cfg = dataclasses.replace(base, loss="tversky", tversky_alpha=1.0 - beta, tversky_beta=beta)
        betas[float(beta)] = _prediction_rows(
            fit(cfg, train, val, f"Tversky β = {beta:g}"), test, f"β={beta:g}"
        )
    modalities: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    for name in config.dl_modalities:
        ch = MODALITY_SETS[name]
        if name == "all" and "pcc+bce" in losses:
            m = losses["pcc+bce"][0]
        else:
            cfg = dataclasses.replace(base, loss="pcc+bce", channels=ch)
            m = fit(
                cfg,
                [s.with_channels(ch) for s in train],
                [s.with_channels(ch) for s in val],
                f"inputs {name}",
            )
        modalities[name] = (m, _prediction_rows(m, [s.with_channels(ch) for s in test], name))
    repeats: list[dict[str, Any]] = []
    split_rngs = spawn(config.seed, config.dl_repeats + 1)
    for k in range(1, config.dl_repeats + 1):
        sp = split_patients([s.treatment for s in samples], split_rngs[k])
        cfg = dataclasses.replace(base, seed=config.seed + k)
        mk = fit(cfg, [samples[i] for i in sp.train], [samples[i] for i in sp.val], f"repeated split {k}")
        r, _, _ = _compare_rows(mk, [samples[i] for i in sp.test], ttp_median, equal_volume=False)
        repeats += [x | {"repeat": k} for x in r]
    return DLResults(
        model=model,
        split={
            "train": tuple(s.patient_id for s in train),
            "val": tuple(s.patient_id for s in val),
            "test": tuple(s.patient_id for s in test),
        },
        test_rows=rows,
        equal_volume=eq,
        losses=losses,
        betas=betas,
        modalities=modalities,
        repeats=repeats,
        overlays=overlays,
        exclusions=(),
        seconds=time.perf_counter() - t0,
    )
