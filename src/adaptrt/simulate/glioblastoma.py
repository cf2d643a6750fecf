"""Glioblastoma cohort simulator for the recurrence-prediction / target-definition study (Tran et al. 2025).

Every patient is a set of co-registered maps on a 3 mm grid, made from a *hidden* tumour-cell density whose
mechanism is known, so that a model's prediction of where the tumour will progress can be scored against the
truth. Models only ever see the maps and masks of the manifest; the density lives in ``truth/``.

Mechanism (one patient)
-----------------------
1. **Anatomy.** An ellipsoidal brain with a gyral cortical grey-matter (GM) rim, deep GM nuclei, white matter
   (WM) with fibre bundles (random tubes and the corpus callosum), lateral ventricles and a falx
   (cerebrospinal fluid, CSF). Tissue labels: :data:`OUTSIDE`, :data:`CSF`, :data:`GM`, :data:`WM`,
   :data:`CAVITY`, :data:`TRACT`.
2. **Growth.** The density ``u`` (fraction of the carrying capacity, 0..1) follows the Fisher-KPP law
   ``du/dt = div(D grad u) + rho u (1 - u)`` with ``D`` several times higher in WM than in GM and higher again
   in the fibre bundles (the preferred, long-range route of infiltration; bright on nFA) and zero in CSF,
   the cavity and outside the brain (no flux across them). It is
   solved on the 3 mm grid by a conservative 7-point finite-volume stencil (face diffusivity = harmonic mean),
   explicit steps within the stability limit and an exact logistic reaction step (:func:`fisher_kpp`).
3. **Surgery.** The tumour grows from a seed in WM until its T2/FLAIR-visible volume reaches a drawn size; the
   resection (gross-total, subtotal or biopsy) removes enhancing tumour and leaves a cavity (CSF). Four weeks
   later is the **baseline** (pre-RT) scan.
4. **Images.** The contrast-enhancing lesion (CEL) is ``u >= cel_threshold``, the T2/FLAIR lesion (T2L) is
   ``u >= t2l_threshold`` (both outside the cavity); NEL = T2L minus CEL. Below the T2L threshold the tumour is
   *subclinical*: invisible on nT1c / nT1 / nFLAIR, but it raises nADC, lowers nFA, raises Cho, lowers NAA (so
   CNI and CCrI rise) in proportion to ``u / t2l_threshold`` (weak, and buried in noise). MRSI is block-averaged
   over ``mrsi_voxel_mm`` voxels of a grid laid on the PRESS box, noise is added per MRSI voxel, and the result
   is interpolated back to the 3 mm grid; **outside the PRESS box (and outside the brain) every MRSI map is
   exactly 0**, and the box is also written as the mask ``press_box``.
5. **Treatment.** Chemo-radiotherapy at baseline leaves a surviving fraction of the cells: a small one inside
   the irradiated volume (baseline T2L ∪ CEL ∪ cavity + ``rt_margin_mm``, the RTOG-like CTV these patients
   were treated with; log-kill drawn around ``rt_log_kill``, partly escaped by dense hypoxic tumour,
   ``hypoxic_protection``) and a larger one (``chemo_survival``) outside it. The clock after baseline is
   rescaled so that the cohort's median TTP is near ``median_ttp_months``. Anti-angiogenic patients grow slower
   (``antiangiogenic_growth_factor``) and enhance less: their CEL at progression needs
   ``antiangiogenic_cel_threshold`` (higher), which shifts progression towards non-enhancing.
6. **Progression.** Growth continues until the *new lesion* (see :func:`recurrence_pattern`) exceeds
   ``max(progression_min_ml, progression_new_fraction * baseline lesion volume)``; that time is the TTP and the
   CEL / T2L at that time are the progression masks (a patient not progressed by ``max_followup_months`` is
   censored there).

Normalisation follows the paper: anatomical, diffusion and metabolite maps are divided by their median over
normal-appearing voxels (NAV: brain minus cavity, CSF and T2L; for MRSI only NAV inside the box), so normal
brain is ~1; nLac and nLip are divided by the NAV median of creatine (normal brain ~0.05); CNI, CCrI and CrNI
are robust z-scores (median / MAD over NAV in the box) of nCho - nNAA, nCho - nCre and nCre - nNAA.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import InputError
from ..io.atomic import atomic_dir, atomic_file
from ..io.manifest import KNOWN_MAP_NAMES
from ..seeding import SeedLike, spawn
from ..types import Volume

__all__ = [
    "CAVITY",
    "CSF",
    "GM",
    "MAP_NAMES",
    "MASK_NAMES",
    "MRSI_MAP_NAMES",
    "OUTSIDE",
    "TRACT",
    "TREATMENTS",
    "WM",
    "Anatomy",
    "GlioblastomaConfig",
    "RecurrencePattern",
    "SimulatedGlioblastoma",
    "fisher_kpp",
    "lesion_masks",
    "make_anatomy",
    "progression_type",
    "recurrence_pattern",
    "simulate_patient",
    "summarise_recurrence",
    "treatment_of",
    "write_glioblastoma_cohort",
]

#: Tissue labels of :attr:`Anatomy.tissue` / :attr:`SimulatedGlioblastoma.tissue`.
OUTSIDE, CSF, GM, WM, CAVITY, TRACT = 0, 1, 2, 3, 4, 5
_PARENCHYMA = (GM, WM, TRACT)

#: The maps of the paper, in manifest order (column ``map_<NAME>``).
MAP_NAMES: tuple[str, ...] = KNOWN_MAP_NAMES
#: The maps that come from MRSI (0 outside the PRESS box).
MRSI_MAP_NAMES: tuple[str, ...] = ("nCho", "nCre", "nNAA", "nLac", "nLip", "CNI", "CCrI", "CrNI")
#: The masks of the manifest (``press_box`` is written next to them but is not a manifest column).
MASK_NAMES: tuple[str, ...] = (
    "brain",
    "cavity",
    "cel_baseline",
    "t2l_baseline",
    "cel_progression",
    "t2l_progression",
)
TREATMENTS: tuple[str, ...] = ("soc", "antiangiogenic")
_RESECTIONS: tuple[str, ...] = ("gtr", "str", "biopsy")
_DAYS_PER_MONTH = 365.25 / 12.0
# Median TTP (months) of the default cohort when the post-baseline clock is not rescaled (time_scale = 1);
# median_ttp_months rescales that clock by _REFERENCE_TTP_MONTHS / median_ttp_months. Calibrated with
# benchmarks/simulate_glioblastoma.py (which prints the resulting median).
_REFERENCE_TTP_MONTHS = 4.61


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value}")


def _unit(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True)
class GlioblastomaConfig:
    """Parameters of the glioblastoma cohort (all validated on construction; ``ValueError`` when bad).

    Attributes
    ----------
    n_patients
        Number of patients (>= 1).
    voxel_mm
        Isotropic voxel size of every map, mm (the paper resampled everything to 3 mm).
    shape
        Grid ``(z, y, x)`` in voxels; it must hold the brain (about 115 x 160 x 130 mm).
    antiangiogenic_share
        Share of patients in the anti-angiogenic arm (the paper: 57 of 101). Assigned by a fixed interleave
        (:func:`treatment_of`) so that every cohort size gets the share to within one patient.
    mrsi_voxel_mm
        Nominal MRSI voxel size, mm (the paper: 1 cm).
    press_box_mm
        PRESS-excited volume ``(z, y, x)`` in mm (the paper: 40 x 80 x 80), centred on the baseline lesion
        with a random shift of up to ``press_offset_mm`` per axis; a large lesion is not wholly covered.
    press_offset_mm
        Largest random shift of the PRESS box centre from the lesion centroid, per axis, mm.
    median_ttp_months
        Target median time to progression. It rescales the clock after baseline (``rho`` and ``D`` after
        baseline are multiplied by ``reference / median_ttp_months``, the reference being the default cohort's
        median without rescaling), which moves every TTP in proportion and leaves the spatial pattern of
        progression unchanged. The cohort's median lands near it (the benchmark prints it).
    rt_log_kill
        Median natural-log cell kill of chemo-RT inside the irradiated volume (``ln(1 / surviving fraction)``).
    ttp_spread
        Log-normal sigma of the patients' log-kill (the main source of TTP spread besides ``rho``).
    proliferation_per_day
        Median net proliferation rate ``rho`` (1/day); each patient's is log-normal around it.
    diffusivity_wm_mm2_per_day
        Median diffusivity in white matter (mm²/day); log-normal per patient.
    wm_gm_diffusivity_ratio
        ``D_WM / D_GM`` (Swanson's models: about 5-10).
    tract_diffusivity_factor
        ``D`` in the white-matter fibre bundles (label :data:`TRACT`) over ``D`` in the rest of the white
        matter: the bundles are the preferred, long-range route of infiltration (and are bright on nFA).
    rate_spread
        Log-normal sigma of ``rho`` and ``D`` across patients.
    preop_volume_ml
        Median T2/FLAIR-visible tumour volume at diagnosis (before surgery), ml; log-normal, sigma 0.5.
    resection_shares
        Probabilities of gross-total resection, subtotal resection and biopsy (the paper: 35 / 56 / 10 of 101).
    postop_days
        Days from surgery to the baseline (pre-RT) scan.
    cel_threshold, t2l_threshold
        Densities at and above which tissue enhances (CEL) and is FLAIR-hyperintense (T2L); ``0 < t2l < cel < 1``.
    antiangiogenic_cel_threshold
        Enhancement threshold after starting an anti-angiogenic agent (>= ``cel_threshold``): it hides
        enhancement, so the same density gives a smaller CEL. The default (0.7) is a middle between the
        paper's two anti-angiogenic arms: bevacizumab (27 patients) suppresses enhancement strongly,
        enzastaurin (30) hardly; the paper's two arms had similar progression types (Table 1).
    antiangiogenic_growth_factor
        Multiplies ``rho`` and ``D`` after baseline in the anti-angiogenic arm (<= 1 delays progression).
    rt_margin_mm
        Margin of the irradiated volume around baseline T2L ∪ CEL ∪ cavity, mm.
    chemo_survival
        Surviving fraction of tumour cells outside the irradiated volume (temozolomide only).
    hypoxic_protection
        Share of the radiation log-kill that dense, hypoxic tumour escapes: the log surviving fraction is
        multiplied by ``1 - hypoxic_protection * r`` with ``r = clip((u - t2l_threshold) / (cel_threshold -
        t2l_threshold), 0, 1)``, so the dense core regrows first (local, enhancing recurrence). The default
        (0.95) was chosen with ``benchmarks/simulate_glioblastoma.py`` so that the cohort's progression types
        and recurrence zones come near the paper's (``docs/simulators.md``): at 0.8 too few patients
        progressed with new enhancement and too many beyond 2 cm.
    progression_new_fraction, progression_min_ml
        Progression when the new lesion reaches ``max(progression_min_ml, progression_new_fraction *
        baseline lesion volume)``.
    max_followup_months
        Censoring time; a patient who has not progressed by then is recorded as not progressed.
    subclinical_signal
        Multiplies every imaging signature of subclinical density (``u < t2l_threshold``): 0 makes infiltration
        invisible to every map, 1 is the default strength.
    adc_rise, fa_drop, cho_rise, naa_drop, cre_drop
        Relative change of ADC, FA, Cho, NAA and creatine at the T2L edge (``u = t2l_threshold``); below the
        edge the change is proportional to ``u / t2l_threshold`` (times ``subclinical_signal``).
    anatomical_noise, diffusion_noise, mrsi_noise
        Gaussian noise SD, relative to normal brain (MRSI: per MRSI voxel, before interpolation).
    signature_jitter
        Log-normal sigma of each patient's signature strengths (inter-patient variability).
    """

    n_patients: int = 30
    voxel_mm: float = 3.0
    shape: tuple[int, int, int] = (48, 64, 56)
    antiangiogenic_share: float = 0.55
    mrsi_voxel_mm: float = 10.0
    press_box_mm: tuple[float, float, float] = (40.0, 80.0, 80.0)
    press_offset_mm: float = 10.0
    median_ttp_months: float = 7.0
    rt_log_kill: float = 6.0
    ttp_spread: float = 0.5
    proliferation_per_day: float = 0.025
    diffusivity_wm_mm2_per_day: float = 0.3
    wm_gm_diffusivity_ratio: float = 5.0
    tract_diffusivity_factor: float = 6.0
    rate_spread: float = 0.25
    preop_volume_ml: float = 45.0
    resection_shares: tuple[float, float, float] = (0.35, 0.55, 0.10)
    postop_days: float = 28.0
    cel_threshold: float = 0.5
    t2l_threshold: float = 0.1
    antiangiogenic_cel_threshold: float = 0.7
    antiangiogenic_growth_factor: float = 0.75
    rt_margin_mm: float = 20.0
    chemo_survival: float = 0.5
    hypoxic_protection: float = 0.95
    progression_new_fraction: float = 0.2
    progression_min_ml: float = 2.0
    max_followup_months: float = 36.0
    subclinical_signal: float = 1.0
    adc_rise: float = 0.35
    fa_drop: float = 0.3
    cho_rise: float = 0.5
    naa_drop: float = 0.3
    cre_drop: float = 0.1
    anatomical_noise: float = 0.05
    diffusion_noise: float = 0.08
    mrsi_noise: float = 0.1
    signature_jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.n_patients, bool) or not isinstance(self.n_patients, int) or self.n_patients < 1:
            raise ValueError(f"n_patients must be an int >= 1, got {self.n_patients!r}")
        _positive("voxel_mm", self.voxel_mm)
        shape = tuple(self.shape)
        if len(shape) != 3 or not all(isinstance(n, int | np.integer) and n >= 8 for n in shape):
            raise ValueError(f"shape must be three ints >= 8 voxels (z, y, x), got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in shape))
        ext = np.asarray(self.shape) * self.voxel_mm
        if np.any(ext < np.array([100.0, 130.0, 110.0])):
            raise ValueError(
                f"shape {self.shape} at {self.voxel_mm} mm covers only {tuple(ext)} mm (z, y, x); a brain needs "
                "at least (100, 130, 110) mm: enlarge shape or voxel_mm"
            )
        _unit("antiangiogenic_share", self.antiangiogenic_share)
        _positive("mrsi_voxel_mm", self.mrsi_voxel_mm)
        if self.mrsi_voxel_mm < self.voxel_mm:
            raise ValueError(f"mrsi_voxel_mm ({self.mrsi_voxel_mm}) must be >= voxel_mm ({self.voxel_mm})")
        box = tuple(float(b) for b in self.press_box_mm)
        if len(box) != 3:
            raise ValueError(f"press_box_mm must be three sizes (z, y, x) in mm, got {self.press_box_mm!r}")
        for b in box:
            _positive("press_box_mm", b)
            if b < self.mrsi_voxel_mm:
                raise ValueError(
                    f"press_box_mm {box} must be at least one MRSI voxel ({self.mrsi_voxel_mm} mm)"
                )
        object.__setattr__(self, "press_box_mm", box)
        _positive("press_offset_mm", self.press_offset_mm, allow_zero=True)
        for name in (
            "median_ttp_months",
            "rt_log_kill",
            "proliferation_per_day",
            "diffusivity_wm_mm2_per_day",
            "wm_gm_diffusivity_ratio",
            "tract_diffusivity_factor",
            "preop_volume_ml",
            "max_followup_months",
            "antiangiogenic_growth_factor",
        ):
            _positive(name, float(getattr(self, name)))
        for name in (
            "ttp_spread",
            "rate_spread",
            "postop_days",
            "rt_margin_mm",
            "progression_new_fraction",
            "progression_min_ml",
            "subclinical_signal",
            "anatomical_noise",
            "diffusion_noise",
            "mrsi_noise",
            "signature_jitter",
        ):
            _positive(name, float(getattr(self, name)), allow_zero=True)
        if self.wm_gm_diffusivity_ratio < 1:
            raise ValueError(
                f"wm_gm_diffusivity_ratio must be >= 1 (WM is faster), got {self.wm_gm_diffusivity_ratio}"
            )
        shares = tuple(float(s) for s in self.resection_shares)
        if len(shares) != 3 or not all(math.isfinite(s) and s >= 0 for s in shares) or sum(shares) <= 0:
            raise ValueError(
                f"resection_shares must be three weights >= 0 (gtr, str, biopsy) with a positive sum, "
                f"got {self.resection_shares!r}"
            )
        object.__setattr__(self, "resection_shares", shares)
        if not 0.0 < self.t2l_threshold < self.cel_threshold < 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 < t2l_threshold < cel_threshold < 1, got t2l_threshold="
                f"{self.t2l_threshold}, cel_threshold={self.cel_threshold}"
            )
        if not self.cel_threshold <= self.antiangiogenic_cel_threshold < 1.0:
            raise ValueError(
                f"antiangiogenic_cel_threshold must be in [cel_threshold, 1), got {self.antiangiogenic_cel_threshold}"
            )
        _unit("chemo_survival", self.chemo_survival)
        _unit("hypoxic_protection", self.hypoxic_protection)
        for name in ("adc_rise", "fa_drop", "naa_drop", "cre_drop"):
            _unit(name, float(getattr(self, name)))
        _positive("cho_rise", self.cho_rise, allow_zero=True)

    def cel_threshold_for(self, treatment: str, *, after_baseline: bool = True) -> float:
        """Enhancement threshold of a treatment arm (anti-angiogenic agents act only after baseline)."""
        if treatment not in TREATMENTS:
            raise ValueError(f"treatment must be one of {TREATMENTS}, got {treatment!r}")
        if treatment == "antiangiogenic" and after_baseline:
            return self.antiangiogenic_cel_threshold
        return self.cel_threshold


def treatment_of(patient_index: int, share: float) -> str:
    """Treatment arm of a patient: a fixed interleave that gives ``share`` of any cohort to within one patient.

    Patient ``i`` (0-based) is anti-angiogenic when ``floor((i + 1) * share) > floor(i * share)``.
    """
    if patient_index < 0:
        raise ValueError(f"patient_index must be >= 0, got {patient_index}")
    _unit("share", share)
    return (
        "antiangiogenic"
        if math.floor((patient_index + 1) * share) > math.floor(patient_index * share)
        else "soc"
    )


# ---------------------------------------------------------------------------------------------- anatomy
@dataclass(frozen=True, eq=False)
class Anatomy:
    """A simulated brain on the grid.

    Attributes
    ----------
    tissue
        ``uint8 (z, y, x)`` labels :data:`OUTSIDE`, :data:`CSF`, :data:`GM`, :data:`WM`, :data:`TRACT` (white
        matter of the fibre bundles); no cavity yet.
    brain
        ``bool (z, y, x)``: the skull-stripped brain mask (parenchyma, ventricles and falx).
    depth_mm
        ``float32 (z, y, x)``: distance of each parenchyma voxel to the nearest non-parenchyma voxel, mm.
    centre_index
        Index ``(k, j, i)`` of the brain's centre (the midline is the plane ``i = centre_index[2]``).
    """

    tissue: NDArray[np.uint8]
    brain: NDArray[np.bool_]
    depth_mm: NDArray[np.float32]
    centre_index: tuple[int, int, int]


def _smooth_field(
    shape: tuple[int, int, int], sigma_vox: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_vox, mode="wrap")
    return np.asarray(f / max(float(f.std()), 1e-12))


def _ellipsoid_r(
    grids: tuple[NDArray[np.float64], ...], centre_mm: NDArray[np.float64], radii_mm: NDArray[np.float64]
) -> NDArray[np.float64]:
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm, strict=True))
    return np.sqrt(np.asarray(r2))


def make_anatomy(config: GlioblastomaConfig, rng: np.random.Generator) -> Anatomy:
    """Draw a brain: ellipsoid with gyral cortex, deep grey nuclei, white matter, ventricles and falx.

    Parameters
    ----------
    config
        Grid and voxel size.
    rng
        Generator (consumed).

    Returns
    -------
    Anatomy
        Labels and masks on ``config.shape``.
    """
    h = config.voxel_mm
    shape = config.shape
    centre_idx = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    centre = np.asarray(centre_idx, dtype=float) * h
    grids = tuple(
        np.asarray(g) for g in np.meshgrid(*[np.arange(n) * h for n in shape], indexing="ij", sparse=True)
    )
    radii = np.array([57.0, 78.0, 64.0]) * rng.uniform(0.93, 1.04, size=3)
    # keep the brain inside the grid with one voxel of background around it
    radii = np.minimum(radii, (np.minimum(centre, (np.asarray(shape) - 1) * h - centre) - 2 * h) / 1.06)
    r = _ellipsoid_r(grids, centre, radii)
    brain = r < 1.0 + 0.03 * _smooth_field(shape, 5.0, rng)
    brain = ndimage.binary_fill_holes(brain)
    csf = np.zeros(shape, dtype=bool)
    vent_scale = rng.uniform(0.8, 1.3)
    for side in (-1.0, 1.0):
        c = centre + np.array([6.0, -4.0, side * 11.0])
        csf |= _ellipsoid_r(grids, c, np.array([11.0, 25.0, 5.5]) * vent_scale) < 1.0
    # the falx: a one-voxel CSF sheet on the midline outside the central core (corpus callosum, diencephalon)
    falx = np.zeros(shape, dtype=bool)
    falx[:, :, centre_idx[2]] = True
    csf |= falx & (r > 0.55) & brain
    csf &= brain
    parenchyma = brain & ~csf
    depth = ndimage.distance_transform_edt(parenchyma, sampling=(h, h, h)).astype(np.float32)
    # cortical thickness varies (gyri): 1-3 voxels at 3 mm
    thickness = np.clip(6.0 + 3.5 * _smooth_field(shape, 3.0, rng), 3.0, 12.0)
    gm = parenchyma & (depth <= thickness)
    for side in (-1.0, 1.0):
        c = centre + np.array([-8.0, 4.0, side * 21.0])
        gm |= parenchyma & (_ellipsoid_r(grids, c, np.array([12.0, 16.0, 9.0])) < 1.0)
    # fibre bundles: thin tubes where two smooth random fields both cross zero, plus the corpus callosum
    f1, f2 = _smooth_field(shape, 5.0, rng), _smooth_field(shape, 5.0, rng)
    tract = (np.abs(f1) < 0.3) & (np.abs(f2) < 0.3)
    callosum = _ellipsoid_r(grids, centre + np.array([18.0, -2.0, 0.0]), np.array([4.0, 30.0, 30.0])) < 1.0
    tract = (tract | callosum) & parenchyma & ~gm
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[parenchyma] = WM
    tissue[tract] = TRACT
    tissue[gm] = GM
    tissue[csf] = CSF
    return Anatomy(tissue=tissue, brain=brain, depth_mm=depth, centre_index=centre_idx)


# ---------------------------------------------------------------------------------------------- growth
class _KPPSolver:
    """Explicit finite-volume Fisher-KPP stepper with precomputed face coefficients (in-place updates)."""

    def __init__(
        self,
        diffusivity: NDArray[np.floating[Any]],
        rho: NDArray[np.floating[Any]] | float,
        spacing_mm: tuple[float, float, float],
        dt_days: float,
    ) -> None:
        d = np.asarray(diffusivity, dtype=np.float64)
        self.dt = float(dt_days)
        self.faces: list[NDArray[np.float32]] = []
        for axis, h in enumerate(spacing_mm):
            a = np.moveaxis(d, axis, 0)
            lo, hi = a[:-1], a[1:]
            s = lo + hi
            # harmonic mean: zero whenever one side has D = 0, so nothing flows into CSF or outside the brain
            face = np.where(s > 0, 2.0 * lo * hi / np.where(s > 0, s, 1.0), 0.0) * self.dt / h**2
            self.faces.append(np.ascontiguousarray(np.moveaxis(face, 0, axis), dtype=np.float32))
        growth = np.exp(np.asarray(rho, dtype=np.float64) * self.dt)
        self.growth = np.broadcast_to(growth, d.shape).astype(np.float32)
        self.growth_m1 = self.growth - np.float32(1.0)
        self._lap = np.empty(d.shape, dtype=np.float32)

    def step(self, u: NDArray[np.float32]) -> None:
        lap = self._lap
        lap.fill(0.0)
        for axis, face in enumerate(self.faces):
            flux = np.diff(u, axis=axis)
            flux *= face
            hi = [slice(None)] * 3
            lo = [slice(None)] * 3
            hi[axis] = slice(1, None)
            lo[axis] = slice(None, -1)
            lap[tuple(hi)] -= flux
            lap[tuple(lo)] += flux
        u += lap
        # exact solution of the logistic reaction over dt (unconditionally stable, keeps 0 <= u <= 1)
        num = u * self.growth
        u *= self.growth_m1
        u += 1.0
        np.divide(num, u, out=u)
        np.clip(u, 0.0, 1.0, out=u)


def _stable_dt(d_max: float, spacing_mm: tuple[float, float, float], max_dt_days: float) -> float:
    limit = 1.0 / (2.0 * d_max * sum(1.0 / h**2 for h in spacing_mm)) if d_max > 0 else max_dt_days
    return float(min(max_dt_days, 0.9 * limit))


def fisher_kpp(
    u0: NDArray[np.floating[Any]],
    diffusivity: NDArray[np.floating[Any]],
    rho: NDArray[np.floating[Any]] | float,
    days: float,
    *,
    spacing_mm: tuple[float, float, float],
    max_dt_days: float = 5.0,
) -> NDArray[np.float32]:
    """Grow a tumour-cell density for ``days`` by ``du/dt = div(D grad u) + rho u (1 - u)``.

    Parameters
    ----------
    u0
        Initial density, shape ``(z, y, x)``, values in [0, 1].
    diffusivity
        ``D`` per voxel, mm²/day, same shape; 0 marks no-flux tissue (CSF, cavity, outside the brain).
    rho
        Proliferation rate, 1/day (scalar or per voxel).
    days
        Duration, days (>= 0).
    spacing_mm
        Voxel size ``(z, y, x)``, mm.
    max_dt_days
        Largest time step; the step is also kept below 0.9 of the explicit stability limit.

    Returns
    -------
    numpy.ndarray
        ``float32 (z, y, x)`` density after ``days`` (the last step is shortened to land on ``days``).
    """
    u = np.array(u0, dtype=np.float32)
    d = np.asarray(diffusivity, dtype=np.float64)
    if u.ndim != 3 or d.shape != u.shape:
        raise ValueError(f"u0 and diffusivity must be 3-D arrays of one shape, got {u.shape} and {d.shape}")
    if not (math.isfinite(days) and days >= 0):
        raise ValueError(f"days must be a finite number >= 0, got {days}")
    if np.any(d < 0) or not np.all(np.isfinite(d)):
        raise ValueError("diffusivity must be finite and >= 0 everywhere")
    dt = _stable_dt(float(d.max()), spacing_mm, max_dt_days)
    n_full = int(days // dt)
    rest = days - n_full * dt
    if n_full:
        solver = _KPPSolver(d, rho, spacing_mm, dt)
        for _ in range(n_full):
            solver.step(u)
    if rest > 1e-9:
        _KPPSolver(d, rho, spacing_mm, rest).step(u)
    return u


# ---------------------------------------------------------------------------------------------- lesions
def lesion_masks(
    density: NDArray[np.floating[Any]],
    tissue: NDArray[np.integer[Any]],
    *,
    cel_threshold: float,
    t2l_threshold: float,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """CEL and T2L of a density: thresholds, restricted to parenchyma (GM or WM; never cavity or CSF).

    Parameters
    ----------
    density
        Tumour-cell density ``(z, y, x)`` in [0, 1].
    tissue
        Labels of the same shape (:data:`GM`, :data:`WM` and :data:`TRACT` count as parenchyma).
    cel_threshold, t2l_threshold
        Density at and above which a voxel enhances / is FLAIR-hyperintense.

    Returns
    -------
    (cel, t2l)
        Boolean masks ``(z, y, x)``; ``cel`` is inside ``t2l`` when ``cel_threshold >= t2l_threshold``.
    """
    parenchyma = np.isin(tissue, _PARENCHYMA)
    return (density >= cel_threshold) & parenchyma, (density >= t2l_threshold) & parenchyma


@dataclass(frozen=True)
class RecurrencePattern:
    """Where a patient's new lesion lies relative to the baseline T2L (the paper's recurrence zones).

    The *new lesion* is every voxel of the progression lesion (T2L ∪ CEL at progression) that was not in the
    baseline lesion (T2L ∪ CEL at baseline), plus every voxel that newly enhances (CEL at progression, not CEL at
    baseline; inside the baseline T2L these are the paper's NEL -> CEL voxels). Each new voxel is *inside* the
    baseline lesion, *within the margin* (Euclidean distance to the baseline lesion <= ``margin_mm``: inside the
    RTOG CTV) or *beyond* it.

    Attributes
    ----------
    n_new_voxels, new_volume_ml
        Size of the new lesion.
    inside_percent, margin_percent, beyond_percent
        Shares of the new voxels in each zone, percent (sum 100; all 0 when nothing is new).
    category
        The patient's zone, as the paper counts patients: ``"beyond"`` when at least ``min_zone_percent`` of
        the new voxels are beyond the margin, else ``"margin"`` when at least that share is within the margin,
        else ``"inside"``; ``"none"`` when nothing is new.
    """

    n_new_voxels: int
    new_volume_ml: float
    inside_percent: float
    margin_percent: float
    beyond_percent: float
    category: Literal["inside", "margin", "beyond", "none"]


def recurrence_pattern(
    t2l_baseline: NDArray[np.bool_],
    cel_baseline: NDArray[np.bool_],
    t2l_progression: NDArray[np.bool_],
    cel_progression: NDArray[np.bool_],
    *,
    spacing_mm: tuple[float, float, float],
    margin_mm: float = 20.0,
    min_zone_percent: float = 10.0,
) -> RecurrencePattern:
    """Classify a patient's new lesion by its distance to the baseline lesion (see :class:`RecurrencePattern`).

    Parameters
    ----------
    t2l_baseline, cel_baseline, t2l_progression, cel_progression
        Boolean masks ``(z, y, x)`` on one grid.
    spacing_mm
        Voxel size ``(z, y, x)``, mm (the distance is a Euclidean distance transform in mm).
    margin_mm
        The CTV margin (RTOG: 20 mm around T2L ∪ CEL).
    min_zone_percent
        Share of the new voxels that puts a patient in an outer category.

    Returns
    -------
    RecurrencePattern
    """
    masks = [
        np.asarray(m, dtype=bool) for m in (t2l_baseline, cel_baseline, t2l_progression, cel_progression)
    ]
    if any(m.shape != masks[0].shape or m.ndim != 3 for m in masks):
        raise ValueError(f"the four masks must be 3-D and of one shape, got {[m.shape for m in masks]}")
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise ValueError(f"margin_mm must be a finite number >= 0, got {margin_mm}")
    t2l_b, cel_b, t2l_p, cel_p = masks
    base = t2l_b | cel_b
    new = ((t2l_p | cel_p) & ~base) | (cel_p & ~cel_b)
    n_new = int(new.sum())
    vox_ml = float(np.prod(spacing_mm)) / 1000.0
    if n_new == 0:
        return RecurrencePattern(0, 0.0, 0.0, 0.0, 0.0, "none")
    if base.any():
        dist = ndimage.distance_transform_edt(~base, sampling=spacing_mm)
    else:
        dist = np.full(base.shape, np.inf)
    d_new = dist[new]
    inside = int(np.count_nonzero(d_new == 0))
    margin = int(np.count_nonzero((d_new > 0) & (d_new <= margin_mm)))
    beyond = n_new - inside - margin
    pct = [100.0 * c / n_new for c in (inside, margin, beyond)]
    category: Literal["inside", "margin", "beyond", "none"]
    if pct[2] >= min_zone_percent:
        category = "beyond"
    elif pct[1] >= min_zone_percent:
        category = "margin"
    else:
        category = "inside"
    return RecurrencePattern(n_new, n_new * vox_ml, pct[0], pct[1], pct[2], category)


def summarise_recurrence(patterns: Iterable[RecurrencePattern]) -> dict[str, float]:
    """Cohort summary of recurrence patterns.

    Returns
    -------
    dict
        ``voxels_inside/margin/beyond_percent`` (all new voxels of the cohort pooled),
        ``mean_inside/margin/beyond_percent`` (mean of the patients' shares),
        ``patients_inside/margin/beyond_percent`` (share of patients in each category, of those with a new
        lesion) and ``n_patients``.
    """
    pats = list(patterns)
    with_new = [p for p in pats if p.n_new_voxels > 0]
    total = sum(p.n_new_voxels for p in with_new)
    out: dict[str, float] = {"n_patients": float(len(pats))}
    for zone in ("inside", "margin", "beyond"):
        share = [getattr(p, f"{zone}_percent") for p in with_new]
        pooled = sum(s * p.n_new_voxels for s, p in zip(share, with_new, strict=True))
        out[f"voxels_{zone}_percent"] = pooled / total if total else 0.0
        out[f"mean_{zone}_percent"] = float(np.mean(share)) if share else 0.0
        out[f"patients_{zone}_percent"] = (
            100.0 * sum(p.category == zone for p in with_new) / len(with_new) if with_new else 0.0
        )
    return out


# ---------------------------------------------------------------------------------------------- maps
def _ramp(u: NDArray[np.float32], lo: float, hi: float) -> NDArray[np.float32]:
    return np.clip((u - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _box_mask(
    shape: tuple[int, int, int], h: float, centre_mm: NDArray[np.float64], size_mm: tuple[float, float, float]
) -> tuple[NDArray[np.bool_], NDArray[np.float64]]:
    size = np.asarray(size_mm)
    ext = (np.asarray(shape) - 1) * h
    # shift the box back into the grid rather than cropping it: the PRESS box is always fully excited
    lo = np.clip(centre_mm - size / 2, -h / 2, np.maximum(ext + h / 2 - size, -h / 2))
    hi = lo + size
    axes = [(np.arange(n) * h >= lo[a]) & (np.arange(n) * h < hi[a]) for a, n in enumerate(shape)]
    box = axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]
    return box, lo


def _mrsi_resample(
    fine: Mapping[str, NDArray[np.float32]],
    box: NDArray[np.bool_],
    box_lo_mm: NDArray[np.float64],
    h: float,
    mrsi_mm: float,
    noise: Mapping[str, float],
    rng: np.random.Generator,
) -> dict[str, NDArray[np.float32]]:
    """Block-average fine maps over MRSI voxels laid on the box, add per-voxel noise, interpolate back."""
    idx = np.nonzero(box)
    pos = np.stack([i * h for i in idx], axis=1)  # (n, 3) voxel centres, mm
    rel = (pos - box_lo_mm) / mrsi_mm
    n_coarse = np.maximum(np.ceil(rel.max(axis=0) + 1e-9).astype(int), 1)
    cidx = np.minimum(np.floor(rel).astype(int), n_coarse - 1)
    flat = np.ravel_multi_index(tuple(cidx.T), tuple(n_coarse))
    counts = np.bincount(flat, minlength=int(np.prod(n_coarse))).astype(np.float64)
    coords = (rel - 0.5).T
    out: dict[str, NDArray[np.float32]] = {}
    for name, arr in fine.items():
        sums = np.bincount(flat, weights=arr[idx].astype(np.float64), minlength=counts.size)
        coarse = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        coarse = coarse + noise[name] * rng.standard_normal(coarse.size)
        vals = ndimage.map_coordinates(coarse.reshape(tuple(n_coarse)), coords, order=1, mode="nearest")
        res = np.zeros(box.shape, dtype=np.float32)
        res[idx] = vals
        out[name] = res
    return out


def _robust_z(x: NDArray[np.float32], ref: NDArray[np.bool_], floor: float) -> NDArray[np.float32]:
    vals = x[ref]
    if vals.size < 10:
        return np.zeros_like(x)
    med = float(np.median(vals))
    mad = 1.4826 * float(np.median(np.abs(vals - med)))
    return ((x - med) / max(mad, floor)).astype(np.float32)


def _baseline_maps(
    tissue: NDArray[np.uint8],
    brain: NDArray[np.bool_],
    density: NDArray[np.float32],
    cel: NDArray[np.bool_],
    t2l: NDArray[np.bool_],
    press_box: NDArray[np.bool_],
    box_lo_mm: NDArray[np.float64],
    config: GlioblastomaConfig,
    strength: Mapping[str, float],
    rng: np.random.Generator,
) -> dict[str, NDArray[np.float32]]:
    """All baseline maps from the tissue labels and the hidden density (see the module docstring)."""
    c = config
    u = density.astype(np.float32)
    # e: infiltration signature (linear in u below the T2L edge, weighted by subclinical_signal, 1 above);
    # cel: cellularity between the T2L and CEL thresholds; nec: necrosis above the CEL threshold
    e = np.where(u >= c.t2l_threshold, 1.0, c.subclinical_signal * u / c.t2l_threshold).astype(np.float32)
    cel_r = _ramp(u, c.t2l_threshold, c.cel_threshold)
    nec = _ramp(u, c.cel_threshold, 1.0)
    gm, wm, tr = tissue == GM, tissue == WM, tissue == TRACT
    fluid = (tissue == CSF) | (tissue == CAVITY)
    cav = tissue == CAVITY
    t2 = t2l.astype(np.float32)
    ce = cel.astype(np.float32)

    def by_tissue(
        v_gm: float, v_wm: float, v_csf: float, v_cav: float, v_tract: float | None = None
    ) -> NDArray[np.float32]:
        out = np.zeros(u.shape, dtype=np.float32)
        out[gm], out[wm], out[tissue == CSF], out[cav] = v_gm, v_wm, v_csf, v_cav
        out[tr] = v_wm if v_tract is None else v_tract
        return out

    raw: dict[str, NDArray[np.float32]] = {}
    raw["nT1c"] = by_tissue(0.85, 1.05, 0.3, 0.3) * (1 - 0.1 * t2) + 0.8 * ce * (1 - 0.5 * nec)
    raw["nT1"] = by_tissue(0.85, 1.05, 0.3, 0.3) * (1 - 0.12 * t2 - 0.08 * ce)
    raw["nFLAIR"] = by_tissue(1.08, 0.95, 0.15, 0.25) + 0.55 * t2 * (1 - 0.3 * nec)
    raw["nADC"] = by_tissue(1.1, 0.92, 3.2, 3.0, 0.85) * (1 + strength["adc"] * e - 0.25 * cel_r)
    raw["nFA"] = by_tissue(0.45, 1.2, 0.12, 0.15, 1.7) * np.clip(
        1 - strength["fa"] * e - 0.3 * cel_r, 0.05, None
    )
    noise_sd = {"nT1c": c.anatomical_noise, "nT1": c.anatomical_noise, "nFLAIR": c.anatomical_noise}
    noise_sd |= {"nADC": c.diffusion_noise, "nFA": c.diffusion_noise}
    nav = brain & ~fluid & ~t2l
    maps: dict[str, NDArray[np.float32]] = {}
    for name, arr in raw.items():
        # partial volume of the 3 mm resampling, then noise, then normalisation to normal-appearing brain
        img = ndimage.gaussian_filter(arr, 0.5) + noise_sd[name] * rng.standard_normal(u.shape).astype(
            np.float32
        )
        ref = float(np.median(img[nav])) if nav.any() else 1.0
        maps[name] = np.where(brain, img / (ref if ref > 0 else 1.0), 0.0).astype(np.float32)
    # metabolites, 3 mm truth: none in CSF / cavity
    tis = (~fluid & brain).astype(np.float32)
    met: dict[str, NDArray[np.float32]] = {}
    met["nCho"] = by_tissue(0.9, 1.05, 0, 0) * (1 + strength["cho"] * e + 1.2 * cel_r - 0.6 * nec)
    met["nCre"] = by_tissue(1.1, 0.92, 0, 0) * np.clip(1 - strength["cre"] * e - 0.2 * cel_r, 0.05, None)
    met["nNAA"] = by_tissue(1.0, 1.0, 0, 0) * np.clip(
        1 - strength["naa"] * e - 0.5 * cel_r - 0.15 * nec, 0.02, None
    )
    met["nLac"] = tis * (0.05 + 0.4 * cel_r + 1.2 * nec)
    met["nLip"] = tis * (0.05 + 0.15 * cel_r + 1.5 * nec)
    mrsi_noise = {k: c.mrsi_noise * (1.0 if k in ("nCho", "nCre", "nNAA") else 0.3) for k in met}
    coarse = _mrsi_resample(met, press_box, box_lo_mm, c.voxel_mm, c.mrsi_voxel_mm, mrsi_noise, rng)
    inside = press_box & brain
    ref_mask = inside & nav
    if np.count_nonzero(ref_mask) < 10:
        ref_mask = inside
    refs = {k: float(np.median(coarse[k][ref_mask])) if ref_mask.any() else 1.0 for k in coarse}
    ref_cre = refs["nCre"] if refs["nCre"] > 0 else 1.0
    for k in ("nCho", "nCre", "nNAA", "nLac", "nLip"):
        ref = ref_cre if k in ("nLac", "nLip") else (refs[k] if refs[k] > 0 else 1.0)
        maps[k] = np.where(inside, coarse[k] / ref, 0.0).astype(np.float32)
    for name, (a, b) in {"CNI": ("nCho", "nNAA"), "CCrI": ("nCho", "nCre"), "CrNI": ("nCre", "nNAA")}.items():
        z = _robust_z(maps[a] - maps[b], ref_mask, floor=0.02)
        maps[name] = np.where(inside, z, 0.0).astype(np.float32)
    return {name: maps[name] for name in MAP_NAMES}


# ---------------------------------------------------------------------------------------------- patient
@dataclass(frozen=True, eq=False)
class SimulatedGlioblastoma:
    """One simulated patient (pure arrays; nothing is written).

    Attributes
    ----------
    patient_id, treatment, extent_of_resection
        ``"GBM001"`` ..., ``"soc"`` / ``"antiangiogenic"``, ``"gtr"`` / ``"str"`` / ``"biopsy"``.
    ttp_months, progressed
        Time from baseline to progression (months of 30.44 days); ``progressed`` is False when censored at
        ``max_followup_months``.
    voxel_mm
        Isotropic voxel size, mm.
    maps
        ``float32 (z, y, x)`` baseline maps, keys :data:`MAP_NAMES`; 0 outside the brain, MRSI maps 0 outside
        the PRESS box.
    masks
        ``bool (z, y, x)``: :data:`MASK_NAMES` plus ``press_box``.
    tissue
        ``uint8`` labels after surgery (hidden truth).
    density_baseline, density_progression
        ``float32`` hidden tumour-cell density at baseline (before treatment) and at progression.
    parameters
        The patient's drawn parameters (rates, resection, PRESS box position, signature strengths).
    pattern
        :class:`RecurrencePattern` of the progression relative to the baseline.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    progressed: bool
    extent_of_resection: str
    voxel_mm: float
    maps: dict[str, NDArray[np.float32]]
    masks: dict[str, NDArray[np.bool_]]
    tissue: NDArray[np.uint8]
    density_baseline: NDArray[np.float32]
    density_progression: NDArray[np.float32]
    parameters: dict[str, float | str] = field(default_factory=dict)
    pattern: RecurrencePattern = field(
        default_factory=lambda: RecurrencePattern(0, 0.0, 0.0, 0.0, 0.0, "none")
    )

    def volume(self, array: NDArray[Any]) -> Volume:
        """Wrap one of this patient's arrays in a :class:`Volume` (grid centred on the world origin)."""
        h = self.voxel_mm
        nz, ny, nx = array.shape
        origin = (-(nx - 1) * h / 2, -(ny - 1) * h / 2, -(nz - 1) * h / 2)
        return Volume(array, spacing=(h, h, h), origin=origin)


def _lognormal(rng: np.random.Generator, median: float, sigma: float) -> float:
    return float(median * math.exp(sigma * rng.standard_normal()))


def _pick_voxel(candidates: NDArray[np.bool_], rng: np.random.Generator) -> tuple[int, int, int]:
    idx = np.flatnonzero(candidates)
    k = int(idx[rng.integers(idx.size)])
    z, y, x = np.unravel_index(k, candidates.shape)
    return int(z), int(y), int(x)


def _resect(
    u: NDArray[np.float32],
    tissue: NDArray[np.uint8],
    seed_idx: tuple[int, int, int],
    eor: str,
    config: GlioblastomaConfig,
    rng: np.random.Generator,
) -> NDArray[np.bool_]:
    """Cavity of a resection (gross-total, subtotal) or biopsy; tissue is parenchyma only."""
    h = config.voxel_mm
    parenchyma = np.isin(tissue, _PARENCHYMA)
    cel = (u >= config.cel_threshold) & parenchyma
    grids = np.meshgrid(*[np.arange(n) * h for n in u.shape], indexing="ij", sparse=True)
    seed_mm = np.asarray(seed_idx, dtype=float) * h
    dist_seed = np.sqrt(sum((g - s) ** 2 for g, s in zip(grids, seed_mm, strict=True)))
    if eor == "biopsy" or not cel.any():
        return np.asarray(parenchyma & (dist_seed <= 4.5 * h / 3.0 + 0.01))
    if eor == "gtr":
        # all enhancing tumour and a one-voxel rim of the tumour bed
        return np.asarray(ndimage.binary_dilation(cel) & parenchyma & (u >= config.t2l_threshold) | cel)
    # subtotal: the surgeon's approach removes the part of the CEL nearest the entry point
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    radius = (3.0 * cel.sum() * h**3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    entry = seed_mm + direction * radius
    d_entry = np.sqrt(sum((g - s) ** 2 for g, s in zip(grids, entry, strict=True)))
    frac = rng.uniform(0.5, 0.9)
    cut = np.quantile(d_entry[cel], frac)
    return np.asarray(cel & (d_entry <= cut))


def simulate_patient(
    config: GlioblastomaConfig, patient_index: int, rng: np.random.Generator
) -> SimulatedGlioblastoma:
    """Simulate one patient from anatomy to progression (pure numpy; no I/O).

    Parameters
    ----------
    config
        Cohort parameters.
    patient_index
        0-based index; sets the id (``GBM{index+1:03d}``) and the treatment arm (:func:`treatment_of`).
    rng
        The patient's own generator (e.g. from :func:`adaptrt.seeding.spawn`); the same state gives identical
        arrays.

    Returns
    -------
    SimulatedGlioblastoma
        Maps, masks, hidden densities and the truth of one patient; arrays ``(z, y, x)`` on ``config.shape``.
    """
    c = config
    h = c.voxel_mm
    spacing = (h, h, h)
    treatment = treatment_of(patient_index, c.antiangiogenic_share)
    anat = make_anatomy(c, rng)
    tissue = anat.tissue.copy()
    ci = anat.centre_index
    # --- patient parameters
    rho = _lognormal(rng, c.proliferation_per_day, c.rate_spread)
    d_wm = _lognormal(rng, c.diffusivity_wm_mm2_per_day, c.rate_spread)
    d_gm = d_wm / c.wm_gm_diffusivity_ratio
    preop_ml = float(np.clip(_lognormal(rng, c.preop_volume_ml, 0.5), 3.0, 150.0))
    shares = np.asarray(c.resection_shares) / sum(c.resection_shares)
    eor = _RESECTIONS[int(rng.choice(3, p=shares))]
    log_kill_rt = _lognormal(rng, c.rt_log_kill, c.ttp_spread)
    jitter = {
        k: math.exp(c.signature_jitter * rng.standard_normal()) for k in ("adc", "fa", "cho", "naa", "cre")
    }
    strength = {
        "adc": c.adc_rise * jitter["adc"],
        "fa": min(c.fa_drop * jitter["fa"], 0.9),
        "cho": c.cho_rise * jitter["cho"],
        "naa": min(c.naa_drop * jitter["naa"], 0.9),
        "cre": min(c.cre_drop * jitter["cre"], 0.9),
    }
    # --- seed in deep white matter of one hemisphere, away from the ventricles
    vent_dist = ndimage.distance_transform_edt(tissue != CSF, sampling=spacing)
    x_mm = (np.arange(c.shape[2]) - ci[2]) * h
    candidates = (
        np.isin(tissue, (WM, TRACT))
        & (anat.depth_mm >= 12.0)
        & (vent_dist >= 9.0)
        & (np.abs(x_mm) >= 15.0)[None, None, :]
    )
    if not candidates.any():
        candidates = tissue == WM
    seed_idx = _pick_voxel(candidates, rng)
    grids = np.meshgrid(*[np.arange(n) * h for n in c.shape], indexing="ij", sparse=True)
    r2 = sum((g - s * h) ** 2 for g, s in zip(grids, seed_idx, strict=True))
    diff = np.zeros(c.shape, dtype=np.float64)
    diff[tissue == WM] = d_wm
    diff[tissue == GM] = d_gm
    diff[tissue == TRACT] = d_wm * c.tract_diffusivity_factor
    parenchyma = diff > 0
    # start from a developed front (logistic profile of the local width sqrt(D / rho), the leading-edge decay
    # length of a Fisher wave) so that the tumour has an enhancing core when its T2L reaches the drawn size
    width = np.sqrt(np.where(parenchyma, diff, d_wm) / rho)
    r_t2l = (3.0 * preop_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    edge = math.log((1.0 - c.t2l_threshold) / c.t2l_threshold) * math.sqrt(d_wm / rho)
    r0 = max(6.0, 0.85 * (r_t2l - edge))
    u = np.where(parenchyma, 1.0 / (1.0 + np.exp((np.sqrt(np.asarray(r2)) - r0) / width)), 0.0).astype(
        np.float32
    )
    # --- growth to diagnosis
    dt = _stable_dt(float(diff.max()), spacing, 5.0)
    solver = _KPPSolver(diff, np.where(parenchyma, rho, 0.0), spacing, dt)
    vox_ml = h**3 / 1000.0
    target_vox = preop_ml / vox_ml
    max_steps = int(3000 / dt)
    for _ in range(max_steps):
        if np.count_nonzero(u >= c.t2l_threshold) >= target_vox:
            break
        solver.step(u)
    # --- surgery, then growth to the baseline scan with the cavity as a no-flux hole
    cavity = _resect(u, tissue, seed_idx, eor, c, rng)
    tissue[cavity] = CAVITY
    u[cavity] = 0.0
    diff[cavity] = 0.0
    parenchyma = diff > 0
    u = fisher_kpp(u, diff, np.where(parenchyma, rho, 0.0), c.postop_days, spacing_mm=spacing)
    density_baseline = u.copy()
    cel_b, t2l_b = lesion_masks(u, tissue, cel_threshold=c.cel_threshold, t2l_threshold=c.t2l_threshold)
    base_lesion = cel_b | t2l_b
    # --- PRESS box around the baseline lesion and cavity
    focus = base_lesion | cavity
    centroid = np.array(ndimage.center_of_mass(focus)) * h if focus.any() else np.asarray(seed_idx) * h
    box_centre = centroid + rng.uniform(-c.press_offset_mm, c.press_offset_mm, size=3)
    press_box, box_lo = _box_mask(c.shape, h, box_centre, c.press_box_mm)
    maps = _baseline_maps(tissue, anat.brain, u, cel_b, t2l_b, press_box, box_lo, c, strength, rng)
    # --- chemo-RT: few survivors inside the irradiated volume, more outside
    time_scale = _REFERENCE_TTP_MONTHS / c.median_ttp_months
    time_scale *= c.antiangiogenic_growth_factor if treatment == "antiangiogenic" else 1.0
    rt_rho, rt_dwm = rho * time_scale, d_wm * time_scale
    rt_survival = math.exp(-log_kill_rt)
    irradiated = ndimage.distance_transform_edt(~(base_lesion | cavity), sampling=spacing) <= c.rt_margin_mm
    log_kill = math.log(rt_survival) * (
        1.0 - c.hypoxic_protection * _ramp(u, c.t2l_threshold, c.cel_threshold)
    )
    u *= np.where(irradiated, np.exp(log_kill), c.chemo_survival).astype(np.float32)
    diff_rt = diff * (rt_dwm / d_wm)
    dt = _stable_dt(float(diff_rt.max()), spacing, 5.0)
    solver = _KPPSolver(diff_rt, np.where(parenchyma, rt_rho, 0.0), spacing, dt)
    cel_thr = c.cel_threshold_for(treatment)
    par_mask = np.isin(tissue, _PARENCHYMA)
    need_vox = max(c.progression_min_ml / vox_ml, c.progression_new_fraction * float(base_lesion.sum()))
    not_base, not_cel_b = par_mask & ~base_lesion, par_mask & ~cel_b
    t_days, t_max = 0.0, c.max_followup_months * _DAYS_PER_MONTH
    progressed = False
    while t_days < t_max:
        solver.step(u)
        t_days += dt
        n_new = np.count_nonzero(((u >= c.t2l_threshold) & not_base) | ((u >= cel_thr) & not_cel_b))
        if n_new >= need_vox:
            progressed = True
            break
    cel_p, t2l_p = lesion_masks(u, tissue, cel_threshold=cel_thr, t2l_threshold=c.t2l_threshold)
    pattern = recurrence_pattern(t2l_b, cel_b, t2l_p, cel_p, spacing_mm=spacing, margin_mm=20.0)
    masks = {
        "brain": anat.brain.copy(),
        "cavity": cavity,
        "cel_baseline": cel_b,
        "t2l_baseline": t2l_b,
        "cel_progression": cel_p,
        "t2l_progression": t2l_p,
        "press_box": press_box,
    }
    params: dict[str, float | str] = {
        "proliferation_per_day": rho,
        "diffusivity_wm_mm2_per_day": d_wm,
        "diffusivity_gm_mm2_per_day": d_gm,
        "preop_volume_ml": preop_ml,
        "time_scale_after_baseline": time_scale,
        "rt_survival": rt_survival,
        "seed_index": ",".join(str(s) for s in seed_idx),
        "press_box_lo_mm": ",".join(f"{v:.1f}" for v in box_lo),
        "baseline_lesion_ml": float(base_lesion.sum()) * vox_ml,
        "baseline_cel_ml": float(cel_b.sum()) * vox_ml,
        "cavity_ml": float(cavity.sum()) * vox_ml,
    }
    params |= {f"signature_{k}": v for k, v in strength.items()}
    return SimulatedGlioblastoma(
        patient_id=f"GBM{patient_index + 1:03d}",
        treatment=treatment,
        ttp_months=t_days / _DAYS_PER_MONTH,
        progressed=progressed,
        extent_of_resection=eor,
        voxel_mm=h,
        maps=maps,
        masks=masks,
        tissue=tissue,
        density_baseline=density_baseline,
        density_progression=u,
        parameters=params,
        pattern=pattern,
    )


# ---------------------------------------------------------------------------------------------- writing
def progression_type(p: SimulatedGlioblastoma, *, min_type_ml: float = 1.0) -> str:
    """The paper's Table 1 category, defined as the target study defines it (``adaptrt.target.pattern``).

    New CEL = CEL at progression that was not CEL at baseline; new NEL = NEL at progression (T2L minus CEL)
    outside the baseline T2L. ``both`` when each reaches ``min_type_ml``, else the larger of the two
    (``none`` when nothing is new).
    """
    m = p.masks
    ml = p.voxel_mm**3 / 1000.0
    cel_ml = np.count_nonzero(m["cel_progression"] & ~m["cel_baseline"]) * ml
    nel_ml = np.count_nonzero(m["t2l_progression"] & ~m["cel_progression"] & ~m["t2l_baseline"]) * ml
    if cel_ml >= min_type_ml and nel_ml >= min_type_ml:
        return "both"
    if cel_ml == 0 and nel_ml == 0:
        return "none"
    return "cel" if cel_ml > nel_ml else "t2l"


def write_glioblastoma_cohort(
    out: str | os.PathLike[str],
    *,
    config: GlioblastomaConfig | None = None,
    seed: SeedLike = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Simulate a cohort one patient at a time and write it as NIfTI + manifest; return the manifest path.

    Layout of ``out``::

        manifest.csv                       the study's manifest (adaptrt.io.manifest, glioblastoma kind)
        patients/GBM001/<MAP>.nii.gz       one float32 file per map of MAP_NAMES
        patients/GBM001/<mask>.nii.gz      brain, cavity, cel/t2l_baseline, cel/t2l_progression, press_box
        truth/GBM001_density_baseline.nii.gz, truth/GBM001_density_progression.nii.gz, truth/GBM001_tissue.nii.gz
        truth/truth.csv                    treatment, TTP, resection, pattern percentages, drawn parameters
        truth/config.json                  the configuration and seed

    Parameters
    ----------
    out
        Folder to create. An existing non-empty folder is replaced only with ``overwrite=True`` (an empty one is
        used). The folder appears complete or not at all.
    config
        Cohort parameters (default :class:`GlioblastomaConfig`).
    seed
        Seed; each patient gets its own child generator (:func:`adaptrt.seeding.spawn`), so the same seed gives
        identical arrays.
    overwrite
        Replace an existing cohort.
    progress
        Show a tqdm bar over patients.

    Returns
    -------
    Path
        ``out / "manifest.csv"``.
    """
    from ..io.manifest import write_glioblastoma_manifest
    from ..io.nifti import write_nifti

    cfg = config if config is not None else GlioblastomaConfig()
    if not isinstance(cfg, GlioblastomaConfig):
        raise InputError(f"config must be a GlioblastomaConfig, got {type(cfg).__name__}", field="config")
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise InputError("exists and is not a folder", path=target, fix="choose a folder path for the cohort")
    empty_dir = target.is_dir() and not any(target.iterdir())
    if target.is_dir() and not empty_dir and not overwrite:
        raise InputError(
            "already holds files (a cohort?) and would be overwritten",
            path=target,
            fix="choose another folder, remove it, or pass overwrite=True",
        )
    rngs = spawn(seed, cfg.n_patients)
    indices: Iterable[int] = range(cfg.n_patients)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="glioblastoma patients", unit="patient")
    rows: list[dict[str, str]] = []
    truth_rows: list[dict[str, str]] = []
    with atomic_dir(target, overwrite=overwrite or empty_dir) as root:
        (root / "truth").mkdir()
        for i in indices:
            p = simulate_patient(cfg, i, rngs[i])
            rel = Path("patients") / p.patient_id
            (root / rel).mkdir(parents=True)
            row = {"patient_id": p.patient_id, "treatment": p.treatment, "ttp_months": f"{p.ttp_months:.3f}"}
            for name in (*MASK_NAMES, "press_box"):
                write_nifti(p.volume(p.masks[name]), root / rel / f"{name}.nii.gz")
                if name in MASK_NAMES:
                    row[name] = (rel / f"{name}.nii.gz").as_posix()
            for name in MAP_NAMES:
                write_nifti(p.volume(p.maps[name]), root / rel / f"{name}.nii.gz")
                row[f"map_{name}"] = (rel / f"{name}.nii.gz").as_posix()
            # not a manifest column of the study: the reader keeps it as an extra (clinical) column
            row["press_box"] = (rel / "press_box.nii.gz").as_posix()
            rows.append(row)
            for kind, arr in (
                ("density_baseline", p.density_baseline),
                ("density_progression", p.density_progression),
                ("tissue", p.tissue),
            ):
                write_nifti(p.volume(arr), root / "truth" / f"{p.patient_id}_{kind}.nii.gz")
            pat = p.pattern
            truth = {
                "patient_id": p.patient_id,
                "treatment": p.treatment,
                "ttp_months": f"{p.ttp_months:.3f}",
                "progressed": str(p.progressed).lower(),
                "progression_type": progression_type(p),
                "extent_of_resection": p.extent_of_resection,
                "new_lesion_ml": f"{pat.new_volume_ml:.2f}",
                "inside_t2l_percent": f"{pat.inside_percent:.2f}",
                "margin_percent": f"{pat.margin_percent:.2f}",
                "beyond_margin_percent": f"{pat.beyond_percent:.2f}",
                "recurrence_category": pat.category,
            }
            truth |= {k: (f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in p.parameters.items()}
            truth_rows.append(truth)
            del p
        write_glioblastoma_manifest(rows, root / "manifest.csv")
        _write_csv(truth_rows, root / "truth" / "truth.csv")
        meta = {"seed": seed if isinstance(seed, int) else None, "config": dataclasses.asdict(cfg)}
        with atomic_file(root / "truth" / "config.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return target / "manifest.csv"


def _write_csv(rows: list[dict[str, str]], path: Path) -> None:
    import csv

    with atomic_file(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["patient_id"])
        writer.writeheader()
        writer.writerows(rows)
