"""A tiny lesion-phantom cohort, written exactly as users' data is (DICOM + RTSTRUCT, or NIfTI, + manifest).

This is the smallest cohort that exercises every loader: a head-shaped ellipsoid of "brain" with noise,
one or two ellipsoidal lesions per patient with an enhancing rim, at the three PULSAR time points. Each
lesion's follow-up volume is a drawn fraction of its first-MRI volume, so its response label is known. The
realistic brain-metastasis simulator with radio-resistant sub-regions lives in its own module; this phantom is
for tests and the foundation demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..cohort import FIRST_TIMEPOINT, FOLLOWUP_TIMEPOINT, SECOND_TIMEPOINT
from ..errors import InputError
from ..io.atomic import atomic_dir
from ..seeding import SeedLike, as_generator
from ..types import Volume

__all__ = ["PhantomConfig", "phantom_lesion_volumes", "write_phantom_cohort"]

TIMEPOINTS = (FIRST_TIMEPOINT, SECOND_TIMEPOINT, FOLLOWUP_TIMEPOINT)


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of the phantom cohort.

    Attributes
    ----------
    n_patients
        Number of patients (>= 1); each has 1 or 2 lesions.
    shape
        Image shape ``(z, y, x)`` in voxels.
    spacing_mm
        Voxel size ``(z, y, x)`` in mm.
    responder_share
        Probability that a lesion shrinks by 30–70 % at follow-up (otherwise it changes by -10 % to +20 %).
    noise
        Standard deviation of the Gaussian noise, relative to brain intensity.
    """

    n_patients: int = 4
    shape: tuple[int, int, int] = (24, 80, 80)
    spacing_mm: tuple[float, float, float] = (2.0, 1.0, 1.0)
    responder_share: float = 0.5
    noise: float = 0.05

    def __post_init__(self) -> None:
        if not (isinstance(self.n_patients, int) and self.n_patients >= 1):
            raise ValueError(f"n_patients must be an int >= 1, got {self.n_patients}")
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise ValueError(f"shape must be three sizes >= 16 voxels, got {self.shape}")
        if len(self.spacing_mm) != 3 or min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be three values > 0, got {self.spacing_mm}")
        if not 0.0 <= self.responder_share <= 1.0:
            raise ValueError(f"responder_share must be in [0, 1], got {self.responder_share}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")


def _ellipsoid(
    shape: tuple[int, int, int],
    spacing: NDArray[np.float64],
    centre: NDArray[np.float64],
    radii: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Normalised radius r (r < 1 inside) of an ellipsoid in mm, evaluated at every voxel centre."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
    return np.sqrt(r2)


def phantom_lesion_volumes(config: PhantomConfig, seed: SeedLike) -> list[dict[str, float | int | bool]]:
    """Draw every lesion's geometry and fate (no images). Returns one dict per lesion."""
    rng = as_generator(seed)
    ext = np.asarray(config.shape) * np.asarray(config.spacing_mm)
    lesions: list[dict[str, float | int | bool]] = []
    for p in range(config.n_patients):
        n_les = int(rng.integers(1, 3))
        for les in range(n_les):
            radius = float(rng.uniform(4.0, 8.0))
            responder = bool(rng.random() < config.responder_share)
            scale_fu = float(rng.uniform(0.3, 0.7) if responder else rng.uniform(0.9, 1.2))
            # lesions in opposite halves of the head so that two lesions never overlap
            side = -1.0 if les == 0 else 1.0
            centre = (
                ext[0] / 2 + rng.uniform(-0.1, 0.1) * ext[0],
                ext[1] / 2 + rng.uniform(-0.15, 0.15) * ext[1],
                ext[2] / 2 + side * rng.uniform(0.12, 0.2) * ext[2],
            )
            lesions.append(
                {
                    "patient": p,
                    "lesion": les,
                    "radius_mm": radius,
                    "responder": responder,
                    "volume_ratio_followup": scale_fu,
                    "cz": float(centre[0]),
                    "cy": float(centre[1]),
                    "cx": float(centre[2]),
                }
            )
    return lesions


def _patient_images(
    config: PhantomConfig, lesions: list[dict[str, float | int | bool]], rng: np.random.Generator
) -> dict[str, tuple[NDArray[np.float32], list[NDArray[np.bool_]]]]:
    shape = config.shape
    spacing = np.asarray(config.spacing_mm, dtype=float)
    ext = np.asarray(shape) * spacing
    head = _ellipsoid(shape, spacing, ext / 2, ext * np.array([0.45, 0.42, 0.38])) < 1.0
    out: dict[str, tuple[NDArray[np.float32], list[NDArray[np.bool_]]]] = {}
    for t, name in enumerate(TIMEPOINTS):
        img = np.where(head, 400.0, 0.0)
        masks = []
        for les in lesions:
            # linear volume change from mri1 to follow-up; mri2 (three weeks) sees a quarter of it
            frac = (0.0, 0.25, 1.0)[t]
            vol_scale = 1.0 + frac * (float(les["volume_ratio_followup"]) - 1.0)
            radius = float(les["radius_mm"]) * vol_scale ** (1.0 / 3.0)
            centre = np.array([les["cz"], les["cy"], les["cx"]], dtype=float)
            r = _ellipsoid(shape, spacing, centre, np.array([radius, radius * 1.1, radius * 0.9]))
            mask = r < 1.0
            # enhancing rim, darker core
            img = np.where(mask, 700.0 - 250.0 * np.clip(1.0 - r, 0, 1) ** 2, img)
            masks.append(mask)
        img = img * (1.0 + config.noise * rng.standard_normal(shape)) + 20.0 * rng.standard_normal(shape)
        out[name] = (np.clip(img, 0, None).astype(np.float32), masks)
    return out


def write_phantom_cohort(
    out: str | Path,
    *,
    config: PhantomConfig | None = None,
    fmt: Literal["dicom", "nifti"] = "dicom",
    seed: SeedLike = 0,
    overwrite: bool = False,
) -> Path:
    """Write a phantom cohort and its manifest; return the manifest path.

    Parameters
    ----------
    out
        Folder to create (it must not exist unless ``overwrite``). Layout: ``images/<patient>/<timepoint>/``
        (DICOM series) or ``images/<patient>_<timepoint>.nii.gz``; masks as ``<patient>_<timepoint>_rtstruct.dcm``
        (one ROI per lesion, named ``GTV_<lesion>``) or ``<patient>_<lesion>_<timepoint>_gtv.nii.gz``;
        ``manifest.csv``; ``truth/lesions.csv`` with each lesion's drawn fate (not read by any model).
    config
        Phantom parameters (:class:`PhantomConfig`).
    fmt
        ``"dicom"`` (MR series + RTSTRUCT) or ``"nifti"``.
    seed
        Seed; the same seed writes the same arrays.
    overwrite
        Replace an existing folder.
    """
    from ..io.dicom import make_uid, write_mr_series
    from ..io.manifest import write_manifest
    from ..io.nifti import write_nifti
    from ..io.rtstruct import Roi, write_rtstruct
    from ..report.run import write_csv_rows

    if fmt not in ("dicom", "nifti"):
        raise InputError(f"unknown format {fmt!r}", field="fmt", fix="use 'dicom' or 'nifti'")
    cfg = config or PhantomConfig()
    rng = as_generator(seed)
    lesions = phantom_lesion_volumes(cfg, rng)
    by_patient: dict[int, list[dict[str, float | int | bool]]] = {}
    for les in lesions:
        by_patient.setdefault(int(les["patient"]), []).append(les)
    seed_tag = str(seed) if isinstance(seed, int) else "rng"
    rows: list[dict[str, str]] = []
    with atomic_dir(out, overwrite=overwrite) as root:
        for p, plesions in by_patient.items():
            pid = f"P{p + 1:03d}"
            images = _patient_images(cfg, plesions, rng)
            study_uid = make_uid("phantom", seed_tag, pid, "study")
            for_uid = make_uid("phantom", seed_tag, pid, "frame")
            for t, (name, (img, masks)) in enumerate(images.items()):
                vol = Volume(img, spacing=cfg.spacing_mm, origin=(-40.0, -40.0, -20.0))
                if fmt == "dicom":
                    rel_img = Path("images") / pid / name
                    series = write_mr_series(
                        vol,
                        root / rel_img,
                        patient_id=pid,
                        study_uid=study_uid,
                        frame_of_reference_uid=for_uid,
                        series_description=f"T1c phantom {name}",
                        series_number=t + 1,
                        uid_seed=f"phantom-{seed_tag}-{pid}-{name}",
                    )
                    rel_rs = Path("images") / f"{pid}_{name}_rtstruct.dcm"
                    rois = [
                        Roi(f"GTV_{int(les['lesion']) + 1}", vol.with_array(m))
                        for les, m in zip(plesions, masks, strict=True)
                    ]
                    write_rtstruct(
                        rois, series, root / rel_rs, uid_seed=f"phantom-{seed_tag}-{pid}-{name}-rs"
                    )
                    for roi in rois:
                        lid = roi.name.split("_")[1]
                        rows.append(
                            {
                                "patient_id": pid,
                                "lesion_id": lid,
                                "timepoint": name,
                                "image": str(rel_img),
                                "mask": str(rel_rs),
                                "roi": roi.name,
                            }
                        )
                else:
                    rel_img = Path("images") / f"{pid}_{name}.nii.gz"
                    write_nifti(vol, root / rel_img)
                    for les, m in zip(plesions, masks, strict=True):
                        lid = str(int(les["lesion"]) + 1)
                        rel_m = Path("masks") / f"{pid}_{lid}_{name}_gtv.nii.gz"
                        write_nifti(vol.with_array(m), root / rel_m)
                        rows.append(
                            {
                                "patient_id": pid,
                                "lesion_id": lid,
                                "timepoint": name,
                                "image": str(rel_img),
                                "mask": str(rel_m),
                                "roi": "",
                            }
                        )
        write_manifest(rows, root / "manifest.csv")
        (root / "truth").mkdir()
        write_csv_rows(root / "truth" / "lesions.csv", lesions)
    return Path(out) / "manifest.csv"
