"""``adaptrt response explain``: CAM heatmaps of one lesion on its own image grid, and a boost sub-volume.

For one lesion and a trained :class:`~adaptrt.response.train.AutoencoderClassifier`, this module computes the
class activation maps (Grad-CAM, Grad-CAM++, pixel-wise CAM; see :mod:`adaptrt.response.cam`) of *every*
slice that holds the GTV, puts them back on the lesion's original image grid, and thresholds one of them
inside the GTV into a **boost sub-volume**: a dose-painting *candidate* for a physicist to review, written as
NIfTI and as an RTSTRUCT ROI on the lesion's DICOM series.

Steps (:func:`explain_lesion`)
------------------------------
1. The lesion is prepared as for the model's training (:func:`adaptrt.preprocess.prepare_lesion` with the
   training run's size, margin and normalisation) but with every GTV slice and no rotation, so the result
   is 3-D and each sample maps back onto its slice exactly. A later time point (``mri2``) is cut with the
   first MRI's box and slices (the same-box rule, :func:`adaptrt.response.study.prepare_later`).
2. ``P(responder)`` of the lesion is the mean of the probabilities of the *model's* slices (the run's
   ``n_slices``, the slices ``adaptrt response predict`` uses), so that ``explain`` and ``predict`` give
   one answer for one lesion; the mean over every GTV slice is reported as well.
3. Each CAM method gives a ``(n, 64, 64)`` map per slice (set to 0 outside the GTV at the 64×64
   resolution), which :func:`adaptrt.preprocess.paste_back` resamples (bilinear) onto the crop box of the
   original grid.
4. Every map is divided by its maximum over the **whole lesion** (all slices together), not slice by slice,
   so a slice with weak evidence stays weak. The boost is ``normalised boost_method CAM >= boost_threshold``
   intersected with the GTV; connected pieces (6-connected: voxels sharing a face) smaller than
   ``min_boost_voxels`` are dropped.

Which class is explained
------------------------
``target="neg"`` (class 0, non-responder) is the default for a boost: its map highlights the tissue whose
appearance pushes the model towards *non-response*, i.e. candidate radio-resistant tissue, which is where an
escalated dose could help. ``target="pos"`` (class 1, responder) shows the tissue that drives the prediction
of response instead (candidate radio-sensitive tissue): useful for review, not as a boost. When the model
finds no evidence for the explained class anywhere (the ReLU'd map is 0), the boost is empty; the files are
still written and ``explanation.json`` says so.

What this is and is not
-----------------------
The maps come from the model's 16×16 bottleneck, upsampled: their effective in-plane resolution is about
1/16 of the crop box (e.g. 2.5 mm for a 40 mm box), and they are 2-D maps stacked slice by slice. Values
just outside the GTV edge are non-zero where the bilinear resampling spreads the (GTV-masked) 64×64 map; the
boost itself is always inside the GTV. A CAM shows what the model uses, not where a tumour is resistant;
the boost is a research output for review, never a treatment target as such.

RTSTRUCT
--------
``boost_rtstruct.dcm`` holds two ROIs on the lesion's series: ``GTV_<lesion>`` (RTROIInterpretedType
``GTV``) and ``BOOST_<lesion>`` (``CONTROL``; see :data:`BOOST_INTERPRETED_TYPE`), where ``<lesion>`` is the
lesion id (the part of ``"P001/1"`` after the slash). The GTV ROI is the voxel GTV the boost was computed in
(rasterised from the source contours and traced again), so the two ROIs are consistent with each other; the
structure set's description marks the boost as a candidate for review. Colours: GTV red, boost magenta.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..cohort import FIRST_TIMEPOINT
from ..config import from_dict, to_jsonable
from ..errors import InputError
from ..io.atomic import atomic_dir, check_writable

# paste_back lives in preprocess (the drift study needs it too; no study imports another); re-exported here
from ..preprocess import LesionSlices, PreprocessConfig, paste_back, sample_like
from ..types import Volume
from .cam import CamMethod
from .train import BOTTLENECK_SIZE, IMAGE_SIZE, AutoencoderClassifier

if TYPE_CHECKING:
    from ..io.dicom import DicomSeries

__all__ = [
    "BOOST_INTERPRETED_TYPE",
    "CAM_FILE_TOKENS",
    "ExplainConfig",
    "LesionExplanation",
    "explain_from_manifest",
    "explain_lesion",
    "paste_back",
    "resolve_model",
    "write_explanation",
]

#: RTROIInterpretedType of the boost ROI. DICOM PS3.3 C.8.8.8.1 defines, among others, GTV, CTV and PTV
#: (ICRU 50 target volumes), DOSE_REGION ("ROI to be used as a dose reference") and CONTROL ("ROI to be used
#: in control of dose optimization and calculation"). A CAM boost is not an ICRU target volume and not a
#: prescription reference: it is a candidate sub-volume a physicist may use as an optimisation structure for
#: dose painting, which is what CONTROL denotes. Calling it GTV/CTV/PTV would let a planning system treat an
#: unreviewed model output as a clinical target.
BOOST_INTERPRETED_TYPE = "CONTROL"

#: File-name token of each CAM method ("+" is awkward in URLs and shells).
CAM_FILE_TOKENS: Mapping[str, str] = MappingProxyType(
    {"gradcam": "gradcam", "gradcam++": "gradcampp", "pixelwise": "pixelwise"}
)

_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "pixelwise")
#: The model ``explain`` uses in a run folder by default: the final (deployment) model, the one ``predict``
#: uses; the trial-0 network (trained on ~80 % of the lesions) only when a run has no final model.
_DEFAULT_MODEL = Path("models") / "final_cam.pt"
_TRIAL_MODEL = Path("models") / "cam_trial00.pt"
_GTV_COLOUR = (255, 0, 0)
# magenta is not in the jet colour map of the CAM overlays, so the boost outline stays visible on them
_BOOST_COLOUR = (255, 0, 255)
# 6-connectivity: voxels sharing a face belong to one piece of the boost.
_FACES = ndimage.generate_binary_structure(3, 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _bad(name: str, requirement: str, value: Any) -> InputError:
    return InputError(
        f"The {name!r} parameter of ExplainConfig must be {requirement}. Got {value!r} instead", field=name
    )


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ExplainConfig:
    """Settings of :func:`explain_lesion`; validated on construction (an :class:`InputError` names the field).

    Attributes
    ----------
    methods
        CAM methods to compute, distinct, from ``"gradcam"``, ``"gradcam++"``, ``"pixelwise"``.
    target
        The class explained: ``"neg"`` (class 0, non-responder; the default, whose map marks candidate
        radio-resistant tissue, where a boost makes sense) or ``"pos"`` (class 1, responder). See the module
        docstring.
    boost_method
        The method whose map defines the boost; must be one of ``methods``. Pixel-wise CAM (eq. 5 of the
        paper) weights each position by its own gradient, so it localises best.
    boost_threshold
        In (0, 1]: the boost holds the GTV voxels where the boost method's CAM is at least this fraction of
        its maximum over the whole lesion (all slices).
    min_boost_voxels
        Int >= 1: connected pieces of the boost (6-connected: voxels sharing a face) with fewer voxels are
        dropped; 1 keeps everything.
    """

    methods: tuple[str, ...] = _METHODS
    target: Literal["pos", "neg"] = "neg"
    boost_method: str = "pixelwise"
    boost_threshold: float = 0.5
    min_boost_voxels: int = 1

    def __post_init__(self) -> None:
        m = self.methods
        if (
            not isinstance(m, tuple | list)
            or len(m) == 0
            or not all(isinstance(x, str) and x in _METHODS for x in m)
            or len(set(m)) != len(m)
        ):
            raise _bad("methods", f"a non-empty tuple of distinct methods from {list(_METHODS)}", m)
        if self.target not in ("pos", "neg"):
            raise _bad("target", "'pos' (responder) or 'neg' (non-responder)", self.target)
        if not (isinstance(self.boost_method, str) and self.boost_method in m):
            raise _bad("boost_method", f"one of the methods computed ({list(m)})", self.boost_method)
        t = self.boost_threshold
        if not (_is_real(t) and math.isfinite(t) and 0.0 < t <= 1.0):
            raise _bad("boost_threshold", "a number in (0, 1] (a fraction of the CAM's maximum)", t)
        if not (_is_int(self.min_boost_voxels) and self.min_boost_voxels >= 1):
            raise _bad("min_boost_voxels", "an int >= 1", self.min_boost_voxels)
        object.__setattr__(self, "methods", tuple(m))
        object.__setattr__(self, "boost_threshold", float(t))
        object.__setattr__(self, "min_boost_voxels", int(self.min_boost_voxels))

    @property
    def target_class(self) -> int:
        """The class index explained: 1 for ``"pos"``, 0 for ``"neg"``."""
        return 1 if self.target == "pos" else 0


# ---------------------------------------------------------------------------------------------- result
@dataclass(frozen=True, eq=False)
class LesionExplanation:
    """The CAMs and the boost of one lesion (see :func:`explain_lesion`).

    Attributes
    ----------
    probability
        ``P(responder)``: the mean over the lesion's slices of the model's probability of class 1.
    cams
        Method -> float32 Volume on the original image grid: the raw CAM (>= 0, the scale of
        ``sum_k w_k A^k``), 0 outside the crop box and on slices without GTV.
    cams_normalised
        Method -> float32 Volume: ``cams[method] / max(cams[method])`` over the whole lesion, in [0, 1] with
        maximum 1; all zero when the CAM is all zero (never inverted).
    boost
        Boolean Volume on the image grid, inside the GTV (see :class:`ExplainConfig`).
    slices
        The samples used: every GTV slice, unrotated, ``n`` samples of 64×64.
    sample_cams
        Method -> ``(n, 64, 64)`` float32 CAM on the samples, divided by its maximum over all the samples
        (for the PNGs); 0 outside the GTV.
    sample_probabilities
        ``(n,)`` float64 ``P(responder)`` of each slice.
    config
        The settings used.
    preprocess
        The preprocessing used (the training run's, with ``n_slices`` = every GTV slice and ``angles_deg=(0,)``).
    model_slice_index
        The source slices whose mean probability is ``probability`` (the run's ``n_slices``, as in
        ``adaptrt response predict``).
    probability_all_slices
        The mean probability over every GTV slice (``sample_probabilities``).
    """

    probability: float
    cams: Mapping[str, Volume]
    cams_normalised: Mapping[str, Volume]
    boost: Volume
    slices: LesionSlices
    sample_cams: Mapping[str, NDArray[np.float32]]
    sample_probabilities: NDArray[np.float64]
    config: ExplainConfig
    preprocess: PreprocessConfig
    model_slice_index: tuple[int, ...] = ()
    probability_all_slices: float = math.nan

    def __post_init__(self) -> None:
        for name in ("cams", "cams_normalised", "sample_cams"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


# ---------------------------------------------------------------------------------------------- explain
def _check_preprocess(preprocess: Any) -> PreprocessConfig:
    if not isinstance(preprocess, PreprocessConfig):
        raise InputError(
            f"preprocess must be a PreprocessConfig, got {type(preprocess).__name__}",
            field="preprocess",
            fix="pass the PreprocessConfig the model was trained with (config.json of its run, key 'preprocess')",
        )
    if preprocess.size != IMAGE_SIZE or preprocess.bottleneck != BOTTLENECK_SIZE:
        raise InputError(
            f"the model takes {IMAGE_SIZE}×{IMAGE_SIZE} images with a {BOTTLENECK_SIZE}×{BOTTLENECK_SIZE} "
            f"bottleneck mask, but preprocess has size {preprocess.size} and bottleneck {preprocess.bottleneck}",
            field="preprocess",
            fix="use the preprocessing of the model's training run",
        )
    return preprocess


def _drop_small(mask: NDArray[np.bool_], min_voxels: int) -> NDArray[np.bool_]:
    if min_voxels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=_FACES)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return np.asarray(keep[labels])


def explain_lesion(
    model: AutoencoderClassifier,
    image: Volume,
    gtv: Volume,
    *,
    preprocess: PreprocessConfig,
    config: ExplainConfig | None = None,
    first: tuple[Volume, Volume] | None = None,
    fov_mm: float | None = None,
) -> LesionExplanation:
    """CAMs of every GTV slice of one lesion on its image grid, and the boost sub-volume.

    See the module docstring for the steps.

    Parameters
    ----------
    model
        A fitted (or loaded) autoencoder + classifier.
    image
        ``(z, y, x)`` MR image, spacing in mm.
    gtv
        ``(z, y, x)`` GTV mask on the image's grid (non-boolean: non-zero is inside).
    preprocess
        The preprocessing of the model's training (size, margin, normalisation are used; ``n_slices`` and
        ``angles_deg`` are replaced by every GTV slice and ``(0.0,)``). Size 64 and bottleneck 16.
    config
        What to explain and how to threshold; ``ExplainConfig()`` when None.
    first
        ``(image, gtv)`` of the lesion's first MRI when ``image`` is a later, co-registered time point: the
        later image is then cut with the first MRI's box and slices. None: ``image`` is the first MRI.
    fov_mm
        The run's fixed field of view in mm (``ResponseConfig.fov_mm``), or None (the GTV box).

    Returns
    -------
    LesionExplanation
        Probability, raw and normalised CAM volumes (float32, the image's grid), the boost (bool, inside
        the GTV), the samples and the per-sample maps.

    Raises
    ------
    InputError
        A lesion that cannot be preprocessed (see :func:`adaptrt.preprocess.exclusion_reason`), a
        preprocessing that does not fit the model, a bad config.
    NotFittedError
        The model is not fitted.
    """
    cfg = ExplainConfig() if config is None else config
    if not isinstance(cfg, ExplainConfig):
        raise InputError(f"config must be an ExplainConfig, got {type(cfg).__name__}", field="config")
    from .study import prepare_first, prepare_later

    base = _check_preprocess(preprocess)
    gtv_b = gtv if gtv.is_mask else gtv.with_array(gtv.array != 0)
    img1, gtv1 = (image, gtv_b) if first is None else first
    gtv1 = gtv1 if gtv1.is_mask else gtv1.with_array(gtv1.array != 0)
    n_gtv = int(np.count_nonzero(gtv1.array.any(axis=(1, 2))))
    # n_slices must be odd; asking for one more than there are selects them all (select_slices never
    # takes a slice without GTV)
    used = dataclasses.replace(base, n_slices=max(1, n_gtv + (1 - n_gtv % 2)), angles_deg=(0.0,))
    model_cfg = dataclasses.replace(base, angles_deg=(0.0,))
    slices = prepare_first(img1, gtv1, used, fov_mm=fov_mm)
    model_slices = prepare_first(img1, gtv1, model_cfg, fov_mm=fov_mm)
    if first is not None:
        slices = prepare_later(image, gtv_b, slices, used)
        model_slices = prepare_later(image, gtv_b, model_slices, model_cfg)
    per_slice = model.predict_proba(slices.image, slices.mask_bottleneck)
    p_model = model.predict_proba(model_slices.image, model_slices.mask_bottleneck)
    cams: dict[str, Volume] = {}
    cams_norm: dict[str, Volume] = {}
    sample_cams: dict[str, NDArray[np.float32]] = {}
    for method in cfg.methods:
        res = model.explain(
            slices.image,
            slices.mask_bottleneck,
            method=cast(CamMethod, method),
            target=cfg.target,
            upsample_mask=slices.mask,
        )
        raw = np.maximum(res.raw, 0.0).astype(np.float32)
        vol = paste_back(raw, slices, image, kind="image")
        # bilinear weights are non-negative, but float rounding must not create tiny negatives
        arr = np.maximum(vol.array, 0.0).astype(np.float32)
        cams[method] = vol.with_array(arr)
        peak = float(arr.max())
        cams_norm[method] = vol.with_array(
            (arr / peak).astype(np.float32) if peak > 0 else np.zeros_like(arr)
        )
        s_peak = float(raw.max())
        sample_cams[method] = (raw / s_peak).astype(np.float32) if s_peak > 0 else np.zeros_like(raw)
    boost = (cams_norm[cfg.boost_method].array >= cfg.boost_threshold) & gtv_b.array
    boost = _drop_small(boost, cfg.min_boost_voxels)
    return LesionExplanation(
        probability=float(np.mean(p_model)),
        cams=cams,
        cams_normalised=cams_norm,
        boost=gtv_b.with_array(boost),
        slices=slices,
        sample_cams=sample_cams,
        sample_probabilities=np.asarray(per_slice, dtype=np.float64),
        config=cfg,
        preprocess=used,
        model_slice_index=tuple(int(i) for i in np.unique(model_slices.slice_index)),
        probability_all_slices=float(np.mean(per_slice)),
    )


# ---------------------------------------------------------------------------------------------- writing
def _roi_tag(lesion_key: str) -> str:
    """The ROI-name suffix of a lesion: its lesion id (after the last '/'), or the whole key."""
    tag = lesion_key.strip().rsplit("/", 1)[-1].strip() or lesion_key.strip()
    return tag.replace("\\", "_")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _figure(expl: LesionExplanation, method: str, boost_samples: NDArray[np.bool_], title: str) -> Any:
    """One panel per GTV slice: image, CAM overlay, GTV (red) and boost (magenta) outlines."""
    from ..report.figures import plt

    s = expl.slices
    n = len(s)
    ncols = max(1, min(6, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.0 * ncols, 2.1 * nrows + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    cam = expl.sample_cams[method]
    for i, ax in enumerate(axes.ravel()[:n]):
        ax.imshow(s.image[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        im = ax.imshow(np.ma.masked_where(cam[i] <= 0, cam[i]), cmap="jet", vmin=0, vmax=1, alpha=0.5)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=5)
        for region, colour, width in ((s.mask[i], "red", 0.8), (boost_samples[i], "magenta", 1.2)):
            if region.any() and not region.all():
                ax.contour(region.astype(float), levels=[0.5], colors=colour, linewidths=width)
        empty = "" if np.any(cam[i] > 0) else "\nCAM all 0: no evidence for the class"
        ax.set_title(
            f"slice {int(s.slice_index[i])}  P={expl.sample_probabilities[i]:.2f}{empty}", fontsize=7
        )
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return fig


def _check_grid(volume: Volume, image: Volume, what: str, path: Path) -> None:
    diff = image.geometry_difference(volume)
    if diff is not None:
        raise InputError(
            f"the {what} is not on the image's grid: {' '.join(diff.split())}",
            path=path,
            field=what,
            fix="pass the image and GTV the explanation was computed from",
        )


def write_explanation(
    expl: LesionExplanation,
    out: str | os.PathLike[str],
    *,
    lesion_key: str,
    series: DicomSeries | None = None,
    image: Volume,
    gtv: Volume,
    overwrite: bool = False,
    uid_seed: str | None = None,
    model_file: str | os.PathLike[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write an explanation as a folder of NIfTI, PNG, RTSTRUCT and JSON files, atomically.

    Files (``<m>`` is the method's :data:`CAM_FILE_TOKENS` entry: ``gradcam``, ``gradcampp``, ``pixelwise``):

    * ``cam_<m>.nii.gz`` -- the raw CAM, float32, on the image grid;
    * ``cam_<m>_normalised.nii.gz`` -- divided by its lesion-wide maximum, in [0, 1];
    * ``boost.nii.gz`` -- the boost mask, uint8 0/1;
    * ``cam_<m>.png`` -- every GTV slice as the model saw it (64×64): image, CAM overlay (normalised over the
      lesion), GTV outline in red, boost outline in magenta;
    * ``boost_rtstruct.dcm`` (when ``series`` is given) -- an RT Structure Set on ``series`` with the ROIs
      ``GTV_<lesion>`` (type GTV) and ``BOOST_<lesion>`` (type :data:`BOOST_INTERPRETED_TYPE`); an empty
      boost gives an ROI without contours;
    * ``explanation.json`` -- probability, boost volume (mm³, fraction of the GTV, whether it is empty),
      threshold (normalised and raw), methods, target, the model file and its SHA-256, the settings.

    Parameters
    ----------
    expl
        From :func:`explain_lesion`.
    out
        The folder to create.
    lesion_key
        ``"patient_id/lesion_id"`` (or any label); the ROI names use the part after the last ``/``.
    series
        The lesion's DICOM image series (its volume on the image's grid), or None for no RTSTRUCT.
    image, gtv
        The image and GTV the explanation was computed from (for the geometry check and the GTV ROI).
    overwrite
        Replace an existing folder (only once the new one is complete).
    uid_seed
        Passed to :func:`adaptrt.io.rtstruct.write_rtstruct`: deterministic UIDs (and study date/time)
        when given; random UIDs and the current time when None.
    model_file
        The model file, recorded in the JSON.
    metadata
        Further JSON-serialisable entries for ``explanation.json`` (e.g. manifest, time point).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    InputError
        ``out`` exists and ``overwrite`` is False; the explanation, GTV or series is not on the image's grid;
        a lesion key that makes an invalid ROI name.
    """
    from ..io.nifti import write_nifti

    target = check_writable(out, overwrite=overwrite)
    _check_grid(gtv, image, "gtv", target)
    _check_grid(expl.boost, image, "boost", target)
    for method, vol in expl.cams.items():
        _check_grid(vol, image, f"cam of {method}", target)
    if series is not None:
        _check_grid(series.volume, image, "DICOM series", target)
    gtv_b = gtv if gtv.is_mask else gtv.with_array(gtv.array != 0)
    cfg = expl.config

    rois: list[Any] = []
    tag = _roi_tag(lesion_key)
    if series is not None:
        from ..io.rtstruct import Roi

        try:
            rois = [
                Roi(f"GTV_{tag}", gtv_b, color=_GTV_COLOUR, interpreted_type="GTV"),
                Roi(f"BOOST_{tag}", expl.boost, color=_BOOST_COLOUR, interpreted_type=BOOST_INTERPRETED_TYPE),
            ]
        except ValueError as exc:
            raise InputError(
                f"the lesion key {lesion_key!r} does not make a valid ROI name ({exc})",
                field="lesion_key",
                fix="use a shorter lesion id without control characters",
            ) from exc

    n_boost = int(np.count_nonzero(expl.boost.array))
    n_gtv = int(np.count_nonzero(gtv_b.array))
    voxel = image.voxel_volume_mm3
    peaks = {m: float(v.array.max()) for m, v in expl.cams.items()}
    empty = n_boost == 0
    note = (
        f"empty boost: no GTV voxel reaches {cfg.boost_threshold:g} of the {cfg.boost_method} CAM's maximum"
        + (
            f" (the model found no evidence for class {cfg.target_class} in this lesion)"
            if peaks[cfg.boost_method] == 0.0
            else ""
        )
        if empty
        else ""
    )
    files: dict[str, Any] = {"boost": "boost.nii.gz", "cams": {}}
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for method in cfg.methods:
            token = CAM_FILE_TOKENS[method]
            write_nifti(expl.cams[method], tmp / f"cam_{token}.nii.gz")
            write_nifti(expl.cams_normalised[method], tmp / f"cam_{token}_normalised.nii.gz")
            files["cams"][method] = {
                "raw": f"cam_{token}.nii.gz",
                "normalised": f"cam_{token}_normalised.nii.gz",
                "png": f"cam_{token}.png",
            }
        write_nifti(expl.boost, tmp / "boost.nii.gz")

        from ..report.figures import plt

        boost_samples = sample_like(expl.boost, expl.slices, kind="mask")
        for method in cfg.methods:
            title = (
                f"{lesion_key}: {method} CAM of class {cfg.target_class} ({cfg.target}), "
                f"P(responder) = {expl.probability:.3f}; GTV red, boost magenta"
            )
            fig = _figure(expl, method, boost_samples, title)
            try:
                fig.savefig(tmp / f"cam_{CAM_FILE_TOKENS[method]}.png", dpi=100)
            finally:
                plt.close(fig)

        rtstruct: dict[str, Any] | None = None
        if series is not None:
            from ..io.rtstruct import write_rtstruct

            description = (
                f"adaptrt CAM boost candidate for lesion {lesion_key}: {cfg.boost_method} CAM of class "
                f"{cfg.target_class} >= {cfg.boost_threshold:g} of its maximum, inside the GTV. For review by "
                "a physicist; not a clinical target."
            ).replace("\\", "/")
            write_rtstruct(
                rois,
                series,
                tmp / "boost_rtstruct.dcm",
                label="adaptrt boost",
                description=description,
                uid_seed=uid_seed,
            )
            files["rtstruct"] = "boost_rtstruct.dcm"
            rtstruct = {
                "file": "boost_rtstruct.dcm",
                "referenced_series_instance_uid": series.series_instance_uid,
                "rois": [{"name": r.name, "interpreted_type": r.interpreted_type} for r in rois],
            }

        model_info: dict[str, Any] | None = None
        if model_file is not None:
            mp = Path(model_file)
            model_info = {"path": str(mp.resolve()), "sha256": _sha256(mp) if mp.is_file() else None}
        record: dict[str, Any] = {
            "lesion": lesion_key,
            "probability_responder": expl.probability,
            "probability_slices": list(expl.model_slice_index),
            "probability_note": (
                f"mean over the model's slice(s) {list(expl.model_slice_index)} (the run's slices per "
                "lesion, as adaptrt response predict); CAMs and the boost cover every GTV slice"
            ),
            "probability_all_slices": expl.probability_all_slices,
            "probability_per_slice": expl.sample_probabilities.tolist(),
            "slices": expl.slices.slice_index.tolist(),
            "target": cfg.target,
            "target_class": cfg.target_class,
            "methods": list(cfg.methods),
            "cam_max_raw": peaks,
            "boost": {
                "method": cfg.boost_method,
                "threshold_normalised": cfg.boost_threshold,
                "threshold_raw": cfg.boost_threshold * peaks[cfg.boost_method],
                "min_voxels": cfg.min_boost_voxels,
                "connectivity": "6 (voxels sharing a face)",
                "n_voxels": n_boost,
                "volume_mm3": n_boost * voxel,
                "fraction_of_gtv": n_boost / n_gtv if n_gtv else None,
                "empty": empty,
                "note": note,
            },
            "gtv": {"n_voxels": n_gtv, "volume_mm3": n_gtv * voxel},
            "rtstruct": rtstruct,
            "model": model_info,
            "files": files,
            "explain_config": to_jsonable(cfg),
            "preprocess": to_jsonable(expl.preprocess),
            **(dict(metadata) if metadata else {}),
        }
        (tmp / "explanation.json").write_text(
            json.dumps(to_jsonable(record), indent=2, allow_nan=False) + "\n"
        )
    return target


# ---------------------------------------------------------------------------------------------- entry
def resolve_model(path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """The model file and the run's ``config.json`` (or None) for a run folder or a model file.

    Parameters
    ----------
    path
        A run folder of ``adaptrt response run`` (the model is the final model ``models/final_cam.pt``, the
        one ``adaptrt response predict`` uses; else ``models/cam_trial00.pt``; else the only
        ``models/*.pt``), or a model file (its run's ``config.json`` is looked for next to its ``models/``
        folder).

    Returns
    -------
    (Path, Path or None)
        The model file and the run's ``config.json`` when it exists.

    Raises
    ------
    InputError
        Nothing at ``path``, or a run folder without a (unique) model.
    """
    p = Path(path)
    if p.is_dir():
        model = p / _DEFAULT_MODEL
        if not model.is_file():
            model = p / _TRIAL_MODEL
        if not model.is_file():
            found = sorted((p / "models").glob("*.pt")) if (p / "models").is_dir() else []
            if len(found) != 1:
                raise InputError(
                    f"no model {_DEFAULT_MODEL} or {_TRIAL_MODEL} in the run folder"
                    + (f" and {len(found)} other .pt files in models/" if found else ""),
                    path=p,
                    field="model",
                    fix="point --run to the model file, or to a response run that trained the CAM model "
                    "(models 'cam')",
                )
            model = found[0]
        config = p / "config.json"
        return model, config if config.is_file() else None
    if not p.is_file():
        raise InputError(
            "model not found", path=p, field="model", fix="give a response run folder or its models/*.pt file"
        )
    config = p.parent.parent / "config.json" if p.parent.name == "models" else p.parent / "config.json"
    return p, config if config.is_file() else None


def _run_preprocess(config_json: Path) -> PreprocessConfig:
    try:
        data = json.loads(config_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"cannot be read as JSON ({exc})", path=config_json, fix="restore the run's config.json"
        ) from exc
    # a response run saves its ResponseConfig at the top level; the demo nests it under "response"
    owner = (
        data.get("response") if isinstance(data, dict) and isinstance(data.get("response"), dict) else data
    )
    section = owner.get("preprocess") if isinstance(owner, dict) else None
    if not isinstance(section, dict):
        raise InputError(
            "has no 'preprocess' settings, so the model's preprocessing is unknown",
            path=config_json,
            field="preprocess",
            fix="point to the run folder of `adaptrt response run` that trained the model, or pass preprocess",
        )
    try:
        return from_dict(PreprocessConfig, section, _where="preprocess")
    except InputError as exc:
        raise InputError(exc.problem, path=config_json, field=exc.field, fix=exc.fix) from exc


def _run_fov(config_json: Path | None) -> float | None:
    """The run's ``fov_mm`` (None when absent: older runs, or the first MRI's GTV box)."""
    if config_json is None:
        return None
    try:
        data = json.loads(config_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    owner = (
        data.get("response") if isinstance(data, dict) and isinstance(data.get("response"), dict) else data
    )
    value = owner.get("fov_mm") if isinstance(owner, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(f"fov_mm must be null or a positive number, got {value!r}", path=config_json)
    return float(value)


def _model_kind(model_file: Path) -> str:
    name = model_file.name
    if name.startswith("final_"):
        return "final model (fitted on all usable lesions; the model adaptrt response predict uses)"
    if name == _TRIAL_MODEL.name:
        return "trial-0 network (trained on about 80 % of the lesions; not the deployment model)"
    return "a model file given by the user"


def explain_from_manifest(
    model_path: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    lesion_key: str,
    out: str | os.PathLike[str],
    *,
    timepoint: str = "mri1",
    preprocess: PreprocessConfig | None = None,
    config: ExplainConfig | None = None,
    overwrite: bool = False,
    uid_seed: str | None = None,
) -> Path:
    """Explain one lesion of a manifest with a trained model and write the folder ``out``.

    The library entry of ``adaptrt response explain``.

    Parameters
    ----------
    model_path
        A response run folder or a model file (see :func:`resolve_model`).
    manifest
        The lesion manifest (``docs/manifest.md``).
    lesion_key
        ``"patient_id/lesion_id"``, e.g. ``"P001/1"``.
    out
        The folder to create (see :func:`write_explanation`).
    timepoint
        The time point whose image and GTV are explained (default ``"mri1"``, the image the model was
        trained on).
    preprocess
        The model's preprocessing. None: read from the run's ``config.json`` (key ``"preprocess"``), which
        :func:`adaptrt.response.run.run_response_study` writes; an explicit value takes precedence.
    config
        ``ExplainConfig()`` when None.
    overwrite
        Replace an existing ``out``.
    uid_seed
        Deterministic RTSTRUCT UIDs (see :func:`write_explanation`).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    InputError
        ``out`` exists; no model or no preprocessing settings; an unknown lesion key or time point (the
        message lists valid ones); an unreadable image or mask; a lesion that cannot be preprocessed.
    """
    from ..io.manifest import read_manifest

    cfg = ExplainConfig() if config is None else config
    target = check_writable(out, overwrite=overwrite)
    model_file, run_config = resolve_model(model_path)
    if preprocess is None:
        if run_config is None:
            raise InputError(
                "no config.json of the model's run was found, so its preprocessing is unknown",
                path=model_file,
                field="preprocess",
                fix="keep the model inside its run folder (RUN/models/*.pt next to RUN/config.json), or pass "
                "preprocess explicitly",
            )
        preprocess = _run_preprocess(run_config)
    _check_preprocess(preprocess)

    mpath = Path(manifest)
    cohort = read_manifest(mpath)
    lesions = {les.key: les for les in cohort.lesions}
    key = str(lesion_key).strip()
    if key not in lesions:
        keys = list(lesions)
        shown = ", ".join(repr(k) for k in keys[:5]) + (f", … ({len(keys)} in all)" if len(keys) > 5 else "")
        raise InputError(
            f"no lesion {key!r} in the manifest; its lesions are {shown}",
            path=mpath,
            field="lesion",
            fix="give the lesion as patient_id/lesion_id, e.g. " + (repr(keys[0]) if keys else "'P001/1'"),
        )
    lesion = lesions[key]
    if timepoint not in lesion.timepoints:
        raise InputError(
            f"lesion {key!r} has no time point {timepoint!r}; it has "
            + ", ".join(repr(t) for t in lesion.timepoints),
            path=mpath,
            field="timepoint",
            fix="choose one of the listed time points",
        )
    tp = lesion.timepoints[timepoint]
    model = AutoencoderClassifier.load(model_file)
    image = tp.load_image()
    gtv = tp.load_mask()
    first: tuple[Volume, Volume] | None = None
    if timepoint != FIRST_TIMEPOINT:
        if FIRST_TIMEPOINT not in lesion.timepoints:
            raise InputError(
                f"lesion {key!r} has no {FIRST_TIMEPOINT!r} row: a later time point is cut with the first "
                "MRI's box and slices",
                path=mpath,
                field="timepoint",
                fix=f"add the lesion's {FIRST_TIMEPOINT} image and GTV to the manifest",
            )
        tp1 = lesion.timepoints[FIRST_TIMEPOINT]
        first = (tp1.load_image(), tp1.load_mask())
    series = None
    if tp.image.kind == "dicom":
        from ..io.dicom import read_dicom_series

        series = read_dicom_series(tp.image.path)
    try:
        expl = explain_lesion(
            model, image, gtv, preprocess=preprocess, config=cfg, first=first, fov_mm=_run_fov(run_config)
        )
    except InputError as exc:
        if exc.path is not None:
            raise
        raise InputError(
            f"lesion {key} at {timepoint}: {exc.problem}",
            path=mpath,
            row=tp.row or None,
            field=exc.field,
            fix=exc.fix,
        ) from exc
    metadata = {
        "manifest": str(mpath.resolve()),
        "timepoint": timepoint,
        "image": str(tp.image.path),
        "mask": str(tp.mask.path),
        "roi": tp.mask.roi,
        "model_kind": _model_kind(model_file),
        "crop": "the first MRI's box and slices" if first is not None else "the first MRI's box",
    }
    return write_explanation(
        expl,
        target,
        lesion_key=key,
        series=series,
        image=image,
        gtv=gtv,
        overwrite=overwrite,
        uid_seed=uid_seed,
        model_file=model_file,
        metadata=metadata,
    )
