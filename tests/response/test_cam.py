"""Tests of the class activation maps (Grad-CAM, Grad-CAM++, pixel-wise CAM) on tiny hand-made networks."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from torch import nn

from adaptrt.errors import InputError
from adaptrt.response.cam import CamMethod, CamResult, cam_scores, class_activation_map

METHODS: tuple[CamMethod, ...] = ("gradcam", "gradcam++", "pixelwise")
TARGETS: tuple[tuple[Literal["pos", "neg"], float], ...] = (("pos", 1.0), ("neg", -1.0))
SHAPES = {2: (4, 5), 3: (3, 4, 5)}


class LinearScoreNet(nn.Module):
    """``A = a_k x + b_k`` (1x1 conv with fixed weights), score ``y = sum_k sum_ij v_k,ij A_ij^k + c``.

    ``dy/dA = v`` exactly, so every CAM can be computed by hand from ``v`` and ``A``. The feature map also
    feeds a "decoder" branch (returned first) that the score must ignore.
    """

    def __init__(self, ndim: int, spatial: tuple[int, ...], k: int, n_out: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.encoder = conv(1, k, kernel_size=1)
        self.decoder = conv(k, 1, kernel_size=1)
        self.linear = nn.Linear(k * int(np.prod(spatial)), n_out)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.encoder(x)
        return self.decoder(a), self.linear(a.flatten(1))

    def by_hand(self, x: torch.Tensor) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """``A`` ``(b, k, *spatial)`` and ``v`` ``(n_out, k, *spatial)`` in float64, computed without the model."""
        w = self.encoder.weight.detach().double().numpy().reshape(-1)
        bias = torch.as_tensor(self.encoder.bias).detach().double().numpy()
        xs = x.detach().double().numpy()[:, 0]
        nd = xs.ndim - 1
        a = w[None, :, *([None] * nd)] * xs[:, None] + bias[None, :, *([None] * nd)]
        v = self.linear.weight.detach().double().numpy().reshape(-1, *a.shape[1:])
        return a, v


def _second(out: Any) -> torch.Tensor:
    return out[1]


def _gradcampp_by_hand(a: NDArray[np.float64], g: NDArray[np.float64]) -> NDArray[np.float64]:
    """Grad-CAM++ closed form for one sample: ``a``, ``g`` of shape ``(k, *spatial)``."""
    k = a.shape[0]
    out = np.zeros(a.shape[1:])
    for ch in range(k):
        s = a[ch].sum()
        alpha = np.zeros_like(g[ch])
        for idx in np.ndindex(g[ch].shape):
            gi = g[ch][idx]
            den = 2 * gi**2 + s * gi**3
            alpha[idx] = gi**2 / den if den != 0 else 0.0
        w = np.sum(alpha * np.maximum(g[ch], 0.0))
        out += w * a[ch]
    return np.maximum(out, 0.0)


def _expected(method: str, a: NDArray[np.float64], g: NDArray[np.float64]) -> NDArray[np.float64]:
    """CAM at the feature resolution for one sample from ``A`` and ``dy/dA``, both ``(k, *spatial)``."""
    if method == "gradcam":
        w = g.reshape(g.shape[0], -1).mean(axis=1)
        return np.maximum(np.tensordot(w, a, axes=1), 0.0)
    if method == "pixelwise":
        return np.maximum((g * a).sum(axis=0), 0.0)
    return _gradcampp_by_hand(a, g)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("method", METHODS)
def test_linear_score_matches_hand_computation(ndim: int, method: CamMethod) -> None:
    spatial = SHAPES[ndim]
    net = LinearScoreNet(ndim, spatial, k=3, n_out=1, seed=ndim)
    x = torch.randn((2, 1, *spatial), generator=torch.Generator().manual_seed(7))
    a, v = net.by_hand(x)
    peaks = np.zeros(2)
    for target, sign in TARGETS:
        res = class_activation_map(net, net.encoder, x, method=method, target=target, score_fn=_second)
        assert res.feature_raw.shape == (2, *spatial)
        for i in range(2):
            expected = _expected(method, a[i], sign * v[0])
            peaks[i] += expected.max()
            np.testing.assert_allclose(res.feature_raw[i], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(res.class_index, [1, 1] if target == "pos" else [0, 0])
        z = _second(net(x)).detach().numpy()[:, 0]
        np.testing.assert_allclose(res.score, sign * z, rtol=1e-6)
        if method == "gradcam":
            assert res.weights is not None
            np.testing.assert_allclose(res.weights[0], sign * v[0].reshape(3, -1).mean(axis=1), rtol=1e-5)
        elif method == "pixelwise":
            assert res.weights is None
    assert np.all(peaks > 0)  # for each sample one class at least has a non-trivial map


@pytest.mark.parametrize("ndim", [2, 3])
def test_neg_target_flips_pixelwise_sign(ndim: int) -> None:
    spatial = SHAPES[ndim]
    net = LinearScoreNet(ndim, spatial, k=2, n_out=1, seed=11)
    x = torch.randn((1, 1, *spatial), generator=torch.Generator().manual_seed(3))
    a, v = net.by_hand(x)
    s = (v[0] * a[0]).sum(axis=0)
    pos = class_activation_map(net, net.encoder, x, method="pixelwise", target="pos", score_fn=_second)
    neg = class_activation_map(net, net.encoder, x, method="pixelwise", target="neg", score_fn=_second)
    np.testing.assert_allclose(pos.feature_raw[0], np.maximum(s, 0), atol=1e-5)
    np.testing.assert_allclose(neg.feature_raw[0], np.maximum(-s, 0), atol=1e-5)
    # integer targets 1 / 0 are the same classes as "pos" / "neg"
    neg_int = class_activation_map(net, net.encoder, x, method="pixelwise", target=0, score_fn=_second)
    np.testing.assert_array_equal(neg_int.feature_raw, neg.feature_raw)


def test_multiclass_targets_pick_their_logit() -> None:
    spatial = SHAPES[2]
    net = LinearScoreNet(2, spatial, k=2, n_out=3, seed=5)
    x = torch.randn((3, 1, *spatial), generator=torch.Generator().manual_seed(4))
    a, v = net.by_hand(x)
    res = class_activation_map(net, net.encoder, x, method="pixelwise", target=[2, 0, 1], score_fn=_second)
    np.testing.assert_array_equal(res.class_index, [2, 0, 1])
    logits = _second(net(x)).detach().numpy()
    np.testing.assert_allclose(res.score, logits[[0, 1, 2], [2, 0, 1]], rtol=1e-6)
    for i, c in enumerate([2, 0, 1]):
        np.testing.assert_allclose(res.feature_raw[i], np.maximum((v[c] * a[i]).sum(0), 0), atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        class_activation_map(net, net.encoder, x, method="gradcam", target=3, score_fn=_second)
    with pytest.raises(InputError, match="3 entries for a batch of 2"):
        class_activation_map(net, net.encoder, x[:2], method="gradcam", target=[0, 1, 2], score_fn=_second)


class DownNet(nn.Module):
    """Conv (stride 2) to a coarser feature map, then a linear score: for upsampling and mask tests."""

    def __init__(self, ndim: int, spatial: tuple[int, ...]) -> None:
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        self.features = conv(1, 2, kernel_size=2, stride=2)
        n = 2 * int(np.prod([s // 2 for s in spatial]))
        self.head = nn.Linear(n, 1)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).flatten(1))


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_upsampled_size_mask_and_normalisation(ndim: int, upsample: Literal["bilinear", "nearest"]) -> None:
    spatial = (8, 8) if ndim == 2 else (4, 6, 8)
    net = DownNet(ndim, spatial)
    x = torch.randn((2, 1, *spatial), generator=torch.Generator().manual_seed(2))
    mask = np.zeros((2, 1, *spatial), dtype=bool)
    inner: tuple[Any, ...] = (slice(None), 0, *[slice(1, s - 1) for s in spatial])
    mask[inner] = True
    res = class_activation_map(net, net.features, x, method="pixelwise", mask=mask, upsample=upsample)
    unmasked = class_activation_map(net, net.features, x, method="pixelwise", upsample=upsample)
    assert res.raw.shape == res.normalised.shape == (2, *spatial)
    assert res.feature_raw.shape == (2, *[s // 2 for s in spatial])
    assert np.all(res.raw[~mask[:, 0]] == 0)
    np.testing.assert_array_equal(res.raw[mask[:, 0]], unmasked.raw[mask[:, 0]])
    assert np.all(unmasked.raw >= 0)
    for i in range(2):
        assert res.raw[i].max() > 0
        assert res.normalised[i].max() == pytest.approx(1.0)
        assert res.normalised[i].min() >= 0.0
        assert np.argmax(res.normalised[i]) == np.argmax(res.raw[i])
        # a pure rescaling: never inverted, never shifted
        np.testing.assert_allclose(res.normalised[i] * res.raw[i].max(), res.raw[i], rtol=1e-6, atol=1e-7)
    # a mask (b, *spatial) as a torch tensor is the same mask
    res_t = class_activation_map(net, net.features, x, method="pixelwise", mask=torch.as_tensor(mask[:, 0]))
    np.testing.assert_array_equal(
        res_t.raw, class_activation_map(net, net.features, x, method="pixelwise", mask=mask).raw
    )
    if upsample == "nearest":
        # each feature voxel covers a 2^ndim block of input voxels
        block = unmasked.feature_raw.repeat(2, axis=1).repeat(2, axis=2)
        if ndim == 3:
            block = block.repeat(2, axis=3)
        np.testing.assert_allclose(unmasked.raw, block, rtol=1e-6)
    with pytest.raises(InputError, match="mask has shape"):
        class_activation_map(net, net.features, x, method="pixelwise", mask=mask[:1])


def test_constant_and_zero_maps_normalise_without_nan() -> None:
    spatial = SHAPES[2]
    net = LinearScoreNet(2, spatial, k=1, n_out=1, seed=0)
    with torch.no_grad():
        net.encoder.weight.zero_()
        torch.as_tensor(net.encoder.bias).fill_(2.0)  # A = 2 everywhere
        net.linear.weight.fill_(0.5)  # v = 0.5 everywhere
    x = torch.randn((1, 1, *spatial), generator=torch.Generator().manual_seed(0))
    for method in METHODS:
        pos = class_activation_map(net, net.encoder, x, method=method, target="pos", score_fn=_second)
        assert np.all(pos.raw > 0)
        np.testing.assert_allclose(pos.normalised, 1.0, rtol=1e-6)
        neg = class_activation_map(net, net.encoder, x, method=method, target="neg", score_fn=_second)
        assert not np.isnan(neg.normalised).any()
        np.testing.assert_array_equal(neg.raw, 0.0)
        np.testing.assert_array_equal(neg.normalised, 0.0)


class Explodes(nn.Module):
    """A network that fails after the explained layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.drop(self.conv(x))
        raise RuntimeError("boom inside the model")


def test_hooks_removed_modes_restored_no_parameter_grads() -> None:
    net = SmallCNN()
    net.train()
    net.head.eval()  # a mixed state must come back as it was
    x = torch.randn((2, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    res = class_activation_map(net, net.conv2, x, method="gradcam++")
    assert isinstance(res, CamResult)
    assert len(net.conv2._forward_hooks) == 0
    assert net.training and net.conv1.training and not net.head.training
    assert all(p.grad is None for p in net.parameters())

    bad = Explodes()
    bad.train()
    with pytest.raises(RuntimeError, match="boom inside the model"):
        class_activation_map(bad, bad.conv, x, method="gradcam")
    assert len(bad.conv._forward_hooks) == 0
    assert bad.training and bad.drop.training
    assert all(p.grad is None for p in bad.parameters())


class SmallCNN(nn.Module):
    """conv-relu-pool x 2, flatten, linear: one logit. The ReLU after conv2 is in place on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(5 * 4 * 4, 1))
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        h = nn.functional.max_pool2d(self.relu2(self.conv2(h)), 2)
        return self.head(h)


@pytest.mark.parametrize("method", METHODS)
def test_small_cnn_batch_equals_per_sample(method: CamMethod) -> None:
    net = SmallCNN()
    x = torch.randn((3, 1, 16, 16), generator=torch.Generator().manual_seed(9))
    mask = torch.zeros((3, 1, 16, 16))
    mask[:, :, 3:13, 2:14] = 1
    batch = class_activation_map(net, net.conv2, x, method=method, target=[1, 0, 1], mask=mask)
    assert batch.raw.shape == (3, 16, 16) and batch.feature_raw.shape == (3, 8, 8)
    assert batch.raw.max() > 0
    for i, t in enumerate([1, 0, 1]):
        one = class_activation_map(
            net, net.conv2, x[i : i + 1], method=method, target=t, mask=mask[i : i + 1]
        )
        np.testing.assert_allclose(batch.raw[i], one.raw[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(batch.normalised[i], one.normalised[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(batch.score[i], one.score[0], rtol=1e-5)
        if one.weights is not None:
            assert batch.weights is not None
            np.testing.assert_allclose(batch.weights[i], one.weights[0], rtol=1e-4, atol=1e-7)


def test_in_place_relu_after_layer_gives_the_same_map() -> None:
    net = SmallCNN()
    x = torch.randn((2, 1, 16, 16), generator=torch.Generator().manual_seed(1))
    in_place = class_activation_map(net, net.conv2, x, method="pixelwise")
    net.relu2.inplace = False
    out_of_place = class_activation_map(net, net.conv2, x, method="pixelwise")
    np.testing.assert_allclose(in_place.raw, out_of_place.raw, rtol=1e-6)
    assert in_place.raw.max() > 0


def test_bad_arguments_are_input_errors() -> None:
    net = SmallCNN()
    x = torch.randn((1, 1, 16, 16))
    with pytest.raises(InputError, match="unknown CAM method"):
        class_activation_map(net, net.conv2, x, method="scorecam")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown target"):
        class_activation_map(net, net.conv2, x, method="gradcam", target="maybe")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="out of range"):
        class_activation_map(net, net.conv2, x, method="gradcam", target=2)
    with pytest.raises(InputError, match="x must be a tensor"):
        class_activation_map(net, net.conv2, x[0], method="gradcam")
    with pytest.raises(InputError, match="called 0 times"):
        class_activation_map(net, nn.Conv2d(1, 1, 1), x, method="gradcam")
    with pytest.raises(InputError, match="not a tensor of logits"):
        class_activation_map(net, net.conv2, x, method="gradcam", score_fn=lambda out: out.tolist())
    with pytest.raises(InputError, match=r"not \(b, k, \*spatial\)"):
        class_activation_map(net, net.head[0], x, method="gradcam")
    assert len(net.conv2._forward_hooks) == 0


def test_score_independent_of_layer_is_an_error() -> None:
    net = LinearScoreNet(2, SHAPES[2], k=2, n_out=1, seed=0)
    x = torch.randn((1, 1, *SHAPES[2]))
    with pytest.raises(InputError, match="does not depend on the output"):
        class_activation_map(net, net.decoder, x, method="gradcam", score_fn=_second)


def test_cam_scores_hand_made_case() -> None:
    region = np.zeros((4, 4), dtype=bool)
    region[:, :3] = True  # 12 voxels; column 3 is outside and must be ignored
    truth = np.zeros((4, 4), dtype=bool)
    truth[0, :2] = True  # 2 truth voxels inside the region
    truth[3, 3] = True  # outside the region: ignored
    cam = np.zeros((4, 4))
    cam[:, 3] = 100.0  # huge values outside the region: ignored
    cam[0, 0], cam[0, 1] = 4.0, 2.0
    cam[1, 0], cam[2, 0] = 3.0, 1.0
    # truth values {4, 2}; non-truth {3, 1, 0 x 8}: pairs won = 10 + 9 = 19 of 20 -> AUC 0.95
    s = cam_scores(cam, truth, region)
    assert s["auc"] == pytest.approx(0.95)
    assert s["pointing_game"] == 1.0
    assert s["mass_in_truth"] == pytest.approx(6.0 / 10.0)
    assert s["truth_fraction"] == pytest.approx(2.0 / 12.0)

    miss = cam.copy()
    miss[2, 0] = 5.0
    s_miss = cam_scores(miss, truth, region)
    assert s_miss["pointing_game"] == 0.0
    tie = cam.copy()
    tie[2, 0] = 4.0  # tied maxima, one in truth: a hit
    assert cam_scores(tie, truth, region)["pointing_game"] == 1.0

    empty_truth = np.zeros_like(truth)
    s_nan = cam_scores(cam, empty_truth, region)
    assert np.isnan(s_nan["auc"]) and np.isnan(s_nan["pointing_game"])
    assert s_nan["mass_in_truth"] == 0.0
    full = cam_scores(cam, region.copy(), region)
    assert np.isnan(full["auc"]) and full["mass_in_truth"] == pytest.approx(1.0)
    zero = cam_scores(np.zeros((4, 4)), truth, region)
    assert zero["pointing_game"] == 0.0 and np.isnan(zero["mass_in_truth"]) and zero["auc"] == 0.5

    with pytest.raises(InputError, match="region is empty"):
        cam_scores(cam, truth, np.zeros_like(region))
    with pytest.raises(InputError, match="different shapes"):
        cam_scores(cam[:3], truth, region)


def test_frozen_model_under_no_grad_and_layer_called_twice() -> None:
    net = SmallCNN()
    x = torch.randn((2, 1, 16, 16), generator=torch.Generator().manual_seed(5))
    ref = class_activation_map(net, net.conv2, x, method="gradcam")
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        frozen = class_activation_map(net, net.conv2, x, method="gradcam")
    np.testing.assert_allclose(frozen.raw, ref.raw, rtol=1e-6)
    assert all(p.grad is None for p in net.parameters())

    shared = nn.Conv2d(1, 1, 3, padding=1)
    twice = nn.Sequential(shared, shared, nn.Flatten(), nn.Linear(16 * 16, 1))
    with pytest.raises(InputError, match="called 2 times"):
        class_activation_map(twice, shared, x, method="pixelwise")
    assert len(shared._forward_hooks) == 0
