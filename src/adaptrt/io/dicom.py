"""DICOM MR series: read a series from a folder into a :class:`~adaptrt.types.Volume`, write one.

(Being written: see the functions' contracts below.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..types import Volume

__all__ = ["DicomSeries"]


@dataclass(frozen=True, eq=False)
class DicomSeries:
    """A DICOM image series read from (or written to) a folder.

    Attributes
    ----------
    volume
        The voxel values after RescaleSlope/RescaleIntercept, float32, shape ``(z, y, x)``, slices sorted
        along the slice normal; geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing.
    series_instance_uid, study_instance_uid, frame_of_reference_uid, sop_class_uid
        The series' UIDs.
    sop_instance_uids
        SOPInstanceUID of every slice, in array axis-0 order (``sop_instance_uids[k]`` is slice ``k``).
    files
        The file of every slice, in array axis-0 order (empty for a series built in memory).
    patient_id, patient_name, modality, series_description
        As in the files.
    header
        The first slice's dataset without its pixel data (a ``pydicom.Dataset``), for copying the Patient
        and General Study modules into derived objects such as an RTSTRUCT. Treat it as read-only.
    """

    volume: Volume
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]
    files: tuple[Path, ...]
    patient_id: str
    patient_name: str
    modality: str
    series_description: str
    header: Any
