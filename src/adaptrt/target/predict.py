"""Saving the DL-CTV model with a checksum, and ``adaptrt target predict`` for new patients.

A run folder of ``adaptrt target run`` (with the DL CTV) holds::

    models/dl_ctv.pt      the selected weights (``torch.save`` of the state dict, bytes made in memory, so
                          identical runs give identical files)
    models/dl_ctv.json    the model's settings (channels, width, stages, threshold, normalisation) and the
                          SHA-256 of dl_ctv.pt

``adaptrt target predict --run RUN --manifest M --out DIR [--reference-series DICOM_DIR]`` is
:func:`run_predict`: the checksum is verified, the manifest must provide every input channel of the model,
every patient is read and checked and the CTVs computed **before** anything is written; then ``DIR`` is
written atomically::

    DIR/<patient>/CTV_DL.nii.gz, CTV_RTOG.nii.gz, CTV_EORTC.nii.gz, RS_ctvs.dcm, MR/, export.json
                                          (part 1's exporter, :func:`adaptrt.target.export.export_ctvs`)
    DIR/<patient>/dl_probability.nii.gz   the network's probability (float32, 0 outside the brain's box)
    DIR/predictions.csv                   per patient: volumes of the CTVs, components of the prediction
    DIR/model.json                        the model manifest used

The manifest is the glioblastoma manifest (``docs/manifest.md``): the progression masks it requires are not
used by the prediction (they may be empty).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..io.atomic import atomic_dir, check_writable
from .ctv import CTV, eortc_ctv, rtog_ctv
from .dl import AugmentConfig, DLConfig, DLSample, TrainedModel, dl_ctv, make_sample, predict_probability

__all__ = [
    "MODEL_FILE",
    "MODEL_MANIFEST",
    "load_model",
    "model_bytes",
    "patient_ctvs",
    "run_predict",
    "save_model",
]

MODEL_FILE = "models/dl_ctv.pt"
MODEL_MANIFEST = "models/dl_ctv.json"
_FORMAT = "adaptrt-target-dl-ctv/1"


def model_bytes(model: TrainedModel) -> bytes:
    """The checkpoint's bytes: ``torch.save`` of the selected state dict into memory (deterministic)."""
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in sorted(model.state.items())}, buf)
    return buf.getvalue()


def _manifest(model: TrainedModel, digest: str) -> dict[str, Any]:
    cfg = asdict(model.config)
    cfg["channels"] = list(model.config.channels)
    return {
        "format": _FORMAT,
        "file": Path(MODEL_FILE).name,
        "sha256": digest,
        "config": cfg,
        "best_epoch": model.best_epoch,
        "normalisation": "min-max over the brain per map, 0 outside the brain; crop to the brain's box",
        "ctv": "probability >= threshold in the brain, critical structures removed, largest connected "
        "component (6-connectivity), holes filled",
        "train_ids": list(model.train_ids),
        "val_ids": list(model.val_ids),
    }


def save_model(folder: str | os.PathLike[str], model: TrainedModel) -> str:
    """Write ``models/dl_ctv.pt`` and ``models/dl_ctv.json`` under ``folder`` (a run's stage); return the SHA-256."""
    data = model_bytes(model)
    digest = hashlib.sha256(data).hexdigest()
    root = Path(folder)
    (root / MODEL_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / MODEL_FILE).write_bytes(data)
    (root / MODEL_MANIFEST).write_text(json.dumps(_manifest(model, digest), indent=2, sort_keys=True) + "\n")
    return digest


def load_model(run: str | os.PathLike[str]) -> TrainedModel:
    """The DL-CTV model of a run folder, its checksum verified.

    Raises
    ------
    InputError
        No model in the run folder, an unreadable manifest, or a checkpoint whose SHA-256 differs.
    """
    import torch

    root = Path(run)
    man_path, pt_path = root / MODEL_MANIFEST, root / MODEL_FILE
    if not man_path.is_file() or not pt_path.is_file():
        raise InputError(
            f"the run folder has no DL-CTV model ({MODEL_MANIFEST} and {MODEL_FILE})",
            path=root,
            fix="give the folder of an `adaptrt target run` made with the DL CTV (dl = true)",
        )
    try:
        man = json.loads(man_path.read_text())
        cfg_d = dict(man["config"])
        aug = AugmentConfig(**cfg_d.pop("augment"))
        cfg = DLConfig(**{**cfg_d, "channels": tuple(cfg_d["channels"]), "augment": aug})
        expected = str(man["sha256"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"the model manifest cannot be read: {exc}", path=man_path, fix="re-run `adaptrt target run`"
        ) from exc
    data = pt_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise InputError(
            f"the checkpoint's SHA-256 is {digest}, the manifest records {expected}: the file was changed or "
            "damaged",
            path=pt_path,
            fix="restore the run folder's models/ from the original run",
        )
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return TrainedModel(
        config=cfg,
        state=state,
        best_epoch=int(man.get("best_epoch", 0)),
        history=(),
        train_ids=tuple(man.get("train_ids", ())),
        val_ids=tuple(man.get("val_ids", ())),
    )


def patient_ctvs(
    net: Any, sample: DLSample, vols: Any, config: DLConfig
) -> tuple[dict[str, CTV], NDArray[np.float32], int]:
    """DL, RTOG and EORTC CTVs of one patient on its full grid, the probability map and the components."""
    prob = predict_probability(net, sample)
    crop_ctv, n_comp = dl_ctv(
        prob, sample.brain, sample.spacing_mm, threshold=config.threshold, critical=sample.critical
    )
    sp = sample.spacing_mm
    dl = CTV(
        "DL",
        sample.paste(crop_ctv.mask, False),
        sp,
        crop_ctv.definition,
        critical_removed=crop_ctv.critical_removed,
    )
    ctvs = {
        "DL": dl,
        "RTOG": rtog_ctv(vols.t2l_baseline, vols.cel_baseline, vols.brain, sp, critical=vols.critical),
        "EORTC": eortc_ctv(vols.cel_baseline, vols.cavity, vols.brain, sp, critical=vols.critical),
    }
    return ctvs, sample.paste(prob, np.float32(0.0)), n_comp


def _load(p: Any, map_names: Any, base_dir: Path | None, channels: tuple[str, ...]) -> Any:
    """One new patient's volumes (progression masks not needed), its model inputs checked."""
    from ..io.manifest import load_glioblastoma_patient
    from .data import LESION_MASKS, PatientVolumes, _extra_mask

    maps_v, masks_v = load_glioblastoma_patient(p)
    missing = [c for c in channels if c not in maps_v]
    if missing:
        raise InputError(
            f"patient {p.patient_id} (manifest row {p.row}) lacks the model input map(s) {', '.join(missing)}",
            field=f"map_{missing[0]}",
            fix="give every patient all input maps of the model: " + ", ".join(channels),
        )
    ref = masks_v["brain"]
    brain = np.asarray(ref.array, dtype=bool)
    if not brain.any():
        raise InputError(f"patient {p.patient_id}: the brain mask is empty", path=p.masks["brain"])
    masks = {k: np.asarray(masks_v[k].array, dtype=bool) & brain for k in LESION_MASKS}
    critical = None
    for col in sorted(c for c in p.clinical if c.startswith("critical_") and p.clinical[c]):
        m = _extra_mask(p, col, ref, base_dir)
        critical = m if critical is None else (critical | m)
    return PatientVolumes(
        patient_id=p.patient_id,
        treatment=p.treatment,
        ttp_months=p.ttp_months,
        row=p.row,
        reference=ref,
        maps={k: np.asarray(v.array, dtype=np.float32) for k, v in maps_v.items()},
        brain=brain,
        press_box=np.zeros(brain.shape, dtype=bool),
        critical=critical,
        **masks,
    )


def run_predict(
    run: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    reference_series: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """``adaptrt target predict``: the DL, RTOG and EORTC CTVs of every patient of ``manifest``.

    Parameters
    ----------
    run
        A run folder of ``adaptrt target run`` with the DL CTV.
    manifest
        Glioblastoma manifest of the new patients (it must give every input map of the model).
    out
        Folder to create (see the module docstring).
    reference_series
        Folder holding ``<patient_id>/`` planning series (as ``adaptrt target ctv``); default: a series
        written from each patient's nT1c.
    overwrite, device, progress
        Replace ``out``; torch device; progress bar.

    Raises
    ------
    InputError
        ``out`` exists; no model or a bad checksum; the model expects channels the manifest does not provide;
        a patient lacking an input map; any bad file (nothing is written).
    """
    from tqdm.auto import tqdm

    from ..io.manifest import read_glioblastoma_manifest
    from .export import FRAME_OF_REFERENCE_COLUMN, export_ctvs

    target = check_writable(out, overwrite=overwrite)
    model = load_model(run)
    cfg = model.config
    cohort = read_glioblastoma_manifest(manifest)
    absent = [c for c in cfg.channels if c not in cohort.map_names]
    if absent:
        raise InputError(
            f"the run's model expects the input channels {', '.join(cfg.channels)}, but the manifest provides "
            f"{', '.join(cohort.map_names) or 'no map'}: {', '.join(absent)} missing",
            path=cohort.source,
            field=f"map_{absent[0]}",
            fix="give a manifest with these map columns, or use a run whose model was trained on the maps you have",
        )
    net = model.network(device)
    base_dir = cohort.source.parent if cohort.source is not None else None
    results = []
    for p in tqdm(cohort.patients, desc="DL CTV", unit="patient", disable=not progress):
        vols = _load(p, cohort.map_names, base_dir, cfg.channels)
        sample = make_sample(vols, cfg.channels, n_stages=cfg.n_stages)
        ctvs, prob, n_comp = patient_ctvs(net, sample, vols, cfg)
        image = vols.reference.with_array(vols.maps["nT1c"]) if "nT1c" in vols.maps else None
        results.append((p, vols, ctvs, prob, n_comp, image))
    rows = []
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for p, vols, ctvs, prob, n_comp, image in results:
            ref_dir = None if reference_series is None else Path(reference_series) / p.patient_id
            exp = export_ctvs(
                ctvs,
                vols.reference,
                tmp / p.patient_id,
                patient_id=p.patient_id,
                image=image,
                reference_series=ref_dir,
                expected_frame_of_reference=p.clinical.get(FRAME_OF_REFERENCE_COLUMN) or None,
            )
            from ..io.nifti import write_nifti

            write_nifti(vols.reference.with_array(prob), tmp / p.patient_id / "dl_probability.nii.gz")
            rows.append(
                {
                    "patient_id": p.patient_id,
                    **{f"{n}_cm3": round(c.volume_cm3, 3) for n, c in ctvs.items()},
                    "dl_components_before_selection": n_comp,
                    "rtstruct": f"{p.patient_id}/{exp.rtstruct.name}",
                }
            )
        with open(tmp / "predictions.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        man = json.loads((Path(run) / MODEL_MANIFEST).read_text())
        (tmp / "model.json").write_text(json.dumps(man, indent=2, sort_keys=True) + "\n")
    return target
