"""The target study's 3D U-Net: shapes, the paper's stage widths, bad shapes."""

from __future__ import annotations

import pytest
import torch

from adaptrt.target.unet3d import UNet3D, pad_shape


def test_output_shape_and_stage_widths() -> None:
    torch.manual_seed(0)
    net = UNet3D(in_channels=6, base_features=4)
    x = torch.randn(2, 6, 8, 16, 24)
    y = net(x)
    assert y.shape == (2, 1, 8, 16, 24)
    # four encoder stages of two 3x3x3 convolutions, widths f, 2f, 4f, 8f
    widths = [[m.out_channels for m in block if isinstance(m, torch.nn.Conv3d)] for block in net.encoder]
    assert widths == [[4, 4], [8, 8], [16, 16], [32, 32]]
    kernels = {m.kernel_size for block in net.encoder for m in block if isinstance(m, torch.nn.Conv3d)}
    assert kernels == {(3, 3, 3)}
    # decoder convolutions take the concatenated skip (2w channels)
    assert [block[0].in_channels for block in net.decoder] == [32, 16, 8]


def test_gradients_flow_to_the_first_layer() -> None:
    torch.manual_seed(0)
    net = UNet3D(in_channels=2, base_features=2)
    net(torch.randn(1, 2, 16, 16, 16)).sum().backward()
    first = net.encoder[0][0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0


def test_pad_shape() -> None:
    assert pad_shape((40, 54, 44)) == (40, 56, 48)
    assert pad_shape((9, 8, 1), n_stages=2) == (10, 8, 2)


def test_bad_inputs() -> None:
    net = UNet3D(in_channels=3, base_features=2)
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 3, 8, 12, 8))
    with pytest.raises(ValueError, match="in_channels"):
        UNet3D(in_channels=0)
