"""Part I's network: a convolutional autoencoder whose GTV-masked bottleneck feeds a small classifier.

References
----------
* The paper's Methods, "AI model development and training" (Part I, the response study): a 64×64×1 input,
  an encoder of two 3×3 convolutions with ReLU, each followed by 2×2 max pooling, down to a 16×16×5
  bottleneck; the bottleneck multiplied by the GTV mask; a decoder of two upsampling layers with their
  convolutions back to 64×64×1 with a sigmoid; a classifier of one dense layer (32) with batch
  normalisation and dropout (0.1) followed by a dense output with a sigmoid; no global pooling.
* Keras ``UpSampling2D`` (nearest-neighbour by default), ``Conv2D(padding="same")``, the Keras default
  initialisers (Glorot-uniform kernels, zero biases).

The layers, with what the paper leaves open marked *(ours)*::

    input x (b, 1, 64, 64) in [0, 1]; GTV mask m (b, 1, 16, 16) in {0, 1}
    encoder   Conv2d(1 -> width, 3×3, same) + ReLU + MaxPool 2×2      -> (b, width, 32, 32)   width=16 (ours)
              Conv2d(width -> 5, 3×3, same) + ReLU + MaxPool 2×2      -> (b, 5, 16, 16)       features_unmasked
    mask      features_unmasked * m, then ``bottleneck`` (Identity)   -> (b, 5, 16, 16)       bottleneck
    decoder   Upsample ×2 (nearest) + Conv2d(5 -> width, 3×3, same) + ReLU   -> (b, width, 32, 32)  (ours)
              Upsample ×2 (nearest) + Conv2d(width -> 1, 3×3, same) + sigmoid -> (b, 1, 64, 64)     (ours)
    classifier Flatten (1280) -> Linear(1280 -> 32) -> BatchNorm1d(32) -> ReLU -> Dropout(0.1)
              -> Linear(32 -> 1)                                      -> (b,) logit
              (order of batch norm, ReLU and dropout: ours; the paper lists the layers, not their order)

The decoder mirrors the encoder: each upsampling is followed by one 3×3 convolution, the first back to the
encoder's width, the last to one channel. The model returns the classifier's **logit** ``z``; the
probability of response is ``sigmoid(z)``. Class activation maps explain the logit (see
:mod:`adaptrt.response.cam`); the layer to explain is :attr:`AutoencoderClassifierNet.bottleneck`, the
last encoder layer after the multiplication by the mask.

Parameters (width 16): encoder 160 + 725, decoder 736 + 145, classifier 40 992 + 64 + 33; 42 855 in all,
of which 64 are the batch norm's affine parameters (its running statistics are buffers).

Initialisation follows Keras' defaults, as the paper's model was built in Keras: Glorot-uniform weights
and zero biases for the convolutions and dense layers; the batch norm starts at weight 1, bias 0. The
batch norm uses PyTorch's defaults (momentum 0.1, eps 1e-5); Keras' defaults (momentum 0.99, i.e. 0.01
in PyTorch's convention, eps 1e-3) would make the running statistics, used in evaluation, lag far behind
in short runs.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["BOTTLENECK_CHANNELS", "HIDDEN_UNITS", "AutoencoderClassifierNet", "AutoencoderOutput"]

#: Channels of the bottleneck (the paper's 16×16×5).
BOTTLENECK_CHANNELS: int = 5
#: Units of the classifier's dense layer (the paper's N = 32).
HIDDEN_UNITS: int = 32


class AutoencoderOutput(NamedTuple):
    """What :meth:`AutoencoderClassifierNet.forward` returns.

    Attributes
    ----------
    reconstruction
        ``(b, 1, s, s)`` reconstructed image in (0, 1): ``sigmoid(reconstruction_logit)``.
    reconstruction_logit
        ``(b, 1, s, s)`` the decoder's output before the sigmoid (for a numerically stable BCE).
    logit
        ``(b,)`` the classifier's logit ``z``; the probability of class 1 is ``sigmoid(z)``.
    bottleneck
        ``(b, 5, s/4, s/4)`` the encoder's features multiplied by the mask (zero outside it).
    features_unmasked
        ``(b, 5, s/4, s/4)`` the encoder's features before the mask (for the L2 penalty outside it).
    """

    reconstruction: torch.Tensor
    reconstruction_logit: torch.Tensor
    logit: torch.Tensor
    bottleneck: torch.Tensor
    features_unmasked: torch.Tensor


class AutoencoderClassifierNet(nn.Module):
    """The autoencoder + classifier of Part I (see the module docstring for the layers).

    Parameters
    ----------
    width
        Channels of the first encoder convolution and of the first decoder convolution (int >= 1). The
        paper does not state it; 16 is our choice.
    dropout
        Dropout rate of the classifier, in [0, 1) (the paper's 0.1).
    image_size
        Side of the square input in pixels, a multiple of 4 (the paper's 64); the bottleneck is
        ``image_size / 4``.
    generator
        Random generator for the initial weights; None uses torch's global generator.

    Attributes
    ----------
    bottleneck
        An :class:`torch.nn.Identity` applied to the masked features: the layer to explain with
        :func:`adaptrt.response.cam.class_activation_map` (its output feeds both the decoder and the
        classifier).
    """

    def __init__(
        self,
        width: int = 16,
        dropout: float = 0.1,
        image_size: int = 64,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be an int >= 1, got {width!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size < 4
            or image_size % 4
        ):
            raise ValueError(f"image_size must be a positive multiple of 4, got {image_size!r}")
        self.width = width
        self.image_size = image_size
        self.feature_size = image_size // 4
        c = BOTTLENECK_CHANNELS
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, c, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.bottleneck = nn.Identity()
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c, width, kernel_size=3, padding="same"),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width, 1, kernel_size=3, padding="same"),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * self.feature_size**2, HIDDEN_UNITS),
            nn.BatchNorm1d(HIDDEN_UNITS),
            nn.ReLU(),
            nn.Dropout(float(dropout)),
            nn.Linear(HIDDEN_UNITS, 1),
        )
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Keras' default initialisation: Glorot-uniform weights, zero biases, batch norm (1, 0).

        Parameters
        ----------
        generator
            Random generator for the weights; None uses torch's global generator.
        """
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm1d):
                module.reset_parameters()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> AutoencoderOutput:
        """Reconstruct the image and classify the masked bottleneck.

        Parameters
        ----------
        x
            ``(b, 1, s, s)`` image in [0, 1] (``s = image_size``).
        mask
            ``(b, 1, s/4, s/4)`` GTV mask at the bottleneck's resolution, 0/1 (bool or float).

        Returns
        -------
        AutoencoderOutput
            Reconstruction, its logit, the classifier logit, the masked and the unmasked bottleneck.
        """
        s, f = self.image_size, self.feature_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(f"x must have shape (b, 1, {s}, {s}), got {tuple(x.shape)}")
        if tuple(mask.shape) != (x.shape[0], 1, f, f):
            raise ValueError(f"mask must have shape ({x.shape[0]}, 1, {f}, {f}), got {tuple(mask.shape)}")
        features = self.encoder(x)  # (b, 5, s/4, s/4)
        masked = self.bottleneck(features * mask.to(features.dtype))  # (b, 5, s/4, s/4)
        recon_logit = self.decoder(masked)  # (b, 1, s, s)
        logit = self.classifier(masked)[:, 0]  # (b,)
        return AutoencoderOutput(
            reconstruction=torch.sigmoid(recon_logit),
            reconstruction_logit=recon_logit,
            logit=logit,
            bottleneck=masked,
            features_unmasked=features,
        )
