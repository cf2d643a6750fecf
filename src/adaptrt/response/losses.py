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

from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..nn.ssim import gaussian_window, ssim
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
