"""Tests of Part II's network (adaptrt.drift.unet)."""

from __future__ import annotations

import pytest
import torch

from adaptrt.drift.unet import DRIFT_HEADS, DecoupledPair, DriftUNet, count_parameters

SMALL = (4, 8, 8)


def _inputs(b: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, 1, size, size), generator=g), torch.rand((b,), generator=g)


@pytest.mark.parametrize("drift_head", DRIFT_HEADS)
@pytest.mark.parametrize("size", [64, 32])
def test_output_shapes(drift_head: str, size: int) -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16, drift_head=drift_head)
    x, t = _inputs(3, size)
    image, drift = net(x, t)
    assert image.shape == (3, 1, size, size) and image.dtype == torch.float32
    if drift_head == "none":
        assert drift is None
    else:
        assert drift is not None and drift.shape == (3, 1, size, size)
        assert not torch.allclose(image, drift)


@pytest.mark.parametrize("size", [64, 32])
def test_decoupled_pair_shapes_and_independence(size: int) -> None:
    torch.manual_seed(0)
    pair = DecoupledPair(SMALL, time_dim=16)
    x, t = _inputs(2, size)
    image, drift = pair(x, t)
    assert image.shape == drift.shape == (2, 1, size, size)
    torch.testing.assert_close(image, pair.image_net(x, t)[0])
    torch.testing.assert_close(drift, pair.drift_net(x, t)[0])
    assert count_parameters(pair) == 2 * count_parameters(DriftUNet(SMALL, 16, "none"))


def test_default_widths_and_four_levels() -> None:
    torch.manual_seed(0)
    net = DriftUNet()
    x, t = _inputs(1, 64)
    image, drift = net(x, t)
    assert image.shape == (1, 1, 64, 64) and drift is not None
    deep = DriftUNet((4, 8, 8, 16), time_dim=8)
    assert deep(*_inputs(1, 64))[0].shape == (1, 1, 64, 64)
    with pytest.raises(ValueError, match=r"multiple of 8 .*widths \(4, 8, 8, 16\).* 32×32"):
        deep(*_inputs(1, 28))


def test_time_changes_the_output() -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16).eval()
    x, _ = _inputs(2, 32)
    a = net(x, torch.full((2,), 0.1))
    b = net(x, torch.full((2,), 0.9))
    assert not torch.allclose(a[0], b[0], atol=1e-6)
    assert a[1] is not None and b[1] is not None and not torch.allclose(a[1], b[1], atol=1e-6)


def test_samples_of_a_batch_are_independent() -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16)
    x, t = _inputs(4, 32)
    batch = net(x, t)[0]
    one = net(x[2:3], t[2:3])[0]
    torch.testing.assert_close(batch[2:3], one, rtol=1e-4, atol=1e-5)  # float rounding only


def test_label_embedding() -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16, n_classes=2)
    assert net.label_embed is not None and net.label_embed.num_embeddings == 3
    x, t = _inputs(2, 32)
    out0 = net(x, t, torch.tensor([0, 0]))[0]
    out1 = net(x, t, torch.tensor([1, 1]))[0]
    none = net(x, t)[0]
    null = net(x, t, torch.tensor([2, 2]))[0]
    assert not torch.allclose(out0, out1, atol=1e-6)
    torch.testing.assert_close(none, null)  # None is the "no label" row
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        net(x, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"label must be a \(2,\) integer tensor"):
        net(x, t, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="no label input"):
        DriftUNet(SMALL, time_dim=16)(x, t, torch.tensor([0, 1]))


@pytest.mark.parametrize("drift_head", DRIFT_HEADS)
def test_gradient_reaches_every_parameter(drift_head: str) -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16, drift_head=drift_head, n_classes=2)
    x, t = _inputs(3, 32)
    image, drift = net(x, t, torch.tensor([0, 1, 2]))
    loss = image.square().mean() + (drift.square().mean() if drift is not None else 0.0)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert float(p.grad.abs().sum()) > 0, name


def test_parameter_count() -> None:
    # hand count for widths (4, 8, 8), time_dim 16, shared drift head, 1 input channel
    def conv(a: int, b: int, k: int) -> int:
        return a * b * k * k + b

    def block(a: int, b: int) -> int:
        return conv(a, b, 3) + conv(b, b, 3) + 4 * b  # two convs and two GroupNorms (weight + bias)

    encoder = block(1, 4) + block(4, 8)
    bottleneck = block(8 + 16, 8)
    decoder = conv(8, 8, 2) + block(16, 8) + conv(8, 4, 2) + block(8, 4)
    heads = 2 * conv(4, 1, 1)
    time = 1 * 16 + 16
    expected = encoder + bottleneck + decoder + heads + time
    assert count_parameters(DriftUNet(SMALL, time_dim=16)) == expected
    separate = DriftUNet(SMALL, time_dim=16, drift_head="separate")
    assert count_parameters(separate) == expected + decoder
    assert count_parameters(DriftUNet(SMALL, time_dim=16, drift_head="none")) == expected - conv(4, 1, 1)
    assert count_parameters(DriftUNet(SMALL, time_dim=16, n_classes=2)) == expected + 3 * 16


def test_bad_arguments() -> None:
    net = DriftUNet(SMALL, time_dim=16)
    x, t = _inputs(2, 32)
    with pytest.raises(ValueError, match=r"image size 30×30 is not a multiple of 4 .* 32×32"):
        net(torch.rand(2, 1, 30, 30), t)
    with pytest.raises(ValueError, match=r"x must be \(b, 1, h, w\)"):
        net(torch.rand(2, 2, 32, 32), t)
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        net(x, t[:1])
    with pytest.raises(TypeError, match="normalised float step"):
        net(x, torch.tensor([3, 4]))
    with pytest.raises(ValueError, match="drift_head must be one of 'shared', 'separate', 'none'"):
        DriftUNet(drift_head="both")
    with pytest.raises(ValueError, match="at least two positive ints"):
        DriftUNet(widths=(16,))


def test_widths_not_divisible_by_eight_and_memory_format() -> None:
    torch.manual_seed(0)
    net = DriftUNet((6, 12, 24), time_dim=8)  # GroupNorm groups gcd(8, c): 2, 4, 8
    x, t = _inputs(2, 32)
    nchw = net(x, t)[0]
    nhwc = net(x.contiguous(memory_format=torch.channels_last), t)[0]
    torch.testing.assert_close(nchw, nhwc)
    assert nchw.shape == (2, 1, 32, 32)


def test_in_channels_and_float64() -> None:
    torch.manual_seed(0)
    net = DriftUNet(SMALL, time_dim=16, in_channels=2).double()
    image, drift = net(torch.rand(1, 2, 32, 32, dtype=torch.float64), torch.rand(1, dtype=torch.float64))
    assert image.dtype == torch.float64 and image.shape == (1, 1, 32, 32)
    assert drift is not None and drift.dtype == torch.float64


def test_ddim_sampling_with_the_network() -> None:
    from adaptrt.drift.schedule import ddim_sample, make_schedule, q_sample, time_input

    torch.manual_seed(0)
    s = make_schedule()
    net = DriftUNet(SMALL, time_dim=16, drift_head="separate", n_classes=2).eval()
    lesion = _inputs(1, 32)[0].expand(4, -1, -1, -1)  # K = 4 samples of one lesion
    x_start = q_sample(
        lesion, 20, torch.randn(lesion.shape, generator=torch.Generator().manual_seed(1)), s, 0.2
    )
    labels = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        out = ddim_sample(
            lambda x, t: net(x, time_input(t, s), labels),
            x_start,
            20,
            s,
            noise_scale=0.2,
            keep_trajectory=True,
        )
    assert out.x0.shape == (4, 1, 32, 32) and out.drift is not None and out.drift.shape == (4, 1, 32, 32)
    assert out.trajectory_x0 is not None and out.trajectory_x0.shape == (21, 4, 1, 32, 32)
    assert torch.isfinite(out.x0).all() and float(out.x0.std(dim=0).mean()) > 0
