"""Part II's network: a 2-D U-Net conditioned on the diffusion step, with an image head and a drift head.

References
----------
* Part II's Method, "Diffusion model architecture and drift prediction": two inputs, the noisy image and a
  scalar step ``t``; ``t`` embedded by a fully connected layer of 64 units with ReLU, broadcast and
  concatenated with the feature maps at the bottleneck; an encoder of convolutions and max pooling; a
  decoder of transposed convolutions with skip connections; a final convolution giving the post-treatment
  image (Method 1) or the noise (Method 2); a second head for the drift, "using either shared convolutional
  layers or fully decoupled layers" (Fig. 6: "two decoupled network layers"; Fig. 3C: two networks).

The layers, with what the paper leaves open marked *(ours)*, for ``widths = (w0, w1, w2)``::

    x (b, c, h, w), t (b,) float (the caller's normalised step, e.g. (t + 1) / T), label (b,) int or None
    time      Linear(1 -> 64) + ReLU [+ Embedding(n_classes + 1 -> 64)(label)]      -> (b, 64)
    encoder   Block(c -> w0)  at h           -> skip0;  MaxPool 2×2
              Block(w0 -> w1) at h/2         -> skip1;  MaxPool 2×2                -> (b, w1, h/4, w/4)
    bottleneck concat(features, time broadcast to h/4 × w/4) -> Block(w1 + 64 -> w2) -> (b, w2, h/4, w/4)
    decoder   ConvTranspose 2×2 (w2 -> w1), concat skip1, Block(2·w1 -> w1)         -> (b, w1, h/2, w/2)
              ConvTranspose 2×2 (w1 -> w0), concat skip0, Block(2·w0 -> w0)         -> (b, w0, h, w)
    heads     image: Conv 1×1 (w0 -> 1); drift: Conv 1×1 (w0 -> 1)                  -> (b, 1, h, w) each

``Block(a -> b)`` is two 3×3 convolutions (same padding), each followed by GroupNorm and ReLU *(ours)*.
Group normalisation rather than batch normalisation: a sample's output must not depend on the other samples
of its batch (K samples of one lesion in one batch, batch 1 at inference, mixed steps in a training batch),
and it behaves the same in training and evaluation. Normalised blocks are the usual choice of diffusion
U-Nets; on 2 CPU cores they cost about a tenth of a training step. Groups: ``gcd(8, channels)``. ReLU as
in the paper's time embedding. The time embedding is concatenated before the bottleneck's convolutions so
that they mix it with the image features non-linearly.

The parameters are stored channels-last and the input is made channels-last in ``forward``: oneDNN's
convolutions on CPU then train 1.15-1.45× faster than with contiguous (NCHW) tensors (2 cores, batch 64,
64×64, measured with ``benchmarks/drift_network.py``; ``torch.compile`` gave +20 % for widths (8, 16, 32),
-7 % for (16, 32, 64) and slower DDIM sampling, so it is not used). The outputs have one channel, so their
layout is the same either way.

Drift head variants (``drift_head``):

* ``"shared"``: a 1×1 convolution on the last decoder features, shared with the image head;
* ``"separate"``: the drift has its own decoder (its own transposed convolutions and blocks), sharing the
  encoder and bottleneck: the paper's Fig. 6;
* ``"none"``: image head only; ``forward`` returns ``(image, None)``. Two such networks make the fully
  decoupled pair of Fig. 3C: :class:`DecoupledPair`. Also the backbone of the one-step regression baseline.

Widths are not in the paper; ``benchmarks/drift_network.py`` prints parameters, FLOPs and throughput of
the choices.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

__all__ = ["DRIFT_HEADS", "DecoupledPair", "DriftUNet", "count_parameters"]

#: The drift head variants of :class:`DriftUNet`.
DRIFT_HEADS: tuple[str, ...] = ("shared", "separate", "none")


def count_parameters(module: nn.Module) -> int:
    """The number of parameters (every element of every parameter tensor) of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3×3 convolutions, each with GroupNorm and ReLU: ``(b, c_in, h, w) -> (b, c_out, h, w)``."""
    layers: list[nn.Module] = []
    for a in (c_in, c_out):
        layers += [
            nn.Conv2d(a, c_out, 3, padding=1),
            nn.GroupNorm(math.gcd(8, c_out), c_out),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class _Decoder(nn.Module):
    """The upward path: per level a 2×2 transposed convolution, the skip concatenated, one :func:`_block`."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        pairs = list(itertools.pairwise(widths))[::-1]  # (w_i, w_{i+1}), deepest first
        self.ups = nn.ModuleList(nn.ConvTranspose2d(high, low, 2, stride=2) for low, high in pairs)
        self.blocks = nn.ModuleList(_block(2 * low, low) for low, _ in pairs)

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        # h (b, w_last, H/2^L, W/2^L); skips deepest first, skips[i] (b, w_{L-1-i}, H/2^(L-1-i), ...)
        for up, block, skip in zip(self.ups, self.blocks, skips, strict=True):
            h = up(h)  # (b, w_i, 2·h', 2·w')
            h = block(torch.cat([h, skip], dim=1))  # (b, 2·w_i, ...) -> (b, w_i, ...)
        return h  # (b, w0, H, W)


class DriftUNet(nn.Module):
    """The diffusion U-Net with a drift head (see the module docstring for the layers).

    Parameters
    ----------
    widths
        Channels per level, shallow to deep; the last is the bottleneck's. ``len(widths) - 1`` poolings,
        so ``h`` and ``w`` must be multiples of ``2 ** (len(widths) - 1)``.
    time_dim
        Units of the time embedding (the paper's 64).
    drift_head
        ``"shared"``, ``"separate"`` or ``"none"`` (see the module docstring).
    n_classes
        ``> 0``: add a class-label embedding (``n_classes + 1`` rows, the last one "no label", for
        classifier-free guidance) to the time embedding; ``0``: no label input.
    in_channels
        Channels of the input image.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64),
        time_dim: int = 64,
        drift_head: str = "shared",
        n_classes: int = 0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths must hold at least two positive ints, got {widths!r}")
        if drift_head not in DRIFT_HEADS:
            raise ValueError(
                f"drift_head must be one of {', '.join(map(repr, DRIFT_HEADS))}, got {drift_head!r}"
            )
        if time_dim < 1 or n_classes < 0 or in_channels < 1:
            raise ValueError(
                f"need time_dim >= 1, n_classes >= 0, in_channels >= 1; got {time_dim}, {n_classes}, {in_channels}"
            )
        self.widths = widths
        self.time_dim = time_dim
        self.drift_head_kind = drift_head
        self.n_classes = n_classes
        self.in_channels = in_channels
        self.multiple = 2 ** (len(widths) - 1)

        self.time_embed = nn.Sequential(nn.Linear(1, time_dim), nn.ReLU())
        self.label_embed = nn.Embedding(n_classes + 1, time_dim) if n_classes > 0 else None
        chans = (in_channels, *widths[:-2])
        self.encoder = nn.ModuleList(_block(a, b) for a, b in zip(chans, widths[:-1], strict=True))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(widths[-2] + time_dim, widths[-1])
        self.decoder = _Decoder(widths)
        self.image_head = nn.Conv2d(widths[0], 1, 1)
        self.drift_decoder = _Decoder(widths) if drift_head == "separate" else None
        self.drift_head = nn.Conv2d(widths[0], 1, 1) if drift_head != "none" else None
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def embed(self, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning vector: ``t`` ``(b,)`` float, ``label`` ``(b,)`` int or ``None`` -> ``(b, time_dim)``."""
        if not t.dtype.is_floating_point:
            raise TypeError(f"t must be the normalised float step, e.g. (t + 1) / T, got dtype {t.dtype}")
        e = self.time_embed(t.reshape(-1, 1).to(self.image_head.weight.dtype))  # (b, time_dim)
        if self.label_embed is None:
            if label is not None:
                raise ValueError("this network has no label input (n_classes=0); pass label=None")
            return e
        if label is None:  # the "no label" row
            label = torch.full((t.shape[0],), self.n_classes, dtype=torch.long, device=t.device)
        elif label.shape != t.shape or label.dtype.is_floating_point:
            raise ValueError(
                f"label must be a ({t.shape[0]},) integer tensor, got {label.dtype} {tuple(label.shape)}"
            )
        elif label.numel() and (int(label.min()) < 0 or int(label.max()) > self.n_classes):
            raise ValueError(f"labels must lie in [0, {self.n_classes}] ({self.n_classes} = no label)")
        return e + self.label_embed(label)  # (b, time_dim)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict the image (post image or noise) and the drift.

        Parameters
        ----------
        x
            ``(b, in_channels, h, w)`` the noisy image; ``h``, ``w`` multiples of ``2 ** (len(widths) - 1)``.
        t
            ``(b,)`` float, the normalised step (:func:`adaptrt.drift.schedule.time_input`).
        label
            ``(b,)`` int64 class labels in ``[0, n_classes]`` (``n_classes`` = no label), or ``None``.

        Returns
        -------
        image : torch.Tensor
            ``(b, 1, h, w)`` the image head.
        drift : torch.Tensor or None
            ``(b, 1, h, w)`` the drift head; ``None`` when ``drift_head="none"``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (b, {self.in_channels}, h, w), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        if h % self.multiple or w % self.multiple:
            raise ValueError(
                f"image size {h}×{w} is not a multiple of {self.multiple} (2 ** (len(widths) - 1) for widths "
                f"{self.widths}); crop or pad to e.g. {-(-h // self.multiple) * self.multiple}×"
                f"{-(-w // self.multiple) * self.multiple}"
            )
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        emb = self.embed(t, label)  # (b, time_dim)
        # channels-last: oneDNN's fast convolutions on CPU (see the module docstring)
        x = x.contiguous(memory_format=torch.channels_last)

        skips: list[torch.Tensor] = []
        feat = x  # (b, c, h, w)
        for block in self.encoder:
            feat = block(feat)  # (b, w_i, h_i, w_i)
            skips.append(feat)
            feat = self.pool(feat)  # (b, w_i, h_i/2, w_i/2)
        tmap = emb[:, :, None, None].expand(-1, -1, feat.shape[2], feat.shape[3])  # (b, time_dim, h', w')
        feat = self.bottleneck(torch.cat([feat, tmap], dim=1))  # (b, w_last, h', w')
        skips = skips[::-1]  # deepest first

        dec = self.decoder(feat, skips)  # (b, w0, h, w)
        image = self.image_head(dec)  # (b, 1, h, w)
        if self.drift_head is None:
            return image, None
        drift_feat = dec if self.drift_decoder is None else self.drift_decoder(feat, skips)  # (b, w0, h, w)
        return image, self.drift_head(drift_feat)  # (b, 1, h, w) each


class DecoupledPair(nn.Module):
    """Two independent :class:`DriftUNet` (``drift_head="none"``): one for the image, one for the drift.

    The paper's fully decoupled model (Fig. 3C). Same forward signature as :class:`DriftUNet`; the drift is the
    image head of the second network. Parameters as :class:`DriftUNet`.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64),
        time_dim: int = 64,
        n_classes: int = 0,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        self.image_net = DriftUNet(widths, time_dim, "none", n_classes, in_channels)
        self.drift_net = DriftUNet(widths, time_dim, "none", n_classes, in_channels)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(b, c, h, w)``, ``t`` ``(b,)`` float, ``label`` -> ``(image, drift)``, each ``(b, 1, h, w)``."""
        return self.image_net(x, t, label)[0], self.drift_net(x, t, label)[0]
