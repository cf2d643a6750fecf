"""Cohort records (patients, lesions, time points) and response labels.

Records hold *references* to images and masks (paths, ROI names), not pixel data: a cohort of 39 patients
at three time points would not fit comfortably in memory. :meth:`Timepoint.load_image` and
:meth:`Timepoint.load_mask` read one on demand through :mod:`adaptrt.io`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np

from .types import Volume

__all__ = [
    "FIRST_TIMEPOINT",
    "FOLLOWUP_TIMEPOINT",
    "SECOND_TIMEPOINT",
    "Cohort",
    "ImageRef",
    "Lesion",
    "MaskRef",
    "Patient",
    "ResponseLabel",
    "Timepoint",
    "mask_volume_mm3",
    "response_label",
]

#: Time-point names of the PULSAR protocol: first MRI (treatment 1), second MRI (~3 weeks), follow-up (~3 months).
FIRST_TIMEPOINT = "mri1"
SECOND_TIMEPOINT = "mri2"
FOLLOWUP_TIMEPOINT = "followup"


@dataclass(frozen=True)
class ImageRef:
    """Where an image lives: a DICOM series folder or a NIfTI file."""

    path: Path
    kind: Literal["dicom", "nifti"]

    def load(self) -> Volume:
        """Read the image (float32 values after any rescale), shape ``(z, y, x)``."""
        from .io.loaders import load_image

        return load_image(self)


@dataclass(frozen=True)
class MaskRef:
    """Where a mask lives: an ROI of an RTSTRUCT file (``roi`` set) or a NIfTI mask file."""

    path: Path
    kind: Literal["rtstruct", "nifti"]
    roi: str | None = None

    def load(self, image: ImageRef) -> Volume:
        """Read the mask on ``image``'s grid as a boolean Volume."""
        from .io.loaders import load_mask

        return load_mask(self, image)


@dataclass(frozen=True)
class Timepoint:
    """One lesion at one time point: its image and its GTV mask.

    Attributes
    ----------
    name
        ``"mri1"``, ``"mri2"``, ``"followup"`` or a user-defined name.
    row
        1-based data row of the manifest this came from (for error messages); 0 when built in code.
    """

    name: str
    image: ImageRef
    mask: MaskRef
    row: int = 0

    def load_image(self) -> Volume:
        return self.image.load()

    def load_mask(self) -> Volume:
        return self.mask.load(self.image)


@dataclass(frozen=True)
class Lesion:
    """A lesion of one patient followed over time points.

    ``clinical`` holds the manifest's optional columns (strings, as written) for this lesion.
    """

    patient_id: str
    lesion_id: str
    timepoints: Mapping[str, Timepoint]
    clinical: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "timepoints", MappingProxyType(dict(self.timepoints)))
        object.__setattr__(self, "clinical", MappingProxyType(dict(self.clinical)))

    @property
    def key(self) -> str:
        """``"patient_id/lesion_id"``, unique in a cohort."""
        return f"{self.patient_id}/{self.lesion_id}"

    def __getitem__(self, name: str) -> Timepoint:
        return self.timepoints[name]


@dataclass(frozen=True)
class Patient:
    patient_id: str
    lesions: tuple[Lesion, ...]


@dataclass(frozen=True)
class Cohort:
    """The patients of a manifest, in manifest order.

    ``source`` is the manifest file (relative paths in it were resolved against its folder).
    """

    patients: tuple[Patient, ...]
    source: Path | None = None

    @property
    def lesions(self) -> tuple[Lesion, ...]:
        return tuple(les for p in self.patients for les in p.lesions)

    @property
    def groups(self) -> np.ndarray:
        """Patient id of every lesion (for grouped splits), in :attr:`lesions` order."""
        return np.array([les.patient_id for les in self.lesions])

    def __iter__(self) -> Iterator[Patient]:
        return iter(self.patients)

    def __len__(self) -> int:
        return len(self.patients)


def mask_volume_mm3(mask: Volume) -> float:
    """Volume of a boolean mask in mm³ (voxel count × voxel volume)."""
    if not mask.is_mask:
        raise ValueError(f"expected a boolean mask, got dtype {mask.dtype}")
    return float(np.count_nonzero(mask.array)) * mask.voxel_volume_mm3


@dataclass(frozen=True)
class ResponseLabel:
    """Response of one lesion.

    Attributes
    ----------
    volume_first_mm3, volume_followup_mm3
        GTV volumes at the first MRI and at follow-up, mm³.
    ratio
        ``volume_followup / volume_first``.
    threshold
        Fractional shrinkage that defines response (0.2 for the paper's 20 %).
    responder
        True when the volume fell by at least ``threshold``: ``ratio <= 1 - threshold``.
    """

    volume_first_mm3: float
    volume_followup_mm3: float
    ratio: float
    threshold: float
    responder: bool


def response_label(
    volume_first_mm3: float, volume_followup_mm3: float, threshold: float = 0.2
) -> ResponseLabel:
    """Label a lesion as responder when its volume fell by at least ``threshold`` (default 20 %).

    Parameters
    ----------
    volume_first_mm3
        GTV volume on the first MRI, mm³, > 0.
    volume_followup_mm3
        GTV volume at follow-up, mm³, >= 0 (0 for a lesion that disappeared: a responder).
    threshold
        Fractional shrinkage in (0, 1); Part I uses 0.2 and suggests exploring 0.3 and 0.5.

    Examples
    --------
    >>> response_label(1000.0, 800.0).responder     # exactly 20 % smaller
    True
    >>> response_label(1000.0, 810.0).responder
    False
    """
    if not (0.0 < threshold < 1.0):
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not (math.isfinite(volume_first_mm3) and volume_first_mm3 > 0):
        raise ValueError(f"first-MRI volume must be > 0 mm³, got {volume_first_mm3}")
    if not (math.isfinite(volume_followup_mm3) and volume_followup_mm3 >= 0):
        raise ValueError(f"follow-up volume must be >= 0 mm³, got {volume_followup_mm3}")
    ratio = volume_followup_mm3 / volume_first_mm3
    # a tolerance so that "exactly 20 % smaller" counts despite floating point
    responder = ratio <= 1.0 - threshold + 1e-9
    return ResponseLabel(volume_first_mm3, volume_followup_mm3, ratio, threshold, responder)
