"""Tests of Part I's autoencoder + classifier network and of its losses (SSIM, BCE, feature penalty)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from adaptrt.response.autoencoder import AutoencoderClassifierNet, AutoencoderOutput
from adaptrt.response.losses import (
    BCE_WEIGHT,
    PENALTY_WEIGHT,
    SSIM_WEIGHT,
    classifier_loss,
    feature_penalty,
    gaussian_window,
    joint_loss,
    reconstruction_loss,
    ssim,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int = 0, **kwargs: int | float) -> AutoencoderClassifierNet:
    return AutoencoderClassifierNet(generator=torch.Generator().manual_seed(seed), **kwargs)  # type: ignore[arg-type]


def _square_mask(b: int, lo: int = 4, hi: int = 12, size: int = 16) -> torch.Tensor:
    m = torch.zeros(b, 1, size, size)
    m[:, :, lo:hi, lo:hi] = 1.0
    return m


# ------------------------------------------------------------------------------------------------ network
def test_output_shapes_and_layers() -> None:
    net = _net()
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = net(x, _square_mask(3))
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == (3, 1, 64, 64)
    assert out.reconstruction_logit.shape == (3, 1, 64, 64)
    assert out.logit.shape == (3,)
    assert out.bottleneck.shape == (3, 5, 16, 16)
    assert out.features_unmasked.shape == (3, 5, 16, 16)
    assert torch.allclose(out.reconstruction, torch.sigmoid(out.reconstruction_logit))
    assert float(out.reconstruction.min()) > 0.0 and float(out.reconstruction.max()) < 1.0
    assert isinstance(net.bottleneck, torch.nn.Identity)
    assert sum(p.numel() for p in net.parameters()) == 42855
    assert net.classifier[1].in_features == 1280


def test_width_and_image_size_are_parameters() -> None:
    net = _net(width=4, image_size=32)
    out = net(torch.rand(2, 1, 32, 32), torch.ones(2, 1, 8, 8))
    assert net.encoder[0].out_channels == 4
    assert out.bottleneck.shape == (2, 5, 8, 8)
    assert out.reconstruction.shape == (2, 1, 32, 32)


def test_bottleneck_is_zero_outside_the_mask() -> None:
    net = _net()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = _square_mask(2)
    mask[1] = 0.0
    mask[1, 0, 0, 0] = 1.0
    with torch.no_grad():
        out = net(x, mask.bool())
    outside = (mask == 0).expand_as(out.bottleneck)
    assert torch.all(out.bottleneck[outside] == 0)
    inside = ~outside
    assert torch.equal(out.bottleneck[inside], out.features_unmasked[inside])
    # Untrained ReLU features are not all zero outside the mask: the multiplication is what zeroes them.
    assert float(out.features_unmasked[outside].abs().sum()) > 0


def test_same_generator_same_weights_and_keras_init() -> None:
    a, b, c = _net(0), _net(0), _net(1)
    for (name, pa), pb, pc in zip(
        a.state_dict().items(), b.state_dict().values(), c.state_dict().values(), strict=True
    ):
        assert torch.equal(pa, pb), name
        if name.endswith("weight") and pa.ndim > 1:
            assert not torch.equal(pa, pc), name
    params = dict(a.named_parameters())
    assert torch.all(params["encoder.0.bias"] == 0)
    assert torch.all(params["classifier.2.weight"] == 1)


def test_bad_shapes_and_arguments_raise() -> None:
    net = _net()
    with pytest.raises(ValueError, match=r"x must have shape \(b, 1, 64, 64\), got \(2, 64, 64\)"):
        net(torch.rand(2, 64, 64), torch.ones(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 1, 16, 16\), got \(2, 1, 64, 64\)"):
        net(torch.rand(2, 1, 64, 64), torch.ones(2, 1, 64, 64))
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 4"):
        AutoencoderClassifierNet(image_size=30)
    with pytest.raises(ValueError, match="width must be an int >= 1"):
        AutoencoderClassifierNet(width=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        AutoencoderClassifierNet(dropout=1.0)


# --------------------------------------------------------------------------------------------------- SSIM
@pytest.mark.parametrize("sigma", [1.5, 1.0])
def test_ssim_matches_skimage(sigma: float) -> None:
    rng = np.random.default_rng(3)
    window = 2 * int(3.5 * sigma + 0.5) + 1
    yy, xx = np.mgrid[0:64, 0:64]
    smooth = 0.5 + 0.4 * np.sin(xx / 7.0) * np.cos(yy / 5.0)
    pairs = [
        (smooth, np.clip(smooth + 0.1 * rng.standard_normal(smooth.shape), 0, 1)),
        (rng.random((64, 64)), rng.random((64, 64))),
        (smooth, 1.0 - smooth),
    ]
    x = np.stack([a for a, _ in pairs])[:, None]
    y = np.stack([b for _, b in pairs])[:, None]
    ref = [
        structural_similarity(
            a, b, gaussian_weights=True, sigma=sigma, use_sample_covariance=False, data_range=1.0
        )
        for a, b in pairs
    ]
    got64 = ssim(torch.from_numpy(x), torch.from_numpy(y), window=window, sigma=sigma).numpy()
    got32 = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float(), window=window, sigma=sigma).numpy()
    np.testing.assert_allclose(got64, ref, atol=1e-10)
    np.testing.assert_allclose(got32, ref, atol=1e-4)


def test_ssim_identity_and_gradient() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(2, 1, 13, 13, generator=gen, dtype=torch.float64)
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    y = torch.rand(2, 1, 13, 13, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ssim(t, x).sum(), (y,))
    with pytest.raises(ValueError, match=r"smaller than the SSIM window \(11\)"):
        ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="odd int"):
        gaussian_window(4, 1.5)
    assert float(gaussian_window(11, 1.5).sum()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- penalties
def test_feature_penalty_zero_iff_nothing_outside_the_mask() -> None:
    mask = _square_mask(2)
    inside_only = 3.0 * mask.expand(2, 5, 16, 16).clone()
    assert float(feature_penalty(inside_only, mask)) == 0.0
    assert float(feature_penalty(inside_only, mask.bool())) == 0.0
    leak = inside_only.clone()
    leak[1, 2, 0, 0] = 2.0
    # mean over all 2 * 5 * 16 * 16 entries of the squared features outside the mask
    assert float(feature_penalty(leak, mask)) == pytest.approx(4.0 / (2 * 5 * 16 * 16))
    ones = torch.ones(2, 5, 16, 16)
    assert float(feature_penalty(ones, mask)) == pytest.approx(1.0 - 64 / 256)


def test_loss_weights_on_a_hand_case() -> None:
    # Reconstruction 0.5 everywhere (logit 0) against a constant image 0.25: every term is known in closed form.
    x = torch.full((2, 1, 64, 64), 0.25, dtype=torch.float64)
    logit = torch.zeros_like(x)
    features = torch.ones(2, 5, 16, 16, dtype=torch.float64)
    mask = _square_mask(2).double()
    c1 = 0.01**2
    ssim_value = (2 * 0.25 * 0.5 + c1) / (0.25**2 + 0.5**2 + c1)  # constant images: contrast term is 1
    bce_value = math.log(2.0)
    penalty_value = 1.0 - 64 / 256
    loss, s, bce, penalty = reconstruction_loss(logit, x, features, mask)
    assert float(s) == pytest.approx(ssim_value, abs=1e-12)
    assert float(bce) == pytest.approx(bce_value, abs=1e-12)
    assert float(penalty) == pytest.approx(penalty_value, abs=1e-12)
    expected = 0.2 * (1 - ssim_value) + 0.6 * bce_value + 0.2 * penalty_value
    assert (SSIM_WEIGHT, BCE_WEIGHT, PENALTY_WEIGHT) == (0.2, 0.6, 0.2)
    assert float(loss) == pytest.approx(expected, abs=1e-12)

    z = torch.tensor([2.0, -1.0], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0], dtype=torch.float64)
    clf_value = 0.5 * (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0)))
    assert float(classifier_loss(z, y)) == pytest.approx(clf_value, abs=1e-12)

    out = AutoencoderOutput(torch.sigmoid(logit), logit, z, features * mask, features)
    terms = joint_loss(out, x, mask, y)
    assert float(terms.total) == pytest.approx(expected + clf_value, abs=1e-12)
    assert float(terms.reconstruction) == pytest.approx(expected, abs=1e-12)
    assert float(terms.classifier) == pytest.approx(clf_value, abs=1e-12)
