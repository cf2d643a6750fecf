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
        for f in ("time_split", "compare_ctvs"):
            if not isinstance(getattr(self, f), bool):
                raise bad_parameter(name, f, "true or false", getattr(self, f))

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
    at most 2000 held-out voxels (the demo's run).
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
    """

    data: TargetData
    tests: list[dict[str, Any]]
    forests: tuple[ForestResult, ...]
    ttp_median: float
    table_bytes: int


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
    return TargetResults(
        data=data, tests=tests, forests=tuple(forests), ttp_median=median, table_bytes=table.nbytes
    )
