"""A fast trainer for Part I's network: no autograd, matrix products, fused elementwise kernels, processes.

:func:`fit_fast` trains one :class:`~adaptrt.response.autoencoder.AutoencoderClassifierNet` per
``(data, seed)`` pair, each going through the same sequence of updates as
``AutoencoderClassifier(config, seed).fit(...)`` (same initial weights, mini-batch order, dropout masks,
batch-norm statistics and AdamW steps); the results agree with that loop to float32 rounding, not bit for bit
(sums are taken in another order). The response study's paper profile trains its 50 trials with it.

How (see ``docs/response.md`` for the measurements behind each choice)
    * **Layers as products.** Each "3×3 convolution + 2×2 max pool" block of the encoder's first layer is
      one matrix product per pixel of the *pooled* grid: the 4×4 stride-2 patch of the padded input (16
      values, plus a 1 for the bias) times a ``(17, 4 phases × c_out)`` matrix gives the four pre-pooling
      outputs of each 2×2 window at once; the pool is a max over the phases, whose winner is kept as a
      float index (first maximum wins, as ``max_pool2d``). The first decoder block ("nearest upsampling ×2
      + 3×3 convolution") is a sub-pixel product at 16×16. The 16 -> 5 encoder convolution and the last
      decoder block (as a 16 -> 4 sub-pixel convolution at 32×32) run on oneDNN, which is faster than a
      product there. The products' matrices are linear maps of the module's own parameters
      (:func:`_pool_map`, :func:`_subpixel_map`), so parameters, gradients and AdamW are the module's.
    * **The first block natively.** On a CPU that product writes a ``(b, 32, 32, 4 phases, 16)`` output
      and its gradient (16 MB each for a batch of 64) that are read once: memory-bound, a quarter of a
      step. With ``native=True`` a small C kernel (:mod:`adaptrt.response.native`, built once per machine
      with the system's C compiler) computes conv + pool + ReLU and the weight gradient straight from the
      padded image, one pooled pixel at a time (0.8 + 0.9 ms instead of about 12 ms per batch of 64); the
      winners are kept as uint8. Where it cannot be built, the product above runs (with a warning).
    * **Gradients by hand**, checked against autograd (``tests/response/test_engine.py``).
    * **Fused elementwise parts.** The pooling winners, ReLU masks, sub-pixel shuffles, SSIM and their
      gradients are small pure functions (``_k_*``) that :func:`torch.compile` fuses when ``compile=True``
      and a compiler is present; otherwise they run as they are (same results, slower).
    * **SSIM without repeated work.** The input image's local mean and variance are computed once per
      sample; the Gaussian filtering of the reconstruction's statistics is two products with a banded matrix.
    * **One core per model, models in processes.** On a CPU, ``workers`` processes (``spawn``) each train
      whole models with one intra-op thread, and ask glibc to keep freed memory (first-touch page faults of
      re-allocated blocks cost 20-25 % of a step on virtual machines). A model's arithmetic is the same
      whatever the number of workers, so the result does not depend on the machine's core count.

On CUDA the same code runs on the device, in this process (the dropout masks are still drawn on the CPU
from the same generators as ``fit`` on a CPU, so a CUDA run draws the CPU run's masks).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import multiprocessing
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import InputError
from .batched import TrialData, _to_device, check_many, trial_generators
from .losses import BCE_WEIGHT, PENALTY_WEIGHT, SSIM_WEIGHT, gaussian_window
from .native import MAX_CHANNELS, Layer1, NativeUnavailable
from .native import layer1 as native_layer1
from .train import (
    IMAGE_SIZE,
    AutoencoderClassifier,
    TrainConfig,
    _as_images,
    _as_labels,
    _as_masks,
    _batches,
    resolve_device,
)

__all__ = ["fit_fast"]

_BN_MOMENTUM = 0.1
_BN_EPS = 1e-5
_WIN = 11  # SSIM window (taps)
_SIGMA = 1.5
_C1 = (0.01 * 1.0) ** 2
_C2 = (0.03 * 1.0) ** 2
_S = IMAGE_SIZE  # 64
_V = _S - _WIN + 1  # 54: SSIM's valid positions per axis

# Parameter order of the flat parameter vector: encoder, decoder, classifier (each phase of the sequential
# mode trains a contiguous range).
_PARAMS = (
    ("encoder.0.weight", "encoder"),
    ("encoder.0.bias", "encoder"),
    ("encoder.3.weight", "encoder"),
    ("encoder.3.bias", "encoder"),
    ("decoder.1.weight", "decoder"),
    ("decoder.1.bias", "decoder"),
    ("decoder.4.weight", "decoder"),
    ("decoder.4.bias", "decoder"),
    ("classifier.1.weight", "classifier"),
    ("classifier.1.bias", "classifier"),
    ("classifier.2.weight", "classifier"),
    ("classifier.2.bias", "classifier"),
    ("classifier.5.weight", "classifier"),
    ("classifier.5.bias", "classifier"),
)


# --------------------------------------------------------------------------------------- weight maps
def _pool_map(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(16 slots, 4 phases, 9 taps)`` 0/1 map of a "3×3 same conv, then 2×2 max pool" block.

    Pooled output ``(i, j)`` covers the conv outputs ``(2i + a, 2j + c)`` (phase ``p = 2a + c``, the scan
    order of ``max_pool2d``). Tap ``(kr, kc)`` of phase ``(a, c)`` reads the padded input at
    ``(2i + a + kr, 2j + c + kc)`` = row ``2(i + u) + qa``, column ``2(j + v) + qc`` with
    ``a + kr = 2u + qa``: slot ``((u * 2 + v) * 2 + qa) * 2 + qc`` of the 4×4 stride-2 patch.
    """
    m = torch.zeros(2, 2, 2, 2, 4, 9, dtype=dtype)
    for a in range(2):
        for c in range(2):
            for kr in range(3):
                for kc in range(3):
                    u, qa = divmod(a + kr, 2)
                    v, qc = divmod(c + kc, 2)
                    m[u, v, qa, qc, 2 * a + c, 3 * kr + kc] = 1.0
    return m.reshape(16, 4, 9).to(device)


def _subpixel_map(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(3 offsets, 2 phases, 3 taps)`` 0/1 map of "nearest upsampling ×2, then a 3×3 same conv" (1-D).

    Output row ``2i + a``, tap ``k`` reads upsampled row ``2i + a + k - 1``, i.e. low-resolution row
    ``i + (a + k - 1) // 2``: offset ``u = (a + k - 1) // 2 + 1`` of the 3×3 low-resolution patch. Zero
    padding at the high resolution is zero padding at the low one.
    """
    m = torch.zeros(3, 2, 3, dtype=dtype)
    for a in range(2):
        for k in range(3):
            m[(a + k - 1) // 2 + 1, a, k] = 1.0
    return m.to(device)


def _band(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(54, 64)`` banded matrix: row ``i`` holds the 11-tap Gaussian window at columns ``i .. i + 10``."""
    g = gaussian_window(_WIN, _SIGMA, dtype=torch.float64)
    band = torch.zeros(_V, _S, dtype=torch.float64)
    for i in range(_V):
        band[i, i : i + _WIN] = g
    return band.to(dtype).to(device)


class _Maps(NamedTuple):
    pool: torch.Tensor  # (16, 4, 9)
    sub: torch.Tensor  # (3, 2, 3)
    band: torch.Tensor  # (54, 64)
    band_t: torch.Tensor  # (64, 54)


def _maps(device: torch.device) -> _Maps:
    band = _band(torch.float32, device)
    return _Maps(
        _pool_map(torch.float32, device),
        _subpixel_map(torch.float32, device),
        band,
        band.t().contiguous(),
    )


# ----------------------------------------------------------------------------------------- prepared data
@dataclass
class _Prepared:
    """One data set in the engine's layouts (computed once; the images do not change during training)."""

    x: torch.Tensor  # (n, 64, 64)
    xpad: (
        torch.Tensor | None
    )  # (n, 66, 66): the image zero-padded by one pixel (the native first layer's input)
    patches: torch.Tensor | None  # (n, 1024, 17): 4×4 stride-2 patches of the padded image, then 1 (the
    # first layer as a product); exactly one of xpad and patches is set
    mask: torch.Tensor  # (n, 256, 1) float 0/1
    y: torch.Tensor  # (n,)
    mu_x: torch.Tensor  # (n, 54, 54) local mean of the image (SSIM)
    var_x: torch.Tensor  # (n, 54, 54) local (biased) variance of the image

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def _prepare(
    x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, maps: _Maps, *, native: bool = False
) -> _Prepared:
    """``x`` ``(n, 1, 64, 64)``, ``m`` ``(n, 1, 16, 16)`` float, ``y`` ``(n,)`` (as from ``_to_device``).

    ``native``: keep the padded images for the native first layer instead of the product's patches.
    """
    n = int(x.shape[0])
    img = x.reshape(n, _S, _S).contiguous()
    xpad = F.pad(img, (1, 1, 1, 1)).contiguous()
    patches = None
    if not native:
        xp = xpad.view(n, 33, 2, 33, 2)  # (n, I, qa, J, qc)
        pt = torch.empty(n, 32, 32, 2, 2, 2, 2, dtype=img.dtype, device=img.device)  # (n, i, j, u, v, qa, qc)
        for u in range(2):
            for v in range(2):
                pt[:, :, :, u, v].copy_(xp[:, u : u + 32, :, v : v + 32, :].permute(0, 1, 3, 2, 4))
        ones = torch.ones(n, 1024, 1, dtype=img.dtype, device=img.device)  # carries the bias
        patches = torch.cat([pt.reshape(n, 1024, 16), ones], dim=2)
    mu = torch.matmul(torch.matmul(maps.band, img), maps.band_t)
    exx = torch.matmul(torch.matmul(maps.band, img * img), maps.band_t)
    return _Prepared(
        x=img,
        xpad=xpad if native else None,
        patches=patches,
        mask=m.reshape(n, 256, 1).contiguous(),
        y=y.contiguous(),
        mu_x=mu.contiguous(),
        var_x=(exx - mu * mu).contiguous(),
    )


# ------------------------------------------------------------------------------- fusable elementwise parts
# Pure functions of tensors: run as they are (eager), or fused by torch.compile (see _Kernels). Every mask
# is a float 0/1 tensor: float arithmetic is several times faster than boolean selection in torch's CPU
# kernels, and multiplying by 0 or 1 is exact.
def _k_pool(
    c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ReLU of the max of the four phases of each 2×2 window, and which phase won.

    Returns ``(h, idx)``: ``h = relu(max)``; ``idx`` the winning phase 0..3 as a float, or 4 where the max is
    <= 0 (the ReLU passes no gradient there). Comparisons are strict, so a tie goes to the first phase, as
    ``max_pool2d``'s. (Float rather than uint8: torch.compile's CPU code vectorises float arithmetic, not
    uint8 selection: 1.2 ms against 20 ms for the first layer of a batch of 64.)
    """
    v01 = torch.maximum(c0, c1)
    v23 = torch.maximum(c2, c3)
    lo = (c1 > c0).to(c0.dtype)
    hi = (c3 > c2).to(c0.dtype) + 2
    m = (v23 > v01).to(c0.dtype)
    v = torch.maximum(v01, v23)
    on = (v > 0).to(c0.dtype)
    idx = (lo + m * (hi - lo)) * on + 4 * (1 - on)
    return v.relu(), idx


def _k_unpool(g: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The backward pass of :func:`_k_pool` (through the ReLU): the gradient of each phase (exact)."""
    return tuple(g * (idx == p).to(g.dtype) for p in range(4))


def _k_unpool_phases(g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """:func:`_k_unpool` stacked phase-major: ``(b, h, w, 4, k)`` (the first layer's product layout)."""
    return torch.stack(_k_unpool(g, idx), dim=3)


def _k_unpool_image(g: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """:func:`_k_unpool` as the full-resolution image ``(b, 2h, 2w, k)`` (phase ``2a + c`` at ``(2i+a, 2j+c)``)."""
    b, h, w, k = g.shape
    s = torch.stack(_k_unpool(g, idx), dim=3).view(b, h, w, 2, 2, k)
    return s.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, k)


def _k_dec1(c3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The first decoder block's ReLU and sub-pixel shuffle: ``(b, 16, 16, 2, 2, k)`` -> ``(b, 32, 32, k)``."""
    b, h, w, _, _, k = c3.shape
    d = c3.relu()
    on = (d > 0).to(d.dtype)
    return d.permute(0, 1, 3, 2, 4, 5).reshape(b, 2 * h, 2 * w, k), on


def _k_dec1_grad(g: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    """The backward pass of :func:`_k_dec1`: ``(b, 32, 32, k)`` -> ``(b * 256, 4k)`` in the product's layout."""
    b, hh, ww, k = g.shape
    gp = g.view(b, hh // 2, 2, ww // 2, 2, k).permute(0, 1, 3, 2, 4, 5)
    return (gp * on).reshape(b * (hh // 2) * (ww // 2), 4 * k)


def _k_feature_grad(
    gp3: torch.Tensor, gz: torch.Tensor, mask: torch.Tensor, f: torch.Tensor, alpha: float
) -> torch.Tensor:
    """Gradient at the encoder's features ``(b, 16, 16, 5)`` (before the mask).

    ``gp3`` ``(b, 16, 16, 3, 3, 5)``: the gradient of the first decoder product's 3×3 patches, summed back
    onto the (zero-padded) masked features; ``gz`` ``(b, 16, 16, 5)``: the classifier's gradient there;
    ``mask`` ``(b, 16, 16, 1)``; ``alpha * f * (1 - mask)``: the L2 penalty's gradient.
    """
    acc = gz
    for u in range(3):
        for v in range(3):
            acc = acc + F.pad(gp3[:, :, :, u, v], (0, 0, v, 2 - v, u, 2 - u))[:, 1:17, 1:17]
    return acc * mask + alpha * f * (1 - mask)


def _k_recon(
    r4: torch.Tensor, bias: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reconstruction from the sub-pixel output ``(b, 32, 32, 4)``: ``(yhat, SSIM statistics, BCE)``.

    The statistics are ``(b, 3, 64, 64)``: ``yhat``, ``yhat**2``, ``x * yhat`` (those of ``x`` are fixed).
    """
    b = r4.shape[0]
    rl = r4.view(b, 32, 32, 2, 2).permute(0, 1, 3, 2, 4).reshape(b, _S, _S) + bias
    yh = torch.sigmoid(rl)
    bce = F.binary_cross_entropy_with_logits(rl, x)
    return yh, torch.stack([yh, yh * yh, x * yh], dim=1), bce


def _k_ssim(
    t2: torch.Tensor, mu_x: torch.Tensor, var_x: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM of the batch from the filtered statistics ``(b, 3, 54, 54)``, and ``scale * d ssim_map``.

    The second output is the gradient of ``scale * sum(ssim_map)`` with respect to the three filtered
    statistics of the reconstruction (``(b, 3, 54, 54)``).
    """
    mu_y, e_yy, e_xy = t2[:, 0], t2[:, 1], t2[:, 2]
    mxy = mu_x * mu_y
    a1 = 2 * mxy + _C1
    a2 = 2 * (e_xy - mxy) + _C2
    b1 = mu_x * mu_x + mu_y * mu_y + _C1
    b2 = var_x + (e_yy - mu_y * mu_y) + _C2
    den = b1 * b2
    smap = a1 * a2 / den
    da1 = a2 / den
    da2 = a1 / den
    g_mu = (2 * scale) * (mu_x * (da1 - da2) - mu_y * smap * (1.0 / b1 - 1.0 / b2))
    g_yy = (-scale) * smap / b2
    g_xy = (2 * scale) * da2
    return smap.mean(dim=(1, 2)).mean(), torch.stack([g_mu, g_yy, g_xy], dim=1)


def _k_recon_grad(u2: torch.Tensor, yh: torch.Tensor, x: torch.Tensor, bce_scale: float) -> torch.Tensor:
    """Gradient of the reconstruction loss at the sub-pixel output ``(b, 32, 32, 4)``.

    ``u2`` ``(b, 3, 64, 64)`` is the SSIM gradient pulled back through the filtering; ``bce_scale`` the BCE's
    weight over the number of pixels.
    """
    b = yh.shape[0]
    gyh = u2[:, 0] + 2 * yh * u2[:, 1] + x * u2[:, 2]
    grl = gyh * yh * (1 - yh) + bce_scale * (yh - x)
    return grl.view(b, 32, 2, 32, 2).permute(0, 1, 3, 2, 4).reshape(b, 32, 32, 4)


_KERNELS = (
    "pool",
    "unpool_phases",
    "unpool_image",
    "dec1",
    "dec1_grad",
    "feature_grad",
    "recon",
    "ssim",
    "recon_grad",
)
# The kernels that torch.compile makes faster (measured on a 2-core CPU, batch 64, one thread: pool 18.8 ->
# 2.1 ms, unpool_phases 17.8 -> 4.7, unpool_image 0.8-1.0 -> 0.35-0.43, dec1 4.2 -> 1.0, dec1_grad 6.6 -> 1.4,
# ssim 3.5 -> 0.4, recon_grad 3.1 -> 0.6): all but recon (2.3 -> 7.5), which is faster as it is.
_COMPILED = tuple(name for name in _KERNELS if name != "recon")


class _Kernels:
    """The fusable parts, eager or compiled with :func:`torch.compile` (dynamic batch size).

    ``layer1``: the native first encoder block (:mod:`adaptrt.response.native`; CPU only), or None for the
    first block as a matrix product and :func:`_k_pool`.
    """

    pool: Any
    unpool_phases: Any
    unpool_image: Any
    dec1: Any
    dec1_grad: Any
    feature_grad: Any
    recon: Any
    ssim: Any
    recon_grad: Any

    def __init__(self, compiled: bool, layer1: Layer1 | None = None) -> None:
        self.compiled = compiled
        self.layer1 = layer1
        for name in _KERNELS:
            f = globals()["_k_" + name]
            setattr(self, name, torch.compile(f, dynamic=True) if compiled and name in _COMPILED else f)


# ------------------------------------------------------------------------------------------- the engine
class _Terms(NamedTuple):
    total: float
    recon: float
    clf: float
    ssim: float
    correct: int


class _Engine:
    """Forward and backward passes of the network for batches of at most ``max_batch`` samples.

    Holds the products' outputs and patch matrices in buffers allocated on first use and reused for every
    model and step (the fused kernels allocate their own outputs); one engine per worker process.
    """

    def __init__(self, max_batch: int, width: int, device: torch.device, kernels: _Kernels) -> None:
        self.kernels = kernels
        self.bmax = max_batch
        self.width = width
        self.device = device
        self.maps = _maps(device)
        self._bufs: dict[str, torch.Tensor] = {}

    def buf(
        self, name: str, shape: tuple[int, ...], b: int, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """The first ``b`` entries (along dim 0) of a zero-initialised buffer of ``(max_batch, *shape)``."""
        t = self._bufs.get(name)
        if t is None:
            t = torch.zeros((self.bmax, *shape), dtype=dtype, device=self.device)
            self._bufs[name] = t
        return t[:b]

    def ones_column_buf(self, name: str, rows: int, cols: int, b: int) -> torch.Tensor:
        """A ``(b * rows, cols + 1)`` patch matrix whose last column is 1 (it carries the bias)."""
        fresh = name not in self._bufs
        t = self.buf(name, (rows, cols + 1), b)
        if fresh:
            self._bufs[name][..., cols] = 1.0
        return t.view(b * rows, cols + 1)

    # -------------------------------------------------------------------------------------- weights
    def gemm_weights(self, p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The products' matrices (bias as the last row) and kernels, as linear maps of the parameters."""
        w = self.width
        pm, sm = self.maps.pool, self.maps.sub
        w3 = torch.einsum("uak,vcl,oikl->uviaco", sm, sm, p["decoder.1.weight"]).reshape(45, 4 * w)
        w4 = torch.einsum("uak,vcl,oikl->acoiuv", sm, sm, p["decoder.4.weight"]).reshape(4, w, 3, 3)
        wc1 = p["classifier.1.weight"].reshape(32, 5, 16, 16).permute(0, 2, 3, 1).reshape(32, 1280)
        out = {
            "w3": torch.cat([w3, p["decoder.1.bias"].repeat(4)[None]]),  # (46, 4w)
            "w4": w4.contiguous(),  # (4, w, 3, 3): sub-pixel kernel, output channel 2a + c
            "wc1": wc1.contiguous(),
        }
        if self.kernels.layer1 is not None:
            out["w1t"] = p["encoder.0.weight"].reshape(w, 9).t().contiguous()  # (9, w): the native kernel's
        else:
            w1 = torch.einsum("spk,ok->spo", pm, p["encoder.0.weight"].reshape(w, 9)).reshape(16, 4 * w)
            out["w1"] = torch.cat([w1, p["encoder.0.bias"].repeat(4)[None]])  # (17, 4w)
        return out

    def param_grads(self, g: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
        """Write the parameters' gradients from the gradients of the products (transposed maps)."""
        w = self.width
        pm, sm = self.maps.pool, self.maps.sub
        if "w1t" in g:  # the native first layer's
            out["encoder.0.weight"].copy_(g["w1t"].t().reshape(w, 1, 3, 3))
            out["encoder.0.bias"].copy_(g["b1"])
        if "w1" in g:
            out["encoder.0.weight"].copy_(
                torch.einsum("spk,spo->ok", pm, g["w1"][:16].view(16, 4, w)).reshape(w, 1, 3, 3)
            )
            out["encoder.0.bias"].copy_(g["w1"][16].view(4, w).sum(0))
        if "w1" in g or "w1t" in g:
            out["encoder.3.weight"].copy_(g["w2"])
            out["encoder.3.bias"].copy_(g["b2"])
            out["decoder.1.weight"].copy_(
                torch.einsum("uak,vcl,uviaco->oikl", sm, sm, g["w3"][:45].view(3, 3, 5, 2, 2, w))
            )
            out["decoder.1.bias"].copy_(g["w3"][45].view(4, w).sum(0))
            out["decoder.4.weight"].copy_(
                torch.einsum("uak,vcl,acoiuv->oikl", sm, sm, g["w4"].view(2, 2, 1, w, 3, 3))
            )
            out["decoder.4.bias"].copy_(g["b4"])
        if "wc1" in g:
            out["classifier.1.weight"].copy_(
                g["wc1"].view(32, 16, 16, 5).permute(0, 3, 1, 2).reshape(32, 1280)
            )
            for k in ("classifier.1.bias", "classifier.2.weight", "classifier.2.bias"):
                out[k].copy_(g[k])
            out["classifier.5.weight"].copy_(g["wc2"])
            out["classifier.5.bias"].copy_(g["bc2"])

    # -------------------------------------------------------------------------------------- one step
    def step(
        self,
        p: dict[str, torch.Tensor],
        bn: dict[str, torch.Tensor],
        data: _Prepared,
        idx: torch.Tensor | slice,
        *,
        phase: str,
        noise: torch.Tensor | None,
        grads: dict[str, torch.Tensor] | None,
    ) -> _Terms:
        """Forward pass (and, with ``grads``, the backward pass) of one batch.

        Parameters
        ----------
        p
            The module's parameters by name (original shapes).
        bn
            The batch norm's ``running_mean``, ``running_var``, ``num_batches_tracked`` (updated in place
            when the classifier runs in training mode).
        data, idx
            The data set and the batch's sample indices (a 1-D index tensor or a slice).
        phase
            ``"joint"``, ``"autoencoder"`` (the classifier in eval mode, the reconstruction loss),
            ``"classifier"`` (encoder and decoder frozen, the classifier loss) or ``"eval"`` (no training).
        noise
            ``(b, 32)`` dropout multipliers (0 or ``1 / (1 - p)``), None for no dropout.
        grads
            Gradient outputs by parameter name (written, not accumulated); None for no backward pass.

        Returns
        -------
        _Terms
            The batch's loss terms (means over the batch) and correct predictions.
        """
        w = self.width
        k = self.kernels
        q = self.gemm_weights(p)
        buf = self.buf
        native = k.layer1
        if (native is None) != (data.xpad is None):
            raise ValueError("the data was prepared for the other first-layer kernel (see _prepare's native)")
        if isinstance(idx, slice):
            x, m, y = data.x[idx], data.mask[idx], data.y[idx]
            xpad = data.xpad[idx] if data.xpad is not None else None
            patches = data.patches[idx] if data.patches is not None else None
            mu_x, var_x = data.mu_x[idx], data.var_x[idx]
        else:
            nb = len(idx)
            x = torch.index_select(data.x, 0, idx, out=buf("x", (_S, _S), nb))
            xpad = patches = None
            if data.xpad is not None:
                xpad = torch.index_select(data.xpad, 0, idx, out=buf("xpad", (_S + 2, _S + 2), nb))
            if data.patches is not None:
                patches = torch.index_select(data.patches, 0, idx, out=buf("s1", (1024, 17), nb))
            m = torch.index_select(data.mask, 0, idx, out=buf("m", (256, 1), nb))
            y = data.y[idx]
            mu_x = torch.index_select(data.mu_x, 0, idx, out=buf("mux", (_V, _V), nb))
            var_x = torch.index_select(data.var_x, 0, idx, out=buf("varx", (_V, _V), nb))
        b = int(x.shape[0])

        # ---- encoder block 1: conv 1 -> w, max pool, ReLU (32×32): natively, or as one product per pooled
        # pixel and the fused pool
        if native is not None:
            assert xpad is not None
            h1 = buf("h1", (32, 32, w), b)
            idx1 = buf("idx1", (32, 32, w), b, torch.uint8)
            native.forward(xpad, q["w1t"], p["encoder.0.bias"], h1, idx1)
        else:
            assert patches is not None
            s1 = patches.reshape(b * 1024, 17)
            c1 = torch.mm(s1, q["w1"], out=buf("c1", (1024, 4 * w), b).view(-1, 4 * w))
            h1, idx1 = k.pool(*c1.view(b, 32, 32, 4, w).unbind(3))  # h1: (b, 32, 32, w)
        # ---- encoder block 2: conv w -> 5 (oneDNN), max pool, ReLU  (16×16)
        h1v = h1.permute(0, 3, 1, 2)  # (b, w, 32, 32) with channels_last strides
        c2 = F.conv2d(h1v, p["encoder.3.weight"], p["encoder.3.bias"], padding=1).permute(0, 2, 3, 1)
        f4, idx2 = k.pool(*(c2[:, a::2, c::2] for a in range(2) for c in range(2)))  # (b, 16, 16, 5)
        f = f4.reshape(b * 256, 5)  # features before the mask
        mm = m.reshape(b * 256, 1)
        z = f * mm
        # ---- classifier
        zf = z.view(b, 1280)
        a = torch.addmm(p["classifier.1.bias"], zf, q["wc1"].t())  # (b, 32)
        if phase in ("joint", "classifier"):
            mean = a.mean(dim=0)
            var = a.var(dim=0, unbiased=False)
            bn["running_mean"].mul_(1 - _BN_MOMENTUM).add_(mean, alpha=_BN_MOMENTUM)
            bn["running_var"].mul_(1 - _BN_MOMENTUM).add_(var * (b / (b - 1)), alpha=_BN_MOMENTUM)
            bn["num_batches_tracked"].add_(1)
        else:
            mean, var = bn["running_mean"], bn["running_var"]
        rstd = torch.rsqrt(var + _BN_EPS)
        ahat = (a - mean) * rstd
        gamma, beta = p["classifier.2.weight"], p["classifier.2.bias"]
        bnout = ahat * gamma + beta
        r = bnout.relu()
        d = r * noise if noise is not None else r
        logit = torch.addmm(p["classifier.5.bias"], d, p["classifier.5.weight"].t())[:, 0]  # (b,)
        clf = F.binary_cross_entropy_with_logits(logit, y)
        # ---- decoder block 1: upsample ×2 + conv 5 -> w + ReLU, as a product at 16×16 (sub-pixel)
        zp = buf("zp", (18, 18, 5), b)
        zp[:, 1:17, 1:17].copy_(z.view(b, 16, 16, 5))
        p3m = self.ones_column_buf("p3", 256, 45, b)
        p3m[:, :45].view(b, 16, 16, 3, 3, 5).copy_(
            zp.unfold(1, 3, 1).unfold(2, 3, 1).permute(0, 1, 2, 4, 5, 3)
        )
        c3 = torch.mm(p3m, q["w3"], out=buf("c3", (256, 4 * w), b).view(-1, 4 * w))
        d1, c3_on = k.dec1(c3.view(b, 16, 16, 2, 2, w))  # d1: (b, 32, 32, w) at full resolution
        # ---- decoder block 2: upsample ×2 + conv w -> 1 as a sub-pixel conv w -> 4 at 32×32 (oneDNN)
        d1v = d1.permute(0, 3, 1, 2)
        r4 = F.conv2d(d1v, q["w4"], None, padding=1).permute(0, 2, 3, 1)  # (b, 32, 32, 4)
        # ---- reconstruction loss
        yh, st, bce = k.recon(r4, p["decoder.4.bias"], x)
        t1 = torch.matmul(self.maps.band, st, out=buf("t1", (3, _V, _S), b))
        t2 = torch.matmul(t1, self.maps.band_t, out=buf("t2", (3, _V, _V), b))
        ssim, gst = k.ssim(t2, mu_x, var_x, -SSIM_WEIGHT / (b * _V * _V))
        outside = f * (1.0 - mm)
        penalty = (outside * outside).mean()
        recon = SSIM_WEIGHT * (1.0 - ssim) + BCE_WEIGHT * bce + PENALTY_WEIGHT * penalty
        total = recon + clf
        loss = {"joint": total, "autoencoder": recon, "classifier": clf, "eval": total}[phase]
        correct = ((logit >= 0).to(y.dtype) == y).sum().to(total.dtype)
        tot_f, rec_f, clf_f, ssim_f, correct_f, loss_f = torch.stack(
            [total, recon, clf, ssim, correct, loss]
        ).tolist()
        terms = _Terms(tot_f, rec_f, clf_f, ssim_f, int(correct_f))
        if grads is None:
            return terms
        if not math.isfinite(loss_f):
            raise FloatingPointError(
                f"the {phase} loss became {loss_f} during training; try a smaller learning rate"
            )

        g: dict[str, torch.Tensor] = {}
        use_clf = phase in ("joint", "classifier")
        train_ae = phase in ("joint", "autoencoder")
        gz = None
        # ---- classifier backward
        if use_clf:
            gl = (torch.sigmoid(logit) - y) / b  # (b,)
            g["wc2"] = gl[None, :] @ d  # (1, 32)
            g["bc2"] = gl.sum().reshape(1)
            gd = gl[:, None] * p["classifier.5.weight"]  # (b, 32)
            gr = gd * noise if noise is not None else gd
            gbn = gr * (bnout > 0)
            g["classifier.2.weight"] = (gbn * ahat).sum(0)
            g["classifier.2.bias"] = gbn.sum(0)
            gah = gbn * gamma
            ga = (rstd / b) * (b * gah - gah.sum(0) - ahat * (gah * ahat).sum(0))
            g["wc1"] = ga.t() @ zf  # (32, 1280)
            g["classifier.1.bias"] = ga.sum(0)
            if train_ae:
                gz = ga @ q["wc1"]  # (b, 1280)
        if train_ae:
            # ---- SSIM and BCE backward: d loss / d sub-pixel output of the last decoder layer
            u1 = torch.matmul(self.maps.band_t, gst, out=buf("u1", (3, _S, _V), b))
            u2 = torch.matmul(u1, self.maps.band, out=buf("u2", (3, _S, _S), b))
            gr4 = k.recon_grad(u2, yh, x, BCE_WEIGHT / (b * _S * _S))  # (b, 32, 32, 4)
            g["b4"] = gr4.sum().reshape(1)
            # ---- decoder block 2 backward
            gd1v, g["w4"], _ = torch.ops.aten.convolution_backward(
                gr4.permute(0, 3, 1, 2),
                d1v,
                q["w4"],
                None,
                [1, 1],
                [1, 1],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, False],
            )
            # ---- decoder block 1 backward
            gc3 = k.dec1_grad(gd1v.permute(0, 2, 3, 1), c3_on)  # (b * 256, 4w)
            g["w3"] = p3m.t() @ gc3  # (46, 4w), the last row is the bias's
            gp3 = torch.mm(gc3, q["w3"][:45].t(), out=buf("gp3", (256, 45), b).view(-1, 45))
            # ---- mask, penalty and encoder block 2 backward
            if gz is None:
                gz = buf("gz0", (1280,), b)  # zeros: no classifier gradient in this phase
            gf = k.feature_grad(
                gp3.view(b, 16, 16, 3, 3, 5),
                gz.view(b, 16, 16, 5),
                m.view(b, 16, 16, 1),
                f4,
                2 * PENALTY_WEIGHT / (b * 1280),
            )
            gc2 = k.unpool_image(gf, idx2)  # (b, 32, 32, 5)
            gh1v, g["w2"], g["b2"] = torch.ops.aten.convolution_backward(
                gc2.permute(0, 3, 1, 2),
                h1v,
                p["encoder.3.weight"],
                [5],
                [1, 1],
                [1, 1],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, True],
            )
            # ---- encoder block 1 backward
            gh1 = gh1v.permute(0, 2, 3, 1)  # (b, 32, 32, w)
            if native is not None:
                assert xpad is not None
                g["w1t"], g["b1"] = torch.empty(9, w), torch.empty(w)
                native.backward(gh1.contiguous(), idx1, xpad, g["w1t"], g["b1"])
            else:
                gc1 = k.unpool_phases(gh1, idx1)  # (b, 32, 32, 4, w)
                g["w1"] = s1.t() @ gc1.reshape(b * 1024, 4 * w)  # (17, 4w), the last row is the bias's
        self.param_grads(g, grads)
        return terms


# ------------------------------------------------------------------------------------------ the trainer
class _Fitted(NamedTuple):
    """What training one model gives (plain data, so that a worker process can send it back)."""

    state: dict[str, torch.Tensor]  # the module's state_dict, on the CPU
    history: list[dict[str, Any]]


class _AdamW:
    """``torch.optim.AdamW``'s single-tensor update over one flat parameter vector (a contiguous range)."""

    def __init__(self, params: torch.Tensor, grads: torch.Tensor, cfg: TrainConfig) -> None:
        self.q, self.g, self.cfg = params, grads, cfg
        self.m = torch.zeros_like(params)
        self.v = torch.zeros_like(params)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        cfg = self.cfg
        beta1, beta2 = cfg.betas
        self.steps += 1
        q, g, m, v = self.q, self.g, self.m, self.v
        q.mul_(1 - cfg.lr * cfg.weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = cfg.lr / (1 - beta1**self.steps)
        bc2_sqrt = (1 - beta2**self.steps) ** 0.5
        denom = (v.sqrt() / bc2_sqrt).add_(cfg.eps)
        q.addcdiv_(m, denom, value=-step_size)


def _flat_views(flat: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    views, start = {}, 0
    for name, _ in _PARAMS:
        n = math.prod(shapes[name])
        views[name] = flat[start : start + n].view(shapes[name])
        start += n
    return views


def _ranges(shapes: dict[str, torch.Size]) -> dict[str, tuple[int, int]]:
    """Start and end of each part (encoder, decoder, classifier) in the flat vector."""
    out: dict[str, list[int]] = {}
    start = 0
    for name, part in _PARAMS:
        n = math.prod(shapes[name])
        r = out.setdefault(part, [start, start])
        r[1] = start + n
        start += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def _train_one(
    engine: _Engine,
    config: TrainConfig,
    data: TrialData,
    seed: int,
    device: torch.device,
    on_epoch: Any,
) -> _Fitted:
    """Train one model with ``engine``; the equivalent of ``AutoencoderClassifier(config, seed).fit``."""
    maps = engine.maps
    xt, mt, yt = _to_device(data.x, data.mask, data.y, "", device)
    native = engine.kernels.layer1 is not None
    train = _prepare(xt, mt, yt, maps, native=native)
    val = None
    if data.x_val is not None and data.mask_val is not None and data.y_val is not None:
        val = _prepare(*_to_device(data.x_val, data.mask_val, data.y_val, "", device), maps, native=native)
    net, shuffle_gen, dropout_gen = trial_generators(seed, config)
    named = dict(net.named_parameters())
    shapes = {k: named[k].shape for k, _ in _PARAMS}
    flat = torch.cat([named[k].detach().reshape(-1) for k, _ in _PARAMS]).to(device)
    gflat = torch.zeros_like(flat)
    p, gp = _flat_views(flat, shapes), _flat_views(gflat, shapes)
    bn = {k: v.detach().clone().to(device) for k, v in net.classifier[2].named_buffers()}
    ranges = _ranges(shapes)
    keep = 1.0 - config.dropout
    phases = (
        [("joint", config.epochs)]
        if config.mode == "joint"
        else [("autoencoder", config.epochs), ("classifier", config.n_classifier_epochs)]
    )
    history: list[dict[str, Any]] = []
    for phase, n_epochs in phases:
        lo, hi = {
            "joint": (0, flat.numel()),
            "autoencoder": (ranges["encoder"][0], ranges["decoder"][1]),
            "classifier": ranges["classifier"],
        }[phase]
        opt = _AdamW(flat[lo:hi], gflat[lo:hi], config)
        for _ in range(n_epochs):
            sums = np.zeros(5)
            n_seen = 0
            for idx in _batches(train.n, config.batch_size, shuffle_gen):
                nb = len(idx)
                noise = None
                if phase != "autoencoder" and keep < 1.0:
                    # ATen's CPU dropout: noise = empty_like(a).bernoulli_(1 - p).div_(1 - p)
                    noise = torch.empty(nb, 32).bernoulli_(keep, generator=dropout_gen).div_(keep).to(device)
                terms = engine.step(p, bn, train, idx.to(device), phase=phase, noise=noise, grads=gp)
                opt.step()
                sums += np.array([terms.total, terms.recon, terms.clf, terms.ssim, 0.0]) * nb
                sums[4] += terms.correct
                n_seen += nb
            n_seen = max(n_seen, 1)
            tot, rec, clf, ss, acc = (sums / n_seen).tolist()
            row: dict[str, Any] = {
                "phase": phase,
                "epoch": len(history) + 1,
                "train_loss": tot,
                "train_recon_loss": rec,
                "train_clf_loss": clf,
                "train_ssim": ss,
                "train_acc": acc,
            }
            row.update(_evaluate(engine, p, bn, val, config.batch_size))
            history.append(row)
            on_epoch()

    with torch.no_grad():
        for k, q in net.named_parameters():
            q.copy_(p[k].cpu())
        for k, buf in net.classifier[2].named_buffers():
            buf.copy_(bn[k].cpu())
    return _Fitted({k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, history)


def _evaluate(
    engine: _Engine,
    p: dict[str, torch.Tensor],
    bn: dict[str, torch.Tensor],
    val: _Prepared | None,
    batch_size: int,
) -> dict[str, float | None]:
    keys = ("val_loss", "val_recon_loss", "val_clf_loss", "val_ssim", "val_acc")
    if val is None:
        return dict.fromkeys(keys)
    sums = np.zeros(5)
    for start in range(0, val.n, batch_size):
        sl = slice(start, min(start + batch_size, val.n))
        nb = sl.stop - sl.start
        t = engine.step(p, bn, val, sl, phase="eval", noise=None, grads=None)
        sums += np.array([t.total, t.recon, t.clf, t.ssim, 0.0]) * nb
        sums[4] += t.correct
    return dict(zip(keys, (sums / max(val.n, 1)).tolist(), strict=True))


def _native_layer1(device: torch.device, width: int) -> Layer1 | None:
    """The native first block where it applies (CPU, at most 64 channels) and builds; else None, with a warning."""
    if device.type != "cpu" or width > MAX_CHANNELS:
        return None
    try:
        return native_layer1()
    except NativeUnavailable as exc:
        warnings.warn(
            f"the native first-layer kernel is unavailable ({exc}); training continues with the first layer "
            "as a matrix product (slower, same results)",
            RuntimeWarning,
            stacklevel=4,
        )
        return None


def _kernels(compiled: bool, native: bool, config: TrainConfig, device: torch.device) -> _Kernels:
    """The kernels; compiled ones are compiled here, in the caller's thread, on a small random batch."""
    layer1 = _native_layer1(device, config.width) if native else None
    if not compiled:
        return _Kernels(False, layer1)
    kernels = _Kernels(True, layer1)
    try:
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)  # the kernels are compiled for the workers' setting
        try:
            g = torch.Generator().manual_seed(0)
            n = max(config.batch_size, 3) + 1
            x = torch.rand(n, 64, 64, generator=g)
            mask = torch.rand(n, 16, 16, generator=g) < 0.5
            yy = (torch.arange(n) % 2).numpy()
            data = TrialData(x.numpy(), mask.numpy(), yy, x[:3].numpy(), mask[:3].numpy(), yy[:3])
            cfg = dataclasses.replace(config, epochs=1, mode="joint", classifier_epochs=None)
            _train_one(
                _Engine(config.batch_size, config.width, device, kernels), cfg, data, 0, device, _nothing
            )
        finally:
            torch.set_num_threads(threads)
    except Exception as exc:  # no compiler, an unsupported platform: the eager kernels do the same work
        warnings.warn(
            f"torch.compile of the training kernels failed ({type(exc).__name__}: {str(exc)[:200]}); "
            "training continues with the eager kernels (slower, same results)",
            RuntimeWarning,
            stacklevel=3,
        )
        return _Kernels(False, layer1)
    return kernels


def fit_fast(
    config: TrainConfig,
    data: Sequence[TrialData],
    seeds: Sequence[int],
    *,
    workers: int | None = None,
    compile: bool = False,
    native: bool | None = None,
    progress: bool = False,
) -> list[AutoencoderClassifier]:
    """Train one network per ``(data[t], seeds[t])``, each as ``AutoencoderClassifier(config, seed).fit``.

    Parameters
    ----------
    config
        Training settings shared by all models; joint or sequential mode. ``width`` must be the module's.
    data
        One :class:`~adaptrt.response.batched.TrialData` per model; the training sets may differ in size.
    seeds
        One non-negative int per model (the estimator's seed).
    workers
        Worker processes (``spawn``) training models at the same time, each on one core; None:
        ``torch.get_num_threads()`` (capped by the number of models); 1 trains in this process (with torch's
        intra-op threads at one, restored afterwards). Ignored (1) on CUDA. A script that calls this with
        more than one worker needs the ``if __name__ == "__main__":`` guard of ``multiprocessing``.
    compile
        Fuse the elementwise parts with :func:`torch.compile` (needs a working C++ compiler on a CPU, Triton
        on CUDA; the first call compiles for about a minute, later runs reuse torch's on-disk cache). If
        compilation fails, a warning says why and the eager kernels are used.
    native
        Compute the first encoder block with the native C kernel (:mod:`adaptrt.response.native`: built
        once per machine with the system's C compiler, in about a second; CPU only). None: as ``compile``.
        If the kernel cannot be built, a warning says why and the first block runs as a matrix product.
    progress
        Show a progress bar over the models' epochs.

    Returns
    -------
    list of AutoencoderClassifier
        Fitted estimators in the order of ``data``, each equal to the one ``fit`` would return up to
        float32 rounding (``model_`` in eval mode on the config's device, ``history_`` with ``fit``'s keys).

    Raises
    ------
    InputError
        Bad data (as ``fit``), a bad seed, config or worker count, ``data`` and ``seeds`` of different
        lengths, CUDA asked for and missing.
    FloatingPointError
        A model's loss became NaN or inf.
    """
    seeds = check_many(config, data, seeds, "fit_fast")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be None or an int >= 1, got {workers!r}", field="workers")
    if native is not None and not isinstance(native, bool):
        raise InputError(f"native must be None, True or False, got {native!r}", field="native")
    use_native = compile if native is None else native
    device = resolve_device(config.device)
    data = [_validated(d) for d in data]  # bad input fails here, in the caller's process
    n_workers = 1 if device.type == "cuda" else min(workers or torch.get_num_threads(), len(data))
    epochs = config.epochs + config.n_classifier_epochs
    fitted: list[_Fitted] = []
    with tqdm(
        total=len(data) * epochs, disable=not progress, desc="epochs (all models)", unit="epoch"
    ) as bar:
        if n_workers == 1:
            threads = torch.get_num_threads()
            try:
                if device.type == "cpu":
                    torch.set_num_threads(1)  # as in the workers: the same arithmetic for any worker count
                engine = _Engine(
                    config.batch_size, config.width, device, _kernels(compile, use_native, config, device)
                )
                for d, s in zip(data, seeds, strict=True):
                    fitted.append(_train_one(engine, config, d, s, device, bar.update))
            finally:
                torch.set_num_threads(threads)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                n_workers, mp_context=ctx, initializer=_worker_init, initargs=(config, compile, use_native)
            ) as ex:
                futures = [ex.submit(_worker_train, config, d, s) for d, s in zip(data, seeds, strict=True)]
                try:
                    for fut in futures:
                        fitted.append(fut.result())
                        bar.update(epochs)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
    out = []
    for s, f in zip(seeds, fitted, strict=True):
        net = trial_generators(s, config)[0]
        net.load_state_dict(f.state)
        out.append(AutoencoderClassifier(config, seed=s)._set_fitted(net, f.history, device))
    return out


def _nothing(*_: Any) -> None:
    return None


def _validated(d: TrialData) -> TrialData:
    """``d`` checked as ``fit`` checks its arguments, as numpy arrays (picklable for the workers)."""
    x = _as_images(d.x, "x")
    n = x.shape[0]
    if n < 2:
        raise InputError(f"fit needs at least 2 samples, got {n}", field="x")
    m, y = _as_masks(d.mask, n, "mask"), _as_labels(d.y, n, "y")
    if d.x_val is None or d.mask_val is None or d.y_val is None:
        return TrialData(x, m, y)
    xv = _as_images(d.x_val, "x_val")
    nv = xv.shape[0]
    return TrialData(x, m, y, xv, _as_masks(d.mask_val, nv, "mask_val"), _as_labels(d.y_val, nv, "y_val"))


# The state of a worker process of fit_fast (one engine per process, built by the pool's initializer).
_WORKER: dict[str, _Engine] = {}


def _keep_freed_memory() -> None:
    """In a worker process: ask glibc to keep freed blocks instead of returning them to the OS.

    Every step allocates and frees the same few MB-sized blocks; returned to the OS, each comes back as
    first-touch page faults (about 10 us per 4 KiB page measured on virtual machines): 20-25 % of a step.
    Only the worker processes (which do nothing else) are changed; no-op where glibc is absent.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never trim the heap
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD: blocks up to 32 MB from the heap
    except (OSError, AttributeError):
        pass


def _worker_init(config: TrainConfig, compiled: bool, native: bool) -> None:
    torch.set_num_threads(1)
    _keep_freed_memory()
    device = torch.device("cpu")
    _WORKER["engine"] = _Engine(
        config.batch_size, config.width, device, _kernels(compiled, native, config, device)
    )


def _worker_train(config: TrainConfig, data: TrialData, seed: int) -> _Fitted:
    return _train_one(_WORKER["engine"], config, data, seed, torch.device("cpu"), _nothing)
