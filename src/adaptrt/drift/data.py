"""The drift study's data: every lesion of a cohort as a pre/post pair cut the same way (Part II, "Data").

:func:`load_pairs` reads a lesion manifest and turns each lesion into a :class:`~adaptrt.preprocess.LesionPair`
(pre = first MRI, post = the second MRI by default, the paper's pair, or the follow-up): one crop box for both
time points, the same slices and rotations, one intensity scale, drift = post - pre (eq. 1) on that scale; see
:func:`adaptrt.preprocess.prepare_pair`. Part II's protocol gives 3 slices × 4 rotations per lesion (69 × 3 × 4
= 828 samples on the PULSAR-sized cohort). The samples are stacked into a :class:`DriftDataset` with one
record per lesion: its patient (the group of every split), its response label (first MRI -> follow-up volume,
``>= threshold`` shrinkage), its GTV volumes and what is needed to paste a prediction back onto its own grid.

What is excluded, what is an error
----------------------------------
* A lesion without the ``post`` time point, or whose GTV cannot be cut as a 2-D lesion (smaller than one
  slice, on the in-plane edge of the image), is **excluded** and listed in :attr:`DriftDataset.exclusions` as
  ``(lesion, reason)``; the study prints the list.
* Anything else wrong with a lesion's files is an :class:`~adaptrt.errors.InputError` that names the patient,
  the lesion, the time point, the manifest row and the file, and says what to do (the CLI exits with code 2):
  a file that cannot be read, a constant image or one with NaN / infinity, a pair that is not co-registered
  (the later image on another grid), an empty GTV at either time point (at ``post="followup"`` an empty
  follow-up GTV is a complete response and is accepted).
* No lesion left: an InputError naming the manifest and the reasons.

Ground truth (simulated cohorts only)
-------------------------------------
The metastasis simulator (:mod:`adaptrt.simulate.metastases`) writes the noise-free drift ``mri2 - mri1`` as
``truth/<patient>/drift.nii.gz`` and lists it in the ``drift`` column of ``truth/lesions.csv`` next to the
manifest. When that layout is there, the post time point is ``mri2`` and the file lies on the lesion's grid,
the true drift is sampled into each pair's frame (same box, slices, rotations) and divided by the pair's
intensity range, so it is on the scale of :attr:`LesionPair.drift`. Any other truth layout (the phantom's, a
user's folder) is ignored with a note; a truth file never stops the study.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..cohort import (
    FIRST_TIMEPOINT,
    FOLLOWUP_TIMEPOINT,
    SECOND_TIMEPOINT,
    Cohort,
    ImageRef,
    Lesion,
    ResponseLabel,
    mask_volume_mm3,
    response_label,
)
from ..errors import InputError
from ..preprocess import (
    DRIFT_THRESHOLD,
    PART2_ANGLES,
    LesionPair,
    PreprocessConfig,
    prepare_pair,
    sample_like,
)
from ..seeding import SeedLike
from ..types import Volume
from ..validation import bad_parameter, is_real

__all__ = [
    "PART2_PREPROCESS",
    "DriftDataConfig",
    "DriftDataset",
    "DriftLesion",
    "digits_dataset",
    "load_pairs",
]

#: Part II's preprocessing: 64×64, three representative slices, rotations 0/90/180/270.
PART2_PREPROCESS = PreprocessConfig(size=64, n_slices=3, angles_deg=PART2_ANGLES)

_POSTS: tuple[str, ...] = (SECOND_TIMEPOINT, FOLLOWUP_TIMEPOINT)
# reasons of prepare_pair that exclude a lesion (it cannot be a 2-D lesion sample) rather than stop the study
_EXCLUDING = ("GTV smaller than one slice", "GTV on the image border")


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DriftDataConfig:
    """Which pairs the drift study builds and how they are cut. Validated on construction.

    Attributes
    ----------
    post
        The later time point: ``"mri2"`` (the second MRI, about three weeks in: the paper's pair) or
        ``"followup"``.
    preprocess
        Crop size, margin, slices, rotations and normalisation; Part II's by default
        (:data:`PART2_PREPROCESS`).
    threshold
        Fractional shrinkage from first MRI to follow-up that makes a responder, in (0, 1); 0.2 (20 %).
    drift_threshold
        Fraction (> 0) of the first image's robust intensity range near the lesion from which a change
        belongs to the drift region that the crop box covers (see :func:`adaptrt.preprocess.prepare_pair`).
    reference
        ``"both"`` (the paper's: the box fitted to both GTVs and the drift region) or ``"pre"`` (the box and
        slices of the first MRI alone, as available for a new lesion at prediction time).
    """

    post: Literal["mri2", "followup"] = "mri2"
    preprocess: PreprocessConfig = PART2_PREPROCESS
    threshold: float = 0.2
    drift_threshold: float = DRIFT_THRESHOLD
    reference: Literal["both", "pre"] = "both"

    def __post_init__(self) -> None:
        if self.post not in _POSTS:
            raise bad_parameter("DriftDataConfig", "post", f"one of {list(_POSTS)}", self.post)
        if not isinstance(self.preprocess, PreprocessConfig):
            raise bad_parameter("DriftDataConfig", "preprocess", "a PreprocessConfig", self.preprocess)
        t = self.threshold
        if not (is_real(t) and 0.0 < t < 1.0):
            raise bad_parameter("DriftDataConfig", "threshold", "a number in (0, 1)", t)
        d = self.drift_threshold
        if not (is_real(d) and math.isfinite(d) and d > 0):
            raise bad_parameter("DriftDataConfig", "drift_threshold", "a finite number > 0", d)
        if self.reference not in ("both", "pre"):
            raise bad_parameter("DriftDataConfig", "reference", "'both' or 'pre'", self.reference)
        object.__setattr__(self, "threshold", float(t))
        object.__setattr__(self, "drift_threshold", float(d))


# ---------------------------------------------------------------------------------------------- records
@dataclass(frozen=True, eq=False)
class DriftLesion:
    """One lesion of the drift study.

    Attributes
    ----------
    patient_id, lesion_id
        As in the manifest; ``key`` is ``"patient_id/lesion_id"``.
    pair
        The samples (``n`` of them) with their box, slices, rotations and intensity scale.
    label
        1 = responder (GTV volume fell by at least the threshold from the first MRI to follow-up), 0 = not,
        None when the lesion has no follow-up.
    response
        The full label record (volumes, ratio, threshold), or None when the lesion has no follow-up.
    volume_pre_mm3, volume_post_mm3
        GTV volumes in mm³ at the first and the later time point, from the full-resolution masks.
    truth_drift
        ``(n, size, size)`` float32 noise-free drift on the pair's pixels and scale (simulated cohorts), or
        None.
    image
        Where the first MRI is (its grid is the one a prediction is pasted back onto), or None (the toy).
    post_timepoint
        The later time point's name.
    rows
        Manifest rows of the first and the later time point (0 when built in code).
    """

    patient_id: str
    lesion_id: str
    pair: LesionPair
    response: ResponseLabel | None
    volume_pre_mm3: float
    volume_post_mm3: float
    truth_drift: NDArray[np.float32] | None = None
    image: ImageRef | None = None
    post_timepoint: str = SECOND_TIMEPOINT
    rows: tuple[int, int] = (0, 0)

    @property
    def key(self) -> str:
        return f"{self.patient_id}/{self.lesion_id}"

    @property
    def label(self) -> int | None:
        """1 = responder, 0 = non-responder, None = no follow-up."""
        return None if self.response is None else int(self.response.responder)

    @property
    def group(self) -> str:
        """The split group: the patient (a patient's lesions are never on both sides of a split)."""
        return self.patient_id

    def load_image(self) -> Volume:
        """The first MRI (the grid for :func:`adaptrt.preprocess.paste_back`)."""
        if self.image is None:
            raise ValueError(f"lesion {self.key} has no source image (a toy sample)")
        return self.image.load()


@dataclass(frozen=True, eq=False)
class DriftPlanes:
    """A dataset's ``(N, size, size)`` sample arrays (see :meth:`DriftDataset.planes`)."""

    pre: NDArray[np.float32]
    post: NDArray[np.float32]
    drift: NDArray[np.float32]
    pre_mask: NDArray[np.bool_]
    post_mask: NDArray[np.bool_]
    truth_drift: NDArray[np.float32] | None


@dataclass(frozen=True, eq=False)
class DriftDataset:
    """Every usable lesion's samples stacked for training, with one record per lesion.

    ``N`` samples from ``L`` lesions; lesion ``i``'s samples are ``lesion_of_sample == i``, consecutive, in
    the order of its pair. Arrays carry a channel axis for the networks.

    Attributes
    ----------
    pre, post, drift
        ``(N, 1, size, size)`` float32 (drift = post - pre exactly).
    pre_mask, post_mask, region
        ``(N, 1, size, size)`` bool: GTV at each time point; GTVs ∪ drift region.
    slice_index, angle_deg
        ``(N,)`` source slice (int64) and rotation in degrees (float64) of every sample.
    truth_drift
        ``(N, 1, size, size)`` float32 when every lesion has a true drift, else None.
    lesion_of_sample
        ``(N,)`` int64 index into ``lesions``.
    lesions
        The ``L`` per-lesion records.
    exclusions
        ``(lesion key, reason)`` of every lesion left out.
    notes
        Other remarks for the report (e.g. a truth layout that was ignored).
    config
        The settings used.
    source
        The manifest read, or None.
    """

    pre: NDArray[np.float32]
    post: NDArray[np.float32]
    drift: NDArray[np.float32]
    pre_mask: NDArray[np.bool_]
    post_mask: NDArray[np.bool_]
    region: NDArray[np.bool_]
    truth_drift: NDArray[np.float32] | None
    slice_index: NDArray[np.int64]
    angle_deg: NDArray[np.float64]
    lesion_of_sample: NDArray[np.int64]
    lesions: tuple[DriftLesion, ...]
    exclusions: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    config: DriftDataConfig = field(default_factory=DriftDataConfig)
    source: Path | None = None

    def __len__(self) -> int:
        """Number of samples ``N``."""
        return int(self.pre.shape[0])

    @property
    def n_lesions(self) -> int:
        return len(self.lesions)

    @property
    def groups(self) -> NDArray[np.str_]:
        """``(L,)`` patient of every lesion (the split groups)."""
        return np.array([les.group for les in self.lesions])

    @property
    def labels(self) -> NDArray[np.int64]:
        """``(L,)`` 1 = responder, 0 = non-responder, -1 = no follow-up (no label); see :attr:`has_label`."""
        return np.array([-1 if les.label is None else les.label for les in self.lesions], dtype=np.int64)

    @property
    def has_label(self) -> NDArray[np.bool_]:
        """``(L,)`` True where the lesion has a response label."""
        return np.array([les.label is not None for les in self.lesions], dtype=np.bool_)

    def samples_of(self, lesions: int | Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[np.int64]:
        """Sample indices (ascending) of one lesion or of several (e.g. a split's training lesions)."""
        wanted = np.atleast_1d(np.asarray(lesions, dtype=np.int64))
        return np.flatnonzero(np.isin(self.lesion_of_sample, wanted)).astype(np.int64)

    def planes(self) -> DriftPlanes:
        """The sample arrays without their channel axis, as ``(N, size, size)`` (what the study and its analyses
        index by sample)."""
        return DriftPlanes(
            pre=np.asarray(self.pre[:, 0], np.float32),
            post=np.asarray(self.post[:, 0], np.float32),
            drift=np.asarray(self.drift[:, 0], np.float32),
            pre_mask=np.asarray(self.pre_mask[:, 0], bool),
            post_mask=np.asarray(self.post_mask[:, 0], bool),
            truth_drift=None if self.truth_drift is None else np.asarray(self.truth_drift[:, 0], np.float32),
        )

    def exclusion_text(self) -> str:
        """The exclusions as lines for the console and the report (empty string when none)."""
        return "\n".join(f"{key}: {reason}" for key, reason in self.exclusions)


def _stack(lesions: Sequence[DriftLesion], config: DriftDataConfig, **kw: Any) -> DriftDataset:
    pairs = [les.pair for les in lesions]

    def cat(name: str) -> NDArray[Any]:
        return np.concatenate([getattr(p, name) for p in pairs])[:, None]

    truths = [les.truth_drift for les in lesions]
    truth = (
        np.concatenate([t for t in truths if t is not None])[:, None].astype(np.float32)
        if truths and all(t is not None for t in truths)
        else None
    )
    return DriftDataset(
        pre=cat("pre"),
        post=cat("post"),
        drift=cat("drift"),
        pre_mask=cat("pre_mask"),
        post_mask=cat("post_mask"),
        region=cat("region"),
        truth_drift=truth,
        slice_index=np.concatenate([p.slice_index for p in pairs]).astype(np.int64),
        angle_deg=np.concatenate([p.angle_deg for p in pairs]).astype(np.float64),
        lesion_of_sample=np.repeat(np.arange(len(pairs)), [len(p) for p in pairs]).astype(np.int64),
        lesions=tuple(lesions),
        config=config,
        **kw,
    )


# ---------------------------------------------------------------------------------------------- truth
def _truth_files(source: Path | None, post: str, notes: list[str]) -> dict[tuple[str, str], Path]:
    """The simulator's true-drift files next to a manifest, per lesion; {} (with a note) for other layouts."""
    if source is None:
        return {}
    folder = source.parent / "truth"
    table = folder / "lesions.csv"
    if not folder.is_dir():
        return {}
    if not table.is_file():
        notes.append(
            f"{folder}: no lesions.csv, so no true drift is used (not the metastasis simulator's layout)"
        )
        return {}
    try:
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        notes.append(f"{table}: unreadable ({exc}); no true drift is used")
        return {}
    if not rows or not {"patient_id", "lesion_id", "drift"} <= set(rows[0]):
        notes.append(
            f"{table}: no 'patient_id', 'lesion_id' and 'drift' columns (not the metastasis simulator's "
            "layout); no true drift is used"
        )
        return {}
    if post != SECOND_TIMEPOINT:
        notes.append(
            f"{table}: the simulator's true drift is mri2 - mri1; it is not used for post = {post!r}"
        )
        return {}
    return {(r["patient_id"], r["lesion_id"]): source.parent / r["drift"] for r in rows if r.get("drift")}


def _truth_drift(
    path: Path, pair: LesionPair, grid: Volume, key: str, notes: list[str]
) -> NDArray[np.float32] | None:
    from ..io.nifti import read_nifti

    try:
        vol = read_nifti(path)
    except (InputError, OSError, ValueError) as exc:
        notes.append(f"{key}: true drift {path} unreadable ({exc}); ignored")
        return None
    if not grid.same_geometry(vol) or vol.dtype.kind != "f":
        notes.append(f"{key}: true drift {path} is not a float map on the lesion's image grid; ignored")
        return None
    low, high = pair.scale
    return (sample_like(vol, pair, kind="image") / np.float32(high - low)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- loading
def _lesion_error(les: Lesion, tp_name: str, exc: InputError, path: Path | None) -> InputError:
    row = les.timepoints[tp_name].row if tp_name in les.timepoints else 0
    where = f"patient {les.patient_id}, lesion {les.lesion_id}, {tp_name}"
    if row:
        where += f" (manifest row {row})"
    return InputError(f"{where}: {exc.problem}", path=path if path is not None else exc.path, fix=exc.fix)


def _load(les: Lesion, name: str) -> tuple[Volume, Volume]:
    tp = les[name]
    try:
        image = tp.load_image()
    except InputError as exc:
        raise _lesion_error(les, name, exc, None) from exc
    try:
        mask = tp.load_mask()
    except InputError as exc:
        raise _lesion_error(les, name, exc, None) from exc
    return image, mask


_MASK_PROBLEMS = (
    "mask and image grids differ",
    "empty GTV",
    "GTV smaller than one slice",
    "GTV on the image border",
)


def _file_of(les: Lesion, name: str, reason: str) -> Path:
    """The file a problem of :func:`prepare_pair` is about: the mask for GTV problems, else the image."""
    tp = les[name]
    return tp.mask.path if reason.startswith(_MASK_PROBLEMS) else tp.image.path


def load_pairs(
    cohort_or_manifest_path: Cohort | str | os.PathLike[str],
    config: DriftDataConfig | None = None,
    *,
    progress: bool = False,
) -> DriftDataset:
    """Read a lesion manifest and cut every lesion into a pre/post pair (see the module docstring).

    Parameters
    ----------
    cohort_or_manifest_path
        A lesion manifest (CSV, ``docs/manifest.md``) or a :class:`~adaptrt.cohort.Cohort` read from one.
    config
        ``DriftDataConfig()`` when None.
    progress
        Show a progress bar over lesions.

    Returns
    -------
    DriftDataset
        The usable lesions in manifest order, their stacked samples, the exclusions and notes.

    Raises
    ------
    InputError
        A bad manifest (from :func:`~adaptrt.io.manifest.read_manifest`); a lesion's bad file (patient,
        lesion, time point, row and file named); no usable lesion.
    """
    from tqdm.auto import tqdm

    from ..io.manifest import read_manifest

    cfg = DriftDataConfig() if config is None else config
    if not isinstance(cfg, DriftDataConfig):
        raise InputError(f"config must be a DriftDataConfig, got {type(cfg).__name__}", field="config")
    cohort = (
        cohort_or_manifest_path
        if isinstance(cohort_or_manifest_path, Cohort)
        else read_manifest(cohort_or_manifest_path)
    )
    post = cfg.post
    notes: list[str] = []
    truth = _truth_files(cohort.source, post, notes)
    exclusions: list[tuple[str, str]] = []
    records: list[DriftLesion] = []
    for les in tqdm(cohort.lesions, desc="preparing pairs", unit="lesion", disable=not progress):
        if post not in les.timepoints:
            have = ", ".join(les.timepoints)
            exclusions.append((les.key, f"no {post!r} time point (it has {have})"))
            continue
        img1, gtv1 = _load(les, FIRST_TIMEPOINT)
        img2, gtv2 = _load(les, post)
        try:
            pair = prepare_pair(
                img1,
                gtv1,
                img2,
                gtv2,
                cfg.preprocess,
                drift_threshold=cfg.drift_threshold,
                reference=cfg.reference,
                allow_empty_post=post == FOLLOWUP_TIMEPOINT,
            )
        except InputError as exc:
            name = FIRST_TIMEPOINT if exc.field == "pre" else post
            reason = exc.problem.split(": ", 1)[-1]
            if reason.startswith(_EXCLUDING):
                exclusions.append((les.key, f"{name}: {reason}"))
                continue
            raise _lesion_error(les, name, exc, _file_of(les, name, reason)) from exc
        vol1, vol2 = mask_volume_mm3(gtv1), mask_volume_mm3(gtv2)
        label = None
        if FOLLOWUP_TIMEPOINT in les.timepoints:
            gtv_fu = gtv2 if post == FOLLOWUP_TIMEPOINT else _load(les, FOLLOWUP_TIMEPOINT)[1]
            label = response_label(vol1, mask_volume_mm3(gtv_fu), cfg.threshold)
        truth_drift = None
        tpath = truth.get((les.patient_id, les.lesion_id))
        if tpath is not None:
            truth_drift = _truth_drift(tpath, pair, img1, les.key, notes)
        records.append(
            DriftLesion(
                les.patient_id,
                les.lesion_id,
                pair,
                label,
                vol1,
                vol2,
                truth_drift=truth_drift,
                image=les[FIRST_TIMEPOINT].image,
                post_timepoint=post,
                rows=(les[FIRST_TIMEPOINT].row, les[post].row),
            )
        )
    if not records:
        causes = "; ".join(f"{k}: {r}" for k, r in exclusions[:5]) + (
            f"; and {len(exclusions) - 5} more" if len(exclusions) > 5 else ""
        )
        raise InputError(
            f"no lesion is usable for the drift study ({len(exclusions)} excluded: {causes})",
            path=cohort.source,
            fix=f"list the {post!r} time point of the lesions in the manifest"
            + (" or use --post mri2" if post == FOLLOWUP_TIMEPOINT else " or use --post followup"),
        )
    return _stack(records, cfg, exclusions=tuple(exclusions), notes=tuple(notes), source=cohort.source)


# ---------------------------------------------------------------------------------------------- toy
def digits_dataset(
    n: int = 178, size: int = 32, seed: SeedLike = 0, *, threshold: float = 0.2
) -> DriftDataset:
    """The zero-digit toy of Part II in the shape of a :class:`DriftDataset`, so the same models run on it.

    Each pair of :func:`adaptrt.simulate.digits.zero_digit_pairs` is one "lesion" of one sample, its own
    group (``patient_id`` ``"D0001"``, ...). Images are in [0, 1] already (scale ``(0, 1)``, a nominal 1 mm
    pixel); masks are the pixels > 0.5; the region is both masks and the pixels where ``|drift| >=``
    :data:`~adaptrt.preprocess.DRIFT_THRESHOLD`; the "volumes" are the mask areas in pixels, and the label is
    "shrank by at least ``threshold``" (``area ratio <= 1 - threshold``). The toy is noise-free, so its
    ``truth_drift`` is the drift itself.

    Parameters
    ----------
    n
        Number of pairs (>= 1).
    size
        Image size in pixels (>= 8).
    seed
        Seed of the draws.
    threshold
        Shrinkage that makes a "responder", in (0, 1).
    """
    from ..simulate.digits import zero_digit_pairs

    if not (is_real(threshold) and 0.0 < threshold < 1.0):
        raise bad_parameter("digits_dataset", "threshold", "a number in (0, 1)", threshold)
    toy = zero_digit_pairs(n, size=size, seed=seed)
    cfg = DriftDataConfig(preprocess=PreprocessConfig(size=size, n_slices=1, angles_deg=(0.0,), bottleneck=1))
    records = []
    for i in range(n):
        pre, post = toy.pre[i : i + 1], toy.post[i : i + 1]
        drift = (post - pre).astype(np.float32)
        pm, qm = pre > 0.5, post > 0.5
        pair = LesionPair(
            pre=pre,
            post=post,
            drift=drift,
            pre_mask=pm,
            post_mask=qm,
            region=pm | qm | (np.abs(drift) >= DRIFT_THRESHOLD),
            slice_index=np.zeros(1, dtype=np.int64),
            angle_deg=np.zeros(1),
            pixel_mm=1.0,
            box=(0, 1, 0, size, 0, size),
            scale=(0.0, 1.0),
            drift_threshold=DRIFT_THRESHOLD,
            touches_border=False,
        )
        a_pre, a_post = float(pm.sum()), float(qm.sum())
        records.append(
            DriftLesion(
                f"D{i + 1:04d}",
                "1",
                pair,
                response_label(max(a_pre, 1.0), a_post, threshold),
                a_pre,
                a_post,
                truth_drift=drift.copy(),
                post_timepoint="post",
            )
        )
    return _stack(records, cfg, notes=("zero-digit toy: sklearn's 8×8 zeros, scaled about the centre",))
