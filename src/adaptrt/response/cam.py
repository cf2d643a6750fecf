"""Class activation maps (CAMs) of Part I: Grad-CAM, Grad-CAM++ and pixel-wise CAM (eqs. 1-5 of the paper).

One implementation serves 2-D and 3-D networks: the feature map ``A`` of shape ``(b, k, *spatial)`` is
flattened to ``(b, k, Z)`` (``Z`` = number of feature voxels), as MONAI does, so every formula below is
written once for pixels ``ij`` or voxels ``ijl``. Plain torch on the CPU; no MONAI dependency.

Notation
--------
``A^k`` is channel ``k`` of the output of the explained ``layer`` (for Part I: the last encoder layer, after
the multiplication by the GTV mask), ``y^c`` the score of the explained class ``c`` and
``g^k_ij = dy^c / dA^k_ij`` its gradient, obtained by one backward pass.

Class score ``y^c``
    Part I's classifier has one sigmoid output ``p = sigma(z)``. The explained score is the **logit**, not the
    probability: ``y^1 = z`` for the positive class (1, responder) and ``y^0 = -z`` for the other class (0,
    non-responder), which is the logit of ``1 - p``. For a multi-class output, ``y^c`` is logit ``c``. Using
    the logit avoids the vanishing gradients of a saturated sigmoid/softmax (``dp/dz = p(1 - p) -> 0``), and
    it is what the Grad-CAM authors recommend (gradients of the score before the softmax). With the logit,
    the map for class 0 is the map of class 1 with the gradients' sign flipped.

CAM (eqs. 1-2)
    ``CAM^c = ReLU(sum_k w^c_k A^k)``; the ReLU keeps the evidence *for* class ``c``. The three methods differ
    in the weights.

Grad-CAM (eq. 3)
    ``w_k = (1/Z) sum_ij g^k_ij``.

Grad-CAM++ (eq. 4)
    ``w_k = sum_ij alpha^k_ij ReLU(g^k_ij)`` with ``alpha^k_ij = g^2 / (2 g^2 + (sum_ab A^k_ab) g^3)``,
    ``g = g^k_ij`` and ``alpha = 0`` where the denominator is 0 (0/0 where ``g = 0``). This is the standard
    closed form of Chattopadhay et al. (2018, their eq. 19), used by the authors' code and by
    pytorch-grad-cam: eq. 4 needs second and third derivatives of the class score, which the closed form
    obtains by passing the score through an exponential, ``Y = exp(S)``, and assuming that ``S`` is
    piecewise linear in ``A`` (a ReLU network: the second and higher derivatives of ``S`` vanish), so that
    ``d2Y/dA2 = exp(S) g^2`` and ``d3Y/dA3 = exp(S) g^3``; the ``exp(S)`` factors cancel in ``alpha``, and the
    remaining per-sample factor ``exp(S)`` of ``dY/dA`` in ``w_k`` is dropped (it rescales the map of a
    sample, which the normalisation removes). Where the network after ``layer`` is not piecewise linear (a
    sigmoid, a batch norm in training mode) this is an approximation. MONAI's ``GradCAMpp`` uses the same
    exponential trick with two small differences: it keeps the ``exp(S)`` factor, and its denominator sums
    ``A^k_ab g^3_ab`` over positions instead of multiplying ``sum_ab A^k_ab`` by ``g^3_ij``.

Pixel-wise CAM (eq. 5)
    ``CAM = ReLU(sum_k g^k_ij A^k_ij)``: each position weighted by its own gradient (HiResCAM).

The map at the feature resolution is upsampled to the input size (bilinear in 2-D, trilinear in 3-D,
``align_corners=False``) and multiplied by the GTV mask, if given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from ..errors import InputError

__all__ = ["CamMethod", "CamResult", "cam_scores", "class_activation_map"]

CamMethod = Literal["gradcam", "gradcam++", "pixelwise"]
_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "pixelwise")


@dataclass(frozen=True)
class CamResult:
    """The class activation maps of a batch.

    Attributes
    ----------
    raw
        ``(b, *input_spatial)`` float32, >= 0: the ReLU'd map upsampled to the input size and set to 0
        outside the mask (if one was given). Not normalised: its scale is that of ``sum_k w_k A^k``.
    normalised
        ``(b, *input_spatial)`` float32 in [0, 1]: ``raw / max(raw)`` per sample, 0 for a sample whose
        ``raw`` is all 0. A pure rescaling: the order of values (and the argmax) is that of ``raw``.
    feature_raw
        ``(b, *feature_spatial)`` float32, >= 0: the ReLU'd map at the resolution of ``layer``'s output,
        before upsampling and masking.
    weights
        ``(b, k)`` float32 channel weights ``w_k`` for ``"gradcam"`` and ``"gradcam++"``; None for
        ``"pixelwise"`` (its weights are per position).
    class_index
        ``(b,)`` int64: the class explained for each sample.
    score
        ``(b,)`` float32: the class score ``y^c`` (a logit; ``-z`` for class 0 of a single sigmoid output).
    """

    raw: NDArray[np.float32]
    normalised: NDArray[np.float32]
    feature_raw: NDArray[np.float32]
    weights: NDArray[np.float32] | None
    class_index: NDArray[np.int64]
    score: NDArray[np.float32]


def class_activation_map(
    model: torch.nn.Module,
    layer: torch.nn.Module,
    x: torch.Tensor,
    *,
    method: CamMethod,
    target: Literal["pos", "neg"] | int | Sequence[int] | NDArray[np.integer[Any]] = "pos",
    score_fn: Callable[[Any], torch.Tensor] | None = None,
    mask: torch.Tensor | NDArray[Any] | None = None,
    upsample: Literal["bilinear", "nearest"] = "bilinear",
) -> CamResult:
    """Class activation maps of a batch for one of three methods (eqs. 3-5 of the paper).

    See the module docstring for the definitions. The model is run once in eval mode (dropout off, batch
    norm on its running statistics, so the samples of the batch are independent) and one backward pass of
    the sum of the per-sample class scores gives every sample's gradient. Only ``dy/dA`` is computed
    (:func:`torch.autograd.grad`): no ``.grad`` is accumulated on the parameters. The forward hook on
    ``layer`` is removed and every module's train/eval mode restored on return, also after an error.

    Parameters
    ----------
    model
        The network; called as ``model(x)``.
    layer
        A sub-module of ``model``, called exactly once per forward pass, whose output ``A`` of shape
        ``(b, k, *feature_spatial)`` (same number of spatial dimensions as ``x``) is explained. Its output
        may feed several branches (e.g. a decoder and the classifier): only the paths to the score count.
        In-place operations on the output (``ReLU(inplace=True)``) are allowed: the hook hands the rest of
        the network a copy, so ``A`` is the layer's output as it left the layer.
    x
        ``(b, c, *spatial)`` input, ``spatial`` of 2 (y, x) or 3 (z, y, x) dimensions.
    method
        ``"gradcam"`` (eq. 3), ``"gradcam++"`` (eq. 4) or ``"pixelwise"`` (eq. 5).
    target
        The class explained: ``"pos"`` (class 1, responder), ``"neg"`` (class 0), a class index for every
        sample, or one index per sample (sequence or array of length ``b``). For a single sigmoid output the
        classes are 0 and 1 (score ``-z`` and ``z``); for ``n`` logits they are ``0 .. n-1``.
    score_fn
        Maps the model output to logits ``(b, n_classes)``, ``(b, 1)`` or ``(b,)`` (one sigmoid output), e.g.
        ``lambda out: out[1]`` for a model returning ``(reconstruction, logit)``. Default: the output
        itself. Give logits, not probabilities (see the module docstring).
    mask
        ``(b, 1, *spatial)`` or ``(b, *spatial)`` GTV mask at the input resolution; the CAM is set to 0 where
        it is 0 (it is used as a boolean, ``mask != 0``).
    upsample
        ``"bilinear"`` (trilinear in 3-D) or ``"nearest"``.

    Returns
    -------
    CamResult
        Maps, weights, explained classes and scores; see :class:`CamResult`.

    Raises
    ------
    InputError
        A bad argument (method, target, shapes of ``x`` or ``mask``, a layer not called once, an output that
        is not a tensor of logits, a score that does not depend on ``layer``), or a non-finite score or
        gradient.
    """
    if method not in _METHODS:
        raise InputError(f"unknown CAM method {method!r}", field="method", fix=f"use one of {_METHODS}")
    if upsample not in ("bilinear", "nearest"):
        raise InputError(
            f"unknown upsampling {upsample!r}", field="upsample", fix="use 'bilinear' or 'nearest'"
        )
    if not isinstance(x, torch.Tensor) or x.ndim not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(
            f"x must be a tensor (b, c, y, x) or (b, c, z, y, x), got {shape}",
            field="x",
            fix="add the batch and channel dimensions (x[None, None])",
        )
    b = int(x.shape[0])
    spatial = tuple(int(s) for s in x.shape[2:])
    mask_np = None if mask is None else _as_mask(mask, b, spatial)

    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise InputError(
                f"the output of layer {type(layer).__name__} is a {type(output).__name__}, not a tensor",
                field="layer",
                fix="pick a layer whose output is the feature map tensor (b, k, *spatial)",
            )
        # A detached leaf makes dy/dA computable even when nothing before the layer requires grad, and
        # stops the backward pass at A (nothing below is needed).
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        # The copy keeps the leaf intact if the network modifies the output in place (ReLU(inplace=True)).
        return leaf.clone()

    modes = [(m, m.training) for m in model.modules()]
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        with torch.enable_grad():
            out = model(x)
            if len(captured) != 1:
                raise InputError(
                    f"layer {type(layer).__name__} was called {len(captured)} times in one forward pass",
                    field="layer",
                    fix="pass a sub-module of model that is called exactly once per forward pass",
                )
            logits = score_fn(out) if score_fn is not None else out
            scores, class_index = _class_scores(logits, target, b)
            if not bool(torch.isfinite(scores).all()):
                raise InputError(
                    "the class score is not finite (NaN or inf) for some samples",
                    field="x",
                    fix="check the input for NaN/inf and the model weights",
                )
            (grad,) = torch.autograd.grad(scores.sum(), captured[0], allow_unused=True)
    finally:
        handle.remove()
        for m, was_training in modes:
            # Set the flag module by module: model.train(mode) would overwrite mixed modes of sub-modules.
            m.training = was_training

    if grad is None:
        raise InputError(
            f"the class score does not depend on the output of layer {type(layer).__name__}",
            field="layer",
            fix="pick a layer on the path from the input to the classifier output",
        )
    acts = captured[0].detach()
    if acts.ndim != x.ndim:
        raise InputError(
            f"the output of the layer has shape {tuple(acts.shape)}, not (b, k, *spatial) with "
            f"{len(spatial)} spatial dimensions",
            field="layer",
            fix="pick a convolutional layer (before any flatten)",
        )
    if not bool(torch.isfinite(grad).all()):
        raise InputError("the gradient of the class score is not finite", field="x", fix="check the input")

    feature, weights = _feature_map(acts.to(torch.float64), grad.detach().to(torch.float64), method)
    mode = "nearest" if upsample == "nearest" else ("bilinear" if len(spatial) == 2 else "trilinear")
    up = F.interpolate(
        feature[:, None], size=spatial, mode=mode, align_corners=None if mode == "nearest" else False
    )[:, 0]
    raw = up.cpu().numpy()
    if mask_np is not None:
        raw = np.where(mask_np, raw, 0.0)
    raw32 = raw.astype(np.float32)
    return CamResult(
        raw=raw32,
        normalised=_normalise(raw32),
        feature_raw=feature.cpu().numpy().astype(np.float32),
        weights=None if weights is None else weights.cpu().numpy().astype(np.float32),
        class_index=class_index.cpu().numpy().astype(np.int64),
        score=scores.detach().cpu().numpy().astype(np.float32),
    )


def _feature_map(
    acts: torch.Tensor, grad: torch.Tensor, method: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ReLU'd CAM ``(b, *feature_spatial)`` and channel weights ``(b, k)`` (None for pixel-wise)."""
    b, k, *fs = acts.shape
    a = acts.reshape(b, k, -1)
    g = grad.reshape(b, k, -1)
    weights: torch.Tensor | None
    if method == "gradcam":
        weights = g.mean(dim=-1)
        cam = (weights[..., None] * a).sum(dim=1)
    elif method == "gradcam++":
        g2 = g * g
        denom = 2.0 * g2 + a.sum(dim=-1, keepdim=True) * g2 * g
        nonzero = denom != 0
        alpha = torch.where(nonzero, g2 / torch.where(nonzero, denom, torch.ones_like(denom)), 0.0)
        weights = (alpha * F.relu(g)).sum(dim=-1)
        cam = (weights[..., None] * a).sum(dim=1)
    else:
        weights = None
        cam = (g * a).sum(dim=1)
    return F.relu(cam).reshape(b, *fs), weights


def _normalise(raw: NDArray[np.float32]) -> NDArray[np.float32]:
    """``raw / max(raw)`` per sample (axis 0), 0 for an all-zero sample; ``raw`` must be >= 0."""
    b = raw.shape[0]
    peak = raw.reshape(b, -1).max(axis=1).reshape((b,) + (1,) * (raw.ndim - 1))
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak > 0, raw / safe, 0.0).astype(np.float32)


def _as_mask(mask: torch.Tensor | NDArray[Any], b: int, spatial: tuple[int, ...]) -> NDArray[np.bool_]:
    """Boolean ``(b, *spatial)`` mask from ``(b, 1, *spatial)`` or ``(b, *spatial)``."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.shape == (b, 1, *spatial):
        m = m[:, 0]
    if m.shape != (b, *spatial):
        raise InputError(
            f"the mask has shape {m.shape}, expected {(b, 1, *spatial)} or {(b, *spatial)}",
            field="mask",
            fix="give one mask per sample on the grid of x",
        )
    return np.asarray(m != 0)


def _class_scores(
    logits: Any, target: Literal["pos", "neg"] | int | Sequence[int] | NDArray[np.integer[Any]], b: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample class score ``y^c`` ``(b,)`` (differentiable) and the class index ``(b,)``."""
    if not isinstance(logits, torch.Tensor):
        raise InputError(
            f"the model output is a {type(logits).__name__}, not a tensor of logits",
            field="score_fn",
            fix="pass score_fn mapping the model output to logits (b, n_classes) or (b,)",
        )
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim not in (1, 2) or logits.shape[0] != b:
        raise InputError(
            f"the logits have shape {tuple(logits.shape)}, expected ({b}, n_classes), ({b}, 1) or ({b},)",
            field="score_fn",
            fix="pass score_fn mapping the model output to logits",
        )
    single = logits.ndim == 1
    n_classes = 2 if single else int(logits.shape[1])
    if isinstance(target, str):
        if target not in ("pos", "neg"):
            raise InputError(
                f"unknown target {target!r}", field="target", fix="use 'pos', 'neg' or a class index"
            )
        idx = np.full(b, 1 if target == "pos" else 0, dtype=np.int64)
    else:
        if isinstance(target, bool | np.bool_):
            raise InputError(
                "target is a bool", field="target", fix="use 'pos', 'neg' or an integer class index"
            )
        arr = np.asarray(target)
        if not np.issubdtype(arr.dtype, np.integer) or arr.ndim > 1:
            raise InputError(
                f"target must be 'pos', 'neg', an int or a sequence of ints, got {target!r}", field="target"
            )
        idx = np.broadcast_to(arr, (b,)).astype(np.int64) if arr.ndim == 0 else arr.astype(np.int64)
        if idx.shape != (b,):
            raise InputError(f"target has {idx.size} entries for a batch of {b}", field="target")
        if np.any(idx < 0) or np.any(idx >= n_classes):
            raise InputError(
                f"target class {idx.tolist()} out of range for {n_classes} classes",
                field="target",
                fix="a single sigmoid output has classes 0 and 1" if single else None,
            )
    class_index = torch.as_tensor(idx, device=logits.device)
    if single:
        # y^1 = z, y^0 = -z: the logit of p and of 1 - p.
        sign = torch.where(class_index == 1, 1.0, -1.0).to(logits.dtype)
        return sign * logits, class_index
    return logits.gather(1, class_index[:, None])[:, 0], class_index


def cam_scores(cam: NDArray[Any], truth: NDArray[np.bool_], region: NDArray[np.bool_]) -> dict[str, float]:
    """Scores of one CAM against a planted ground-truth sub-region, within a region (the GTV).

    Only voxels inside ``region`` count; ``truth`` outside ``region`` is ignored.

    Parameters
    ----------
    cam
        CAM of one sample, any shape (e.g. ``(y, x)`` or ``(z, y, x)``), finite; e.g. ``CamResult.raw[i]``.
    truth
        Boolean ground truth, the shape of ``cam``: the voxels whose signal drives the class.
    region
        Boolean region (the GTV), the shape of ``cam``; must not be empty.

    Returns
    -------
    dict
        ``"auc"``
            ROC AUC (:func:`sklearn.metrics.roc_auc_score`) of the CAM values for truth vs not-truth voxels
            inside ``region`` (0.5: chance; ties count one half). NaN when ``truth`` or its complement is
            empty inside ``region``: with one class only, the AUC is undefined.
        ``"pointing_game"``
            1.0 if a voxel where the CAM is maximal inside ``region`` lies in ``truth`` (any of tied maxima
            counts), else 0.0. 0.0 when the CAM is constant inside ``region`` (an all-zero map points
            nowhere); NaN when ``truth`` is empty inside ``region`` (nothing to point at).
        ``"mass_in_truth"``
            Fraction of the CAM mass inside ``region`` that lies in ``truth``, using the positive part
            ``max(cam, 0)``; NaN when that mass is 0.
        ``"truth_fraction"``
            Fraction of ``region`` covered by ``truth``: the chance level of ``mass_in_truth``.

    Raises
    ------
    InputError
        Shapes differ, ``region`` is empty, or ``cam`` is not finite inside ``region``.
    """
    c = np.asarray(cam, dtype=np.float64)
    t = np.asarray(truth, dtype=bool)
    r = np.asarray(region, dtype=bool)
    if not (c.shape == t.shape == r.shape):
        raise InputError(
            f"cam {c.shape}, truth {t.shape} and region {r.shape} have different shapes",
            field="cam",
            fix="pass arrays of one sample on one grid",
        )
    if not r.any():
        raise InputError("the region is empty", field="region", fix="pass the GTV mask of the sample")
    values = c[r]
    labels = t[r]
    if not np.all(np.isfinite(values)):
        raise InputError("the CAM has NaN or inf values inside the region", field="cam")
    n_truth = int(labels.sum())
    both = 0 < n_truth < labels.size
    auc = float(roc_auc_score(labels, values)) if both else float("nan")
    if n_truth == 0:
        pointing = float("nan")
    elif values.max() == values.min():
        pointing = 0.0
    else:
        pointing = float(np.any(labels[values == values.max()]))
    pos = np.clip(values, 0.0, None)
    total = float(pos.sum())
    mass = float(pos[labels].sum() / total) if total > 0 else float("nan")
    return {
        "auc": auc,
        "pointing_game": pointing,
        "mass_in_truth": mass,
        "truth_fraction": n_truth / labels.size,
    }
