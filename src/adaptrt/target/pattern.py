"""Item 1 of the target study: where glioblastoma progresses relative to the baseline T2 lesion.

Definitions (Tran et al. 2025, Results "Patient characteristics" and Table 1; choices the paper leaves open
are marked *ours* and listed in ``docs/target.md``)
------------------------------------------------------------------------------------------------------
* **Baseline lesion** ``B`` = T2L ∪ CEL at baseline (the T2L itself when the CEL lies inside it, as in the
  paper's delineation). **Progression lesion** = T2L ∪ CEL at progression.
* **New progression** (*ours*, as the simulator's truth): every progression-lesion voxel outside ``B``, plus
  every voxel that newly enhances (CEL at progression, not CEL at baseline; inside the T2L these are the
  NEL→CEL voxels, the only way progression can be "inside the T2L").
* **Zones** by Euclidean distance in mm on the grid's own spacing (:func:`adaptrt.target.margins.expand_mm`):
  *inside* ``B``; *margin*: in ``B`` + ``margin_mm`` (20 mm: the RTOG CTV) but not in ``B``; *beyond*.
* **A patient's class**: the paper puts each patient in exactly one class (7 % + 65 % + 29 % of 101
  patients, 1 + 1 + 5 / 19 + 20 + 26 / 7 + 9 + 13) and its Discussion reads the last one as "tumor progression
  outside the RTOG CTV", so the class is the *furthest zone the progression reaches*. Reaching a zone needs at
  least ``min_zone_percent`` of the new voxels there (*ours*: 10 %, so that a few voxels of registration
  error do not move a patient; :func:`zone_threshold_sweep` shows the classes for other thresholds).
* **Progression type** (Table 1): new CEL = CEL at progression not CEL at baseline; new NEL = NEL at
  progression (T2L minus CEL) outside the baseline T2L. ``both`` when each reaches ``min_type_ml`` (1 mL,
  *ours*), else the larger of the two (``none`` when nothing is new).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .data import PatientVolumes
from .margins import expand_mm

__all__ = [
    "PAPER_PATTERN",
    "PAPER_TYPES",
    "ZONES",
    "LesionZones",
    "PatientPattern",
    "classify_zone",
    "lesion_zones",
    "new_progression",
    "patient_pattern",
    "pattern_rows",
    "pattern_table",
    "progression_type_table",
    "zone_threshold_sweep",
]

ZONES: tuple[str, ...] = ("inside", "margin", "beyond")
Zone = Literal["inside", "margin", "beyond", "none"]
ProgressionType = Literal["cel", "t2l", "both", "none"]
#: The paper's patients per zone (Results), per cohort: SOC, ATT (bevacizumab), ENZA (enzastaurin); n = 101.
PAPER_PATTERN: dict[str, dict[str, int]] = {
    "inside": {"SOC": 5, "ATT": 1, "ENZA": 1},
    "margin": {"SOC": 26, "ATT": 19, "ENZA": 20},
    "beyond": {"SOC": 13, "ATT": 7, "ENZA": 9},
}
#: The paper's progression types (Table 1), per cohort; n = 101 (SOC 44, ATT 27, ENZA 30).
PAPER_TYPES: dict[str, dict[str, int]] = {
    "cel": {"SOC": 5, "ATT": 1, "ENZA": 1},
    "t2l": {"SOC": 14, "ATT": 18, "ENZA": 18},
    "both": {"SOC": 25, "ATT": 8, "ENZA": 11},
}


@dataclass(frozen=True, eq=False)
class LesionZones:
    """The baseline lesion and its expansions, ``bool (z, y, x)``.

    Attributes
    ----------
    baseline
        T2L ∪ CEL at baseline.
    margin
        ``baseline`` expanded by the margin (20 mm: the RTOG CTV before clipping), baseline included.
    region
        ``baseline`` expanded by the analysis region (40 mm), clipped to the brain: the voxels of items 2-3.
    """

    baseline: NDArray[np.bool_]
    margin: NDArray[np.bool_]
    region: NDArray[np.bool_]


def lesion_zones(vols: PatientVolumes, *, margin_mm: float = 20.0, region_mm: float = 40.0) -> LesionZones:
    """Baseline lesion, its ``margin_mm`` and its ``region_mm`` expansion (Euclidean, mm)."""
    base = vols.t2l_baseline | vols.cel_baseline
    return LesionZones(
        baseline=base,
        margin=expand_mm(base, vols.spacing_mm, margin_mm),
        region=expand_mm(base, vols.spacing_mm, region_mm) & vols.brain,
    )


def new_progression(
    t2l_baseline: NDArray[np.bool_],
    cel_baseline: NDArray[np.bool_],
    t2l_progression: NDArray[np.bool_],
    cel_progression: NDArray[np.bool_],
) -> NDArray[np.bool_]:
    """New progression: progression lesion outside the baseline lesion, plus newly enhancing voxels.

    Parameters
    ----------
    t2l_baseline, cel_baseline, t2l_progression, cel_progression
        ``bool (z, y, x)`` on one grid.

    Returns
    -------
    ndarray of bool, same shape.
    """
    base = t2l_baseline | cel_baseline
    return np.asarray(((t2l_progression | cel_progression) & ~base) | (cel_progression & ~cel_baseline))


def classify_zone(inside: float, margin: float, beyond: float, *, min_zone_percent: float) -> Zone:
    """The furthest zone holding at least ``min_zone_percent`` of the new voxels (shares in percent).

    ``"none"`` when the shares are all 0 (nothing new). With ``min_zone_percent = 0`` any voxel counts.
    """
    if inside + margin + beyond <= 0:
        return "none"
    for zone, share in (("beyond", beyond), ("margin", margin)):
        if share > 0 and share >= min_zone_percent:
            return zone  # type: ignore[return-value]
    return "inside" if inside > 0 else ("margin" if margin > 0 else "beyond")


@dataclass(frozen=True)
class PatientPattern:
    """One patient's recurrence pattern and progression type.

    Attributes
    ----------
    n_new_voxels, new_ml
        Size of the new progression (voxels, mL).
    inside_percent, margin_percent, beyond_percent
        Shares of the new voxels per zone, percent (sum 100; all 0 when nothing is new).
    beyond_region_percent
        Share of the new voxels beyond the analysis region (40 mm), percent (the paper saw none).
    category
        The patient's zone (see the module docstring).
    new_cel_ml, new_nel_ml, progression_type
        Newly enhancing and new non-enhancing volume (mL) and the Table 1 type.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    n_new_voxels: int
    new_ml: float
    inside_percent: float
    margin_percent: float
    beyond_percent: float
    beyond_region_percent: float
    category: Zone
    new_cel_ml: float
    new_nel_ml: float
    progression_type: ProgressionType


def patient_pattern(
    vols: PatientVolumes,
    zones: LesionZones,
    *,
    min_zone_percent: float = 10.0,
    min_type_ml: float = 1.0,
) -> PatientPattern:
    """Recurrence pattern and progression type of one patient.

    Parameters
    ----------
    vols
        The patient's masks.
    zones
        From :func:`lesion_zones` (the same margins as the rest of the study).
    min_zone_percent
        Share of the new voxels (percent) that a zone needs to count as reached.
    min_type_ml
        Volume (mL) of new CEL and of new NEL above which both count (``"both"``).
    """
    new = new_progression(vols.t2l_baseline, vols.cel_baseline, vols.t2l_progression, vols.cel_progression)
    n_new = int(new.sum())
    ml = vols.voxel_ml
    new_cel = vols.cel_progression & ~vols.cel_baseline
    nel_p = vols.t2l_progression & ~vols.cel_progression
    new_nel = nel_p & ~vols.t2l_baseline
    cel_ml, nel_ml = float(new_cel.sum()) * ml, float(new_nel.sum()) * ml
    ptype: ProgressionType
    if cel_ml >= min_type_ml and nel_ml >= min_type_ml:
        ptype = "both"
    elif cel_ml == 0 and nel_ml == 0:
        ptype = "none"
    else:
        ptype = "cel" if cel_ml > nel_ml else "t2l"
    if n_new == 0:
        return PatientPattern(
            vols.patient_id,
            vols.treatment,
            vols.ttp_months,
            0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            "none",
            0.0,
            0.0,
            ptype,
        )
    inside = int(np.count_nonzero(new & zones.baseline))
    margin = int(np.count_nonzero(new & zones.margin & ~zones.baseline))
    beyond = n_new - inside - margin
    beyond_region = int(np.count_nonzero(new & ~zones.region))
    pct = [100.0 * c / n_new for c in (inside, margin, beyond)]
    return PatientPattern(
        patient_id=vols.patient_id,
        treatment=vols.treatment,
        ttp_months=vols.ttp_months,
        n_new_voxels=n_new,
        new_ml=n_new * ml,
        inside_percent=pct[0],
        margin_percent=pct[1],
        beyond_percent=pct[2],
        beyond_region_percent=100.0 * beyond_region / n_new,
        category=classify_zone(*pct, min_zone_percent=min_zone_percent),
        new_cel_ml=cel_ml,
        new_nel_ml=nel_ml,
        progression_type=ptype,
    )


def pattern_rows(patterns: Sequence[PatientPattern]) -> list[dict[str, Any]]:
    """The per-patient table (one dict per patient)."""
    return [
        {
            "patient_id": p.patient_id,
            "treatment": p.treatment,
            "ttp_months": round(p.ttp_months, 3),
            "new_ml": round(p.new_ml, 3),
            "inside_t2l_percent": round(p.inside_percent, 2),
            "t2l_to_2cm_percent": round(p.margin_percent, 2),
            "beyond_2cm_percent": round(p.beyond_percent, 2),
            "beyond_4cm_percent": round(p.beyond_region_percent, 2),
            "class": p.category,
            "new_cel_ml": round(p.new_cel_ml, 3),
            "new_nel_ml": round(p.new_nel_ml, 3),
            "progression_type": p.progression_type,
        }
        for p in patterns
    ]


def _groups(patterns: Sequence[PatientPattern]) -> list[tuple[str, list[PatientPattern]]]:
    treatments = sorted({p.treatment for p in patterns})
    out = [("all", list(patterns))]
    if len(treatments) > 1:
        out += [(t, [p for p in patterns if p.treatment == t]) for t in treatments]
    return out


def _pct(k: int, n: int) -> str:
    return f"{k} ({100.0 * k / n:.0f} %)" if n else "0"


def pattern_table(patterns: Sequence[PatientPattern]) -> list[dict[str, Any]]:
    """Per cohort (``all`` first): patients per zone (count and % of the patients with new progression),
    the pooled shares of new voxels per zone and the mean of the patients' shares, percent.
    """
    rows: list[dict[str, Any]] = []
    for name, pats in _groups(patterns):
        with_new = [p for p in pats if p.n_new_voxels > 0]
        n = len(with_new)
        total = sum(p.n_new_voxels for p in with_new)
        row: dict[str, Any] = {"cohort": name, "patients": len(pats), "with new progression": n}
        for zone, label in zip(ZONES, ("inside T2L", "T2L to 2 cm", "beyond 2 cm"), strict=True):
            row[f"patients {label}"] = _pct(sum(p.category == zone for p in with_new), n)
        for zone, label in zip(ZONES, ("inside", "margin", "beyond"), strict=True):
            pooled = sum(getattr(p, f"{zone}_percent") * p.n_new_voxels for p in with_new)
            row[f"voxels {label} % (pooled)"] = round(pooled / total, 1) if total else None
            row[f"voxels {label} % (mean of patients)"] = (
                round(float(np.mean([getattr(p, f"{zone}_percent") for p in with_new])), 1) if n else None
            )
        rows.append(row)
    return rows


def progression_type_table(patterns: Sequence[PatientPattern]) -> list[dict[str, Any]]:
    """Table 1's progression types: one row per type, one column per cohort (``all`` first)."""
    groups = _groups(patterns)
    rows: list[dict[str, Any]] = []
    for ptype, label in (
        ("cel", "CEL progression"),
        ("t2l", "T2L progression"),
        ("both", "Both"),
        ("none", "no new lesion"),
    ):
        row: dict[str, Any] = {"progression type": label}
        for name, pats in groups:
            row[f"{name} (n={len(pats)})"] = sum(p.progression_type == ptype for p in pats)
        rows.append(row)
    return rows


def zone_threshold_sweep(
    patterns: Iterable[PatientPattern], thresholds: Sequence[float] = (0.0, 5.0, 10.0, 25.0)
) -> list[dict[str, Any]]:
    """Share of patients (percent, of those with new progression) per zone for several thresholds."""
    pats = [p for p in patterns if p.n_new_voxels > 0]
    rows: list[dict[str, Any]] = []
    for t in thresholds:
        cats = [
            classify_zone(p.inside_percent, p.margin_percent, p.beyond_percent, min_zone_percent=t)
            for p in pats
        ]
        row: dict[str, Any] = {"min zone share %": t}
        for zone in ZONES:
            row[f"{zone} %"] = round(100.0 * cats.count(zone) / len(pats), 1) if pats else None  # type: ignore[arg-type]
        rows.append(row)
    return rows
