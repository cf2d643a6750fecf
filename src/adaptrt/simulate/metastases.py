"""A simulated brain-metastasis cohort with a known response mechanism (the embedded default data of adaptrt).

The cohort mimics the PULSAR data of Part I / Part II (Peng, Jiang & Timmerman): patients with one to four
brain metastases imaged with T1-weighted post-contrast MRI at three time points, ``mri1`` (first MRI, before
the first treatment cycle), ``mri2`` (second MRI, about three weeks later) and ``followup`` (about three months
later); a lesion *responds* when its GTV volume at follow-up has fallen by at least 20 %.

The patient data of the papers is private. What this simulator adds is a **ground truth**: every lesion holds
zero or more *radio-resistant sub-regions*. Treatment kills sensitive tissue (the lesion contracts towards its
resistant part, or towards its centre when it has none) while resistant tissue persists and grows, so the
resistant fraction decides the follow-up volume and thus the label. Resistant tissue carries a subtle imaging
signature on every image (a slightly lower enhancement and a finer, stronger texture, scaled by
``signature_strength``), so a model that learns to predict response from ``mri1`` *can* find the resistant
regions, and its class-activation maps can be scored against them. With ``signature_strength=0`` resistant
tissue looks exactly like sensitive tissue, and response is predictable only through the weak link between
lesion size and resistance (``size_effect``) -- a negative control.

Mechanism in numbers (per lesion)
---------------------------------
* GTV volume at ``mri1``: log-uniform on ``volume_range_mm3`` (many small lesions, few large ones).
* Resistant fraction ``f``: ``logit f = mu + size_effect * x / 2 + patient shift + resistance_spread * z`` with
  ``x`` the lesion's position in the log-volume range (-1 smallest .. 1 largest), a per-patient shift
  ``N(0, patient_effect)`` shared by a patient's lesions and ``z ~ N(0, 1)``; ``f < 0.05`` means no resistant
  tissue. ``mu`` is solved for (Monte Carlo with a fixed internal seed) so that the expected share of
  responders equals ``responder_share``.
* Sensitive tissue keeps a fraction ``s = sensitive_survival + biological_noise * N(0, 1)`` (clipped to
  [0, 1]) of its volume by follow-up; resistant tissue grows by ``g = resistant_growth + 2 * biological_noise
  * N(0, 1)`` (clipped to [0.5, 3]). The intended follow-up volume ratio is ``f g + (1 - f) s``; the realised
  ratio (from the voxel masks, which is what defines the label) differs from it by rasterisation only.
* At ``mri2`` a drawn fraction ``mri2_progress`` of that change has happened; with probability
  ``pseudo_progression`` the lesion is transiently swollen (by 10-30 %) at ``mri2``, and a log-normal factor
  (``mri2_noise``) blurs the ``mri2`` volume further, so the early volume change predicts the label well but
  not perfectly.

Geometry: sensitive tissue is removed in order of a score that grows with the distance from the resistant
tissue and from the lesion centre (plus smooth noise), so shrinking lesions contract towards their resistant
part; growing resistant tissue expands into its surroundings (within a reserved region around the lesion,
inside the brain, that no other lesion touches). Masks at successive time points are therefore consistent.

Images: a procedural head at 1 mm in-plane (scalp, skull with diploe, dura with contrast enhancement and a
superior sagittal sinus, CSF, folded cortex, white matter, deep grey matter, lateral ventricles,
interhemispheric fissure, smooth bias field) that differs per patient; lesions with soft (partial-volume)
edges, heterogeneous enhancement, an enhancing rim around a necrotic core for the larger ones, and mild
perilesional oedema; Rician noise. All three time points of a patient share one anatomy, one grid and one
``FrameOfReferenceUID``: they are **co-registered** (as if rigidly registered to ``mri1``), so the drift
``mri2 - mri1`` is meaningful voxel by voxel.

Files written by :func:`write_metastasis_cohort` (what the papers had, plus a separate truth folder)::

    manifest.csv                          patient_id, lesion_id, timepoint (mri1/mri2/followup), image, mask, roi
    images/<patient>/<timepoint>/         DICOM MR series (T1c), one file per slice
    images/<patient>_<timepoint>_rtstruct.dcm   RTSTRUCT, one GTV ROI per lesion: GTV_1, GTV_2, ...
    truth/config.json                     the MetastasisConfig and seed
    truth/lesions.csv                     per lesion: true volumes, ratios, labels, resistant fraction, ...
    truth/<patient>/drift.nii.gz          noise-free mri2 - mri1 image, float32, on the image grid
    truth/<patient>/GTV_<n>_resistant_<timepoint>.nii.gz   resistant sub-region mask on the image grid

No model in adaptrt reads ``truth/``; it is there to score predictions and maps.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..cohort import FIRST_TIMEPOINT, FOLLOWUP_TIMEPOINT, SECOND_TIMEPOINT
from ..errors import InputError
from ..io.atomic import atomic_dir
from ..seeding import SeedLike, as_generator, spawn
from ..types import Volume

__all__ = [
    "TIMEPOINTS",
    "MetastasisConfig",
    "SimulatedLesion",
    "SimulatedPatient",
    "lesion_counts",
    "simulate_patient",
    "write_metastasis_cohort",
]

#: Time points of the simulated PULSAR protocol, in order.
TIMEPOINTS: tuple[str, str, str] = (FIRST_TIMEPOINT, SECOND_TIMEPOINT, FOLLOWUP_TIMEPOINT)

# T1 post-contrast intensities (arbitrary scanner units) of the tissue classes; white matter is the reference.
_WM = 800.0
_GM = 610.0
_DEEP_GM = 680.0
_CSF = 170.0
_SKULL = 90.0
_DIPLOE = 330.0
_SCALP = 880.0
_DURA = 1100.0
_NECROSIS = 300.0

_MIN_RESISTANT_FRACTION = 0.05  # below this a lesion is drawn without resistant tissue
_RESERVE = 1.4  # a lesion may grow within this multiple of its GTV level set (kept free of other lesions) ...
_RESERVE_MM = (
    5.0  # ... but at most about this far (mm) beyond its mri1 border, so that large lesions still fit
)
_CALIBRATION_SAMPLES = 20_000


# ================================================================================================ config
@dataclass(frozen=True)
class MetastasisConfig:
    """Parameters of the simulated brain-metastasis cohort (defaults: the PULSAR cohort of Part I).

    Attributes
    ----------
    n_patients
        Number of patients (>= 1).
    n_lesions
        Total number of lesions, ``n_patients <= n_lesions <= 4 * n_patients`` (1 to 4 per patient; see
        :func:`lesion_counts`).
    in_plane_mm, slice_mm
        Voxel size: row/column spacing and slice spacing, mm (clinical T1c: 1 mm, 2 mm).
    fov
        Image shape ``(z, y, x)`` in voxels. The default ``(64, 208, 176)`` at 2 x 1 x 1 mm covers
        128 x 208 x 176 mm: the head in-plane and the brain from the vertex down (the skull base is cut).
        The brain fills the FOV in-plane (minus ~14 mm of CSF, skull and scalp on each side).
    volume_range_mm3
        ``(min, max)`` GTV volume at ``mri1`` in mm³; volumes are log-uniform in between. The papers' range.
    responder_share
        Expected share of lesions whose GTV falls by at least ``response_threshold`` at follow-up, in [0, 1].
        The realised share of a finite cohort scatters binomially around it.
    signature_strength
        Strength of the imaging signature of resistant tissue (>= 0; 0 = invisible, 1 = subtle: about -8 %
        enhancement and a doubled fine texture).
    biological_noise
        Spread of the treatment effect (>= 0): standard deviation of the sensitive survival fraction, half
        that of the resistant growth factor.
    noise_level
        Standard deviation of the Rician image noise relative to white-matter intensity (>= 0).
    sensitive_survival
        Mean fraction of sensitive tissue volume left at follow-up, in [0, 1].
    resistant_growth
        Mean factor by which resistant tissue volume grows by follow-up, in [0.5, 3].
    mri2_progress
        ``(low, high)`` range of the fraction of the three-month change seen at ``mri2`` (~3 weeks).
    pseudo_progression
        Probability that a lesion is transiently swollen at ``mri2``, in [0, 1].
    mri2_noise
        Standard deviation of a further log-normal factor on the ``mri2`` volume (early inflammation,
        oedema, contouring), >= 0: it keeps the ``mri2`` volume change informative but not decisive.
    size_effect
        Logit shift of the resistant fraction from the smallest to the largest lesions (half on each side);
        > 0 makes large lesions respond less often. It is the only link between GTV volume and response.
    patient_effect
        Standard deviation of a per-patient logit shift of the resistant fraction (>= 0): lesions of one
        patient respond alike.
    resistance_spread
        Standard deviation of the lesion-level logit of the resistant fraction (> 0).
    response_threshold
        Fractional shrinkage that defines response, in (0, 1) (0.2 in the papers); ``responder_share`` is
        calibrated for it and ``truth/lesions.csv`` labels with it.
    """

    n_patients: int = 39
    n_lesions: int = 69
    in_plane_mm: float = 1.0
    slice_mm: float = 2.0
    fov: tuple[int, int, int] = (64, 208, 176)
    volume_range_mm3: tuple[float, float] = (15.0, 38_000.0)
    responder_share: float = 0.6
    signature_strength: float = 1.0
    biological_noise: float = 0.15
    noise_level: float = 0.03
    sensitive_survival: float = 0.25
    resistant_growth: float = 1.8
    mri2_progress: tuple[float, float] = (0.2, 0.5)
    pseudo_progression: float = 0.1
    mri2_noise: float = 0.1
    size_effect: float = 0.8
    patient_effect: float = 0.5
    resistance_spread: float = 1.5
    response_threshold: float = 0.2

    def __post_init__(self) -> None:
        def _int(name: str, value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            return int(value)

        def _num(name: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(f"{name} must be a number, got {value!r}")
            v = float(value)
            if not math.isfinite(v):
                raise ValueError(f"{name} must be finite, got {value!r}")
            return v

        n_p = _int("n_patients", self.n_patients)
        n_l = _int("n_lesions", self.n_lesions)
        if n_p < 1:
            raise ValueError(f"n_patients must be >= 1, got {n_p}")
        if n_l < n_p:
            raise ValueError(
                f"n_lesions ({n_l}) must be at least n_patients ({n_p}): every patient has 1 to 4 lesions"
            )
        if n_l > 4 * n_p:
            raise ValueError(
                f"n_lesions ({n_l}) must be at most 4 * n_patients ({4 * n_p}): every patient has 1 to 4 lesions"
            )
        for name in ("in_plane_mm", "slice_mm"):
            if _num(name, getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0 mm, got {getattr(self, name)}")
        fov = tuple(self.fov)
        if len(fov) != 3:
            raise ValueError(f"fov must be three sizes (z, y, x) in voxels, got {self.fov!r}")
        fov_i = tuple(_int("fov", n) for n in fov)
        if min(fov_i) < 16:
            raise ValueError(f"fov must be three sizes >= 16 voxels (z, y, x), got {self.fov!r}")
        object.__setattr__(self, "fov", fov_i)
        rng_v = tuple(self.volume_range_mm3)
        if len(rng_v) != 2:
            raise ValueError(f"volume_range_mm3 must be (min, max) in mm³, got {self.volume_range_mm3!r}")
        lo, hi = (_num("volume_range_mm3", v) for v in rng_v)
        voxel = self.in_plane_mm**2 * self.slice_mm
        if lo <= 0 or hi < lo:
            raise ValueError(
                f"volume_range_mm3 must be (min, max) with 0 < min <= max mm³, got {self.volume_range_mm3!r}"
            )
        if lo < 4 * voxel:
            raise ValueError(
                f"volume_range_mm3: the smallest lesion ({lo:g} mm³) must be at least 4 voxels "
                f"({4 * voxel:g} mm³ at {self.slice_mm:g} x {self.in_plane_mm:g} x {self.in_plane_mm:g} mm)"
            )
        object.__setattr__(self, "volume_range_mm3", (lo, hi))
        ext = np.asarray(fov_i, dtype=float) * np.array([self.slice_mm, self.in_plane_mm, self.in_plane_mm])
        # the largest lesion, with room to grow, must fit well inside the smallest brain axis
        r_max = (3.0 * hi / (4.0 * math.pi)) ** (1.0 / 3.0)
        brain_half = min(_brain_semi_axes(ext))
        if _reserve_factor(r_max) * 1.3 * r_max > 0.75 * brain_half:
            raise ValueError(
                f"volume_range_mm3: the largest lesion ({hi:g} mm³, radius {r_max:.1f} mm) does not fit in the "
                f"simulated brain of fov {fov_i} voxels ({ext[0]:g} x {ext[1]:g} x {ext[2]:g} mm); "
                "enlarge fov or lower the largest volume"
            )
        for name in ("responder_share", "pseudo_progression", "sensitive_survival"):
            v = _num(name, getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        for name in ("signature_strength", "biological_noise", "noise_level", "patient_effect", "mri2_noise"):
            if _num(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        _num("size_effect", self.size_effect)
        if _num("resistance_spread", self.resistance_spread) <= 0:
            raise ValueError(f"resistance_spread must be > 0, got {self.resistance_spread}")
        if not 0.5 <= _num("resistant_growth", self.resistant_growth) <= 3.0:
            raise ValueError(f"resistant_growth must be in [0.5, 3], got {self.resistant_growth}")
        prog = tuple(self.mri2_progress)
        if len(prog) != 2:
            raise ValueError(f"mri2_progress must be (low, high), got {self.mri2_progress!r}")
        p_lo, p_hi = (_num("mri2_progress", v) for v in prog)
        if not 0.0 <= p_lo <= p_hi <= 1.0:
            raise ValueError(f"mri2_progress must be (low, high) with 0 <= low <= high <= 1, got {prog!r}")
        object.__setattr__(self, "mri2_progress", (p_lo, p_hi))
        if not 0.0 < _num("response_threshold", self.response_threshold) < 1.0:
            raise ValueError(f"response_threshold must be in (0, 1), got {self.response_threshold}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size ``(z, y, x)`` in mm."""
        return (float(self.slice_mm), float(self.in_plane_mm), float(self.in_plane_mm))

    @property
    def origin_mm(self) -> tuple[float, float, float]:
        """World LPS ``(x, y, z)`` in mm of the centre of voxel ``[0, 0, 0]``: the grid is centred in-plane."""
        sp = self.spacing_mm
        return (
            -0.5 * (self.fov[2] - 1) * sp[2],
            -0.5 * (self.fov[1] - 1) * sp[1],
            -0.5 * (self.fov[0] - 1) * sp[0],
        )


def _brain_semi_axes(extent_mm: NDArray[np.float64]) -> tuple[float, float, float]:
    """Nominal brain semi-axes ``(z, y, x)`` in mm for an FOV of ``extent_mm`` (z, y, x)."""
    # in-plane the head (brain + ~14 mm of CSF, skull and scalp) fills ~95 % of the FOV; in z the brain is
    # cut at the bottom of the FOV but never taller than an adult brain
    return (
        min(0.5 * extent_mm[0] - 8.0, 0.44 * extent_mm[1], 60.0),
        0.475 * extent_mm[1] - 14.0,
        0.475 * extent_mm[2] - 14.0,
    )


def _reserve_factor(r_eq: float) -> float:
    """Level-set multiple of a lesion's GTV within which it may grow (see ``_RESERVE``)."""
    return 1.0 + min(_RESERVE - 1.0, _RESERVE_MM / max(r_eq, 1e-6))


def lesion_counts(config: MetastasisConfig) -> tuple[int, ...]:
    """Number of lesions of every patient (deterministic; sums to ``config.n_lesions``).

    About a third of the patients have several lesions (as in the PULSAR cohort: 26 of 39 patients had a
    single metastasis), more when there are too many lesions for that; multi-lesion patients are spread
    evenly over the patient indices.

    Returns
    -------
    tuple of int
        ``counts[i]`` in 1..4 for patient ``i``.
    """
    n, total = config.n_patients, config.n_lesions
    extra = total - n
    if extra == 0:
        return (1,) * n
    n_multi = min(n, max(math.ceil(extra / 3), min(extra, round(n / 3))))
    adds = [extra // n_multi + (1 if k < extra % n_multi else 0) for k in range(n_multi)]
    counts = [1] * n
    # the multi-lesion patients are spread evenly: patient i is one when floor((i+1) m / n) steps up
    multi = [i for i in range(n) if ((i + 1) * n_multi) // n > (i * n_multi) // n]
    for i, a in zip(multi, adds, strict=True):
        counts[i] += a
    return tuple(counts)


# ================================================================================================ records
@dataclass(frozen=True, eq=False)
class SimulatedLesion:
    """One simulated lesion with its ground truth.

    Attributes
    ----------
    lesion_id
        ``"1"``, ``"2"``, ... within the patient; the RTSTRUCT ROI is ``GTV_<lesion_id>``.
    gtv, resistant
        Boolean masks on the patient's grid ``(z, y, x)`` per time point (:data:`TIMEPOINTS`); ``resistant``
        lies inside ``gtv`` at ``mri1`` (at later time points resistant tissue may have grown beyond the
        ``mri1`` GTV, but it stays inside that time point's GTV).
    volumes_mm3
        GTV volume per time point, mm³ (voxel count x voxel volume).
    resistant_fraction
        Realised resistant share of the ``mri1`` GTV, [0, 1].
    n_resistant_regions
        Number of resistant foci drawn (0 when ``resistant_fraction`` is 0).
    sensitive_survival, resistant_growth
        The drawn treatment effect (see the module notes).
    intended_ratio
        ``f g + (1 - f) s`` before rasterisation.
    ratio
        Realised GTV volume ratio ``followup / mri1`` (from the masks).
    responder
        ``ratio <= 1 - response_threshold``.
    mri2_progress
        Fraction of the three-month change seen at ``mri2``.
    pseudo_progression
        Whether the lesion was transiently swollen at ``mri2``.
    necrotic
        Whether the lesion has a necrotic core.
    centre_mm
        World LPS ``(x, y, z)`` of the ``mri1`` GTV centroid, mm.
    """

    lesion_id: str
    gtv: Mapping[str, NDArray[np.bool_]]
    resistant: Mapping[str, NDArray[np.bool_]]
    volumes_mm3: Mapping[str, float]
    resistant_fraction: float
    n_resistant_regions: int
    sensitive_survival: float
    resistant_growth: float
    intended_ratio: float
    ratio: float
    responder: bool
    mri2_progress: float
    pseudo_progression: bool
    necrotic: bool
    centre_mm: tuple[float, float, float]

    @property
    def roi_name(self) -> str:
        """RTSTRUCT ROI name, ``GTV_<lesion_id>``."""
        return f"GTV_{self.lesion_id}"


@dataclass(frozen=True, eq=False)
class SimulatedPatient:
    """One simulated patient: images at the three time points and the lesions' ground truth.

    Attributes
    ----------
    patient_id
        ``P001``, ``P002``, ...
    images
        T1c image per time point, float32 ``(z, y, x)``, with Rician noise (what is written as DICOM).
    drift
        Noise-free ``mri2 - mri1``, float32 ``(z, y, x)``: zero away from the lesions.
    brain
        Boolean brain mask ``(z, y, x)`` (parenchyma, ventricles included).
    lesions
        The lesions, ``lesion_id`` ``"1"`` upwards.
    spacing, origin
        Grid geometry (see :class:`~adaptrt.types.Volume`).
    """

    patient_id: str
    images: Mapping[str, NDArray[np.float32]]
    drift: NDArray[np.float32]
    brain: NDArray[np.bool_]
    lesions: tuple[SimulatedLesion, ...]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def volume(self, array: NDArray[Any]) -> Volume:
        """Wrap an array of this patient's grid (an image, a mask, the drift) as a :class:`Volume`."""
        return Volume(array, spacing=self.spacing, origin=self.origin)


# ================================================================================================ fields
def _smooth_noise(
    shape: tuple[int, ...], spacing: NDArray[np.float64], scale_mm: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """Gaussian random field of unit standard deviation, correlation length ~``scale_mm``."""
    white = rng.standard_normal(shape, dtype=np.float32)
    sigma = [max(scale_mm / float(s), 0.3) for s in spacing]
    field = ndimage.gaussian_filter(white, sigma=sigma, mode="wrap", truncate=3.0)
    sd = float(field[::2, ::2, ::2].std()) if min(shape) >= 8 else float(field.std())
    return field / np.float32(sd if sd > 0 else 1.0)


def _low_frequency(
    axes: tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]],
    wavelength_mm: float,
    rng: np.random.Generator,
    n_terms: int = 4,
) -> NDArray[np.float32]:
    """A cheap very smooth random field, standard deviation ~1.

    A sum of separable products ``cos(kz z + a) cos(ky y + b) cos(kx x + c)`` of 1-D waves with random
    directions and phases; ``axes`` are the broadcastable coordinate vectors in mm ``(z, 1, 1)``,
    ``(1, y, 1)``, ``(1, 1, x)``. Separable terms cost one full-grid multiply each, a plane wave would cost
    a full-grid cosine.
    """
    shape = tuple(int(max(a.shape[i] for a in axes)) for i in range(3))
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(n_terms):
        k = rng.standard_normal(3)
        k *= 2.0 * math.pi / wavelength_mm / max(float(np.linalg.norm(k)), 1e-9) * rng.uniform(0.6, 1.4)
        waves = [
            np.cos(a * np.float32(ki) + np.float32(rng.uniform(0.0, 2.0 * math.pi)))
            for a, ki in zip(axes, k, strict=True)
        ]
        out += (waves[0] * waves[1]) * waves[2]
    # a product of three cosines with random phases has variance 1/8
    return out * np.float32(math.sqrt(8.0 / n_terms))


# ================================================================================================ anatomy
@dataclass
class _Anatomy:
    image: NDArray[np.float32]  # noise-free T1c intensities
    brain: NDArray[np.bool_]
    allowed: NDArray[np.bool_]  # where lesion tissue may lie: parenchyma away from ventricles and fissure
    depth: NDArray[np.float32]  # approximate depth below the brain surface, mm (< 0 outside)


def _anatomy(cfg: MetastasisConfig, rng: np.random.Generator) -> _Anatomy:
    shape = cfg.fov
    sp = np.asarray(cfg.spacing_mm, dtype=float)
    ext = np.asarray(shape, dtype=float) * sp
    semi = np.asarray(_brain_semi_axes(ext)) * rng.uniform(0.93, 1.0, size=3)
    # brain centre: in-plane at the FOV centre (slightly jittered), vertex ~10 mm under the top of the FOV
    centre = np.array(
        [
            ext[0] - semi[0] - 14.0 - rng.uniform(0.0, 4.0),
            0.5 * ext[1] + rng.uniform(-3.0, 3.0),
            0.5 * ext[2] + rng.uniform(-2.0, 2.0),
        ]
    )
    zc, yc, xc = (
        (np.arange(n, dtype=np.float32) * np.float32(s) - np.float32(c)).reshape(
            [-1 if a == i else 1 for a in range(3)]
        )
        for i, (n, s, c) in enumerate(zip(shape, sp, centre, strict=True))
    )
    # the brain is flatter at the bottom and narrower at the front: a mildly asymmetric ellipsoid
    y_scale = np.where(yc < 0, np.float32(0.92), np.float32(1.0)).astype(np.float32)
    z_scale = np.where(zc < 0, np.float32(1.1), np.float32(1.0)).astype(np.float32)
    u2 = (
        (zc * z_scale / np.float32(semi[0])) ** 2
        + (yc / np.float32(semi[1] * y_scale)) ** 2
        + (xc / np.float32(semi[2])) ** 2
    )
    rho0 = np.sqrt(u2)
    coords = (zc, yc, xc)
    rho = rho0 * (1.0 + np.float32(0.035) * _low_frequency(coords, 90.0, rng))
    radius = np.sqrt(zc**2 + yc**2 + xc**2)
    # distance along the ray from the centre to the brain surface: > 0 inside, < 0 outside, mm
    depth = (radius * (1.0 - rho) / np.maximum(rho, np.float32(1e-3))).astype(np.float32)
    brain = depth > 0

    img = np.zeros(shape, dtype=np.float32)
    out = -depth
    csf_t = rng.uniform(1.5, 3.5)
    skull_t = rng.uniform(5.0, 8.0)
    scalp_t = rng.uniform(4.0, 7.0)
    img[(out > 0) & (out <= csf_t)] = _CSF
    dura = (out > csf_t - 0.8) & (out <= csf_t + 0.4)
    skull = (out > csf_t) & (out <= csf_t + skull_t)
    mid = np.abs(out - (csf_t + 0.5 * skull_t)) < 0.3 * skull_t
    img[skull] = _SKULL
    img[skull & mid] = _DIPLOE
    scalp = (out > csf_t + skull_t) & (out <= csf_t + skull_t + scalp_t)
    img[scalp] = _SCALP
    img[dura] = np.maximum(img[dura], np.float32(0.8 * _DURA))

    # cortex of varying thickness, sulci as CSF clefts, white matter inside
    gyri = _smooth_noise(shape, sp, 3.5, rng)
    cortex = brain & (depth < 2.2 + 2.5 * np.maximum(gyri, 0.0) + 0.8)
    sulci = brain & (np.abs(gyri) < 0.12) & (depth < 9.0)
    img[brain] = _WM
    img[cortex] = _GM
    img[sulci] = _CSF + 0.3 * (_GM - _CSF)

    # interhemispheric fissure with the enhancing falx, and the superior sagittal sinus on top
    x0 = float(rng.uniform(-1.5, 1.5))
    x_mid = np.float32(x0) + np.float32(0.02) * yc
    fissure = brain & (np.abs(xc - x_mid) < 1.3) & (depth < 0.45 * semi[0]) & (zc > -0.2 * semi[0])
    img[fissure] = _CSF
    img[fissure & (np.abs(xc - x_mid) < 0.5)] = _DURA * 0.7
    sinus_r = rng.uniform(3.0, 4.5)
    sinus = (np.abs(xc - x_mid) < sinus_r) & (out > csf_t - 1.0) & (out < csf_t + sinus_r) & (zc > 0)
    img[sinus] = _DURA

    # deep grey matter (basal ganglia / thalami) and the lateral ventricles, on a box around the centre
    vent_scale = rng.uniform(0.8, 1.4)
    box = tuple(
        slice(max(int((c - h) / s), 0), min(int((c + h) / s) + 2, n))
        for c, h, s, n in zip(centre, (0.45 * semi[0], 0.5 * semi[1], 30.0), sp, shape, strict=True)
    )
    bz, by, bx = zc[box[0]], yc[:, box[1]], xc[:, :, box[2]]
    deep = np.zeros(shape, dtype=bool)
    ventricles = np.zeros(shape, dtype=bool)
    deep_b, vent_b = deep[box], ventricles[box]
    for side in (-1.0, 1.0):
        dg = (
            ((bx - np.float32(x0 + side * 15.0)) / np.float32(9.0)) ** 2
            + ((by - np.float32(0.05 * semi[1])) / np.float32(16.0)) ** 2
            + ((bz + np.float32(0.05 * semi[0])) / np.float32(9.0)) ** 2
        )
        deep_b |= dg < 1.0
        # a banana-shaped lateral ventricle: its floor rises towards the front and back
        vz = bz - np.float32(0.12 * semi[0]) - np.float32(0.004) * by**2
        vv = (
            ((bx - np.float32(x0 + side * 6.0 * vent_scale)) / np.float32(3.5 * vent_scale)) ** 2
            + (by / np.float32(0.33 * semi[1])) ** 2
            + (vz / np.float32(5.0 * vent_scale)) ** 2
        )
        vent_b |= vv < 1.0
    deep &= brain
    ventricles &= brain
    img[deep] = _DEEP_GM
    img[ventricles] = _CSF

    # partial volume at tissue borders (the labels above are hard-edged)
    img = ndimage.gaussian_filter(img, sigma=[0.5 / s for s in sp], truncate=2.0)
    # tissue texture and a smooth receive-coil bias field (background stays 0)
    texture = _smooth_noise(shape, sp, 1.2, rng)
    img *= 1.0 + np.float32(0.025) * texture
    img *= 1.0 + np.float32(0.06) * _low_frequency(coords, 220.0, rng, n_terms=2)

    # lesions may lie in parenchyma but not in the ventricles or the fissure (with a small margin)
    forbidden = ndimage.binary_dilation(ventricles | fissure, iterations=2)
    allowed = brain & ~forbidden & (depth > 1.0)
    return _Anatomy(image=img.astype(np.float32), brain=brain, allowed=allowed, depth=depth)


# ================================================================================================ fates
def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


@dataclass
class _Fates:
    log_volume: NDArray[np.float64]
    f: NDArray[np.float64]
    s: NDArray[np.float64]
    g: NDArray[np.float64]
    ratio: NDArray[np.float64]


def _draw_fates(
    cfg: MetastasisConfig, rng: np.random.Generator, n: int, patient_shift: NDArray[np.float64], mu: float
) -> _Fates:
    """Draw size, resistant fraction and treatment effect of ``n`` lesions (vectorised, no geometry)."""
    lo, hi = (math.log(v) for v in cfg.volume_range_mm3)
    log_v = rng.uniform(lo, hi, size=n)
    x = (2.0 * (log_v - lo) / (hi - lo) - 1.0) if hi > lo else np.zeros(n)
    z = rng.standard_normal(n)
    f = _sigmoid(mu + 0.5 * cfg.size_effect * x + patient_shift + cfg.resistance_spread * z)
    f = np.where(f < _MIN_RESISTANT_FRACTION, 0.0, f)
    s = np.clip(cfg.sensitive_survival + cfg.biological_noise * rng.standard_normal(n), 0.0, 1.0)
    g = np.clip(cfg.resistant_growth + 2.0 * cfg.biological_noise * rng.standard_normal(n), 0.5, 3.0)
    return _Fates(log_volume=log_v, f=f, s=s, g=g, ratio=f * g + (1.0 - f) * s)


def _resistance_offset(cfg: MetastasisConfig) -> float:
    """``mu`` such that the expected responder share equals ``cfg.responder_share`` (bisection on a fixed MC)."""
    rng = np.random.default_rng(20240611)
    n = _CALIBRATION_SAMPLES
    shift = cfg.patient_effect * rng.standard_normal(n)
    state = rng.bit_generator.state
    cut = 1.0 - cfg.response_threshold + 1e-9

    def share(mu: float) -> float:
        # common random numbers: every mu sees the same draws, so share(mu) is monotone and smooth enough
        rng.bit_generator.state = state
        return float(np.mean(_draw_fates(cfg, rng, n, shift, mu).ratio <= cut))

    lo, hi = -15.0, 15.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if share(mid) > cfg.responder_share:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ================================================================================================ lesions
@dataclass
class _LesionPlan:
    volume_mm3: float
    f: float
    s: float
    g: float
    progress: float
    swell: float
    pseudo: bool
    # shape, in a crop centred on the lesion
    level: NDArray[np.float32]  # GTV at mri1 = level <= t
    t: float
    n_vox: int
    crop_shape: tuple[int, int, int]
    r_eq: float
    placed_at: tuple[int, int, int] | None = None  # image index of the crop's [0, 0, 0]


def _rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    return np.asarray(q, dtype=np.float64)


def _plan_shape(volume_mm3: float, sp: NDArray[np.float64], rng: np.random.Generator) -> tuple[Any, ...]:
    """Irregular ellipsoid level field on a crop; returns (level, t, n_vox, crop_shape, r_eq)."""
    voxel = float(np.prod(sp))
    n_vox = max(1, round(volume_mm3 / voxel))
    r_eq = (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    # large metastases are rounder than small ones (and must fit in a hemisphere)
    ratios = np.exp(rng.normal(0.0, 0.15 if r_eq < 10.0 else 0.08, size=3))
    ratios /= np.prod(ratios) ** (1.0 / 3.0)
    axes = r_eq * ratios
    edema = min(3.0 * min(max(0.5 * r_eq, 1.0), 4.0), 12.0)
    half_mm = 1.3 * _reserve_factor(r_eq) * float(axes.max()) + edema + 2.0 * float(sp.max())
    half = [math.ceil(half_mm / s) for s in sp]
    crop_shape = (2 * half[0] + 1, 2 * half[1] + 1, 2 * half[2] + 1)
    rot = _rotation(rng)
    grids = [(np.arange(n, dtype=np.float64) - h) * s for n, h, s in zip(crop_shape, half, sp, strict=True)]
    pz, py, px = np.meshgrid(*grids, indexing="ij")
    p = np.stack([pz, py, px], axis=-1) @ rot  # coordinates in the lesion's principal frame
    rho = np.sqrt(np.sum((p / axes) ** 2, axis=-1))
    irregular = rng.uniform(0.06, 0.22)
    noise = _smooth_noise(crop_shape, sp, max(0.45 * r_eq, 1.2), rng)
    level = (rho / (1.0 + irregular * np.tanh(noise))).astype(np.float32)
    flat = level.ravel()
    t = float(np.partition(flat, n_vox - 1)[n_vox - 1])
    return level, t, n_vox, crop_shape, r_eq


def _take_lowest(score: NDArray[np.float64], candidates: NDArray[np.bool_], n: int) -> NDArray[np.bool_]:
    """Boolean mask of the ``n`` candidate voxels with the lowest score (exact count)."""
    out = np.zeros(score.shape, dtype=bool)
    idx = np.flatnonzero(candidates)
    n = int(min(max(n, 0), idx.size))
    if n == 0:
        return out
    vals = score.ravel()[idx]
    order = np.argpartition(vals, n - 1)[:n] if n < idx.size else np.arange(idx.size)
    out.ravel()[idx[order]] = True
    return out


def _evolve(
    plan: _LesionPlan,
    gtv: NDArray[np.bool_],
    resistant: NDArray[np.bool_],
    reserve: NDArray[np.bool_],
    sp: NDArray[np.float64],
    rng: np.random.Generator,
) -> dict[str, tuple[NDArray[np.bool_], NDArray[np.bool_]]]:
    """GTV and resistant masks (crop) at every time point."""
    n0 = int(gtv.sum())
    n_res = int(resistant.sum())
    wiggle = _smooth_noise(gtv.shape, sp, max(0.3 * plan.r_eq, 1.0), rng).astype(np.float64)
    norm_level = plan.level.astype(np.float64) / plan.t
    if n_res > 0:
        d_res = ndimage.distance_transform_edt(~resistant, sampling=sp)
        depth_res = ndimage.distance_transform_edt(resistant, sampling=sp)
        # sensitive tissue dies from the far side of the resistant foci inwards, and from the rim inwards
        s_score = 0.7 * d_res / max(plan.r_eq, 1e-6) + 0.5 * norm_level + 0.15 * wiggle
    else:
        d_res = depth_res = np.zeros(gtv.shape)
        s_score = norm_level + 0.15 * wiggle
    # voxels outside the mri1 GTV are used only when a lesion must swell beyond it, nearest first
    s_score = np.where(gtv, s_score, 100.0 + norm_level)
    out: dict[str, tuple[NDArray[np.bool_], NDArray[np.bool_]]] = {FIRST_TIMEPOINT: (gtv, resistant)}
    for name, frac, swell in (
        (SECOND_TIMEPOINT, plan.progress, plan.swell),
        (FOLLOWUP_TIMEPOINT, 1.0, 1.0),
    ):
        g_t = 1.0 + frac * (plan.g - 1.0)
        s_t = 1.0 - frac * (1.0 - plan.s)
        if n_res > 0:
            n_r = max(1, round(g_t * n_res))
            if g_t >= 1.0:
                r_t = _take_lowest(d_res + 0.05 * wiggle, reserve, n_r)
            else:
                r_t = _take_lowest(-depth_res + 0.05 * wiggle, resistant, n_r)
        else:
            r_t = np.zeros(gtv.shape, dtype=bool)
        target = round(swell * (g_t * n_res + s_t * (n0 - n_res)))
        if name == SECOND_TIMEPOINT:
            target = max(target, 1)  # check_cohort needs a non-empty GTV at mri2
        n_s = max(target - int(r_t.sum()), 0)
        s_t_mask = _take_lowest(s_score, reserve & ~r_t, n_s)
        out[name] = (r_t | s_t_mask, r_t)
    return out


def _resistant_region(
    gtv: NDArray[np.bool_], f: float, r_eq: float, sp: NDArray[np.float64], rng: np.random.Generator
) -> tuple[NDArray[np.bool_], int]:
    """Resistant foci inside the GTV covering a fraction ``f`` of it; returns (mask, number of foci)."""
    n0 = int(gtv.sum())
    n_res = round(f * n0)
    if f <= 0.0 or n_res == 0:
        return np.zeros(gtv.shape, dtype=bool), 0
    n_res = min(n_res, n0)
    k = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2])) if n0 >= 30 else 1
    idx = np.flatnonzero(gtv)
    centres = np.array(np.unravel_index(rng.choice(idx, size=k, replace=False), gtv.shape)).T * sp
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(gtv.shape, sp, strict=True)], indexing="ij")
    blob = np.zeros(gtv.shape)
    for c in centres:
        w = r_eq * rng.uniform(0.25, 0.55)
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True))
        blob += rng.uniform(0.7, 1.0) * np.exp(-d2 / (2.0 * w * w))
    blob += 0.15 * _smooth_noise(gtv.shape, sp, max(0.25 * r_eq, 1.0), rng)
    return _take_lowest(-blob, gtv, n_res), k


def _place(
    plan: _LesionPlan,
    reserve: NDArray[np.bool_],
    anatomy: _Anatomy,
    occupied: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    patient_id: str,
) -> tuple[int, int, int] | None:
    """Random crop position whose reserve region lies in allowed brain, free of other lesions (or None)."""
    shape = anatomy.brain.shape
    half = np.array(plan.crop_shape) // 2
    nz = np.argwhere(reserve)
    lo_off, hi_off = nz.min(axis=0) - half, nz.max(axis=0) - half  # reserve extent around the centre
    need = float(plan.r_eq) * 1.2
    n_reserve = int(reserve.sum())
    cand = np.flatnonzero(anatomy.allowed & (anatomy.depth > need))
    if cand.size == 0:
        cand = np.flatnonzero(anatomy.allowed)

    def fits(c: NDArray[np.intp]) -> tuple[int, int, int] | None:
        lo, hi = c + lo_off, c + hi_off
        if np.any(lo < 1) or np.any(hi > np.array(shape) - 2):
            return None
        start = (int(c[0] - half[0]), int(c[1] - half[1]), int(c[2] - half[2]))
        sl_img, sl_crop = _slices(start, plan.crop_shape, shape)
        res = reserve[sl_crop]
        if int(res.sum()) != n_reserve:
            return None
        if np.any(occupied[sl_img] & res) or not np.all(anatomy.allowed[sl_img][res]):
            return None
        return start

    for _ in range(200):
        start = fits(np.array(np.unravel_index(int(rng.choice(cand)), shape)))
        if start is not None:
            return start
    # crowded or small brain: look where the free space is widest (costs a distance transform)
    sp = np.asarray(spacing, dtype=float)
    free = ndimage.distance_transform_edt(anatomy.allowed & ~occupied, sampling=sp)
    reach = float(np.max(np.linalg.norm((nz - half) * sp, axis=1)))
    wide = np.flatnonzero(free >= reach)
    if wide.size == 0:
        wide = np.argsort(-free, axis=None, kind="stable")[:2000]
    for idx in rng.permutation(wide)[:500]:
        start = fits(np.array(np.unravel_index(int(idx), shape)))
        if start is not None:
            return start
    return None


#: Redraws when a lesion does not fit: the positions of the patient's lesions placed so far (all again, in
#: the same order), then the failing lesion's shape (orientation, axes ratios, irregularity; same volume).
_POSITION_REDRAWS = 6
_SHAPE_REDRAWS = 8


@dataclass
class _Placement:
    """A lesion ready to place: its plan, its reserve region (crop) and its GTV at mri1 (crop)."""

    plan: _LesionPlan
    reserve: NDArray[np.bool_]
    gtv: NDArray[np.bool_]


def _new_placement(
    vol: float,
    sp: NDArray[np.float64],
    cfg: MetastasisConfig,
    fates: Any,
    i: int,
    gen: np.random.Generator,
) -> _Placement:
    """Draw lesion ``i``'s shape and time course (one lesion's draws, in the simulator's order)."""
    level, t, n_vox, crop_shape, r_eq = _plan_shape(vol, sp, gen)
    p_lo, p_hi = cfg.mri2_progress
    progress = float(gen.uniform(p_lo, p_hi))
    pseudo = bool(gen.random() < cfg.pseudo_progression)
    swell = (float(gen.uniform(1.1, 1.3)) if pseudo else 1.0) * math.exp(
        cfg.mri2_noise * float(gen.standard_normal())
    )
    plan = _LesionPlan(
        volume_mm3=vol,
        f=float(fates.f[i]),
        s=float(fates.s[i]),
        g=float(fates.g[i]),
        progress=progress,
        swell=swell,
        pseudo=pseudo,
        level=level,
        t=t,
        n_vox=n_vox,
        crop_shape=crop_shape,
        r_eq=r_eq,
    )
    gtv = _take_lowest(level.astype(np.float64), np.ones(level.shape, dtype=bool), n_vox)
    reserve = level <= _reserve_factor(r_eq) * t
    return _Placement(plan, reserve, gtv)


def _occupy(occupied: NDArray[np.bool_], item: _Placement) -> None:
    assert item.plan.placed_at is not None
    sl_img, sl_crop = _slices(item.plan.placed_at, item.plan.crop_shape, occupied.shape)
    occupied[sl_img] |= item.reserve[sl_crop]


def _place_next(
    placed: list[_Placement],
    item: _Placement,
    anatomy: _Anatomy,
    occupied: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
) -> bool:
    """Place ``item`` beside the lesions ``placed`` (updating ``occupied`` and positions); False if it fails.

    First a position among the placed lesions; then (when there are any), :data:`_POSITION_REDRAWS` times, new
    positions for all of them (in the same order, largest first) and then this one. Every draw comes from
    ``rng``, so the result is a function of the patient's generator.
    """
    start = _place(item.plan, item.reserve, anatomy, occupied, spacing, rng, "")
    if start is not None:
        item.plan.placed_at = start
        _occupy(occupied, item)
        return True
    # alone in the brain, _place has already searched everywhere: only a new shape can help
    for _ in range(_POSITION_REDRAWS if placed else 0):
        trial = np.zeros_like(occupied)
        starts = []
        for other in [*placed, item]:
            s = _place(other.plan, other.reserve, anatomy, trial, spacing, rng, "")
            if s is None:
                break
            starts.append(s)
            sl_img, sl_crop = _slices(s, other.plan.crop_shape, trial.shape)
            trial[sl_img] |= other.reserve[sl_crop]
        else:
            for other, s in zip([*placed, item], starts, strict=True):
                other.plan.placed_at = s
            occupied[...] = trial
            return True
    return False


def _place_lesion(
    placed: list[_Placement],
    item: _Placement,
    redraw: Any,
    anatomy: _Anatomy,
    occupied: NDArray[np.bool_],
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    patient_id: str,
) -> _Placement:
    """Place ``item``, redrawing positions and then its shape (``redraw()``) until it fits.

    Raises :class:`InputError` only when the lesion does not fit even alone in the patient's brain with any of
    the redrawn shapes: a parameter that cannot be met (a volume too large for the field of view).
    """
    for attempt in range(_SHAPE_REDRAWS + 1):
        if attempt:
            item = redraw()
        if _place_next(placed, item, anatomy, occupied, spacing, rng):
            return item
    alone = _place(item.plan, item.reserve, anatomy, np.zeros_like(occupied), spacing, rng, "")
    why = (
        "without touching the other lesions, after redrawing their positions and its shape"
        if alone is not None
        else "even with no other lesion (its growth margin does not fit in one hemisphere)"
    )
    raise InputError(
        f"patient {patient_id}: could not place a lesion of {item.plan.volume_mm3:.0f} mm³ inside the brain "
        f"{why}",
        field="volume_range_mm3",
        fix="enlarge fov, lower the largest volume in volume_range_mm3, or use fewer lesions per patient",
    )


def _slices(
    start: tuple[int, int, int], crop_shape: tuple[int, int, int], shape: tuple[int, int, int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    sl_img = tuple(slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, crop_shape, shape, strict=True))
    sl_crop = tuple(slice(si.start - s, si.stop - s) for si, s in zip(sl_img, start, strict=True))
    return sl_img, sl_crop


# ================================================================================================ patient
def simulate_patient(
    config: MetastasisConfig, patient_index: int, rng: SeedLike, *, _offset: float | None = None
) -> SimulatedPatient:
    """Simulate one patient in memory (no I/O): anatomy, lesions, their fates, and the three images.

    Parameters
    ----------
    config
        Cohort parameters.
    patient_index
        0-based index; sets the patient id (``P001`` for 0) and the number of lesions
        (:func:`lesion_counts`).
    rng
        The patient's own generator (or a seed). :func:`write_metastasis_cohort` gives every patient a child
        of the cohort seed (:func:`adaptrt.seeding.spawn`), so patients do not depend on each other's draws.
    _offset
        Internal: the calibrated logit offset of the resistant fraction, when the caller has computed it
        once for many patients (it depends on ``config`` only).

    Returns
    -------
    SimulatedPatient
        Images float32 ``(z, y, x)`` of shape ``config.fov``, masks and truth.
    """
    counts = lesion_counts(config)
    if not 0 <= patient_index < len(counts):
        raise ValueError(f"patient_index must be in [0, {len(counts) - 1}], got {patient_index}")
    gen = as_generator(rng)
    pid = f"P{patient_index + 1:03d}"
    cfg = config
    sp = np.asarray(cfg.spacing_mm, dtype=float)
    voxel = float(np.prod(sp))
    shape = cfg.fov

    anatomy = _anatomy(cfg, gen)
    n_les = counts[patient_index]
    mu = _resistance_offset(cfg) if _offset is None else _offset
    shift = np.full(n_les, cfg.patient_effect * gen.standard_normal())
    fates = _draw_fates(cfg, gen, n_les, shift, mu)
    # the largest lesion is placed first (it is the hardest to fit); ids follow the placement order
    order = np.argsort(-fates.log_volume, kind="stable")

    occupied = np.zeros(shape, dtype=bool)
    placed: list[tuple[_LesionPlan, dict[str, tuple[NDArray[np.bool_], NDArray[np.bool_]]], int, bool]] = []
    positioned: list[_Placement] = []
    for i in order:
        vol = float(np.exp(fates.log_volume[i]))
        item = _new_placement(vol, sp, cfg, fates, int(i), gen)
        # a lesion that does not fit is redrawn (positions, then its shape) from this patient's generator
        item = _place_lesion(
            positioned,
            item,
            lambda vol=vol, i=i: _new_placement(vol, sp, cfg, fates, int(i), gen),
            anatomy,
            occupied,
            cfg.spacing_mm,
            gen,
            pid,
        )
        positioned.append(item)
        plan, gtv = item.plan, item.gtv
        # growth may not leave the allowed brain (the reserve was checked to lie inside it)
        resistant, k = _resistant_region(gtv, plan.f, plan.r_eq, sp, gen)
        masks = _evolve(plan, gtv, resistant, item.reserve, sp, gen)
        necrotic = bool(plan.r_eq > 6.0 and gen.random() < min(1.0, (plan.r_eq - 6.0) / 6.0))
        placed.append((plan, masks, k, necrotic))

    images, clean = _render(cfg, anatomy, placed, gen)
    drift = (clean[SECOND_TIMEPOINT] - clean[FIRST_TIMEPOINT]).astype(np.float32)
    del clean

    lesions: list[SimulatedLesion] = []
    threshold = 1.0 - cfg.response_threshold + 1e-9
    vol_geom = Volume(np.zeros((2, 2, 2), dtype=np.float32), spacing=cfg.spacing_mm, origin=cfg.origin_mm)
    for n, (plan, masks, k, necrotic) in enumerate(placed):
        assert plan.placed_at is not None
        sl_img, sl_crop = _slices(plan.placed_at, plan.crop_shape, shape)
        gtv_full: dict[str, NDArray[np.bool_]] = {}
        res_full: dict[str, NDArray[np.bool_]] = {}
        for name in TIMEPOINTS:
            g_m, r_m = masks[name]
            a = np.zeros(shape, dtype=bool)
            a[sl_img] = g_m[sl_crop]
            b = np.zeros(shape, dtype=bool)
            b[sl_img] = r_m[sl_crop]
            gtv_full[name], res_full[name] = a, b
        counts_t = {name: int(np.count_nonzero(gtv_full[name])) for name in TIMEPOINTS}
        ratio = counts_t[FOLLOWUP_TIMEPOINT] / counts_t[FIRST_TIMEPOINT]
        centroid = np.argwhere(gtv_full[FIRST_TIMEPOINT]).mean(axis=0)
        world = vol_geom.index_to_world(centroid)
        lesions.append(
            SimulatedLesion(
                lesion_id=str(n + 1),
                gtv=gtv_full,
                resistant=res_full,
                volumes_mm3={name: counts_t[name] * voxel for name in TIMEPOINTS},
                resistant_fraction=float(res_full[FIRST_TIMEPOINT].sum()) / counts_t[FIRST_TIMEPOINT],
                n_resistant_regions=k,
                sensitive_survival=plan.s,
                resistant_growth=plan.g,
                intended_ratio=plan.f * plan.g + (1.0 - plan.f) * plan.s,
                ratio=float(ratio),
                responder=bool(ratio <= threshold),
                mri2_progress=plan.progress,
                pseudo_progression=plan.pseudo,
                necrotic=necrotic,
                centre_mm=(float(world[0]), float(world[1]), float(world[2])),
            )
        )
    return SimulatedPatient(
        patient_id=pid,
        images=images,
        drift=drift,
        brain=anatomy.brain,
        lesions=tuple(lesions),
        spacing=cfg.spacing_mm,
        origin=cfg.origin_mm,
    )


@dataclass
class _Tissue:
    """A lesion's tissue properties, fixed over time: the same tissue keeps its look as the lesion changes."""

    enh: np.float32  # enhancement of viable tumour
    texture: NDArray[np.float32]  # relative intensity texture (crop)
    fine: NDArray[np.float32]  # fine texture that resistant tissue shows (crop)
    core: NDArray[np.bool_] | None  # necrotic core (crop), if any
    rim_mm: float  # enhancing rim kept around the core
    edema: np.float32  # relative T1 darkening of the surrounding brain


def _box(
    plan: _LesionPlan,
    mask: NDArray[np.bool_],
    margin_mm: float,
    sp: NDArray[np.float64],
    shape: tuple[int, int, int],
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Image and crop slices of ``mask``'s bounding box grown by ``margin_mm`` (None for an empty mask)."""
    assert plan.placed_at is not None
    sl_img: list[slice] = []
    sl_crop: list[slice] = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        m = math.ceil(margin_mm / sp[axis])
        lo = max(int(hit[0]) - m, 0, -plan.placed_at[axis])
        hi = min(int(hit[-1]) + m + 1, mask.shape[axis], shape[axis] - plan.placed_at[axis])
        sl_crop.append(slice(lo, hi))
        sl_img.append(slice(lo + plan.placed_at[axis], hi + plan.placed_at[axis]))
    return tuple(sl_img), tuple(sl_crop)


def _render(
    cfg: MetastasisConfig,
    anatomy: _Anatomy,
    placed: list[tuple[_LesionPlan, dict[str, tuple[NDArray[np.bool_], NDArray[np.bool_]]], int, bool]],
    rng: np.random.Generator,
) -> tuple[dict[str, NDArray[np.float32]], dict[str, NDArray[np.float32]]]:
    """Noisy and noise-free images at every time point."""
    sp = np.asarray(cfg.spacing_mm, dtype=float)
    shape = cfg.fov
    strength = np.float32(cfg.signature_strength)
    # per-lesion tissue properties, fixed over time: the same tissue keeps its texture as the lesion changes
    props: list[_Tissue] = []
    for plan, _masks, _k, necrotic in placed:
        cs = plan.crop_shape
        enh = np.float32(_WM * rng.uniform(1.35, 1.7))
        texture = _smooth_noise(cs, sp, 1.5, rng) * np.float32(rng.uniform(0.05, 0.1))
        fine = _smooth_noise(cs, sp, 0.6, rng)
        core = None
        if necrotic:
            # an irregular necrotic core: its own, finer shape noise on top of the lesion's level set
            wobble = 1.0 + np.float32(0.12) * _smooth_noise(cs, sp, max(0.2 * plan.r_eq, 1.0), rng)
            core = plan.level * wobble <= plan.t * rng.uniform(0.45, 0.7)
        props.append(
            _Tissue(
                enh=enh,
                texture=texture,
                fine=fine,
                core=core,
                rim_mm=float(rng.uniform(1.5, 3.0)),
                edema=np.float32(rng.uniform(0.04, 0.14)),
            )
        )
    noisy: dict[str, NDArray[np.float32]] = {}
    clean: dict[str, NDArray[np.float32]] = {}
    sigma_blur = [0.45 / s for s in sp]  # partial volume at the lesion edge
    for name in TIMEPOINTS:
        img = anatomy.image.copy()
        boxes = []
        for plan, masks, _k, _n in placed:
            gtv = masks[name][0]
            r_t = (3.0 * float(gtv.sum()) * float(np.prod(sp)) / (4.0 * math.pi)) ** (1.0 / 3.0)
            lam = min(max(0.5 * r_t, 0.5), 4.0)
            # work on the GTV's bounding box plus the reach of its oedema, not on the whole crop
            boxes.append((_box(plan, gtv, 3.0 * lam + 2.0, sp, shape), np.float32(lam)))
        # oedema first, lesions on top, so that a neighbour's oedema never dims a lesion
        for (_plan, masks, _k, _n), pr, (box, lam) in zip(placed, props, boxes, strict=True):
            if box is None:
                continue
            sl_img, sl_crop = box
            gtv = masks[name][0][sl_crop]
            d_out = ndimage.distance_transform_edt(~gtv, sampling=sp).astype(np.float32)
            factor = 1.0 - pr.edema * np.exp(-d_out / lam)
            region = img[sl_img]
            brain_c = anatomy.brain[sl_img]
            region[brain_c] *= factor[brain_c]
        for (_plan, masks, _k, _n), pr, (box, _lam) in zip(placed, props, boxes, strict=True):
            if box is None:
                continue
            sl_img, sl_crop = box
            gtv, res = (m[sl_crop] for m in masks[name])
            depth = ndimage.distance_transform_edt(gtv, sampling=sp).astype(np.float32)
            lesion = np.full(gtv.shape, pr.enh, dtype=np.float32)
            if pr.core is not None:
                core = pr.core[sl_crop] & (depth > pr.rim_mm)
                lesion[core] = _NECROSIS
            lesion *= 1.0 + pr.texture[sl_crop]
            # the signature of resistant tissue: a little less enhancement, a stronger fine texture
            sig = res.astype(np.float32) * strength
            lesion *= 1.0 - np.float32(0.08) * sig + np.float32(0.06) * sig * pr.fine[sl_crop]
            gf = gtv.astype(np.float32)
            w = ndimage.gaussian_filter(gf, sigma=sigma_blur, truncate=2.5)
            w = np.maximum(w, gf * np.float32(0.85))
            region = img[sl_img]
            region *= 1.0 - w
            region += lesion * w
        clean[name] = img
        sd = np.float32(cfg.noise_level * _WM)
        # Rician magnitude noise, in place to spare full-size temporaries
        re = rng.standard_normal(shape, dtype=np.float32)
        re *= sd
        re += img
        np.square(re, out=re)
        im = rng.standard_normal(shape, dtype=np.float32)
        im *= sd
        np.square(im, out=im)
        re += im
        del im
        noisy[name] = np.sqrt(re, out=re)
    return noisy, clean


# ================================================================================================ writing
def _lesion_truth_row(
    patient: SimulatedPatient, les: SimulatedLesion, threshold: float, files: Mapping[str, str]
) -> dict[str, Any]:
    v = les.volumes_mm3
    return {
        "patient_id": patient.patient_id,
        "lesion_id": les.lesion_id,
        "roi": les.roi_name,
        "volume_mri1_mm3": round(v[FIRST_TIMEPOINT], 3),
        "volume_mri2_mm3": round(v[SECOND_TIMEPOINT], 3),
        "volume_followup_mm3": round(v[FOLLOWUP_TIMEPOINT], 3),
        "ratio_mri2": round(v[SECOND_TIMEPOINT] / v[FIRST_TIMEPOINT], 6),
        "ratio_followup": round(les.ratio, 6),
        "responder": les.responder,
        "response_threshold": threshold,
        "resistant_fraction": round(les.resistant_fraction, 6),
        "n_resistant_regions": les.n_resistant_regions,
        "resistant_mri1_mm3": round(float(les.resistant[FIRST_TIMEPOINT].sum()) * _voxel(patient), 3),
        "sensitive_survival": round(les.sensitive_survival, 6),
        "resistant_growth": round(les.resistant_growth, 6),
        "intended_ratio": round(les.intended_ratio, 6),
        "mri2_progress": round(les.mri2_progress, 6),
        "pseudo_progression": les.pseudo_progression,
        "necrotic": les.necrotic,
        "centre_x_mm": round(les.centre_mm[0], 3),
        "centre_y_mm": round(les.centre_mm[1], 3),
        "centre_z_mm": round(les.centre_mm[2], 3),
        **files,
    }


def _voxel(patient: SimulatedPatient) -> float:
    return float(np.prod(patient.spacing))


def write_metastasis_cohort(
    out: str | Path,
    *,
    config: MetastasisConfig | None = None,
    seed: SeedLike = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Simulate a brain-metastasis cohort and write it as DICOM + RTSTRUCT + manifest, with a truth folder.

    The layout is described in the module docstring. Every patient is generated, written and discarded in
    turn, so memory holds one patient at a time. The folder is assembled under a temporary name and renamed
    into place when complete.

    All three time points of a patient share the StudyInstanceUID, the FrameOfReferenceUID, the grid and the
    anatomy: the series are co-registered, as after rigid registration to ``mri1``.

    Parameters
    ----------
    out
        Folder to create; it must not exist unless ``overwrite``.
    config
        Cohort parameters; default :class:`MetastasisConfig` (39 patients, 69 lesions, as in Part I).
    seed
        Integer seed (or a generator, or None for fresh entropy). The same integer seed writes byte-identical
        files; patient ``i`` uses child ``i`` of :func:`adaptrt.seeding.spawn`.
    overwrite
        Replace an existing folder (only once the new one is complete).
    progress
        Show a progress bar over patients (tqdm, on stderr).

    Returns
    -------
    Path
        ``out/manifest.csv``.

    Raises
    ------
    InputError
        ``out`` exists and ``overwrite`` is False, or a lesion cannot be placed (fov too small).
    """
    from tqdm.auto import tqdm

    from ..io.dicom import make_uid, write_mr_series
    from ..io.manifest import write_manifest
    from ..io.nifti import write_nifti
    from ..io.rtstruct import Roi, write_rtstruct
    from ..report.run import write_csv_rows

    cfg = config if config is not None else MetastasisConfig()
    if not isinstance(cfg, MetastasisConfig):
        raise InputError(
            f"config must be a MetastasisConfig, got {type(cfg).__name__}",
            field="config",
            fix="pass adaptrt.simulate.metastases.MetastasisConfig(...)",
        )
    # one child per patient; an extra child names the UIDs of a cohort drawn from fresh entropy, so that two
    # such cohorts never share UIDs (the first n children do not depend on how many are spawned)
    rngs = spawn(seed, cfg.n_patients + 1)
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        seed_tag = str(int(seed))
    else:
        seed_tag = f"rng{int(rngs[-1].integers(2**62))}"
    mu = _resistance_offset(cfg)
    manifest_rows: list[dict[str, str]] = []
    truth_rows: list[dict[str, Any]] = []
    with atomic_dir(out, overwrite=overwrite) as root:
        (root / "truth").mkdir()
        bar = tqdm(range(cfg.n_patients), desc="metastases", unit="patient", disable=not progress)
        for i in bar:
            patient = simulate_patient(cfg, i, rngs[i], _offset=mu)
            pid = patient.patient_id
            tag = f"adaptrt-metastases-{seed_tag}-{pid}"
            study_uid = make_uid(tag, "study")
            for_uid = make_uid(tag, "frame-of-reference")
            truth_dir = root / "truth" / pid
            truth_dir.mkdir()
            write_nifti(patient.volume(patient.drift), truth_dir / "drift.nii.gz")
            res_files: dict[str, dict[str, str]] = {les.lesion_id: {} for les in patient.lesions}
            for t, name in enumerate(TIMEPOINTS):
                vol = patient.volume(patient.images[name])
                rel_img = Path("images") / pid / name
                series = write_mr_series(
                    vol,
                    root / rel_img,
                    patient_id=pid,
                    study_uid=study_uid,
                    frame_of_reference_uid=for_uid,
                    series_description=f"AX T1 post-contrast {name}",
                    series_number=t + 1,
                    uid_seed=f"{tag}-{name}",
                )
                rel_rs = Path("images") / f"{pid}_{name}_rtstruct.dcm"
                rois = [Roi(les.roi_name, patient.volume(les.gtv[name])) for les in patient.lesions]
                write_rtstruct(rois, series, root / rel_rs, label="GTV", uid_seed=f"{tag}-{name}-rtstruct")
                for les in patient.lesions:
                    manifest_rows.append(
                        {
                            "patient_id": pid,
                            "lesion_id": les.lesion_id,
                            "timepoint": name,
                            "image": rel_img.as_posix(),
                            "mask": rel_rs.as_posix(),
                            "roi": les.roi_name,
                        }
                    )
                    rel_res = Path("truth") / pid / f"{les.roi_name}_resistant_{name}.nii.gz"
                    write_nifti(patient.volume(les.resistant[name]), root / rel_res)
                    res_files[les.lesion_id][f"resistant_{name}"] = rel_res.as_posix()
                del series, rois
            for les in patient.lesions:
                files = {**res_files[les.lesion_id], "drift": f"truth/{pid}/drift.nii.gz"}
                truth_rows.append(_lesion_truth_row(patient, les, cfg.response_threshold, files))
            del patient
        write_manifest(manifest_rows, root / "manifest.csv")
        write_csv_rows(root / "truth" / "lesions.csv", truth_rows)
        meta = {
            "generator": "adaptrt.simulate.metastases",
            "seed": int(seed) if isinstance(seed, int | np.integer) and not isinstance(seed, bool) else None,
            "config": dataclasses.asdict(cfg),
            "timepoints": list(TIMEPOINTS),
            "spacing_mm_zyx": list(cfg.spacing_mm),
            "origin_mm_lps_xyz": list(cfg.origin_mm),
            "n_responders": sum(bool(r["responder"]) for r in truth_rows),
            "n_lesions": len(truth_rows),
        }
        (root / "truth" / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(out) / "manifest.csv"
