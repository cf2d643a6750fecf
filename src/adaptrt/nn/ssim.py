"""Structural similarity (SSIM), shared by the studies (Part I's reconstruction loss, Part II's losses and
image metrics).

SSIM of Wang et al. (2004) with a Gaussian window as ``tf.image.ssim`` (filter size 11, sigma 1.5, k1 0.01,
k2 0.03, 'valid' filtering), differentiable, per image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["gaussian_window", "ssim"]


def gaussian_window(size: int, sigma: float, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian window ``exp(-t**2 / (2 sigma**2))``, ``t = -(size-1)/2 .. (size-1)/2``.

    Parameters
    ----------
    size
        Odd number of taps (pixels).
    sigma
        Standard deviation in pixels (> 0).
    dtype
        Floating dtype of the result.

    Returns
    -------
    torch.Tensor
        ``(size,)`` weights summing to 1.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"the SSIM window must be an odd int >= 1, got {size!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"the SSIM sigma must be a finite number > 0, got {sigma!r}")
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, differentiable.

    Local means, variances and covariance are weighted by a separable Gaussian window and computed at the
    positions where the window lies inside the image ('valid' filtering), as ``tf.image.ssim``; population
    (biased) variances. Equals :func:`skimage.metrics.structural_similarity` with
    ``gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=data_range``, per channel,
    when ``window = 2 * int(3.5 * sigma + 0.5) + 1`` (skimage's window for a given sigma: 11 for 1.5).

    Parameters
    ----------
    x, y
        ``(b, c, h, w)`` images of the same shape and floating dtype, ``h, w >= window``.
    window
        Odd side of the Gaussian window in pixels.
    sigma
        Standard deviation of the Gaussian window in pixels.
    data_range
        Range of the image values (1 for images in [0, 1]); sets ``C1 = (k1 L)**2``, ``C2 = (k2 L)**2``.
    k1, k2
        The stabilising constants of Wang et al.

    Returns
    -------
    torch.Tensor
        ``(b,)`` mean SSIM of each image over its channels and valid positions; 1 for identical images.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ssim needs two (b, c, h, w) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    b, c, h, w = x.shape
    if h < window or w < window:
        raise ValueError(f"the images ({h}×{w}) are smaller than the SSIM window ({window})")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    g = gaussian_window(window, sigma, dtype=x.dtype).to(x.device)
    # The five local statistics are filtered in one grouped convolution per axis.
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(b, c * 5, h, w)  # (b, 5c, h, w)
    k = c * 5
    stats = F.conv2d(stats, g.view(1, 1, window, 1).expand(k, 1, window, 1), groups=k)  # (b, 5c, h', w)
    stats = F.conv2d(stats, g.view(1, 1, 1, window).expand(k, 1, 1, window), groups=k)  # (b, 5c, h', w')
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.reshape(b, c, 5, *stats.shape[2:]).unbind(dim=2)  # (b, c, h', w')
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s_map.mean(dim=(1, 2, 3))  # (b,)
