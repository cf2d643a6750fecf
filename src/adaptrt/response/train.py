"""Training of Part I's autoencoder + classifier, wrapped as a scikit-learn-like estimator.

What the paper says (Methods, "AI model development and training") and what this module adds
-----------------------------------------------------------------------------------------------
* Joint training of the autoencoder and the classifier, batch size 64, the two losses weighted equally
  (:func:`adaptrt.response.losses.joint_loss`); AdamW with learning rate 5e-4, weight decay 1e-4, betas
  (0.9, 0.999), eps 1e-8. All in :class:`TrainConfig`.
* The alternative the paper tried and set aside, ``mode="sequential"``: the autoencoder first (the
  reconstruction loss, encoder and decoder), then the encoder frozen and the classifier trained (the
  classifier loss, classifier only). The lengths of the two phases are not stated: ``epochs`` and
  ``classifier_epochs`` (default: ``epochs``); each phase has a fresh optimizer.
* Accuracy and loss tracked on the training and validation sets at every epoch (:attr:`history_`); the
  validation set is evaluated with dropout off and batch norm on its running statistics.
* The number of epochs is **not** stated in the paper; 150 is ours.

Details the paper leaves open, chosen here
    Mini-batches are drawn by a random permutation of the samples at every epoch; the last batch is smaller
    (Keras' behaviour), except that a last batch of one sample is skipped for that epoch (batch norm cannot
    train on one sample; the permutation differs at the next epoch). Training loss and accuracy of an
    epoch are the averages over its batches in training mode, weighted by batch size (what Keras reports).
    In the sequential mode's first phase the classifier is kept in eval mode (it is not trained: its batch
    norm statistics and dropout are left alone) and its loss is reported as is.

Reproducibility
    An integer ``seed`` fixes everything drawn at random: the initial weights (a local
    :class:`torch.Generator`), the order of the mini-batches (another local generator) and the dropout
    masks. Dropout draws from torch's global generator, so :meth:`AutoencoderClassifier.fit` runs inside
    :func:`torch.random.fork_rng` with that generator seeded from ``seed``: the caller's global random state
    is the same before and after ``fit`` (not safe against other threads using torch's global generator at
    the same time). On the CPU, the same seed gives bitwise identical weights for the same torch build and
    number of threads (the caller's ``torch.set_num_threads``; a different count may change the order of
    floating-point reductions). On CUDA, max pooling and nearest upsampling have non-deterministic
    backward passes: runs differ in the last bits unless the caller enables
    ``torch.use_deterministic_algorithms(True)`` (and sets ``CUBLAS_WORKSPACE_CONFIG``); this module does
    not change that global setting.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn
from tqdm.auto import tqdm

from ..config import from_dict
from ..errors import InputError, NotFittedError
from ..io.atomic import atomic_file
from ..seeding import spawn
from ..validation import bad_parameter
from ..validation import is_int as _is_int
from ..validation import is_real as _is_real
from .autoencoder import AutoencoderClassifierNet
from .cam import CamMethod, CamResult, class_activation_map
from .losses import LossTerms, joint_loss

__all__ = [
    "BOTTLENECK_SIZE",
    "IMAGE_SIZE",
    "PAPER",
    "QUICK",
    "AutoencoderClassifier",
    "TrainConfig",
    "TrainMode",
    "resolve_device",
]

TrainMode: TypeAlias = Literal["joint", "sequential"]
_MODES: tuple[str, ...] = ("joint", "sequential")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Input side in pixels and bottleneck side (the paper's 64×64×1 and 16×16×5).
IMAGE_SIZE: int = 64
BOTTLENECK_SIZE: int = IMAGE_SIZE // 4
_FORMAT = "adaptrt.response.AutoencoderClassifier"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :class:`AutoencoderClassifier`; validated on construction.

    The defaults are the paper's values (:data:`PAPER`), except ``epochs`` (not stated; 150 is ours) and
    ``width`` (not stated; 16 is ours). :data:`QUICK` is a short run for demos and tests.

    Attributes
    ----------
    epochs
        Epochs of joint training, or of the autoencoder phase in sequential mode (int >= 1).
    batch_size
        Samples per mini-batch (int >= 2: batch norm needs two samples in training); the paper's 64.
    lr
        AdamW learning rate (> 0); the paper's 5e-4.
    weight_decay
        AdamW decoupled weight decay (>= 0); the paper's 1e-4.
    betas
        AdamW ``(beta1, beta2)``, each in [0, 1); the paper's (0.9, 0.999).
    eps
        AdamW epsilon (> 0); the paper's 1e-8.
    width
        Channels of the first encoder (and first decoder) convolution (int >= 1); see
        :class:`~adaptrt.response.autoencoder.AutoencoderClassifierNet`.
    dropout
        Dropout rate of the classifier, in [0, 1); the paper's 0.1.
    mode
        ``"joint"`` (the paper's): both losses, summed, every epoch. ``"sequential"``: the autoencoder
        for ``epochs`` epochs, then the encoder frozen and the classifier trained for ``classifier_epochs``.
    classifier_epochs
        Epochs of the classifier phase in sequential mode (int >= 0); None means ``epochs``. Must be None in
        joint mode.
    device
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    """

    epochs: int = 150
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    width: int = 16
    dropout: float = 0.1
    mode: TrainMode = "joint"
    classifier_epochs: int | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if not (_is_int(self.epochs) and self.epochs >= 1):
            raise bad_parameter("TrainConfig", "epochs", "an int >= 1", self.epochs)
        if not (_is_int(self.batch_size) and self.batch_size >= 2):
            raise bad_parameter(
                "TrainConfig", "batch_size", "an int >= 2 (batch norm needs two samples)", self.batch_size
            )
        if not (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise bad_parameter("TrainConfig", "lr", "a finite number > 0", self.lr)
        if not (_is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise bad_parameter("TrainConfig", "weight_decay", "a finite number >= 0", self.weight_decay)
        b = self.betas
        if not (
            isinstance(b, tuple | list) and len(b) == 2 and all(_is_real(v) and 0.0 <= v < 1.0 for v in b)
        ):
            raise bad_parameter("TrainConfig", "betas", "two numbers (beta1, beta2), each in [0, 1)", b)
        if not (_is_real(self.eps) and math.isfinite(self.eps) and self.eps > 0):
            raise bad_parameter("TrainConfig", "eps", "a finite number > 0", self.eps)
        if not (_is_int(self.width) and self.width >= 1):
            raise bad_parameter("TrainConfig", "width", "an int >= 1", self.width)
        if not (_is_real(self.dropout) and 0.0 <= self.dropout < 1.0):
            raise bad_parameter("TrainConfig", "dropout", "a number in [0, 1)", self.dropout)
        if self.mode not in _MODES:
            raise bad_parameter("TrainConfig", "mode", f"one of {list(_MODES)}", self.mode)
        ce = self.classifier_epochs
        if ce is not None:
            if self.mode != "sequential":
                raise bad_parameter(
                    "TrainConfig",
                    "classifier_epochs",
                    "None in joint mode (it sets the sequential mode's phase)",
                    ce,
                )
            if not (_is_int(ce) and ce >= 0):
                raise bad_parameter("TrainConfig", "classifier_epochs", "None or an int >= 0", ce)
        if not (isinstance(self.device, str) and _DEVICE.match(self.device)):
            raise bad_parameter(
                "TrainConfig", "device", "'auto', 'cpu', 'cuda' or 'cuda:<index>'", self.device
            )
        for name in ("lr", "weight_decay", "eps", "dropout"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "betas", (float(b[0]), float(b[1])))

    @property
    def n_classifier_epochs(self) -> int:
        """Epochs of the classifier phase (0 in joint mode)."""
        if self.mode != "sequential":
            return 0
        return self.epochs if self.classifier_epochs is None else self.classifier_epochs


#: The paper's settings (epochs and width are ours; see :class:`TrainConfig`).
PAPER = TrainConfig()
#: A short run for the demo: 20 epochs of 414 samples took 40 s (1 thread) to 2 min (2 threads on a busy
#: machine) on a 2-core CPU.
QUICK = TrainConfig(epochs=20)


def resolve_device(device: str) -> torch.device:
    """The torch device for a :attr:`TrainConfig.device` string.

    Raises
    ------
    InputError
        CUDA asked for and not available.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                f"device {device!r} asked for, but torch sees no CUDA device",
                field="device",
                fix="use device='cpu' or 'auto', or install a CUDA build of torch",
            )
        dev = torch.device(device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"device {device!r} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)",
                field="device",
                fix="use 'cuda' or an index below the device count",
            )
        return dev
    return torch.device(device)


# ------------------------------------------------------------------------------------------ input checks
def _as_images(x: ArrayLike, name: str) -> NDArray[np.float32]:
    a = np.asarray(x)
    s = IMAGE_SIZE
    if a.ndim != 3 or a.shape[1:] != (s, s):
        raise InputError(
            f"{name} must have shape (n, {s}, {s}), got {a.shape}",
            field=name,
            fix=f"pass one {s}×{s} lesion image per sample (adaptrt.preprocess.prepare_lesion)",
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(
            f"{name} must be a floating-point array with values in [0, 1], got dtype {a.dtype}",
            field=name,
            fix="normalise the images to [0, 1] (adaptrt.preprocess.normalise)",
        )
    if a.shape[0] == 0:
        raise InputError(f"{name} has no samples", field=name)
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has NaN or inf values", field=name, fix="check the preprocessing")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{name} must lie in [0, 1] (the target of the reconstruction's BCE), got [{lo:g}, {hi:g}]",
            field=name,
            fix="normalise the images to [0, 1] (adaptrt.preprocess.normalise)",
        )
    return a.astype(np.float32, copy=False)


def _as_masks(mask: ArrayLike, n: int, name: str) -> NDArray[np.bool_]:
    m = np.asarray(mask)
    s = BOTTLENECK_SIZE
    if m.shape != (n, s, s):
        raise InputError(
            f"{name} must have shape ({n}, {s}, {s}) (one mask per image, at the bottleneck's resolution), "
            f"got {m.shape}",
            field=name,
            fix=f"downsample the GTV mask to {s}×{s} (adaptrt.preprocess.downsample_mask)",
        )
    if m.dtype != np.bool_:
        if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)) or not np.all(
            (m == 0) | (m == 1)
        ):
            raise InputError(
                f"{name} must be boolean (or hold only 0 and 1), got dtype {m.dtype}",
                field=name,
                fix="pass the GTV mask as a bool array",
            )
    return m.astype(bool)


def _as_labels(y: ArrayLike, n: int, name: str) -> NDArray[np.float32]:
    a = np.asarray(y)
    if a.shape != (n,):
        raise InputError(f"{name} must have shape ({n},) (one label per image), got {a.shape}", field=name)
    if not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number)) or not np.all((a == 0) | (a == 1)):
        raise InputError(
            f"{name} must hold only 0 and 1 (1 = responder)", field=name, fix="pass binary labels"
        )
    return a.astype(np.float32)


def _tensors(
    x: NDArray[np.float32], mask: NDArray[np.bool_], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.from_numpy(np.ascontiguousarray(x))[:, None].to(device)  # (n, 1, 64, 64)
    mt = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[:, None].to(device)  # (n, 1, 16, 16)
    return xt, mt


# --------------------------------------------------------------------------------------------- training
def _phase_loss(terms: LossTerms, phase: str) -> torch.Tensor:
    if phase == "autoencoder":
        return terms.reconstruction
    if phase == "classifier":
        return terms.classifier
    return terms.total


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    perm = torch.randperm(n, generator=generator)
    batches = list(torch.split(perm, batch_size))
    if len(batches[-1]) < 2:
        # Batch norm cannot train on one sample; this sample sits out one epoch.
        batches.pop()
    return batches


class _Sums:
    """Sample-weighted sums of the loss terms and of the correct predictions over an epoch."""

    def __init__(self) -> None:
        self.n = 0
        self.total = self.recon = self.clf = self.ssim = 0.0
        self.correct = 0

    def add(self, terms: LossTerms, logit: torch.Tensor, y: torch.Tensor) -> None:
        b = int(y.shape[0])
        self.n += b
        self.total += float(terms.total.detach()) * b
        self.recon += float(terms.reconstruction.detach()) * b
        self.clf += float(terms.classifier.detach()) * b
        self.ssim += float(terms.ssim.detach()) * b
        self.correct += int(((logit >= 0).to(y.dtype) == y).sum())

    def means(self, prefix: str) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            f"{prefix}_loss": self.total / n,
            f"{prefix}_recon_loss": self.recon / n,
            f"{prefix}_clf_loss": self.clf / n,
            f"{prefix}_ssim": self.ssim / n,
            f"{prefix}_acc": self.correct / n,
        }


def _train_epoch(
    model: AutoencoderClassifierNet,
    optimizer: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    phase: str,
    batch_size: int,
    generator: torch.Generator,
) -> dict[str, float]:
    x, m, y = data
    model.train()
    if phase == "autoencoder":
        # Not trained in this phase: keep its batch norm statistics and dropout untouched.
        model.classifier.eval()
    sums = _Sums()
    for idx in _batches(int(x.shape[0]), batch_size, generator):
        idx = idx.to(x.device)
        xb, mb, yb = x[idx], m[idx], y[idx]
        out = model(xb, mb)
        terms = joint_loss(out, xb, mb, yb)
        loss = _phase_loss(terms, phase)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"the {phase} loss became {float(loss)} during training; try a smaller learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums.add(terms, out.logit.detach(), yb)
    return sums.means("train")


@torch.no_grad()
def _evaluate(
    model: AutoencoderClassifierNet, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_size: int
) -> dict[str, float]:
    x, m, y = data
    model.eval()
    sums = _Sums()
    for start in range(0, int(x.shape[0]), batch_size):
        sl = slice(start, start + batch_size)
        out = model(x[sl], m[sl])
        sums.add(joint_loss(out, x[sl], m[sl], y[sl]), out.logit, y[sl])
    return sums.means("val")


def _optimizer(params: Sequence[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def _check_seed(seed: Any) -> int:
    if not (_is_int(seed) and seed >= 0):
        raise InputError(f"seed must be a non-negative int, got {seed!r}", field="seed")
    return int(seed)


class AutoencoderClassifier:
    """Part I's autoencoder + classifier as a scikit-learn-like estimator.

    Parameters
    ----------
    config
        Training settings; default :data:`PAPER`.
    seed
        Non-negative int fixing the initial weights, the mini-batch order and the dropout masks (see the
        module docstring for what else affects bit-exactness).

    Attributes
    ----------
    model_
        The fitted :class:`~adaptrt.response.autoencoder.AutoencoderClassifierNet`, in eval mode, on
        :attr:`device_`.
    history_
        One dict per epoch: ``phase`` (``"joint"``, ``"autoencoder"`` or ``"classifier"``), ``epoch``
        (1-based, counted across phases), ``train_loss`` (reconstruction + classifier loss, whatever the
        phase optimises), ``train_recon_loss``, ``train_clf_loss``, ``train_ssim``, ``train_acc`` (averages
        over the epoch's batches in training mode) and the same ``val_*`` keys, computed in eval mode after
        the epoch (None without a validation set).
    n_features_in_
        Pixels per image (4096).
    classes_
        ``array([0, 1])``; class 1 is the responder.
    device_
        The torch device the model lives on.

    Examples
    --------
    >>> est = AutoencoderClassifier(QUICK, seed=0).fit(x, mask, y)      # doctest: +SKIP
    >>> est.predict_proba(x_test, mask_test)                           # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig = PAPER, *, seed: int = 0) -> None:
        self.config = config
        self.seed = seed

    # ------------------------------------------------------------------------------------------ fit
    def fit(
        self,
        x: ArrayLike,
        mask: ArrayLike,
        y: ArrayLike,
        *,
        x_val: ArrayLike | None = None,
        mask_val: ArrayLike | None = None,
        y_val: ArrayLike | None = None,
        progress: bool = False,
    ) -> Self:
        """Train a new network from scratch (any earlier fit is discarded).

        Parameters
        ----------
        x
            ``(n, 64, 64)`` float images in [0, 1], ``n >= 2``.
        mask
            ``(n, 16, 16)`` bool GTV masks at the bottleneck's resolution.
        y
            ``(n,)`` labels in {0, 1} (1 = responder).
        x_val, mask_val, y_val
            Optional validation set of the same kinds (all three or none), evaluated after every epoch.
        progress
            Show a progress bar over the epochs.

        Returns
        -------
        AutoencoderClassifier
            ``self``, fitted.

        Raises
        ------
        InputError
            Bad shapes, dtypes or values of the data, a bad config or seed, CUDA asked for and missing.
        FloatingPointError
            The loss became NaN or inf.
        """
        cfg = self.config
        if not isinstance(cfg, TrainConfig):
            raise InputError(f"config must be a TrainConfig, got {type(cfg).__name__}", field="config")
        seed = _check_seed(self.seed)
        xa = _as_images(x, "x")
        n = xa.shape[0]
        if n < 2:
            raise InputError(f"fit needs at least 2 samples, got {n}", field="x")
        ma = _as_masks(mask, n, "mask")
        ya = _as_labels(y, n, "y")
        given = [v is not None for v in (x_val, mask_val, y_val)]
        if any(given) and not all(given):
            raise InputError(
                "x_val, mask_val and y_val must be given together",
                field="x_val",
                fix="pass all three or none",
            )
        device = resolve_device(cfg.device)
        train = (*_tensors(xa, ma, device), torch.from_numpy(ya).to(device))
        val = None
        if x_val is not None and mask_val is not None and y_val is not None:
            xv = _as_images(x_val, "x_val")
            nv = xv.shape[0]
            val = (
                *_tensors(xv, _as_masks(mask_val, nv, "mask_val"), device),
                torch.from_numpy(_as_labels(y_val, nv, "y_val")).to(device),
            )

        init_rng, shuffle_rng, dropout_rng = spawn(seed, 3)
        init_gen = torch.Generator().manual_seed(int(init_rng.integers(2**63)))
        shuffle_gen = torch.Generator().manual_seed(int(shuffle_rng.integers(2**63)))
        phases = (
            [("joint", cfg.epochs)]
            if cfg.mode == "joint"
            else [("autoencoder", cfg.epochs), ("classifier", cfg.n_classifier_epochs)]
        )
        history: list[dict[str, Any]] = []
        cuda = (
            [device.index if device.index is not None else torch.cuda.current_device()]
            if device.type == "cuda"
            else []
        )
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            # Dropout draws from the global generator; fork_rng restores the caller's state afterwards.
            torch.manual_seed(int(dropout_rng.integers(2**63)))
            model = AutoencoderClassifierNet(cfg.width, cfg.dropout, IMAGE_SIZE, generator=init_gen).to(
                device
            )
            bar = tqdm(total=sum(e for _, e in phases), disable=not progress, desc="epochs", unit="epoch")
            try:
                for phase, n_epochs in phases:
                    if phase == "classifier":
                        for p in model.encoder.parameters():
                            p.requires_grad_(False)
                    params = {
                        "joint": list(model.parameters()),
                        "autoencoder": [*model.encoder.parameters(), *model.decoder.parameters()],
                        "classifier": list(model.classifier.parameters()),
                    }[phase]
                    optimizer = _optimizer(params, cfg)
                    for _ in range(n_epochs):
                        row: dict[str, Any] = {"phase": phase, "epoch": len(history) + 1}
                        row.update(_train_epoch(model, optimizer, train, phase, cfg.batch_size, shuffle_gen))
                        if val is not None:
                            row.update(_evaluate(model, val, cfg.batch_size))
                        else:
                            row.update({k: None for k in _Sums().means("val")})
                        history.append(row)
                        bar.set_postfix(
                            loss=f"{row['train_loss']:.4f}",
                            acc=f"{row['train_acc']:.3f}",
                            val_acc="-" if row["val_acc"] is None else f"{row['val_acc']:.3f}",
                        )
                        bar.update()
            finally:
                bar.close()
        for p in model.parameters():
            p.requires_grad_(True)
        return self._set_fitted(model, history, device)

    def _set_fitted(
        self, model: AutoencoderClassifierNet, history: list[dict[str, Any]], device: torch.device
    ) -> Self:
        """Record a trained network (moved to ``device``, eval mode) and its history as the fitted state."""
        self.model_ = model.to(device).eval()
        self.history_ = history
        self.n_features_in_ = IMAGE_SIZE * IMAGE_SIZE
        self.classes_ = np.array([0, 1], dtype=np.int64)
        self.device_ = device
        return self

    # ------------------------------------------------------------------------------------------ use
    def _fitted(self) -> AutoencoderClassifierNet:
        model = getattr(self, "model_", None)
        if model is None:
            raise NotFittedError("this AutoencoderClassifier is not fitted yet: call fit() or load() first")
        return model

    def _inputs(self, x: ArrayLike, mask: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        xa = _as_images(x, "x")
        return _tensors(xa, _as_masks(mask, xa.shape[0], "mask"), self.device_)

    @torch.no_grad()
    def _outputs(self, x: ArrayLike, mask: ArrayLike, field: str) -> NDArray[np.float32]:
        model = self._fitted()
        xt, mt = self._inputs(x, mask)
        model.eval()
        parts = []
        for start in range(0, int(xt.shape[0]), self.config.batch_size):
            out = model(
                xt[start : start + self.config.batch_size], mt[start : start + self.config.batch_size]
            )
            parts.append(getattr(out, field).float().cpu())
        return torch.cat(parts).numpy()

    def decision_function(self, x: ArrayLike, mask: ArrayLike) -> NDArray[np.float64]:
        """The classifier's logit ``z`` per sample, ``(n,)`` float64 (eval mode); ``p = sigmoid(z)``."""
        return self._outputs(x, mask, "logit").astype(np.float64)

    def predict_proba(self, x: ArrayLike, mask: ArrayLike) -> NDArray[np.float64]:
        """Probability of response (class 1) per sample.

        Unlike scikit-learn's ``(n, 2)``, the result is the one column of class 1.

        Parameters
        ----------
        x
            ``(n, 64, 64)`` float images in [0, 1].
        mask
            ``(n, 16, 16)`` bool GTV masks at the bottleneck's resolution.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64 in [0, 1], computed in eval mode (dropout off, batch norm running statistics)
            without gradients, in batches of ``config.batch_size``.
        """
        z = torch.from_numpy(self._outputs(x, mask, "logit"))
        return torch.sigmoid(z.double()).numpy()

    def predict(self, x: ArrayLike, mask: ArrayLike, threshold: float = 0.5) -> NDArray[np.int64]:
        """Predicted class per sample, ``(n,)`` int64: 1 (responder) where ``predict_proba >= threshold``."""
        if not (_is_real(threshold) and 0.0 <= threshold <= 1.0):
            raise InputError(f"threshold must be a number in [0, 1], got {threshold!r}", field="threshold")
        return (self.predict_proba(x, mask) >= threshold).astype(np.int64)

    def reconstruct(self, x: ArrayLike, mask: ArrayLike) -> NDArray[np.float32]:
        """The autoencoder's reconstruction ``(n, 64, 64)`` float32 in (0, 1) (eval mode)."""
        return self._outputs(x, mask, "reconstruction")[:, 0]

    def explain(
        self,
        x: ArrayLike,
        mask: ArrayLike,
        *,
        method: CamMethod,
        target: Literal["pos", "neg"] | int | Sequence[int] | NDArray[np.integer[Any]] = "pos",
        upsample_mask: ArrayLike | None = None,
    ) -> CamResult:
        """Class activation maps of the masked bottleneck (the last encoder layer) for the classifier's logit.

        See :func:`adaptrt.response.cam.class_activation_map`; run in eval mode, in batches.

        Parameters
        ----------
        x
            ``(n, 64, 64)`` float images in [0, 1].
        mask
            ``(n, 16, 16)`` bool GTV masks at the bottleneck's resolution (the model's input).
        method
            ``"gradcam"``, ``"gradcam++"`` or ``"pixelwise"``.
        target
            ``"pos"`` (class 1, responder), ``"neg"`` (class 0), one class for all, or one per sample.
        upsample_mask
            ``(n, 64, 64)`` GTV mask at the input resolution; the upsampled CAM is set to 0 outside it.
            None: no masking (the bilinear upsampling of the 16×16 map then spreads a little beyond the
            GTV).

        Returns
        -------
        CamResult
            Maps ``(n, 64, 64)`` (``raw``, ``normalised``), ``feature_raw`` ``(n, 16, 16)``, ``weights``
            ``(n, 5)`` (None for ``"pixelwise"``), ``class_index`` and ``score`` ``(n,)``.
        """
        model = self._fitted()
        xt, mt = self._inputs(x, mask)
        n = int(xt.shape[0])
        up = None
        if upsample_mask is not None:
            up = np.asarray(upsample_mask)
            if up.shape != (n, IMAGE_SIZE, IMAGE_SIZE):
                raise InputError(
                    f"upsample_mask must have shape ({n}, {IMAGE_SIZE}, {IMAGE_SIZE}), got {up.shape}",
                    field="upsample_mask",
                    fix="pass the GTV mask at the input resolution, one per image",
                )
        per_sample = not isinstance(target, str) and np.ndim(target) == 1
        targets = np.asarray(target) if per_sample else None
        if targets is not None and targets.shape != (n,):
            raise InputError(f"target has {targets.size} entries for {n} images", field="target")
        bs = self.config.batch_size
        parts: list[CamResult] = []
        for start in range(0, n, bs):
            sl = slice(start, start + bs)
            wrapped = _LogitOf(model, mt[sl])
            parts.append(
                class_activation_map(
                    wrapped,
                    model.bottleneck,
                    xt[sl],
                    method=method,
                    target=target if targets is None else targets[sl],
                    mask=None if up is None else up[sl],
                )
            )
        return CamResult(
            raw=np.concatenate([p.raw for p in parts]),
            normalised=np.concatenate([p.normalised for p in parts]),
            feature_raw=np.concatenate([p.feature_raw for p in parts]),
            weights=None
            if parts[0].weights is None
            else np.concatenate([p.weights for p in parts if p.weights is not None]),
            class_index=np.concatenate([p.class_index for p in parts]),
            score=np.concatenate([p.score for p in parts]),
        )

    # -------------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the fitted model (weights, config, seed, history) with :func:`torch.save`, atomically.

        Parameters
        ----------
        path
            Target file (e.g. ``model.pt``).
        overwrite
            Replace an existing file.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        model = self._fitted()
        payload = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "seed": int(self.seed),
            "history": self.history_,
            "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        }
        # torch.save names the records of its zip archive after the file it writes to: into a buffer they are
        # all "archive/...", so no staging name is embedded and identical models give identical bytes
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with atomic_file(path, overwrite=overwrite) as tmp:
            tmp.write_bytes(buffer.getvalue())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str | None = None) -> AutoencoderClassifier:
        """Read a model written by :meth:`save` (``torch.load(weights_only=True)``: no code is executed).

        Parameters
        ----------
        path
            The file.
        device
            Device to load onto (see :attr:`TrainConfig.device`); None keeps the saved config's.

        Raises
        ------
        InputError
            Missing file, not a saved model, a damaged one, an unknown format version, or CUDA asked for
        and missing.
        """
        p = Path(path)
        if not p.is_file():
            raise InputError("model file not found", path=p, fix="check the path")
        try:
            payload = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(
                f"cannot be read as a saved model ({type(exc).__name__}: {exc})",
                path=p,
                fix="pass a file written by AutoencoderClassifier.save",
            ) from exc
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise InputError(
                "is not a saved AutoencoderClassifier",
                path=p,
                fix="pass a file written by AutoencoderClassifier.save",
            )
        if payload.get("version") != _FORMAT_VERSION:
            raise InputError(
                f"has format version {payload.get('version')!r}; this adaptrt reads version {_FORMAT_VERSION}",
                path=p,
                fix="re-save the model with this version of adaptrt",
            )
        try:
            config = from_dict(TrainConfig, payload["config"])
            seed = _check_seed(payload["seed"])
            history = list(payload["history"])
            model = AutoencoderClassifierNet(config.width, config.dropout, IMAGE_SIZE)
            model.load_state_dict(payload["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"holds a damaged or incompatible model ({type(exc).__name__}: {exc})",
                path=p,
                fix="re-save the model with AutoencoderClassifier.save",
            ) from exc
        if device is not None:
            config = dataclasses.replace(config, device=device)
        return cls(config, seed=seed)._set_fitted(model, history, resolve_device(config.device))


class _LogitOf(nn.Module):
    """``x -> net(x, mask).logit`` with the mask bound: the one-argument model that CAMs need."""

    def __init__(self, net: AutoencoderClassifierNet, mask: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x, self.mask).logit  # (b,)
