"""Loading a glioblastoma cohort for the target study, one patient at a time, with every bad-input check.

The study never holds all maps of all patients: :func:`iter_patients` yields one :class:`PatientVolumes`
(the patient's maps and masks as arrays on one grid) at a time, and the analyses keep only what they need
from it (a recurrence pattern, per-category medians, a sample of voxels of the 4 cm region as a float32
table). Part 2 (the 3D U-Net CTV) reads patients through the same iterator.

What is checked, and what happens
---------------------------------
An :class:`~adaptrt.errors.InputError` (exit code 2, nothing written) names the patient, the file and the fix:

* a file that cannot be read, a NaN or infinite value in a map, a mask with values other than 0/1, a map or
  mask on another grid (shape or affine) than the patient's brain mask (:func:`adaptrt.io.manifest.
  load_glioblastoma_patient`);
* a lesion mask (baseline or progression T2L / CEL, cavity) with more than ``outside_tolerance`` of its voxels
  outside the brain mask (the brain mask does not contain the lesion: a wrong mask or a registration
  problem). A smaller spill (at most ``outside_tolerance``) is clipped to the brain and listed as a note;
* an empty baseline T2L or brain mask;
* no patient left for an analysis (every patient excluded), fewer patients than cross-validation folds.

A documented *exclusion* (listed on the console and in the report) instead:

* a patient whose two progression masks are empty (no progression recorded, e.g. censored): excluded from
  every analysis;
* a patient without one of the cohort's maps, or whose MRSI maps are zero everywhere in the brain (no MRSI
  acquired): excluded from the voxel analyses and forests (items 2-3), kept in the recurrence pattern;
* a cohort with a single treatment group is analysed (the folds are then grouped by patient only and the
  per-cohort tables equal the pooled one), with a note.

Optional manifest columns (kept by the manifest reader as extra columns)
------------------------------------------------------------------------
``press_box``
    The PRESS-box mask of the MRSI acquisition (the simulator writes it). Without it the box is taken as the
    voxels where any MRSI map is non-zero.
``ventricles``
    Ventricle mask; removed from normal-appearing voxels (NAV) as the paper does. Without it NAV keeps the
    ventricles (the manifest has no ventricle mask).
``critical_<NAME>``
    Critical structures (brainstem, thalamus, ...), removed from every CTV.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..io.manifest import GlioblastomaCohort, GlioblastomaPatient, load_glioblastoma_patient
from ..types import Volume

__all__ = [
    "LESION_MASKS",
    "MRSI_MAPS",
    "Exclusion",
    "PatientVolumes",
    "check_cohort_design",
    "iter_patients",
    "load_patient",
]

#: Maps measured by MRSI: zero outside the PRESS box.
MRSI_MAPS: tuple[str, ...] = ("nCho", "nCre", "nNAA", "nLac", "nLip", "CNI", "CCrI", "CrNI")
#: Masks that must lie inside the brain mask.
LESION_MASKS: tuple[str, ...] = (
    "cavity",
    "cel_baseline",
    "t2l_baseline",
    "cel_progression",
    "t2l_progression",
)
_FIX_OUTSIDE = (
    "check that the brain mask and the lesion masks belong to this patient and are co-registered (the brain "
    "mask must include the lesion and the cavity)"
)


@dataclass(frozen=True)
class Exclusion:
    """A patient left out of some analyses, and why.

    Attributes
    ----------
    patient_id
        The patient.
    scope
        ``"all"``: left out of every analysis; ``"voxel"``: left out of the voxel analyses and forests (items
        2-3) only; ``"note"``: kept everywhere, with a remark (e.g. a lesion mask clipped to the brain).
    reason
        One sentence for the console and the report.
    """

    patient_id: str
    scope: Literal["all", "voxel", "note"]
    reason: str

    def text(self) -> str:
        what = {
            "all": "excluded from every analysis",
            "voxel": "excluded from the voxel analyses",
            "note": "",
        }
        tail = f" ({what[self.scope]})" if what[self.scope] else ""
        return f"{self.patient_id}: {self.reason}{tail}"


@dataclass(frozen=True, eq=False)
class PatientVolumes:
    """One patient's maps and masks as arrays ``(z, y, x)`` on the grid of the brain mask.

    Attributes
    ----------
    patient_id, treatment, ttp_months, row
        From the manifest.
    reference
        The brain mask as a :class:`~adaptrt.types.Volume` (geometry for exports).
    maps
        ``float32`` arrays of the available maps (normalised, as in the manifest).
    brain, cavity, cel_baseline, t2l_baseline, cel_progression, t2l_progression
        ``bool`` masks; the lesion masks are clipped to the brain.
    press_box
        ``bool``: where MRSI was acquired (the ``press_box`` column, else where any MRSI map is non-zero).
        All False when the patient has no MRSI map.
    ventricles, critical
        ``bool`` masks or None when the manifest has none.
    voxel_usable
        True when the patient has every map of the cohort and non-empty MRSI maps (items 2-3).
    """

    patient_id: str
    treatment: str
    ttp_months: float
    row: int
    reference: Volume
    maps: Mapping[str, NDArray[np.float32]]
    brain: NDArray[np.bool_]
    cavity: NDArray[np.bool_]
    cel_baseline: NDArray[np.bool_]
    t2l_baseline: NDArray[np.bool_]
    cel_progression: NDArray[np.bool_]
    t2l_progression: NDArray[np.bool_]
    press_box: NDArray[np.bool_]
    ventricles: NDArray[np.bool_] | None = None
    critical: NDArray[np.bool_] | None = None
    voxel_usable: bool = True
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "maps", MappingProxyType(dict(self.maps)))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size ``(z, y, x)`` in mm."""
        return self.reference.spacing

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.reference.shape

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in mL."""
        return float(np.prod(self.spacing_mm)) / 1000.0


def check_cohort_design(cohort: GlioblastomaCohort, *, n_folds: int) -> list[str]:
    """Cohort-level checks made before any image is read; returns notes for the report.

    Raises
    ------
    InputError
        When the cohort has fewer patients than cross-validation folds.
    """
    n = len(cohort)
    if n < n_folds:
        raise InputError(
            f"the cohort has {n} patient(s), fewer than the {n_folds} cross-validation folds",
            path=cohort.source,
            fix=f"add patients (at least {n_folds}) or lower the number of folds (TargetConfig.n_folds)",
        )
    notes = []
    groups = sorted({p.treatment for p in cohort})
    if len(groups) == 1:
        notes.append(
            f"the cohort has one treatment group ({groups[0]!r}): the folds are grouped by patient only (no "
            "stratification by treatment) and the per-cohort tables equal the pooled ones"
        )
    return notes


def _extra_mask(p: GlioblastomaPatient, column: str, ref: Volume, base_dir: Path | None) -> NDArray[np.bool_]:
    from ..io.nifti import read_nifti

    path = Path(p.clinical[column]).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    where = f"patient {p.patient_id}, manifest row {p.row}, column {column!r}"
    if not path.is_file():
        raise InputError(f"{where}: file not found", path=path, fix="correct the path in the manifest")
    vol = read_nifti(path, kind="mask")
    diff = ref.geometry_difference(vol, atol_mm=1e-3)
    if diff is not None:
        raise InputError(
            f"{where}: not on the grid of the brain mask ({diff})",
            path=path,
            fix="resample every map and mask of the patient onto one grid (co-registered)",
        )
    return np.asarray(vol.array, dtype=bool)


def load_patient(
    p: GlioblastomaPatient,
    *,
    map_names: Sequence[str],
    outside_tolerance: float = 0.01,
    base_dir: Path | None = None,
) -> tuple[PatientVolumes | None, list[Exclusion]]:
    """Read and check one patient.

    Parameters
    ----------
    p
        The manifest record.
    map_names
        The maps of the cohort (a patient missing one of them is excluded from the voxel analyses).
    outside_tolerance
        Largest share of a lesion mask allowed outside the brain mask (clipped, with a note).
    base_dir
        Folder that relative paths of the optional columns are resolved against (the manifest's folder).

    Returns
    -------
    (volumes, exclusions)
        ``volumes`` is None when the patient is excluded from every analysis.

    Raises
    ------
    InputError
        Unreadable files, NaN in a map, masks off the grid, a lesion outside the brain, an empty T2L.
    """
    maps_v, masks_v = load_glioblastoma_patient(p)
    brain = np.asarray(masks_v["brain"].array, dtype=bool)
    where = f"patient {p.patient_id} (manifest row {p.row})"
    notes: list[Exclusion] = []
    if not brain.any():
        raise InputError(
            f"{where}: the brain mask is empty",
            path=p.masks["brain"],
            fix="give the skull-stripped brain mask",
        )
    masks: dict[str, NDArray[np.bool_]] = {}
    for name in LESION_MASKS:
        m = np.asarray(masks_v[name].array, dtype=bool)
        n = int(m.sum())
        out = int(np.count_nonzero(m & ~brain))
        if out:
            share = out / n
            if share > outside_tolerance:
                raise InputError(
                    f"{where}: {out} of the {n} voxels of the {name} mask ({100 * share:.1f} %) lie outside the "
                    f"brain mask {p.masks['brain']} (at most {100 * outside_tolerance:g} % is tolerated)",
                    path=p.masks[name],
                    field=name,
                    fix=_FIX_OUTSIDE,
                )
            notes.append(
                Exclusion(
                    p.patient_id,
                    "note",
                    f"{out} voxel(s) of the {name} mask outside the brain mask were dropped",
                )
            )
            m = m & brain
        masks[name] = m
    if not masks["t2l_baseline"].any():
        raise InputError(
            f"{where}: the baseline T2 lesion mask is empty",
            path=p.masks["t2l_baseline"],
            field="t2l_baseline",
            fix="give the pre-RT T2/FLAIR lesion (the study's analyses are relative to it)",
        )
    if not (masks["cel_progression"].any() or masks["t2l_progression"].any()):
        return None, [
            *notes,
            Exclusion(
                p.patient_id,
                "all",
                f"both progression masks are empty ({p.masks['cel_progression'].name}, "
                f"{p.masks['t2l_progression'].name}): no progression recorded",
            ),
        ]
    ref = masks_v["brain"]
    maps = {name: np.asarray(v.array, dtype=np.float32) for name, v in maps_v.items()}
    usable = True
    missing = [m for m in map_names if m not in maps]
    if missing:
        usable = False
        notes.append(Exclusion(p.patient_id, "voxel", f"map(s) {', '.join(missing)} missing"))
    mrsi = [m for m in MRSI_MAPS if m in maps]
    empty = [m for m in mrsi if not np.any(maps[m][brain])]
    if mrsi and empty:
        usable = False
        notes.append(
            Exclusion(
                p.patient_id,
                "voxel",
                f"MRSI map(s) {', '.join(empty)} are zero everywhere in the brain (no MRSI data)",
            )
        )
    if p.clinical.get("press_box"):
        press = _extra_mask(p, "press_box", ref, base_dir) & brain
    elif mrsi:
        press = np.zeros(brain.shape, dtype=bool)
        for name in mrsi:
            press |= maps[name] != 0
        press &= brain
    else:
        press = np.zeros(brain.shape, dtype=bool)
    if usable and mrsi and not press.any():
        usable = False
        notes.append(Exclusion(p.patient_id, "voxel", "the PRESS box mask is empty"))
    ventricles = _extra_mask(p, "ventricles", ref, base_dir) if p.clinical.get("ventricles") else None
    critical = None
    for col in sorted(c for c in p.clinical if c.startswith("critical_") and p.clinical[c]):
        m = _extra_mask(p, col, ref, base_dir)
        critical = m if critical is None else (critical | m)
    extra = dict(p.clinical)
    vols = PatientVolumes(
        patient_id=p.patient_id,
        treatment=p.treatment,
        ttp_months=p.ttp_months,
        row=p.row,
        reference=ref,
        maps=maps,
        brain=brain,
        press_box=press,
        ventricles=ventricles,
        critical=critical,
        voxel_usable=usable,
        extra=extra,
        **masks,
    )
    return vols, notes


def iter_patients(
    cohort: GlioblastomaCohort,
    *,
    outside_tolerance: float = 0.01,
    progress: bool = False,
) -> Iterator[tuple[PatientVolumes | None, list[Exclusion]]]:
    """Yield each patient's volumes (None when excluded from everything) and exclusions, one at a time.

    Every patient is checked even after a bad one, so that one :class:`InputError` lists the problems of all
    patients; it is raised after the last patient (nothing has been written by then). After the first bad
    patient no further volumes are yielded (the analysis would be discarded).
    """
    from tqdm.auto import tqdm

    base_dir = cohort.source.parent if cohort.source is not None else None
    problems: list[str] = []
    for p in tqdm(cohort.patients, desc="target study: patients", unit="patient", disable=not progress):
        try:
            vols, notes = load_patient(
                p, map_names=cohort.map_names, outside_tolerance=outside_tolerance, base_dir=base_dir
            )
        except InputError as exc:
            problems.append(str(exc))
            continue
        if not problems:
            yield vols, notes
    if problems:
        n = len(problems)
        raise InputError(
            f"{n} patient(s) with bad input:\n  " + "\n  ".join(problems),
            path=cohort.source,
            fix="correct the files listed (see docs/manifest.md and docs/target.md); nothing was written",
        )
