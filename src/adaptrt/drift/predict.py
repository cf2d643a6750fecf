"""``adaptrt drift predict``: the predicted post image and drift map of (new) lesions on their own image grid.

For each lesion of the manifest with a first MRI, every slice through the lesion's box (the first MRI's GTV box,
as at training with ``box="pre"``; a new lesion has no later image) is cut, normalised with the first image's
intensity scale and predicted by a saved model of a drift run; the predictions are pasted back onto the first
MRI's grid in source intensity units and written as NIfTI (same affine as the first MRI; voxels outside the box
are NaN: not predicted), with a PNG overview per lesion (pre, predicted post, predicted drift, colour bars).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..report.run import RunFolder, command_line

__all__ = ["load_model", "run_predict"]

MODELS_FOLDER = "models/drift"
DATA_CONFIG = "drift_data.json"


def load_model(run_folder: str | Path, name: str, *, device: str = "auto") -> tuple[Any, Any]:
    """Read a saved drift model and the data settings it was trained with from a run folder.

    Each checkpoint's SHA-256 is checked against ``models/drift/manifest.json`` before it is loaded (with
    ``torch.load(weights_only=True)``: tensors and plain containers only, no code is executed).

    Returns
    -------
    (DriftModel, DriftDataConfig)
    """
    import torch

    from ..config import from_dict
    from .data import DriftDataConfig
    from .methods import DriftModel

    folder = Path(run_folder)
    man = folder / MODELS_FOLDER / "manifest.json"
    if not man.is_file():
        raise InputError(
            f"has no saved drift models ({MODELS_FOLDER}/manifest.json is missing)",
            path=folder,
            fix="pass the run folder of `adaptrt drift run` (or of `adaptrt demo`)",
        )
    try:
        entries = {e["name"]: e for e in json.loads(man.read_text())["models"]}
        data_cfg = from_dict(DriftDataConfig, json.loads((folder / MODELS_FOLDER / DATA_CONFIG).read_text()))
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"is not a drift run's model folder ({exc})", path=folder / MODELS_FOLDER, fix="re-run the study"
        ) from exc
    if name not in entries:
        raise InputError(
            f"has no model {name!r} (saved: {', '.join(entries)})",
            path=man,
            field="--model",
            fix=f"pass one of: {', '.join(entries)}",
        )
    path = folder / MODELS_FOLDER / entries[name]["file"]
    data = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(data).hexdigest() != entries[name]["sha256"]:
        raise InputError(
            "does not match its SHA-256 in models/drift/manifest.json (damaged or replaced)",
            path=path,
            fix="re-run the study to write the models again",
        )
    import io

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return DriftModel.from_state(state, device=device), data_cfg


def _overview(pre: Any, post: Any, drift: Any, title: str) -> Any:
    from .figures import image_grid

    return image_grid(
        [[pre, post, drift]],
        [["image", "image", "drift"]],
        [["first MRI (normalised)", "predicted post", "predicted drift"]],
        suptitle=title,
    )


def run_predict(
    run: str | Path,
    manifest: str | Path,
    out: str | Path,
    *,
    model: str = "method2",
    seed: int = 0,
    samples: int | None = None,
    eta: float = 0.0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Predict every lesion of ``manifest`` with the model ``model`` of the drift run ``run`` into ``out``.

    With ``samples`` = K (>= 2), K samples per slice (DDIM with ``eta``) give the mean maps
    (``predicted_post`` / ``predicted_drift``) and their per-voxel SD (``predicted_post_sd`` /
    ``predicted_drift_sd``, source intensity units); when the run saved sigma scales
    (``models/drift/calibration.json``), ``*_sd_calibrated`` maps are the SD times that scale.
    """
    import dataclasses

    from tqdm.auto import tqdm

    from ..cohort import FIRST_TIMEPOINT
    from ..io.atomic import check_writable
    from ..io.manifest import read_manifest
    from ..io.nifti import write_nifti
    from ..preprocess import paste_back, prepare_pair

    if seed < 0:
        raise InputError(f"the seed must be >= 0, got {seed}", field="--seed", fix="give a seed such as 0")
    if samples is not None and samples < 2:
        raise InputError(f"--samples must be at least 2, got {samples}", field="--samples", fix="give 16")
    if not eta >= 0.0:
        raise InputError(f"--eta must be >= 0, got {eta}", field="--eta", fix="give --eta 0")
    target = check_writable(out, overwrite=overwrite)
    net, data_cfg = load_model(run, model)
    scales: dict[str, float] = {}
    cal_file = Path(run) / MODELS_FOLDER / "calibration.json"
    if samples is not None and cal_file.is_file():
        try:
            cal = json.loads(cal_file.read_text())
            scales = {t: float(cal[t]) for t in ("post", "drift")}
        except (OSError, KeyError, TypeError, ValueError):
            scales = {}
    cohort = read_manifest(manifest)
    pcfg = dataclasses.replace(data_cfg.preprocess, angles_deg=(0.0,))
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    config = {"run": str(Path(run).resolve()), "manifest": str(Path(manifest).resolve()), "model": model,
              "seed": seed, "samples": samples, "eta": eta, "sigma_scales": scales, "data": data_cfg}  # fmt: skip
    with RunFolder(target, command=command_line("adaptrt drift predict"), config=config, seed=seed,
                   title="adaptrt drift predict", overwrite=overwrite) as rf:  # fmt: skip
        sec = rf.report.section(f"Predicted post image and drift ({model})")
        for les in tqdm(cohort.lesions, desc="lesions", disable=not progress):
            if FIRST_TIMEPOINT not in les.timepoints:
                skipped.append(f"{les.key}: no {FIRST_TIMEPOINT} row")
                continue
            tp = les[FIRST_TIMEPOINT]
            img, gtv = tp.load_image(), tp.load_mask()
            try:
                pair = prepare_pair(img, gtv, img, gtv, pcfg, all_slices=True, reference="pre")
            except InputError as exc:
                raise InputError(
                    f"lesion {les.key}: {exc.problem}", path=exc.path or tp.image.path, fix=exc.fix
                ) from exc
            name = f"{les.patient_id}_{les.lesion_id}".replace("/", "_")
            extra: dict[str, Any] = {}
            if samples is None:
                pred = net.predict(pair.pre, seed=seed)
                p_post, p_drift = pred.post, pred.drift
            else:
                from .uncertainty import sample_stats

                st = sample_stats(net, pair.pre, samples, seed=seed, eta=eta)
                p_post, p_drift = st.post_mean, st.drift_mean
                # an SD scales like a drift (by the intensity range, no offset)
                for what, sd in (("post", st.post_sd), ("drift", st.drift_sd)):
                    sd_v = paste_back(sd, pair, img, kind="drift", to_source_units=True, fill=np.nan)
                    write_nifti(sd_v, rf.file(f"lesions/{name}/predicted_{what}_sd.nii.gz"))
                    extra[f"predicted_{what}_sd"] = f"lesions/{name}/predicted_{what}_sd.nii.gz"
                    extra[f"mean_{what}_sd_in_box"] = float(np.mean(sd))
                    if what in scales:
                        cal_v = paste_back(sd * scales[what], pair, img, kind="drift", to_source_units=True,
                                           fill=np.nan)  # fmt: skip
                        write_nifti(cal_v, rf.file(f"lesions/{name}/predicted_{what}_sd_calibrated.nii.gz"))
                        extra[f"predicted_{what}_sd_calibrated"] = (
                            f"lesions/{name}/predicted_{what}_sd_calibrated.nii.gz"
                        )
            post_v = paste_back(p_post, pair, img, kind="image", to_source_units=True, fill=np.nan)
            drift_v = paste_back(p_drift, pair, img, kind="drift", to_source_units=True, fill=np.nan)
            write_nifti(post_v, rf.file(f"lesions/{name}/predicted_post.nii.gz"))
            write_nifti(drift_v, rf.file(f"lesions/{name}/predicted_drift.nii.gz"))
            mid = int(np.argmax(pair.pre_mask.sum(axis=(1, 2))))
            fig = _overview(
                pair.pre[mid], p_post[mid], p_drift[mid],
                f"{les.key}, slice {int(pair.slice_index[mid])} ({model}, seed {seed}"
                + (f", mean of {samples}" if samples else "") + ")",
            )  # fmt: skip
            png = rf.save_figure(fig, f"{name}_overview")
            rf.file(f"lesions/{name}/overview.png").write_bytes(png)
            area_pre = int(pair.pre_mask.sum())
            rows.append({
                "patient": les.patient_id, "lesion": les.lesion_id, "slices": len(pair),
                "box": "x".join(str(v) for v in pair.box),
                "mean_drift_in_gtv": float(p_drift[pair.pre_mask].mean()) if area_pre else float("nan"),
                "predicted_post": f"lesions/{name}/predicted_post.nii.gz",
                "predicted_drift": f"lesions/{name}/predicted_drift.nii.gz",
                **extra,
            })  # fmt: skip
            sec.figure(png, caption=f"{les.key}: the largest GTV slice of the box")
        if not rows:
            raise InputError(
                f"no lesion with a {FIRST_TIMEPOINT} row to predict", path=manifest, fix="add mri1 rows"
            )
        rf.write_csv("results/predictions.csv", rows)
        sec.text(
            f"{len(rows)} lesions predicted with the saved model '{model}' of {run}: every slice of each lesion's "
            "box (the first MRI's GTV box), pasted back onto the first MRI's grid in its intensity units "
            "(NIfTI, same affine; NaN outside the box). Drift = predicted post − first MRI. These are model "
            "outputs for review, not a validated forecast."
            + (
                f" Mean of {samples} DDIM samples (eta {eta:g}) with their per-voxel SD maps (*_sd.nii.gz, "
                "intensity units of the first MRI)"
                + (
                    f"; *_sd_calibrated.nii.gz multiply the SD by the run's sigma scales (post {scales['post']:.2f}, "
                    f"drift {scales['drift']:.2f}), fitted on validation lesions of its cross-validation."
                    if scales
                    else "; the run has no sigma scales, so the SD is uncalibrated."
                )
                if samples
                else ""
            )
        )
        sec.table(rows)
        if skipped:
            sec.note("Not predicted: " + "; ".join(skipped))
            print("not predicted: " + "; ".join(skipped))
    return target
