"""Standard clinical target volumes (CTVs) of glioblastoma radiotherapy: RTOG and EORTC, margins in mm.

* **RTOG** (the standard of care of the paper): ``(T2L ∪ CEL) + 2 cm``.
* **EORTC**: ``(CEL ∪ resection cavity) + 1.5 cm``; the oedema (the non-enhancing T2/FLAIR lesion) is **not**
  included.

Both are clipped to the brain mask and have the critical structures (brainstem, thalamus, ...) removed,
as the paper's CTVs were "after removing critical structures such as the brain stem and thalamus".
Margins are Euclidean in mm on the voxel grid's own spacing (:func:`adaptrt.target.margins.expand_mm`): a
voxel belongs to the expansion when its centre lies within the margin of a base voxel's centre.

Not modelled: clinical anatomical barriers to spread (falx cerebri, tentorium, bone, ventricles) that a
clinician would edit the margin back from. Only the brain mask and the critical structures given are
respected, so these CTVs are the geometric definitions, not clinically edited ones.

A CTV is a :class:`CTV` record; a learnt CTV (the part-2 deep-learning CTV) is another record with its own
name, so everything downstream (comparison, figures, export) handles any number of CTVs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..types import Volume
from .margins import expand_mm

__all__ = [
    "CTV",
    "CTV_COLOURS",
    "EORTC_MARGIN_MM",
    "RTOG_MARGIN_MM",
    "CriticalLike",
    "MaskLike",
    "critical_union",
    "eortc_ctv",
    "margin_ctv",
    "rtog_ctv",
    "standard_ctvs",
]

#: The RTOG margin (mm) around T2L ∪ CEL.
RTOG_MARGIN_MM = 20.0
#: The EORTC margin (mm) around CEL ∪ cavity.
EORTC_MARGIN_MM = 15.0
#: Display colours (RGB 0-255) by CTV name, as the paper's Fig. 4 (RTOG yellow, EORTC green, DL red).
CTV_COLOURS: Mapping[str, tuple[int, int, int]] = {
    "RTOG": (255, 200, 0),
    "EORTC": (0, 170, 0),
    "DL": (230, 0, 0),
}

#: A boolean array ``(z, y, x)`` or a boolean :class:`~adaptrt.types.Volume`.
MaskLike = NDArray[np.bool_] | Volume
#: Critical structures: one mask, named masks, or None.
CriticalLike = MaskLike | Mapping[str, MaskLike] | None


def _as_mask(m: Any, name: str) -> NDArray[np.bool_]:
    arr = np.asarray(m.array if isinstance(m, Volume) else m)
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean mask, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D (z, y, x), got shape {arr.shape}")
    return arr


def _spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    sp = tuple(float(s) for s in spacing_mm)
    if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing_mm must be three finite values > 0 mm (z, y, x), got {tuple(spacing_mm)}")
    return (sp[0], sp[1], sp[2])


@dataclass(frozen=True, eq=False)
class CTV:
    """One clinical target volume on a patient's grid.

    Parameters
    ----------
    name
        Short name, used as the ROI name, the table key and the legend label (``"RTOG"``, ``"EORTC"``,
        ``"DL"``, ...).
    mask
        Boolean array ``(z, y, x)`` (stored read-only).
    spacing_mm
        Voxel spacing ``(z, y, x)`` in mm.
    definition
        One line saying how it was made (goes into reports and the RTSTRUCT description).
    margin_mm
        The margin used, for margin-based CTVs (None otherwise).
    critical_removed
        Names of the critical structures subtracted.
    """

    name: str
    mask: NDArray[np.bool_]
    spacing_mm: tuple[float, float, float]
    definition: str
    margin_mm: float | None = None
    critical_removed: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"CTV name must be a non-empty string, got {self.name!r}")
        arr = _as_mask(self.mask, f"CTV {self.name!r} mask").copy()
        arr.flags.writeable = False
        object.__setattr__(self, "mask", arr)
        object.__setattr__(self, "spacing_mm", _spacing(self.spacing_mm))
        object.__setattr__(self, "critical_removed", tuple(self.critical_removed))

    @property
    def n_voxels(self) -> int:
        """Number of voxels in the CTV."""
        return int(np.count_nonzero(self.mask))

    @property
    def volume_cm3(self) -> float:
        """Volume in cm³ (mL)."""
        return self.n_voxels * float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def empty(self) -> bool:
        """True when the CTV holds no voxel."""
        return not bool(self.mask.any())


def critical_union(
    critical: CriticalLike, shape: tuple[int, ...]
) -> tuple[NDArray[np.bool_], tuple[str, ...]]:
    """Union of the critical structures and their names (``"critical"`` for a single unnamed mask).

    Parameters
    ----------
    critical
        None, one boolean mask, or a mapping name -> boolean mask, each of ``shape``.
    shape
        The grid ``(z, y, x)``.
    """
    out = np.zeros(shape, dtype=bool)
    if critical is None:
        return out, ()
    items = critical.items() if isinstance(critical, Mapping) else [("critical", critical)]
    names = []
    for name, m in items:
        arr = _as_mask(m, f"critical structure {name!r}")
        if arr.shape != tuple(shape):
            raise ValueError(f"critical structure {name!r} has shape {arr.shape}, the grid is {tuple(shape)}")
        out |= arr
        names.append(str(name))
    return out, tuple(names)


def margin_ctv(
    base: MaskLike,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    margin_mm: float,
    *,
    name: str,
    definition: str,
    critical: CriticalLike = None,
) -> CTV:
    """``(base + margin_mm) ∩ brain`` minus the critical structures, as a :class:`CTV`.

    Parameters
    ----------
    base, brain : bool (z, y, x)
        The volume to expand and the brain mask.
    spacing_mm : (z, y, x) in mm
    margin_mm : float, >= 0
        Euclidean margin in mm (voxel centres within ``margin_mm`` of a base voxel centre).
    name, definition : str
        Of the record.
    critical : optional
        See :func:`critical_union`.
    """
    b = _as_mask(base, "base")
    br = _as_mask(brain, "brain")
    if br.shape != b.shape:
        raise ValueError(f"brain has shape {br.shape} but the base volume has shape {b.shape}")
    sp = _spacing(spacing_mm)
    crit, names = critical_union(critical, b.shape)
    mask = expand_mm(b, sp, float(margin_mm)) & br & ~crit
    return CTV(name, mask, sp, definition, margin_mm=float(margin_mm), critical_removed=names)


def _same_shape(named: Mapping[str, NDArray[np.bool_]]) -> None:
    shapes = {k: v.shape for k, v in named.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"the masks must share one grid, got shapes {shapes}")


def rtog_ctv(
    t2l: MaskLike,
    cel: MaskLike,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    *,
    critical: CriticalLike = None,
    margin_mm: float = RTOG_MARGIN_MM,
) -> CTV:
    """The RTOG CTV: ``(T2L ∪ CEL) + margin_mm`` (2 cm), clipped to the brain, critical structures removed.

    Parameters
    ----------
    t2l, cel, brain : bool (z, y, x)
        Baseline T2/FLAIR lesion, baseline contrast-enhancing lesion, brain mask, on one grid.
    spacing_mm : (z, y, x) in mm
    critical : optional
        Critical structures to subtract (one mask or name -> mask).
    margin_mm : float
        Euclidean margin in mm on the grid's own spacing.

    Returns
    -------
    CTV
        Named ``"RTOG"``. Anatomical barriers (falx, tentorium) are not modelled: only the brain mask and
        the critical structures clip the expansion.
    """
    t, c, b = _as_mask(t2l, "t2l"), _as_mask(cel, "cel"), _as_mask(brain, "brain")
    _same_shape({"t2l": t, "cel": c, "brain": b})
    return margin_ctv(
        t | c,
        b,
        spacing_mm,
        margin_mm,
        name="RTOG",
        definition=f"(T2L ∪ CEL) + {margin_mm:g} mm, clipped to the brain, critical structures removed",
        critical=critical,
    )


def eortc_ctv(
    cel: MaskLike,
    cavity: MaskLike,
    brain: MaskLike,
    spacing_mm: Sequence[float],
    *,
    critical: CriticalLike = None,
    margin_mm: float = EORTC_MARGIN_MM,
) -> CTV:
    """The EORTC CTV: ``(CEL ∪ cavity) + margin_mm`` (1.5 cm), oedema not included, clipped, criticals removed.

    Parameters
    ----------
    cel, cavity, brain : bool (z, y, x)
        Baseline contrast-enhancing lesion (residual tumour), resection cavity, brain mask, on one grid.
    spacing_mm : (z, y, x) in mm
    critical : optional
        Critical structures to subtract.
    margin_mm : float
        Euclidean margin in mm.

    Returns
    -------
    CTV
        Named ``"EORTC"``. Empty when both CEL and cavity are empty (nothing to expand); the comparison
        then reports sensitivity 0 and HD95 ``inf``.
        Anatomical barriers are not modelled.
    """
    c, cv, b = _as_mask(cel, "cel"), _as_mask(cavity, "cavity"), _as_mask(brain, "brain")
    _same_shape({"cel": c, "cavity": cv, "brain": b})
    return margin_ctv(
        c | cv,
        b,
        spacing_mm,
        margin_mm,
        name="EORTC",
        definition=(
            f"(CEL ∪ cavity) + {margin_mm:g} mm, oedema not included, clipped to the brain, "
            "critical structures removed"
        ),
        critical=critical,
    )


def standard_ctvs(
    masks: Mapping[str, Volume],
    *,
    critical: CriticalLike = None,
    rtog_margin_mm: float = RTOG_MARGIN_MM,
    eortc_margin_mm: float = EORTC_MARGIN_MM,
) -> dict[str, CTV]:
    """RTOG and EORTC CTVs of one patient from the glioblastoma manifest's masks.

    Parameters
    ----------
    masks
        As :func:`adaptrt.io.manifest.load_glioblastoma_patient` returns them: boolean Volumes with the keys
        ``brain``, ``cavity``, ``cel_baseline``, ``t2l_baseline`` (others ignored), on one grid.
    critical
        Critical structures to subtract from both.
    rtog_margin_mm, eortc_margin_mm
        The margins (mm).

    Returns
    -------
    dict
        ``{"RTOG": CTV, "EORTC": CTV}``.
    """
    missing = [k for k in ("brain", "cavity", "cel_baseline", "t2l_baseline") if k not in masks]
    if missing:
        raise KeyError(f"standard_ctvs needs the masks {missing}; got {sorted(masks)}")
    sp = masks["brain"].spacing
    return {
        "RTOG": rtog_ctv(
            masks["t2l_baseline"],
            masks["cel_baseline"],
            masks["brain"],
            sp,
            critical=critical,
            margin_mm=rtog_margin_mm,
        ),
        "EORTC": eortc_ctv(
            masks["cel_baseline"],
            masks["cavity"],
            masks["brain"],
            sp,
            critical=critical,
            margin_mm=eortc_margin_mm,
        ),
    }
