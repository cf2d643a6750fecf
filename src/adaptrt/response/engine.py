"""A fast trainer for Part I's network: matrix products, hand-written gradients, buffers allocated once.

:func:`fit_fast` trains one :class:`~adaptrt.response.autoencoder.AutoencoderClassifierNet` per
``(data, seed)`` pair, each going through the same sequence of updates as
``AutoencoderClassifier(config, seed).fit(...)`` (same initial weights, mini-batch order, dropout masks,
batch-norm statistics and AdamW steps); the results agree with that loop to float32 rounding, not bit for bit
(sums are taken in another order). It is what the response study uses for its 50 trials.

Why it is fast (measured on a 2-core CPU; see ``docs/response.md`` and ``benchmarks/``)
    * **No fresh memory in the hot loop.** A training step of the plain loop allocates about 100 MB of
      activations and gradients (the first layer's output alone is 16 MB for a batch of 64) and frees them
      again; glibc hands such blocks back to the OS, so every step pays first-touch page faults (about
      10 us per 4 KiB page on the virtual machines measured) - more than the arithmetic. Here every
      intermediate lives in a buffer allocated once per worker and written with ``out=`` / in-place ops.
    * **Every layer is a matrix product of a good shape.** Each "3×3 convolution + 2×2 max pool" block is
      computed as one product per output pixel *of the pooled grid*: the 4×4 stride-2 patch of the padded
      input (16 values per channel) times a ``(16 c_in, 4 phases × c_out)`` matrix gives the four
      pre-pooling outputs of each 2×2 window at once, and the pool is a max over the phase axis (its
      argmax kept for the backward pass, first maximum as ``max_pool2d``). Each "nearest upsampling ×2 +
      3×3 convolution" block is a product at the *low* resolution (the sub-pixel identity) whose four
      phases are the output pixels. The last decoder layer (16 -> 1 channel) is nine shifted products on
      the flattened padded grid, with no patch matrix. The weights of these products are linear maps of
      the network's own parameters (:func:`_pool_map`, :func:`_subpixel_map`), so the parameters, their
      gradients and AdamW are exactly those of the PyTorch module.
    * **SSIM without repeated work.** The input image's local mean and variance do not change during
      training: they are computed once per sample; the Gaussian filtering of the three other statistics
      is two batched products with a banded matrix.
    * **Gradients by hand**, in the same buffers: no autograd graph, no per-op allocation.
    * **One thread per model, models in parallel.** On a CPU, ``workers`` threads (default: the number of
      torch threads) each train whole models with torch's intra-op parallelism set to one thread: small
      operations scale far better this way than split across cores, and each model's arithmetic is then
      the same whatever the number of workers (a model's result does not depend on the machine's core
      count). torch's thread count is restored afterwards.

On CUDA the same code runs on the device (one worker; the dropout masks are still drawn on the CPU from the
same generators as ``fit`` on a CPU, so a CUDA run draws the CPU run's masks).

Randomness: as :func:`adaptrt.response.batched.trial_generators` (the initial network, the CPU generator of
the mini-batch order and the dropout stream of ``fit``).
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import InputError
from .batched import TrialData, _to_device, check_many, trial_generators
from .losses import BCE_WEIGHT, PENALTY_WEIGHT, SSIM_WEIGHT, gaussian_window
from .train import IMAGE_SIZE, AutoencoderClassifier, TrainConfig, _batches, resolve_device

__all__ = ["fit_fast"]

_BN_MOMENTUM = 0.1
_BN_EPS = 1e-5
_WIN = 11  # SSIM window (taps)
_SIGMA = 1.5
_C1 = (0.01 * 1.0) ** 2
_C2 = (0.03 * 1.0) ** 2
_S = IMAGE_SIZE  # 64
_CHUNK = 8  # samples per chunk of the first layer (its 16 MB of outputs for a batch of 64, in cache)
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
    patches: torch.Tensor  # (n, 1024, 17): 4×4 stride-2 patches of the padded image, then 1 (the first layer)
    mask: torch.Tensor  # (n, 256, 1) float 0/1
    y: torch.Tensor  # (n,)
    mu_x: torch.Tensor  # (n, 54, 54) local mean of the image (SSIM)
    var_x: torch.Tensor  # (n, 54, 54) local (biased) variance of the image

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


def _prepare(x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, maps: _Maps) -> _Prepared:
    """``x`` ``(n, 1, 64, 64)``, ``m`` ``(n, 1, 16, 16)`` float, ``y`` ``(n,)`` (as from ``_to_device``)."""
    n = int(x.shape[0])
    img = x.reshape(n, _S, _S).contiguous()
    xp = F.pad(img, (1, 1, 1, 1)).view(n, 33, 2, 33, 2)  # (n, I, qa, J, qc)
    patches = torch.empty(
        n, 32, 32, 2, 2, 2, 2, dtype=img.dtype, device=img.device
    )  # (n, i, j, u, v, qa, qc)
    for u in range(2):
        for v in range(2):
            patches[:, :, :, u, v].copy_(xp[:, u : u + 32, :, v : v + 32, :].permute(0, 1, 3, 2, 4))
    mu = torch.matmul(torch.matmul(maps.band, img), maps.band_t)
    exx = torch.matmul(torch.matmul(maps.band, img * img), maps.band_t)
    ones = torch.ones(n, 1024, 1, dtype=img.dtype, device=img.device)  # carries the bias
    return _Prepared(
        x=img,
        patches=torch.cat([patches.reshape(n, 1024, 16), ones], dim=2),
        mask=m.reshape(n, 256, 1).contiguous(),
        y=y.contiguous(),
        mu_x=mu.contiguous(),
        var_x=(exx - mu * mu).contiguous(),
    )


# ------------------------------------------------------------------------------------------- the engine
class _Terms(NamedTuple):
    total: float
    recon: float
    clf: float
    ssim: float
    correct: int


class _Engine:
    """Forward and backward passes of the network for batches of at most ``max_batch`` samples.

    Holds every intermediate in buffers allocated on first use and reused for every model and step; one
    engine per worker thread.
    """

    def __init__(self, max_batch: int, width: int, device: torch.device) -> None:
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
        w1 = torch.einsum("spk,ok->spo", pm, p["encoder.0.weight"].reshape(w, 9)).reshape(16, 4 * w)
        w3 = torch.einsum("uak,vcl,oikl->uviaco", sm, sm, p["decoder.1.weight"]).reshape(45, 4 * w)
        w4 = torch.einsum("uak,vcl,oikl->acoiuv", sm, sm, p["decoder.4.weight"]).reshape(4, w, 3, 3)
        wc1 = p["classifier.1.weight"].reshape(32, 5, 16, 16).permute(0, 2, 3, 1).reshape(32, 1280)
        return {
            "w1": torch.cat([w1, p["encoder.0.bias"].repeat(4)[None]]),  # (17, 4w)
            "w3": torch.cat([w3, p["decoder.1.bias"].repeat(4)[None]]),  # (46, 4w)
            "w4": w4.contiguous(),  # (4, w, 3, 3): sub-pixel kernel, output channel 2a + c
            "b4": p["decoder.4.bias"].repeat(4),
            "wc1": wc1.contiguous(),
        }

    def param_grads(self, g: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
        """Write the parameters' gradients from the gradients of the products (transposed maps)."""
        w = self.width
        pm, sm = self.maps.pool, self.maps.sub
        if "w1" in g:
            out["encoder.0.weight"].copy_(
                torch.einsum("spk,spo->ok", pm, g["w1"][:16].view(16, 4, w)).reshape(w, 1, 3, 3)
            )
            out["encoder.0.bias"].copy_(g["w1"][16].view(4, w).sum(0))
            out["encoder.3.weight"].copy_(g["w2"])
            out["encoder.3.bias"].copy_(g["b2"])
            out["decoder.1.weight"].copy_(
                torch.einsum("uak,vcl,uviaco->oikl", sm, sm, g["w3"][:45].view(3, 3, 5, 2, 2, w))
            )
            out["decoder.1.bias"].copy_(g["w3"][45].view(4, w).sum(0))
            out["decoder.4.weight"].copy_(
                torch.einsum("uak,vcl,acoiuv->oikl", sm, sm, g["w4"].view(2, 2, 1, w, 3, 3))
            )
            out["decoder.4.bias"].copy_(g["b4"].sum().reshape(1))
        if "wc1" in g:
            out["classifier.1.weight"].copy_(
                g["wc1"].view(32, 16, 16, 5).permute(0, 3, 1, 2).reshape(32, 1280)
            )
            for k in ("classifier.1.bias", "classifier.2.weight", "classifier.2.bias"):
                out[k].copy_(g[k])
            out["classifier.5.weight"].copy_(g["wc2"])
            out["classifier.5.bias"].copy_(g["bc2"])

    # ------------------------------------------------------------------------------------ max pool
    def _pool(
        self, name: str, phases: Sequence[torch.Tensor], out: torch.Tensor, rows: slice | None = None
    ) -> None:
        """``out = max`` of the four phases of each 2×2 window, keeping which one won (first maximum).

        The winners are kept as float 0/1 masks (float arithmetic is several times faster than boolean
        selection in torch's CPU kernels): ``m01`` phase 1 beat phase 0, ``m23`` phase 3 beat 2, ``m`` the
        pair (2, 3) beat (0, 1); strict comparisons, so a tie goes to the first phase, as ``max_pool2d``.
        ``rows``: the samples of the buffers that this call fills (a chunk of the batch).
        """
        c0, c1, c2, c3 = phases
        shape = tuple(out.shape[1:])
        rows = slice(0, int(out.shape[0])) if rows is None else rows
        m01, m23, m, v23 = (
            self.buf(name + k, shape, self.bmax)[rows] for k in (".m01", ".m23", ".m", ".v23")
        )
        torch.gt(c1, c0, out=m01)
        torch.gt(c3, c2, out=m23)
        torch.maximum(c2, c3, out=v23)
        torch.maximum(c0, c1, out=out)
        torch.gt(v23, out, out=m)
        torch.maximum(out, v23, out=out)

    def _unpool(
        self, name: str, grad: torch.Tensor, phases: Sequence[torch.Tensor], rows: slice | None = None
    ) -> None:
        """Route ``grad`` to the phase that won each window (the backward pass of :meth:`_pool`); exact.

        ``rows``: the samples of the batch that ``grad`` holds (a chunk of the batch :meth:`_pool` saw).
        """
        shape = tuple(grad.shape[1:])
        rows = slice(0, int(grad.shape[0])) if rows is None else rows
        m01, m23, m, ghi, glo = (
            self.buf(name + k, shape, self.bmax)[rows] for k in (".m01", ".m23", ".m", ".ghi", ".glo")
        )
        hi = torch.mul(grad, m, out=ghi)
        lo = torch.sub(grad, hi, out=glo)
        torch.mul(lo, m01, out=phases[1])
        torch.sub(lo, phases[1], out=phases[0])
        torch.mul(hi, m23, out=phases[3])
        torch.sub(hi, phases[3], out=phases[2])

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
        q = self.gemm_weights(p)
        buf = self.buf
        if isinstance(idx, slice):
            x, patches, m, y = data.x[idx], data.patches[idx], data.mask[idx], data.y[idx]
            mu_x, var_x = data.mu_x[idx], data.var_x[idx]
        else:
            nb = len(idx)
            x = torch.index_select(data.x, 0, idx, out=buf("x", (_S, _S), nb))
            patches = torch.index_select(data.patches, 0, idx, out=buf("s1", (1024, 17), nb))
            m = torch.index_select(data.mask, 0, idx, out=buf("m", (256, 1), nb))
            y = data.y[idx]
            mu_x = torch.index_select(data.mu_x, 0, idx, out=buf("mux", (_V, _V), nb))
            var_x = torch.index_select(data.var_x, 0, idx, out=buf("varx", (_V, _V), nb))
        b = int(x.shape[0])

        # ---- encoder block 1: conv 1 -> w, max pool, ReLU, as one product per pooled pixel (32×32)
        # In chunks of _CHUNK samples, so that each chunk's 4 MB of pre-pooling outputs stay in cache.
        s1 = patches.reshape(b * 1024, 17)
        c1 = buf("c1", (1024, 4 * w), b)
        h1 = buf("h1", (32, 32, w), b)  # channels last
        h1_on = buf("h1_on", (32, 32, w), b)  # ReLU mask, float
        for lo in range(0, b, _CHUNK):
            ch = slice(lo, min(lo + _CHUNK, b))
            nc = ch.stop - lo
            torch.mm(s1[lo * 1024 : ch.stop * 1024], q["w1"], out=c1[ch].view(-1, 4 * w))
            self._pool("pool1", c1[ch].view(nc, 32, 32, 4, w).unbind(3), h1[ch], ch)
            h1[ch].relu_()
            torch.gt(h1[ch], 0.0, out=h1_on[ch])
        # ---- encoder block 2: conv w -> 5 (oneDNN), max pool, ReLU  (16×16)
        h1v = h1.permute(0, 3, 1, 2)  # (b, w, 32, 32) with channels_last strides
        c2 = F.conv2d(h1v, p["encoder.3.weight"], p["encoder.3.bias"], padding=1).permute(0, 2, 3, 1)
        c2p = [c2[:, a::2, c::2] for a in range(2) for c in range(2)]  # (b, 16, 16, 5) each
        f4 = buf("f", (16, 16, 5), b)
        self._pool("pool2", c2p, f4)
        f4.relu_()
        f = f4.view(b * 256, 5)  # features before the mask
        mm = m.reshape(b * 256, 1)
        z = torch.mul(f, mm, out=buf("z", (256, 5), b).view(-1, 5))
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
        c3.relu_()  # (b, i, j, a, c, o): the decoder's features at (2i + a, 2j + c)
        c3_on = torch.gt(c3, 0.0, out=buf("c3_on", (256, 4 * w), b).view(-1, 4 * w))
        d1 = buf("d1", (32, 32, w), b)
        d1.view(b, 16, 2, 16, 2, w).copy_(c3.view(b, 16, 16, 2, 2, w).permute(0, 1, 3, 2, 4, 5))
        # ---- decoder block 2: upsample ×2 + conv w -> 1 as a sub-pixel conv w -> 4 at 32×32 (oneDNN)
        d1v = d1.permute(0, 3, 1, 2)
        r4 = F.conv2d(d1v, q["w4"], q["b4"], padding=1).permute(0, 2, 3, 1)  # (b, 32, 32, 4)
        rl = buf("rl", (_S, _S), b)  # reconstruction logit
        rl.view(b, 32, 2, 32, 2).copy_(r4.view(b, 32, 32, 2, 2).permute(0, 1, 3, 2, 4))
        # ---- reconstruction loss
        yh = torch.sigmoid(rl, out=buf("yh", (_S, _S), b))
        bce = F.binary_cross_entropy_with_logits(rl, x)
        st = buf("st", (3, _S, _S), b)
        st[:, 0].copy_(yh)
        torch.mul(yh, yh, out=st[:, 1])
        torch.mul(x, yh, out=st[:, 2])
        t1 = torch.matmul(self.maps.band, st, out=buf("t1", (3, _V, _S), b))
        t2 = torch.matmul(t1, self.maps.band_t, out=buf("t2", (3, _V, _V), b))
        mu_y, e_yy, e_xy = t2[:, 0], t2[:, 1], t2[:, 2]
        mxy = mu_x * mu_y
        a1 = 2 * mxy + _C1
        a2 = 2 * (e_xy - mxy) + _C2
        b1 = mu_x * mu_x + mu_y * mu_y + _C1
        b2 = var_x + (e_yy - mu_y * mu_y) + _C2
        den = b1 * b2
        smap = a1 * a2 / den
        ssim = smap.mean(dim=(1, 2)).mean()
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
                gz = torch.mm(ga, q["wc1"], out=buf("gz", (1280,), b))  # (b, 1280)
        if train_ae:
            # ---- SSIM and BCE backward: d loss / d reconstruction logit
            gscale = -SSIM_WEIGHT / (b * _V * _V)
            da1 = a2 / den
            da2 = a1 / den
            gst = buf("gst", (3, _V, _V), b)
            torch.mul(mu_x * (da1 - da2) - mu_y * smap * (1.0 / b1 - 1.0 / b2), 2 * gscale, out=gst[:, 0])
            torch.mul(smap / b2, -gscale, out=gst[:, 1])
            torch.mul(da2, 2 * gscale, out=gst[:, 2])
            u1 = torch.matmul(self.maps.band_t, gst, out=buf("u1", (3, _S, _V), b))
            u2 = torch.matmul(u1, self.maps.band, out=buf("u2", (3, _S, _S), b))
            gyh = u2[:, 0] + 2 * yh * u2[:, 1] + x * u2[:, 2]
            grl = buf("grl", (_S, _S), b)
            torch.mul(gyh, yh * (1 - yh), out=grl)
            grl.add_(yh - x, alpha=BCE_WEIGHT / (b * _S * _S))
            # ---- decoder block 2 backward
            gr4 = buf("gr4", (32, 32, 4), b)
            gr4.view(b, 32, 32, 2, 2).copy_(grl.view(b, 32, 2, 32, 2).permute(0, 1, 3, 2, 4))
            gd1v, g["w4"], g["b4"] = torch.ops.aten.convolution_backward(
                gr4.permute(0, 3, 1, 2),
                d1v,
                q["w4"],
                [4],
                [1, 1],
                [1, 1],
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, True],
            )
            # ---- decoder block 1 backward (ReLU mask from its output)
            gc3 = buf("gc3", (256, 4 * w), b).view(-1, 4 * w)
            gc3.view(b, 16, 16, 2, 2, w).copy_(
                gd1v.permute(0, 2, 3, 1).reshape(b, 16, 2, 16, 2, w).permute(0, 1, 3, 2, 4, 5)
            )
            gc3.mul_(c3_on)
            g["w3"] = p3m.t() @ gc3  # (46, 4w), the last row is the bias's
            gp3 = torch.mm(gc3, q["w3"][:45].t(), out=buf("gp3", (256, 45), b).view(-1, 45))
            gzp = buf("gzp", (18, 18, 5), b)
            gzp.zero_()
            gp3v = gp3.view(b, 16, 16, 3, 3, 5)
            for u in range(3):
                for v in range(3):
                    gzp[:, u : u + 16, v : v + 16].add_(gp3v[:, :, :, u, v])
            gzz = gzp[:, 1:17, 1:17].reshape(b * 256, 5)
            if gz is not None:
                gzz += gz.view(b * 256, 5)
            # ---- mask, penalty and encoder block 2 backward
            gf = gzz * mm
            gf.add_(outside, alpha=2 * PENALTY_WEIGHT / (b * 1280))
            gf.mul_(f > 0.0)
            gc2 = buf("gc2", (32, 32, 5), b)
            self._unpool(
                "pool2", gf.view(b, 16, 16, 5), [gc2[:, a::2, c::2] for a in range(2) for c in range(2)]
            )
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
            gh1 = torch.mul(gh1v.permute(0, 2, 3, 1), h1_on, out=buf("gh1", (32, 32, w), b))
            gc1 = buf("gc1", (1024, 4 * w), b)
            gw1 = torch.zeros(17, 4 * w, device=self.device)  # the last row is the bias's
            for lo in range(0, b, _CHUNK):
                ch = slice(lo, min(lo + _CHUNK, b))
                nc = ch.stop - lo
                self._unpool("pool1", gh1[ch], gc1[ch].view(nc, 32, 32, 4, w).unbind(3), ch)
                gw1.addmm_(s1[lo * 1024 : ch.stop * 1024].t(), gc1[ch].view(-1, 4 * w))
            g["w1"] = gw1
        self.param_grads(g, grads)
        return terms


# ------------------------------------------------------------------------------------------ the trainer
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
    generators: tuple[Any, torch.Generator, torch.Generator],
    device: torch.device,
    on_epoch: Any,
) -> AutoencoderClassifier:
    """Train one model with ``engine``; the equivalent of ``AutoencoderClassifier(config, seed).fit``."""
    maps = engine.maps
    xt, mt, yt = _to_device(data.x, data.mask, data.y, "", device)
    if xt.shape[0] < 2:
        raise InputError(f"fit needs at least 2 samples, got {xt.shape[0]}", field="x")
    train = _prepare(xt, mt, yt, maps)
    val = None
    if data.x_val is not None and data.mask_val is not None and data.y_val is not None:
        val = _prepare(*_to_device(data.x_val, data.mask_val, data.y_val, "", device), maps)
    net, shuffle_gen, dropout_gen = generators
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
    return AutoencoderClassifier(config, seed=seed)._set_fitted(net, history, device)


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


def fit_fast(
    config: TrainConfig,
    data: Sequence[TrialData],
    seeds: Sequence[int],
    *,
    workers: int | None = None,
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
        CPU threads training models at the same time, each with torch's intra-op parallelism at one thread;
        None: ``torch.get_num_threads()`` (capped by the number of models). Ignored (1) on CUDA.
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
    device = resolve_device(config.device)
    threads = torch.get_num_threads()
    n_workers = 1 if device.type == "cuda" else min(workers or threads, len(data))
    total = len(data) * (config.epochs + config.n_classifier_epochs)
    bar = tqdm(total=total, disable=not progress, desc="epochs (all models)", unit="epoch")
    lock = threading.Lock()

    def tick() -> None:
        with lock:
            bar.update()

    # Built here, in the caller's thread: trial_generators seeds torch's global generator (inside fork_rng),
    # which two workers must not do at the same time.
    gens = [trial_generators(s, config) for s in seeds]
    results: list[AutoencoderClassifier | None] = [None] * len(data)
    errors: list[BaseException] = []
    todo: queue.Queue[int] = queue.Queue()
    for t in range(len(data)):
        todo.put(t)

    def work() -> None:
        engine = _Engine(config.batch_size, config.width, device)
        while not errors:
            try:
                t = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results[t] = _train_one(engine, config, data[t], seeds[t], gens[t], device, tick)
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)
                return

    try:
        if device.type == "cpu":
            # one intra-op thread per model: a model's arithmetic is then the same for any worker count
            torch.set_num_threads(1)
        if n_workers == 1:
            work()
        else:
            pool = [threading.Thread(target=work, daemon=True) for _ in range(n_workers)]
            for th in pool:
                th.start()
            for th in pool:
                th.join()
    finally:
        torch.set_num_threads(threads)
        bar.close()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]
