"""Train many Part I networks at once, each exactly as :meth:`AutoencoderClassifier.fit` would.

The response study's protocol trains one :class:`~adaptrt.response.autoencoder.AutoencoderClassifierNet` per
trial (50 trials × 150 epochs). :func:`fit_many` trains ``T`` of them in one loop: each model keeps its own
training set, initial weights, mini-batch order, dropout masks, batch-norm statistics and AdamW state, and
goes through the same sequence of updates as ``AutoencoderClassifier(config, seed=s).fit(...)``; the results
agree with that loop to float32 rounding (not bitwise: some sums are taken in another order).

What is shared and what is faster
    * **One optimiser step for all models.** The ``T`` models' parameters are stacked into one tensor per
      parameter, ``(T, *shape)``. AdamW is elementwise, so one update over the stacked tensors is exactly
      ``T`` AdamW updates, provided the step count (and with it the bias corrections) is kept per model: a
      model without a batch at a step (its epoch has fewer batches than another model's) keeps its
      parameters, moments and step count unchanged.
    * **Faster, equivalent layers** (the same functions of the same parameters, computed another way):

      - every convolution runs on ``channels_last`` tensors (oneDNN's fast path for few channels);
      - each decoder block "nearest upsampling ×2 then 3×3 convolution" runs as one 3×3 convolution at the
        *low* resolution with four times the output channels followed by a pixel shuffle
        (:func:`subpixel_weight`): it never builds the upsampled tensor, and avoids oneDNN's slow
        one-output-channel convolution at 64×64;
      - SSIM's separable Gaussian filtering runs as two matrix products with a banded matrix
        (:func:`ssim_matmul`) instead of two depth-wise convolutions.

    * **Per-model forward passes, one backward pass.** On a CPU, grouped convolutions that stack the models'
      channels (``groups=T``) and ``torch.func.vmap`` (which lowers to them) are *slower* per model than one
      ungrouped convolution per model (oneDNN: 12 vs 7 ms for the 16 -> 5 layer on a batch of 64), so the
      forward passes loop over the models; the losses are summed and differentiated once (the models
      share no parameter, so each gets exactly its own gradient).

Randomness, as in :meth:`AutoencoderClassifier.fit`
    Each model's seed is split by :func:`adaptrt.seeding.spawn` into the same three streams: the initial
    weights (the network is built by its own constructor, with the same generator, so the weights are the
    ones ``fit`` starts from), the mini-batch order (a CPU :class:`torch.Generator`,
    :func:`adaptrt.response.train._batches`) and dropout. ``fit`` draws dropout from torch's global
    generator after seeding it and building the network (whose default initialisation also draws from
    it); here that global state is captured, inside :func:`torch.random.fork_rng`, into a per-model CPU
    generator, and the dropout noise is drawn with ``bernoulli_`` exactly as ATen's CPU dropout does. On a
    CPU the masks are therefore the same bits as ``fit``'s. On CUDA ``fit``'s dropout uses a fused kernel
    with its own stream; here the masks are still drawn on the CPU (the same masks as on a CPU), so CUDA
    runs agree with ``fit`` statistically, not mask for mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from ..errors import InputError
from ..seeding import spawn
from .autoencoder import AutoencoderClassifierNet
from .losses import BCE_WEIGHT, PENALTY_WEIGHT, SSIM_WEIGHT, gaussian_window
from .train import (
    IMAGE_SIZE,
    AutoencoderClassifier,
    TrainConfig,
    _as_images,
    _as_labels,
    _as_masks,
    _batches,
    _check_seed,
    resolve_device,
)

__all__ = ["TrialData", "check_many", "fit_many", "ssim_matmul", "subpixel_weight", "trial_generators"]

_ENCODER = ("encoder.0", "encoder.3")
_DECODER = ("decoder.1", "decoder.4")
_CLASSIFIER = ("classifier.1", "classifier.2", "classifier.5")
_BN = "classifier.2"
_BN_MOMENTUM = 0.1
_BN_EPS = 1e-5


class TrialData(NamedTuple):
    """One model's data for :func:`fit_many` (the arguments of :meth:`AutoencoderClassifier.fit`).

    Attributes
    ----------
    x
        ``(n, 64, 64)`` float images in [0, 1], ``n >= 2``.
    mask
        ``(n, 16, 16)`` bool GTV masks at the bottleneck's resolution.
    y
        ``(n,)`` labels in {0, 1}.
    x_val, mask_val, y_val
        Optional validation set of the same kinds (all three or none), evaluated after every epoch.
    """

    x: ArrayLike
    mask: ArrayLike
    y: ArrayLike
    x_val: ArrayLike | None = None
    mask_val: ArrayLike | None = None
    y_val: ArrayLike | None = None


def check_many(config: Any, data: Sequence[TrialData], seeds: Sequence[Any], caller: str) -> list[int]:
    """Validate the arguments of a multi-model trainer; return the seeds as ints.

    Raises
    ------
    InputError
        ``config`` not a :class:`TrainConfig`, ``data`` and ``seeds`` of different lengths or empty, a bad
        seed, or a validation set given in part.
    """
    if not isinstance(config, TrainConfig):
        raise InputError(f"config must be a TrainConfig, got {type(config).__name__}", field="config")
    if len(data) != len(seeds) or not data:
        raise InputError(
            f"{caller} needs one seed per data set, got {len(data)} data sets and {len(seeds)} seeds",
            field="seeds",
        )
    for d in data:
        given = [v is not None for v in (d.x_val, d.mask_val, d.y_val)]
        if any(given) and not all(given):
            raise InputError(
                "x_val, mask_val and y_val must be given together",
                field="x_val",
                fix="pass all three or none",
            )
    return [_check_seed(s) for s in seeds]


def trial_generators(
    seed: int, config: TrainConfig
) -> tuple[AutoencoderClassifierNet, torch.Generator, torch.Generator]:
    """The initial network and the two generators that :meth:`AutoencoderClassifier.fit` uses for ``seed``.

    Parameters
    ----------
    seed
        Non-negative int, the estimator's seed.
    config
        Training settings (``width`` and ``dropout`` shape the network).

    Returns
    -------
    tuple
        ``(net, shuffle_gen, dropout_gen)``: the network with ``fit``'s initial weights (on the CPU), the
        CPU generator of the mini-batch order, and a CPU generator in the state that torch's global
        generator has when ``fit`` draws its first dropout mask. The caller's global random state is left
        unchanged.
    """
    init_rng, shuffle_rng, dropout_rng = spawn(seed, 3)
    init_gen = torch.Generator().manual_seed(int(init_rng.integers(2**63)))
    shuffle_gen = torch.Generator().manual_seed(int(shuffle_rng.integers(2**63)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(dropout_rng.integers(2**63)))
        # The constructor's default initialisation (before Keras' re-initialisation) draws from the
        # global generator, so the dropout stream starts where the constructor left it.
        net = AutoencoderClassifierNet(config.width, config.dropout, IMAGE_SIZE, generator=init_gen)
        dropout_gen = torch.Generator()
        dropout_gen.set_state(torch.get_rng_state())
    return net, shuffle_gen, dropout_gen


# ------------------------------------------------------------------------------------------ fast layers
def _phase_taps(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # p[a, u, r]: weight of the original tap r (0..2) at low-resolution offset u - 1 for output phase a.
    # Phase 0 (even rows 2i) reads upsampled rows 2i-1, 2i, 2i+1 = low rows i-1, i, i; phase 1 reads
    # rows 2i, 2i+1, 2i+2 = low rows i, i, i+1.
    p = torch.zeros(2, 3, 3, dtype=dtype, device=device)
    p[0, 0, 0] = p[0, 1, 1] = p[0, 1, 2] = 1.0
    p[1, 1, 0] = p[1, 1, 1] = p[1, 2, 2] = 1.0
    return p


def subpixel_weight(weight: torch.Tensor) -> torch.Tensor:
    """The low-resolution kernel equivalent to "nearest upsampling ×2, then a 3×3 'same' convolution".

    ``conv2d(upsample(z), weight, padding=1) == pixel_shuffle(conv2d(z, subpixel_weight(weight),
    padding=1), 2)`` (with the bias repeated 4 times per output channel), up to float rounding; zero padding
    at the high resolution is zero padding at the low one.

    Parameters
    ----------
    weight
        ``(cout, cin, 3, 3)`` kernel.

    Returns
    -------
    torch.Tensor
        ``(4 * cout, cin, 3, 3)``; output channel ``4 * o + 2 * a + b`` is phase ``(a, b)`` of channel ``o``
        (the order :func:`torch.nn.functional.pixel_shuffle` expects). Differentiable in ``weight``.
    """
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"weight must have shape (cout, cin, 3, 3), got {tuple(weight.shape)}")
    p = _phase_taps(weight.dtype, weight.device)
    w = torch.einsum("aur,bvs,oirs->oabiuv", p, p, weight)  # (cout, 2, 2, cin, 3, 3)
    return w.reshape(-1, weight.shape[1], 3, 3)


def _ssim_band(
    size: int, window: int, sigma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    g = gaussian_window(window, sigma, dtype=dtype)
    n = size - window + 1
    band = torch.zeros(n, size, dtype=dtype)
    for i in range(n):
        band[i, i : i + window] = g
    return band.to(device)  # (n, size)


def ssim_matmul(
    x: torch.Tensor,
    y: torch.Tensor,
    band: torch.Tensor,
    *,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """:func:`adaptrt.response.losses.ssim` with its 'valid' Gaussian filtering as two matrix products.

    Parameters
    ----------
    x, y
        ``(b, c, h, h)`` images (square), one floating dtype.
    band
        ``(h - window + 1, h)`` banded matrix whose row ``i`` holds the Gaussian window at columns
        ``i .. i + window - 1`` (``_ssim_band``).
    data_range, k1, k2
        As in :func:`~adaptrt.response.losses.ssim`.

    Returns
    -------
    torch.Tensor
        ``(b,)`` mean SSIM per image; equal to :func:`~adaptrt.response.losses.ssim` up to float rounding.
    """
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)  # (b, 5, c, h, h)
    stats = torch.matmul(torch.matmul(band, stats), band.T)  # (b, 5, c, h', h')
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.unbind(dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s_map.mean(dim=(1, 2, 3))


class _Out(NamedTuple):
    recon_logit: torch.Tensor  # (b, 1, s, s)
    logit: torch.Tensor  # (b,)
    features: torch.Tensor  # (b, 5, s/4, s/4) unmasked


def _forward(
    p: dict[str, torch.Tensor],
    bn: dict[str, torch.Tensor] | None,
    x: torch.Tensor,
    m: torch.Tensor,
    *,
    train_classifier: bool,
    noise: torch.Tensor | None,
) -> _Out:
    """The network's forward pass with the fast layers; ``bn`` running statistics are updated in place."""
    # x has channels_last strides (_channels_last): oneDNN then keeps every layer channels_last.
    # relu(max_pool(c)) == max_pool(relu(c)) bit for bit (relu is monotone), with the same gradient (where
    # the window's max is <= 0 both give 0; elsewhere both route it to the same first maximum), and the
    # ReLU and its backward then run on a quarter of the pixels.
    h = F.relu(F.max_pool2d(F.conv2d(x, p["encoder.0.weight"], p["encoder.0.bias"], padding=1), 2))
    f = F.relu(F.max_pool2d(F.conv2d(h, p["encoder.3.weight"], p["encoder.3.bias"], padding=1), 2))
    z = f * m
    w1 = subpixel_weight(p["decoder.1.weight"])
    d = F.conv2d(z, w1, p["decoder.1.bias"].repeat_interleave(4), padding=1)
    d = F.relu(F.pixel_shuffle(d, 2))
    w2 = subpixel_weight(p["decoder.4.weight"])
    r = F.pixel_shuffle(F.conv2d(d, w2, p["decoder.4.bias"].repeat_interleave(4), padding=1), 2)
    a = F.linear(z.reshape(z.shape[0], -1), p["classifier.1.weight"], p["classifier.1.bias"])  # (b, 32)
    gamma, beta = p["classifier.2.weight"], p["classifier.2.bias"]
    if train_classifier:
        mean = a.mean(dim=0)
        var = a.var(dim=0, unbiased=False)
        if bn is not None:
            with torch.no_grad():
                nb = a.shape[0]
                bn["running_mean"].mul_(1 - _BN_MOMENTUM).add_(mean.detach(), alpha=_BN_MOMENTUM)
                bn["running_var"].mul_(1 - _BN_MOMENTUM).add_(
                    var.detach() * (nb / (nb - 1)), alpha=_BN_MOMENTUM
                )
                bn["num_batches_tracked"].add_(1)
    else:
        if bn is None:
            raise ValueError("evaluation needs the batch norm's running statistics")
        mean, var = bn["running_mean"], bn["running_var"]
    a = F.relu((a - mean) * torch.rsqrt(var + _BN_EPS) * gamma + beta)
    if noise is not None:
        a = a * noise
    logit = F.linear(a, p["classifier.5.weight"], p["classifier.5.bias"])[:, 0]
    return _Out(recon_logit=r, logit=logit, features=f)


class _Terms(NamedTuple):
    total: torch.Tensor
    recon: torch.Tensor
    clf: torch.Tensor
    ssim: torch.Tensor
    correct: torch.Tensor


def _loss(out: _Out, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, band: torch.Tensor) -> _Terms:
    s = ssim_matmul(torch.sigmoid(out.recon_logit), x, band).mean()
    bce = F.binary_cross_entropy_with_logits(out.recon_logit, x)
    outside = out.features * (1.0 - m)
    penalty = (outside * outside).mean()
    recon = SSIM_WEIGHT * (1.0 - s) + BCE_WEIGHT * bce + PENALTY_WEIGHT * penalty
    clf = F.binary_cross_entropy_with_logits(out.logit, y)
    correct = ((out.logit.detach() >= 0).to(y.dtype) == y).sum()
    return _Terms(total=recon + clf, recon=recon, clf=clf, ssim=s, correct=correct)


# ---------------------------------------------------------------------------------------------- AdamW
class _StackedAdamW:
    """AdamW (``torch.optim.AdamW``'s single-tensor update) over ``(T, ...)`` stacked parameters.

    Each model keeps its own step count, so its bias corrections are its own; a model not active at a step
    keeps its parameters, moments and step count.
    """

    def __init__(self, params: Sequence[torch.Tensor], cfg: TrainConfig, n_models: int) -> None:
        self.params = list(params)
        self.cfg = cfg
        self.exp_avg = [torch.zeros_like(q) for q in self.params]
        self.exp_avg_sq = [torch.zeros_like(q) for q in self.params]
        self.steps = np.zeros(n_models, dtype=np.int64)

    @torch.no_grad()
    def step(self, active: np.ndarray[Any, np.dtype[np.bool_]]) -> None:
        cfg = self.cfg
        beta1, beta2 = cfg.betas
        self.steps += active
        if not active.any():
            return
        dev = self.params[0].device
        steps = np.maximum(self.steps, 1).astype(np.float64)
        # As torch: Python-float bias corrections per model, then float32 scalars in the kernels.
        step_size = torch.tensor(cfg.lr / (1 - beta1**steps), dtype=torch.float32, device=dev)
        bc2_sqrt = torch.tensor(np.sqrt(1 - beta2**steps), dtype=torch.float32, device=dev)
        act = torch.from_numpy(active).to(dev)
        all_active = bool(active.all())
        for q, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if q.grad is None:
                continue
            g = q.grad
            shape = (-1,) + (1,) * (q.ndim - 1)
            a = act.view(shape)
            q_new = q * (1 - cfg.lr * cfg.weight_decay)
            m_new = m.lerp(g, 1 - beta1)
            v_new = (v * beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v_new.sqrt() / bc2_sqrt.view(shape)).add_(cfg.eps)
            q_new.addcdiv_(m_new * -step_size.view(shape), denom)
            if all_active:
                q.copy_(q_new)
                m.copy_(m_new)
                v.copy_(v_new)
            else:
                q.copy_(torch.where(a, q_new, q))
                m.copy_(torch.where(a, m_new, m))
                v.copy_(torch.where(a, v_new, v))


# ------------------------------------------------------------------------------------------ the trainer
@dataclass
class _Model:
    x: torch.Tensor  # (n, 1, 64, 64) channels_last
    m: torch.Tensor  # (n, 1, 16, 16)
    y: torch.Tensor  # (n,)
    val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
    shuffle_gen: torch.Generator
    dropout_gen: torch.Generator
    bn: dict[str, torch.Tensor]


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``(b, 1, h, w)`` with explicit channels_last strides (``contiguous`` cannot set them for one channel)."""
    b, _, h, w = x.shape
    return x.contiguous().reshape(b, h, w, 1).permute(0, 3, 1, 2)


def _to_device(
    x: ArrayLike, mask: ArrayLike, y: ArrayLike, prefix: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xa = _as_images(x, f"{prefix}x")
    n = xa.shape[0]
    ma = _as_masks(mask, n, f"{prefix}mask")
    ya = _as_labels(y, n, f"{prefix}y")
    xt = _channels_last(torch.from_numpy(np.ascontiguousarray(xa))[:, None].to(device))
    mt = torch.from_numpy(ma.astype(np.float32))[:, None].to(device)
    return xt, mt, torch.from_numpy(ya).to(device)


def fit_many(
    config: TrainConfig,
    data: Sequence[TrialData],
    seeds: Sequence[int],
    *,
    progress: bool = False,
) -> list[AutoencoderClassifier]:
    """Train one network per ``(data[t], seeds[t])``, each as ``AutoencoderClassifier(config, seed).fit``.

    Parameters
    ----------
    config
        Training settings shared by all models (the study's ``TrainConfig``); joint or sequential mode.
    data
        One :class:`TrialData` per model; the training sets may differ in size.
    seeds
        One non-negative int per model (the estimator's seed).
    progress
        Show a progress bar over the epochs.

    Returns
    -------
    list of AutoencoderClassifier
        Fitted estimators, one per model, in order: ``model_`` (eval mode, on the config's device),
        ``history_`` (the same keys as ``fit``'s), ``device_`` etc. set as :meth:`AutoencoderClassifier.fit`
        sets them; each equals the estimator ``fit`` would return up to float32 rounding.

    Raises
    ------
    InputError
        Bad data (as ``fit``), a bad seed or config, ``data`` and ``seeds`` of different lengths, CUDA asked
        for and missing.
    FloatingPointError
        A model's loss became NaN or inf.
    """
    seeds = check_many(config, data, seeds, "fit_many")
    device = resolve_device(config.device)
    models: list[_Model] = []
    nets: list[AutoencoderClassifierNet] = []
    for d, s in zip(data, seeds, strict=True):
        xt, mt, yt = _to_device(d.x, d.mask, d.y, "", device)
        if xt.shape[0] < 2:
            raise InputError(f"fit needs at least 2 samples, got {xt.shape[0]}", field="x")
        val = None
        if d.x_val is not None and d.mask_val is not None and d.y_val is not None:
            val = _to_device(d.x_val, d.mask_val, d.y_val, "", device)
            val = (val[0], val[1], val[2])
        net, shuffle_gen, dropout_gen = trial_generators(s, config)
        nets.append(net)
        bn = {k: v.detach().clone().to(device) for k, v in net.classifier[2].named_buffers()}
        models.append(_Model(xt, mt, yt, val, shuffle_gen, dropout_gen, bn))

    n_models = len(models)
    stacked = {
        k: torch.stack([dict(net.named_parameters())[k].detach() for net in nets])
        .to(device)
        .requires_grad_(True)
        for k, _ in nets[0].named_parameters()
    }
    band = _ssim_band(IMAGE_SIZE, 11, 1.5, torch.float32, device)
    keep = 1.0 - config.dropout
    phases = (
        [("joint", config.epochs)]
        if config.mode == "joint"
        else [("autoencoder", config.epochs), ("classifier", config.n_classifier_epochs)]
    )
    histories: list[list[dict[str, Any]]] = [[] for _ in range(n_models)]
    bar = tqdm(total=sum(e for _, e in phases), disable=not progress, desc="epochs", unit="epoch")
    try:
        for phase, n_epochs in phases:
            prefixes = {
                "joint": _ENCODER + _DECODER + _CLASSIFIER,
                "autoencoder": _ENCODER + _DECODER,
                "classifier": _CLASSIFIER,
            }[phase]
            trained = [k for k in stacked if k.rsplit(".", 1)[0] in prefixes]
            optimizer = _StackedAdamW([stacked[k] for k in trained], config, n_models)
            for _ in range(n_epochs):
                rows = _train_epoch(models, stacked, trained, optimizer, phase, config, band, keep)
                for t, train_row in enumerate(rows):
                    row: dict[str, Any] = {"phase": phase, "epoch": len(histories[t]) + 1, **train_row}
                    row.update(_evaluate(models[t], stacked, t, config.batch_size, band))
                    histories[t].append(row)
                bar.update()
    finally:
        bar.close()

    out = []
    for t, (net, s) in enumerate(zip(nets, seeds, strict=True)):
        with torch.no_grad():
            for k, q in net.named_parameters():
                q.copy_(stacked[k][t].detach().cpu())
            for k, b in net.classifier[2].named_buffers():
                b.copy_(models[t].bn[k].cpu())
        out.append(AutoencoderClassifier(config, seed=s)._set_fitted(net, histories[t], device))
    return out


def _train_epoch(
    models: Sequence[_Model],
    stacked: dict[str, torch.Tensor],
    trained: Sequence[str],
    optimizer: _StackedAdamW,
    phase: str,
    cfg: TrainConfig,
    band: torch.Tensor,
    keep: float,
) -> list[dict[str, float]]:
    n_models = len(models)
    batches = [_batches(int(md.x.shape[0]), cfg.batch_size, md.shuffle_gen) for md in models]
    n_steps = max(len(b) for b in batches)
    # Per model: sample count, and per batch the (total, recon, clf, ssim) sums and correct predictions.
    counts = [0] * n_models
    parts: list[list[torch.Tensor]] = [[] for _ in range(n_models)]
    train_set = set(trained)
    for step in range(n_steps):
        active = np.array([step < len(b) for b in batches])
        views = {
            k: (q if k in train_set else q.detach()).unbind(0) for k, q in stacked.items()
        }  # per-model views; frozen parameters get no gradient
        losses = []
        for t in (int(i) for i in np.flatnonzero(active)):
            md = models[t]
            idx = batches[t][step].to(md.x.device)
            xb, mb, yb = _channels_last(md.x[idx]), md.m[idx], md.y[idx]
            train_clf = phase != "autoencoder"
            noise = None
            if train_clf and keep < 1.0:
                # ATen's CPU dropout: noise = empty_like(a).bernoulli_(1 - p).div_(1 - p).
                noise = torch.empty(len(idx), stacked["classifier.1.bias"].shape[1]).bernoulli_(
                    keep, generator=md.dropout_gen
                )
                noise = noise.div_(keep).to(md.x.device)
            p = {k: views[k][t] for k in stacked}
            out = _forward(p, md.bn, xb, mb, train_classifier=train_clf, noise=noise)
            terms = _loss(out, xb, mb, yb, band)
            loss = {"joint": terms.total, "autoencoder": terms.recon, "classifier": terms.clf}[phase]
            losses.append(loss)
            counts[t] += len(idx)
            parts[t].append(
                torch.stack(
                    [terms.total, terms.recon, terms.clf, terms.ssim, terms.correct.to(terms.total.dtype)]
                )
                .detach()
                .double()
                * torch.tensor([len(idx)] * 4 + [1], dtype=torch.float64, device=terms.total.device)
            )
        total = torch.stack(losses)
        if not bool(torch.isfinite(total).all()):
            raise FloatingPointError(
                f"the {phase} loss became non-finite during training; try a smaller learning rate"
            )
        for k in trained:
            stacked[k].grad = None
        total.sum().backward()
        optimizer.step(active)
    rows = []
    for t in range(n_models):
        n_seen = max(counts[t], 1)
        tot, rec, clf, ss, correct = (torch.stack(parts[t]).sum(dim=0) / n_seen).tolist()
        rows.append(
            {
                "train_loss": tot,
                "train_recon_loss": rec,
                "train_clf_loss": clf,
                "train_ssim": ss,
                "train_acc": correct,
            }
        )
    return rows


@torch.no_grad()
def _evaluate(
    md: _Model, stacked: dict[str, torch.Tensor], t: int, batch_size: int, band: torch.Tensor
) -> dict[str, float | None]:
    keys = ("val_loss", "val_recon_loss", "val_clf_loss", "val_ssim", "val_acc")
    if md.val is None:
        return dict.fromkeys(keys)
    x, m, y = md.val
    p = {k: q[t] for k, q in stacked.items()}
    n, tot, rec, clf, ss, correct = 0, 0.0, 0.0, 0.0, 0.0, 0
    for start in range(0, int(x.shape[0]), batch_size):
        sl = slice(start, start + batch_size)
        out = _forward(p, md.bn, _channels_last(x[sl]), m[sl], train_classifier=False, noise=None)
        terms = _loss(out, x[sl], m[sl], y[sl], band)
        b = int(y[sl].shape[0])
        n += b
        tot += float(terms.total) * b
        rec += float(terms.recon) * b
        clf += float(terms.clf) * b
        ss += float(terms.ssim) * b
        correct += int(terms.correct)
    n = max(n, 1)
    return dict(zip(keys, (tot / n, rec / n, clf / n, ss / n, correct / n), strict=True))
