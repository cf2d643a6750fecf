"""The 3D U-Net of the target study's deep-learning CTV (Tran et al. 2025, Fig. 5b).

References: Çiçek et al., "3D U-Net", MICCAI 2016; Henry et al., BraTS 2020 (the paper's refs. 57-58).

Shape, as the paper's Fig. 5b:

* **encoder**: four stages, each two 3×3×3 convolutions (+ normalisation + ReLU); 2×2×2 max pooling between
  stages; widths ``f, 2f, 4f, 8f`` for ``f`` base features (48 in the paper);
* **decoder**: "almost symmetrical": at each of the three upper stages a 2×2×2 transposed convolution halves
  the width and doubles the size, the encoder's output of the same stage is **concatenated**, and two
  3×3×3 convolutions follow;
* a 1×1×1 convolution to one logit per voxel (sigmoid: probability of the composite lesion).

Normalisation is instance normalisation with a learnt scale and shift per channel (written as
``GroupNorm(c, c)``, the same function with a faster CPU kernel): the paper trains with mini-batch 1, where
batch normalisation degenerates. Plain PyTorch (no MONAI at run time): MONAI's ``BasicUNet`` has five stages and
``UNet`` uses strided residual units, neither the paper's shape.

The input's spatial size must be a multiple of ``2 ** (n_stages - 1)`` (8): :func:`pad_shape` gives it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet3D", "pad_shape"]


def pad_shape(shape: tuple[int, ...], n_stages: int = 4) -> tuple[int, ...]:
    """``shape`` rounded up on every axis to a multiple of ``2 ** (n_stages - 1)`` (what the network takes)."""
    m = 2 ** (n_stages - 1)
    return tuple(-(-int(s) // m) * m for s in shape)


class _DoubleConv(nn.Sequential):
    """(3×3×3 conv → instance norm → ReLU) × 2; ``(b, c_in, z, y, x) -> (b, c_out, z, y, x)``."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(c_out, c_out),  # one group per channel: instance normalisation, a faster CPU kernel
            nn.ReLU(inplace=True),
            nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(c_out, c_out),  # one group per channel: instance normalisation, a faster CPU kernel
            nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    """A four-stage 3D U-Net with concatenated skips and one output logit per voxel.

    Parameters
    ----------
    in_channels
        Input maps (6 in the paper: nADC, nFA, CNI, CCrI, nT1c, nFLAIR).
    base_features
        Width of the first stage ``f``; stage ``s`` has ``f * 2**s`` (the paper: 48).
    n_stages
        Encoder stages (4 as the paper); the input's size must be a multiple of ``2 ** (n_stages - 1)``.

    Notes
    -----
    ``forward`` maps ``(b, in_channels, z, y, x)`` to logits ``(b, 1, z, y, x)``.
    """

    def __init__(self, in_channels: int, base_features: int = 48, n_stages: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or base_features < 1 or n_stages < 2:
            raise ValueError(
                f"UNet3D needs in_channels >= 1, base_features >= 1, n_stages >= 2; got {in_channels}, "
                f"{base_features}, {n_stages}"
            )
        self.in_channels = int(in_channels)
        self.base_features = int(base_features)
        self.n_stages = int(n_stages)
        widths = [base_features * 2**s for s in range(n_stages)]
        self.encoder = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoder.append(_DoubleConv(c, w))
            c = w
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(2 * w, w, kernel_size=2, stride=2))
            self.decoder.append(_DoubleConv(2 * w, w))  # concat(skip w, upsampled w) -> w
        self.head = nn.Conv3d(widths[0], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(b, 1, z, y, x)`` of input ``(b, in_channels, z, y, x)``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet3D expects (b, {self.in_channels}, z, y, x), got {tuple(x.shape)}")
        m = 2 ** (self.n_stages - 1)
        if any(int(s) % m for s in x.shape[2:]):
            raise ValueError(
                f"UNet3D needs z, y, x multiples of {m} (pad with pad_shape), got {tuple(x.shape[2:])}"
            )
        skips = []
        for s, block in enumerate(self.encoder):
            x = block(x)  # (b, f * 2**s, Z / 2**s, Y / 2**s, X / 2**s)
            if s < self.n_stages - 1:
                skips.append(x)
                x = self.pool(x)  # halves z, y, x
        for up, block in zip(self.up, self.decoder, strict=True):
            x = up(x)  # (b, w, 2z', 2y', 2x'): doubles the size, halves the width
            x = torch.cat([skips.pop(), x], dim=1)  # (b, 2w, ...): the concatenated skip
            x = block(x)  # (b, w, ...)
        return self.head(x)  # (b, 1, Z, Y, X) logits
