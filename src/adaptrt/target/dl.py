"""The deep-learning CTV of the target study: data, split, augmentation, one training loop, prediction, CTV.

Tran et al. 2025, Methods "Deep learning-driven approach for CTV generation", "Hyperparameter search and model
training details". The pieces, in order:

* :func:`make_sample` — one patient's baseline maps (default nADC, nFA, CNI, CCrI, nT1c, nFLAIR) min-max
  normalised over the brain to [0, 1] (0 outside the brain), cropped to the brain's bounding box and
  zero-padded to a multiple of 8 (what the four-stage U-Net takes); the target is the composite lesion
  (T2L ∪ CEL at baseline and at progression, :func:`adaptrt.target.compare.composite_lesion`). The
  baseline masks come along, cropped, for the RTOG / EORTC CTVs and the comparisons. Everything is scored
  on the crop: the brain, the lesion and every CTV lie inside it, so no voxel is lost.
* :func:`split_patients` — 67 / 16 / 18 % of patients (train / validation / test; the paper's numbers
  for 101 patients), stratified by treatment cohort, from a seed.
* :func:`draw_augmentation` / :func:`apply_augmentation` — random flips (each axis), a rotation in the axial
  plane, Gaussian noise, channel shuffling and channel dropping; the parameters are drawn from a seeded
  numpy generator separately from their application (so a run can be replayed).
* :func:`train_model` — one plain PyTorch loop: Ranger (RAdam + Lookahead, ``pytorch-optimizer``), batch 1 by
  default, every epoch validated; the kept model is the epoch with the highest mean validation Tversky
  coefficient (α 0.02, β 0.98) on thresholded predictions. CUDA when present (``device="auto"``).
* :func:`predict_probability`, :func:`dl_ctv` — the probability map and the DL CTV: voxels with probability
  ≥ 0.5 inside the brain, critical structures removed, then **the largest connected component**
  (6-connectivity, face neighbours) with its internal holes filled: one contiguous closed volume, as a CTV
  must be. The number of connected components of the thresholded prediction (before this step) is kept as
  the contiguity measure of the loss comparison.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from ..errors import InputError
from ..metrics.segmentation import TVERSKY_ALPHA, TVERSKY_BETA, pcc, sensitivity, specificity, tversky
from ..seeding import as_generator
from ..validation import bad_parameter, is_int, is_real
from .ctv import CTV
from .losses import LOSSES
from .unet3d import UNet3D, pad_shape

__all__ = [
    "DL_CHANNELS",
    "MODALITY_SETS",
    "AugmentConfig",
    "Augmentation",
    "DLConfig",
    "DLSample",
    "EpochRecord",
    "Split",
    "TrainedModel",
    "apply_augmentation",
    "contiguity",
    "dl_ctv",
    "draw_augmentation",
    "make_sample",
    "min_max",
    "predict_probability",
    "resolve_device",
    "split_patients",
    "train_model",
]

#: The paper's model inputs (baseline maps).
DL_CHANNELS: tuple[str, ...] = ("nADC", "nFA", "CNI", "CCrI", "nT1c", "nFLAIR")
#: The modality ablation (Fig. 2): anatomical; + diffusion; + MRSI; all six.
MODALITY_SETS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "anatomical": ("nFLAIR", "nT1c"),
        "anatomical+diffusion": ("nFLAIR", "nT1c", "nFA", "nADC"),
        "anatomical+MRSI": ("nFLAIR", "nT1c", "CNI", "CCrI"),
        "all": DL_CHANNELS,
    }
)
#: The paper's split: 67 / 16 / 18 patients of 101.
SPLIT_FRACTIONS: tuple[float, float, float] = (67 / 101, 16 / 101, 18 / 101)
_MASK_KEYS = ("cavity", "cel_baseline", "t2l_baseline", "cel_progression", "t2l_progression")


# ---------------------------------------------------------------------------------------------- data
def min_max(x: NDArray[np.float32], brain: NDArray[np.bool_]) -> NDArray[np.float32]:
    """``(x - min) / (max - min)`` over the brain voxels, clipped to [0, 1], 0 outside the brain (all 0 if flat)."""
    v = x[brain]
    out = np.zeros(x.shape, dtype=np.float32)
    if v.size == 0:
        return out
    lo, hi = float(v.min()), float(v.max())
    if hi > lo:
        out[brain] = np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    return out


@dataclass(frozen=True, eq=False)
class DLSample:
    """One patient, cropped to the brain's bounding box and padded (see the module docstring).

    Attributes
    ----------
    patient_id, treatment, ttp_months
        From the manifest.
    channels
        Names of the image's channels, in order.
    image
        ``float32 (C, Z, Y, X)``: min-max normalised maps, 0 outside the brain and in the padding.
    target
        ``bool (Z, Y, X)``: the composite lesion (empty for a patient without progression masks at predict).
    brain
        ``bool (Z, Y, X)``; False in the padding.
    masks
        The baseline / progression masks (``cavity``, ``cel_baseline``, ``t2l_baseline``, ``cel_progression``,
        ``t2l_progression``) on the same crop, for the standard CTVs and the comparisons.
    critical
        ``bool (Z, Y, X)`` critical structures, or None.
    spacing_mm
        ``(z, y, x)`` in mm.
    box
        ``((z0, z1), (y0, y1), (x0, x1))``: the crop in the full grid (``[z0:z1]`` etc.); the padded arrays
        extend past ``z1 - z0`` with zeros.
    full_shape
        The full grid ``(z, y, x)``.
    """

    patient_id: str
    treatment: str
    ttp_months: float
    channels: tuple[str, ...]
    image: NDArray[np.float32]
    target: NDArray[np.bool_]
    brain: NDArray[np.bool_]
    masks: Mapping[str, NDArray[np.bool_]]
    critical: NDArray[np.bool_] | None
    spacing_mm: tuple[float, float, float]
    box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    full_shape: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The padded crop ``(Z, Y, X)``."""
        return (int(self.brain.shape[0]), int(self.brain.shape[1]), int(self.brain.shape[2]))

    def paste(self, arr: NDArray[Any], fill: Any = 0) -> NDArray[Any]:
        """An array of the crop's shape pasted back onto the full grid (``fill`` elsewhere)."""
        out = np.full(self.full_shape, fill, dtype=arr.dtype)
        (z0, z1), (y0, y1), (x0, x1) = self.box
        out[z0:z1, y0:y1, x0:x1] = arr[: z1 - z0, : y1 - y0, : x1 - x0]
        return out

    def with_channels(self, channels: Sequence[str]) -> DLSample:
        """The same sample with a subset of its channels (the modality ablation)."""
        idx = []
        for c in channels:
            if c not in self.channels:
                raise InputError(
                    f"patient {self.patient_id}: the model input {c!r} is not among the sample's channels "
                    f"{', '.join(self.channels)}",
                    field=f"map_{c}",
                    fix=f"add map_{c} to the manifest",
                )
            idx.append(self.channels.index(c))
        return DLSample(
            self.patient_id,
            self.treatment,
            self.ttp_months,
            tuple(channels),
            np.ascontiguousarray(self.image[idx]),
            self.target,
            self.brain,
            self.masks,
            self.critical,
            self.spacing_mm,
            self.box,
            self.full_shape,
        )


def _bbox(mask: NDArray[np.bool_]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    idx = np.nonzero(mask)
    b = [(int(i.min()), int(i.max()) + 1) for i in idx]
    return (b[0], b[1], b[2])


def _crop(arr: NDArray[Any], box: Sequence[tuple[int, int]], shape: Sequence[int]) -> NDArray[Any]:
    (z0, z1), (y0, y1), (x0, x1) = box
    out = np.zeros((*arr.shape[:-3], *shape), dtype=arr.dtype)
    out[..., : z1 - z0, : y1 - y0, : x1 - x0] = arr[..., z0:z1, y0:y1, x0:x1]
    return out


def make_sample(vols: Any, channels: Sequence[str] = DL_CHANNELS, *, n_stages: int = 4) -> DLSample:
    """One patient's :class:`DLSample` from :class:`adaptrt.target.data.PatientVolumes`.

    Parameters
    ----------
    vols
        The patient's volumes (``maps``, ``brain``, lesion masks, ``critical``, ``spacing_mm``).
    channels
        The maps the model takes, in order.
    n_stages
        Of the U-Net: the crop is padded to a multiple of ``2 ** (n_stages - 1)``.

    Raises
    ------
    InputError
        When the patient lacks one of ``channels`` (the message names it).
    """
    missing = [c for c in channels if c not in vols.maps]
    if missing:
        raise InputError(
            f"patient {vols.patient_id} (manifest row {vols.row}) lacks the model input map(s) "
            f"{', '.join(missing)} (the model takes {', '.join(channels)})",
            field=f"map_{missing[0]}",
            fix=f"add the column(s) {', '.join('map_' + m for m in missing)} for this patient, or use a model "
            "trained on the maps the cohort has",
        )
    brain = np.asarray(vols.brain, dtype=bool)
    box = _bbox(brain)
    shape = pad_shape(tuple(b - a for a, b in box), n_stages)
    image = np.stack([min_max(np.asarray(vols.maps[c], dtype=np.float32), brain) for c in channels])
    masks = {k: _crop(np.asarray(getattr(vols, k), dtype=bool), box, shape) for k in _MASK_KEYS}
    target = (
        masks["t2l_baseline"] | masks["cel_baseline"] | masks["t2l_progression"] | masks["cel_progression"]
    )
    crit = None if vols.critical is None else _crop(np.asarray(vols.critical, dtype=bool), box, shape)
    sp = tuple(float(s) for s in vols.spacing_mm)
    return DLSample(
        patient_id=str(vols.patient_id),
        treatment=str(vols.treatment),
        ttp_months=float(vols.ttp_months),
        channels=tuple(channels),
        image=_crop(image, box, shape),
        target=target,
        brain=_crop(brain, box, shape),
        masks=MappingProxyType(masks),
        critical=crit,
        spacing_mm=(sp[0], sp[1], sp[2]),
        box=box,
        full_shape=(int(brain.shape[0]), int(brain.shape[1]), int(brain.shape[2])),
    )


@dataclass(frozen=True)
class Split:
    """Indices of the patients in each part of a split."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_patients(
    treatments: Sequence[str],
    seed: int | np.random.Generator,
    fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> Split:
    """Split patients into train / validation / test, stratified by treatment cohort.

    Each cohort's patients are shuffled and placed at evenly spread positions of one order (patient ``i`` of
    a cohort of ``n`` at ``(i + u) / n``, ``u`` a random offset), so that every prefix of the order holds the
    cohorts in their overall proportions; the first ``round(n * f_test)`` are the test patients, the next
    ``round(n * f_val)`` the validation patients, the rest the training patients.

    Raises
    ------
    InputError
        Fewer than 3 patients (each part needs one).
    """
    n = len(treatments)
    if n < 3:
        raise InputError(
            f"the deep-learning CTV needs at least 3 patients (train, validation, test), got {n}",
            fix="add patients with every model input map and progression masks",
        )
    rng = as_generator(seed)
    total = sum(fractions)
    n_test = max(1, round(n * fractions[2] / total))
    n_val = max(1, round(n * fractions[1] / total))
    n_test, n_val = min(n_test, n - 2), min(n_val, n - 1 - min(n_test, n - 2))
    keys = np.empty(n)
    for g in sorted(set(treatments)):
        idx = np.flatnonzero(np.asarray(treatments) == g)
        perm = rng.permutation(idx)
        keys[perm] = (np.arange(idx.size) + rng.random()) / idx.size
    order = np.lexsort((rng.random(n), keys))
    test = tuple(sorted(int(i) for i in order[:n_test]))
    val = tuple(sorted(int(i) for i in order[n_test : n_test + n_val]))
    train = tuple(sorted(int(i) for i in order[n_test + n_val :]))
    return Split(train, val, test)


# ---------------------------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation probabilities and ranges (each drawn per sample and epoch).

    Attributes
    ----------
    flip_p
        Probability of a flip along each axis.
    rotate_p, rotate_deg
        Probability of a rotation in the axial (y, x) plane, by an angle uniform in ±``rotate_deg``.
    noise_p, noise_sd
        Probability of additive Gaussian noise, of SD uniform in [0, ``noise_sd``] (images are in [0, 1]).
    shuffle_p
        Probability of a random permutation of the input channels.
    drop_p
        Probability of zeroing one input channel.
    """

    flip_p: float = 0.5
    rotate_p: float = 0.5
    rotate_deg: float = 15.0
    noise_p: float = 0.5
    noise_sd: float = 0.05
    shuffle_p: float = 0.1
    drop_p: float = 0.2

    def __post_init__(self) -> None:
        for f in ("flip_p", "rotate_p", "noise_p", "shuffle_p", "drop_p"):
            v = getattr(self, f)
            if not (is_real(v) and 0 <= v <= 1):
                raise bad_parameter("AugmentConfig", f, "a probability in [0, 1]", v)
        for f in ("rotate_deg", "noise_sd"):
            v = getattr(self, f)
            if not (is_real(v) and v >= 0):
                raise bad_parameter("AugmentConfig", f, "a number >= 0", v)


@dataclass(frozen=True)
class Augmentation:
    """One draw of augmentation parameters (applied by :func:`apply_augmentation`)."""

    flips: tuple[bool, bool, bool]
    angle_deg: float
    noise_sd: float
    noise_seed: int
    permutation: tuple[int, ...]
    drop: int  # channel zeroed, -1: none


def draw_augmentation(rng: np.random.Generator, n_channels: int, cfg: AugmentConfig) -> Augmentation:
    """Draw one sample's augmentation parameters from ``rng``."""
    u = rng.random(8)
    flips = (bool(u[0] < cfg.flip_p), bool(u[1] < cfg.flip_p), bool(u[2] < cfg.flip_p))
    angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if u[3] < cfg.rotate_p else 0.0
    sd = float(rng.uniform(0.0, cfg.noise_sd)) if u[4] < cfg.noise_p else 0.0
    perm = (
        tuple(int(i) for i in rng.permutation(n_channels))
        if u[5] < cfg.shuffle_p
        else tuple(range(n_channels))
    )
    drop = int(rng.integers(n_channels)) if (u[6] < cfg.drop_p and n_channels > 1) else -1
    return Augmentation(flips, angle, sd, int(rng.integers(2**31)), perm, drop)


def apply_augmentation(
    aug: Augmentation, image: Any, target: Any, brain: Any, spacing_mm: Sequence[float]
) -> tuple[Any, Any, Any]:
    """Apply ``aug`` to torch tensors ``image (C, Z, Y, X)``, ``target`` and ``brain`` ``(1, Z, Y, X)`` (float).

    The rotation is about the z axis in physical space (mm, so anisotropic voxels rotate correctly), with
    trilinear interpolation for the image and nearest neighbour for the masks; noise is added inside the
    brain only; a permutation and a dropped channel act on the image only.
    """
    import torch
    import torch.nn.functional as F

    dims = [i + 1 for i, f in enumerate(aug.flips) if f]
    if dims:
        image, target, brain = image.flip(dims), target.flip(dims), brain.flip(dims)
    if aug.angle_deg:
        z, y, x = image.shape[1:]
        hy, hx = y * float(spacing_mm[1]), x * float(spacing_mm[2])
        c, s = math.cos(math.radians(aug.angle_deg)), math.sin(math.radians(aug.angle_deg))
        # normalised output coords (x, y, z) -> input coords: a rotation in mm, rescaled per axis
        theta = torch.tensor(
            [[c, -s * hy / hx, 0.0, 0.0], [s * hx / hy, c, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            dtype=image.dtype,
            device=image.device,
        )[None]
        grid = F.affine_grid(theta, [1, 1, z, y, x], align_corners=False)
        image = F.grid_sample(image[None], grid, mode="bilinear", align_corners=False)[0]
        target = F.grid_sample(target[None], grid, mode="nearest", align_corners=False)[0]
        brain = F.grid_sample(brain[None], grid, mode="nearest", align_corners=False)[0]
    if aug.noise_sd:
        g = torch.Generator(device="cpu").manual_seed(aug.noise_seed)
        noise = torch.randn(image.shape, generator=g, dtype=image.dtype).to(image.device)
        image = image + aug.noise_sd * noise * brain
    if aug.permutation != tuple(range(image.shape[0])):
        image = image[list(aug.permutation)]
    if aug.drop >= 0:
        image = image.clone()
        image[aug.drop] = 0
    return image, target, brain


# ---------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class DLConfig:
    """Settings of one deep-learning CTV model (the paper's final model: the defaults but ``epochs``).

    Attributes
    ----------
    channels
        Input maps, in order.
    base_features, n_stages
        Of :class:`~adaptrt.target.unet3d.UNet3D` (paper: 48, 4).
    learning_rate, batch_size
        Of Ranger (paper: 5e-5, 1).
    epochs
        Training epochs (the paper's model converged at epoch 123).
    loss
        One of :data:`adaptrt.target.losses.LOSSES`; ``tversky_alpha`` / ``tversky_beta`` for ``"tversky"``.
    select_alpha, select_beta
        The validation Tversky coefficient of the model selection (0.02, 0.98).
    threshold
        Probability at and above which a voxel is predicted.
    augment
        :class:`AugmentConfig`.
    seed
        Initial weights, batch order, augmentation.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    """

    channels: tuple[str, ...] = DL_CHANNELS
    base_features: int = 48
    n_stages: int = 4
    learning_rate: float = 5e-5
    batch_size: int = 1
    epochs: int = 150
    loss: str = "pcc"
    tversky_alpha: float = TVERSKY_ALPHA
    tversky_beta: float = TVERSKY_BETA
    select_alpha: float = TVERSKY_ALPHA
    select_beta: float = TVERSKY_BETA
    threshold: float = 0.5
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        name = "DLConfig"
        object.__setattr__(self, "channels", tuple(self.channels))
        if not self.channels or len(set(self.channels)) != len(self.channels):
            raise bad_parameter(name, "channels", "distinct map names", self.channels)
        for f, lo in (("base_features", 1), ("n_stages", 2), ("batch_size", 1), ("epochs", 1), ("seed", 0)):
            v = getattr(self, f)
            if not (is_int(v) and v >= lo):
                raise bad_parameter(name, f, f"an int >= {lo}", v)
        if not (is_real(self.learning_rate) and 0 < self.learning_rate < 1):
            raise bad_parameter(name, "learning_rate", "a number in (0, 1)", self.learning_rate)
        if self.loss not in LOSSES:
            raise bad_parameter(name, "loss", f"one of {', '.join(LOSSES)}", self.loss)
        for f in ("tversky_alpha", "tversky_beta", "select_alpha", "select_beta"):
            v = getattr(self, f)
            if not (is_real(v) and 0 <= v <= 1):
                raise bad_parameter(name, f, "a weight in [0, 1]", v)
        if not (is_real(self.threshold) and 0 < self.threshold < 1):
            raise bad_parameter(name, "threshold", "a probability in (0, 1)", self.threshold)
        if not isinstance(self.augment, AugmentConfig):
            raise bad_parameter(name, "augment", "an AugmentConfig", self.augment)
        if not (
            isinstance(self.device, str)
            and (self.device in ("auto", "cpu") or self.device.startswith("cuda"))
        ):
            raise bad_parameter(name, "device", "'auto', 'cpu' or 'cuda[:N]'", self.device)


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean training loss and the validation metrics of thresholded predictions (means)."""

    epoch: int
    train_loss: float
    val_tversky: float
    val_pcc: float
    val_sensitivity: float
    val_specificity: float
    seconds: float


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A trained and selected model.

    Attributes
    ----------
    config
        Its :class:`DLConfig`.
    state
        The selected epoch's weights (CPU tensors).
    best_epoch
        The selected epoch (1-based): highest validation Tversky (earliest on ties).
    history
        One :class:`EpochRecord` per epoch.
    train_ids, val_ids
        The patients it was trained and selected on.
    """

    config: DLConfig
    state: Mapping[str, Any]
    best_epoch: int
    history: tuple[EpochRecord, ...]
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]

    @property
    def best(self) -> EpochRecord:
        """The selected epoch's record."""
        return self.history[self.best_epoch - 1]

    def network(self, device: str = "cpu") -> Any:
        """A :class:`UNet3D` with the selected weights, in eval mode on ``device``."""
        net = UNet3D(len(self.config.channels), self.config.base_features, self.config.n_stages)
        net.load_state_dict(dict(self.state))
        return net.to(resolve_device(device)).eval()


def resolve_device(device: str) -> Any:
    """``torch.device`` of ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda[:N]"``.

    Raises
    ------
    InputError
        CUDA asked for but not available.
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"device {device!r} asked for, but CUDA is not available", field="--device", fix="use cpu"
        )
    return torch.device(device)


def _tensors(s: DLSample, device: Any) -> tuple[Any, Any, Any]:
    import torch

    x = torch.from_numpy(s.image).to(device)
    t = torch.from_numpy(s.target.astype(np.float32))[None].to(device)
    b = torch.from_numpy(s.brain.astype(np.float32))[None].to(device)
    return x, t, b


def _collate(items: Sequence[tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
    """Stack ``(C, Z, Y, X)`` tensors of different crops, zero-padded to the largest (a multiple of 8)."""
    import torch
    import torch.nn.functional as F

    shape = [max(int(it[0].shape[d]) for it in items) for d in (1, 2, 3)]

    def pad(a: Any) -> Any:
        p = [0, shape[2] - a.shape[3], 0, shape[1] - a.shape[2], 0, shape[0] - a.shape[1]]
        return F.pad(a, p)

    return tuple(torch.stack([pad(it[k]) for it in items]) for k in range(3))  # type: ignore[return-value]


def predict_probability(net: Any, sample: DLSample, device: Any = None) -> NDArray[np.float32]:
    """Probability of the composite lesion per voxel, ``float32 (Z, Y, X)`` on the sample's crop."""
    import torch

    dev = device if device is not None else next(net.parameters()).device
    with torch.inference_mode():
        x = torch.from_numpy(sample.image)[None].to(dev)
        prob = torch.sigmoid(net(x))[0, 0]
    return np.asarray(prob.float().cpu().numpy(), dtype=np.float32)


def _validate(
    net: Any, samples: Sequence[DLSample], device: Any, cfg: DLConfig
) -> tuple[float, float, float, float]:
    tv, pc, se, sp = [], [], [], []
    for s in samples:
        pred = (predict_probability(net, s, device) >= cfg.threshold) & s.brain
        tv.append(tversky(pred, s.target, cfg.select_alpha, cfg.select_beta))
        pc.append(pcc(pred, s.target, s.brain))
        se.append(sensitivity(pred, s.target))
        sp.append(specificity(pred, s.target, s.brain))
    return (float(np.mean(tv)), float(np.mean(pc)), float(np.nanmean(se)), float(np.nanmean(sp)))


def train_model(
    train: Sequence[DLSample],
    val: Sequence[DLSample],
    config: DLConfig,
    *,
    progress: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainedModel:
    """Train a U-Net on ``train`` and keep the epoch with the best mean validation Tversky on ``val``.

    Parameters
    ----------
    train, val
        Samples with ``config.channels`` (the test patients are never passed here).
    config
        The model's settings.
    progress
        Show a progress bar over epochs.
    on_epoch
        Called after each epoch (e.g. an Optuna trial's pruning hook; it may raise to stop).

    Returns
    -------
    TrainedModel
    """
    from pytorch_optimizer import Ranger
    from tqdm.auto import tqdm

    from ..seeding import seed_torch
    from .losses import make_loss

    if not train or not val:
        raise ValueError("train_model needs at least one training and one validation sample")
    for s in (*train, *val):
        if s.channels != config.channels:
            raise ValueError(
                f"sample {s.patient_id} has channels {s.channels}, the model takes {config.channels}"
            )
    device = resolve_device(config.device)
    seed_torch(config.seed)
    rng = as_generator(config.seed)
    net = UNet3D(len(config.channels), config.base_features, config.n_stages).to(device)
    opt = Ranger(net.parameters(), lr=config.learning_rate)
    loss_fn = make_loss(config.loss, alpha=config.tversky_alpha, beta=config.tversky_beta)
    data = [_tensors(s, device) for s in train]
    history: list[EpochRecord] = []
    best, best_state = -math.inf, None
    for epoch in tqdm(range(1, config.epochs + 1), desc="3D U-Net", unit="epoch", disable=not progress):
        t0 = time.perf_counter()
        net.train()
        order = rng.permutation(len(data))
        losses = []
        for i in range(0, len(order), config.batch_size):
            batch = []
            for j in order[i : i + config.batch_size]:
                aug = draw_augmentation(rng, len(config.channels), config.augment)
                x_j, t_j, b_j = data[j]
                batch.append(apply_augmentation(aug, x_j, t_j, b_j, train[j].spacing_mm))
            x, t, b = _collate(batch)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), t, b)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        tv, pc, se, sp = _validate(net, val, device, config)
        rec = EpochRecord(epoch, float(np.mean(losses)), tv, pc, se, sp, time.perf_counter() - t0)
        history.append(rec)
        if tv > best:
            best = tv
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        if on_epoch is not None:
            on_epoch(rec)
    assert best_state is not None  # at least one epoch ran
    best_epoch = max(history, key=lambda r: (r.val_tversky, -r.epoch)).epoch
    return TrainedModel(
        config=copy.copy(config),
        state=MappingProxyType(best_state),
        best_epoch=best_epoch,
        history=tuple(history),
        train_ids=tuple(s.patient_id for s in train),
        val_ids=tuple(s.patient_id for s in val),
    )


# ---------------------------------------------------------------------------------------------- the CTV
def contiguity(mask: NDArray[np.bool_]) -> int:
    """Number of connected components (6-connectivity) of a mask: 1 is one contiguous volume, 0 empty."""
    _, n = ndimage.label(mask)
    return int(n)


def dl_ctv(
    probability: NDArray[np.floating[Any]],
    brain: NDArray[np.bool_],
    spacing_mm: Sequence[float],
    *,
    threshold: float = 0.5,
    critical: NDArray[np.bool_] | None = None,
    name: str = "DL",
) -> tuple[CTV, int]:
    """The DL CTV and the number of components of the thresholded prediction.

    ``probability >= threshold`` inside the brain, critical structures removed, then the largest connected
    component (6-connectivity) with internal holes filled (and clipped again to the brain minus the critical
    structures). An empty prediction gives an empty CTV.

    Returns
    -------
    (CTV, n_components)
    """
    p = np.asarray(probability)
    b = np.asarray(brain, dtype=bool)
    allowed = b if critical is None else (b & ~np.asarray(critical, dtype=bool))
    raw = (p >= threshold) & allowed
    labels, n = ndimage.label(raw)
    if n:
        sizes = np.bincount(labels.ravel())[1:]
        mask = labels == (int(np.argmax(sizes)) + 1)
        mask = ndimage.binary_fill_holes(mask) & allowed
    else:
        mask = np.zeros(raw.shape, dtype=bool)
    ctv = CTV(
        name,
        np.asarray(mask, dtype=bool),
        (float(spacing_mm[0]), float(spacing_mm[1]), float(spacing_mm[2])),
        f"3D U-Net probability >= {threshold:g} in the brain, critical structures removed, largest connected "
        "component (6-connectivity) with holes filled",
        critical_removed=("critical",) if critical is not None and bool(np.any(critical)) else (),
    )
    return ctv, int(n)
