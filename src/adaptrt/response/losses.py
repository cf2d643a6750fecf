"""Losses of Part I's autoencoder + classifier (the paper's Methods, "AI model development and training").

Reconstruction (the paper's weights)::

    L_rec = 0.2 * (1 - SSIM(x_hat, x)) + 0.6 * BCE(x_hat, x) + 0.2 * P(f, m)

* SSIM: :func:`ssim`, the structural similarity of Wang et al. (2004) with a Gaussian window as
  ``tf.image.ssim`` (filter size 11, sigma 1.5, k1 0.01, k2 0.03, 'valid' filtering), averaged over the
  valid positions of each image and then over the batch.
* BCE: pixel-wise binary cross-entropy of the reconstruction against the input (which lies in [0, 1]),
  averaged over pixels and batch, computed from the decoder's logits
  (:func:`torch.nn.functional.binary_cross_entropy_with_logits`): the same value as the BCE of the
  sigmoid output, without its overflow where the sigmoid saturates.
* P: :func:`feature_penalty`, the L2 penalty on the encoder's features outside the GTV mask,
  ``mean((f * (1 - m))**2)`` over **all** ``b * 5 * 16 * 16`` entries (positions inside the mask count as
  0). This is the Keras idiom of an activity penalty on ``f * (1 - m)``; dividing by all entries rather than
  by the number outside the mask keeps the penalty defined for a mask that covers the whole bottleneck and
  gives every entry the same weight whatever the size of the GTV. The decoder and classifier see only the
  masked features, so the penalty acts on the encoder alone.

Classifier: binary cross-entropy of the logit against the label, averaged over the batch
(:func:`classifier_loss`). Joint training adds the two losses with equal weights ("weighted equally"):
``L = L_rec + L_clf`` (:func:`joint_loss`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .autoencoder import AutoencoderOutput

__all__ = [
    "BCE_WEIGHT",
    "PENALTY_WEIGHT",
    "SSIM_WEIGHT",
    "LossTerms",
    "classifier_loss",
    "feature_penalty",
    "gaussian_window",
    "joint_loss",
    "reconstruction_loss",
    "ssim",
]

#: Weight of ``1 - SSIM`` in the reconstruction loss.
SSIM_WEIGHT: float = 0.2
#: Weight of the pixel-wise BCE in the reconstruction loss.
BCE_WEIGHT: float = 0.6
#: Weight of the L2 penalty on the features outside the mask.
PENALTY_WEIGHT: float = 0.2


class LossTerms(NamedTuple):
    """The terms of the loss of one batch, each a scalar tensor (differentiable).

    Attributes
    ----------
    total
        ``reconstruction + classifier`` (joint training).
    reconstruction
        ``0.2 * (1 - ssim) + 0.6 * bce + 0.2 * penalty``.
    classifier
        BCE of the classifier's logit against the label.
    ssim
        Mean SSIM of the reconstruction against the input.
    bce
        Pixel-wise BCE of the reconstruction against the input.
    penalty
        :func:`feature_penalty` of the unmasked features.
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    classifier: torch.Tensor
    ssim: torch.Tensor
    bce: torch.Tensor
    penalty: torch.Tensor


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


def feature_penalty(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L2 penalty on the features outside the mask: ``mean((features * (1 - mask))**2)``.

    The mean runs over all ``b * k * h * w`` entries (entries inside the mask contribute 0); see the
    module docstring for why.

    Parameters
    ----------
    features
        ``(b, k, h, w)`` unmasked encoder features.
    mask
        ``(b, 1, h, w)`` or ``(b, k, h, w)`` mask, 0/1 (bool or float).

    Returns
    -------
    torch.Tensor
        Scalar, >= 0; 0 exactly when every feature outside the mask is 0.
    """
    outside = features * (1.0 - mask.to(features.dtype))
    return (outside * outside).mean()


def reconstruction_loss(
    reconstruction_logit: torch.Tensor,
    x: torch.Tensor,
    features_unmasked: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The autoencoder's loss ``0.2 * (1 - SSIM) + 0.6 * BCE + 0.2 * P``.

    Parameters
    ----------
    reconstruction_logit
        ``(b, 1, h, w)`` decoder output before the sigmoid.
    x
        ``(b, 1, h, w)`` input image in [0, 1] (the target).
    features_unmasked
        ``(b, k, h/4, w/4)`` encoder features before the mask.
    mask
        ``(b, 1, h/4, w/4)`` GTV mask at the bottleneck's resolution.

    Returns
    -------
    tuple of torch.Tensor
        Scalars ``(loss, ssim, bce, penalty)``.
    """
    reconstruction = torch.sigmoid(reconstruction_logit)
    s = ssim(reconstruction, x).mean()
    bce = F.binary_cross_entropy_with_logits(reconstruction_logit, x)
    penalty = feature_penalty(features_unmasked, mask)
    loss = SSIM_WEIGHT * (1.0 - s) + BCE_WEIGHT * bce + PENALTY_WEIGHT * penalty
    return loss, s, bce, penalty


def classifier_loss(logit: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the classifier's logit ``(b,)`` against the labels ``(b,)`` in {0, 1}; scalar."""
    return F.binary_cross_entropy_with_logits(logit, y.to(logit.dtype))


def joint_loss(out: AutoencoderOutput, x: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> LossTerms:
    """All loss terms of one batch; ``total = reconstruction + classifier`` (equal weights).

    Parameters
    ----------
    out
        The model's output for ``x`` and ``mask``.
    x
        ``(b, 1, h, w)`` input image in [0, 1].
    mask
        ``(b, 1, h/4, w/4)`` GTV mask at the bottleneck's resolution.
    y
        ``(b,)`` labels in {0, 1}.

    Returns
    -------
    LossTerms
        The total and its terms (scalars).
    """
    rec, s, bce, penalty = reconstruction_loss(out.reconstruction_logit, x, out.features_unmasked, mask)
    clf = classifier_loss(out.logit, y)
    return LossTerms(total=rec + clf, reconstruction=rec, classifier=clf, ssim=s, bce=bce, penalty=penalty)
