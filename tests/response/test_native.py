"""Tests of :mod:`adaptrt.response.native`: the C first-block kernels equal torch's conv + max pool + ReLU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from adaptrt.response import native


@pytest.fixture(scope="module")
def layer1() -> native.Layer1:
    try:
        return native.layer1()
    except native.NativeUnavailable as exc:  # no C compiler on this machine: the torch path is used there
        pytest.skip(f"native kernels unavailable: {exc}")


def _inputs(b: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 64, 64, generator=g)
    x[:, :24] = 0.0  # flat background: the four phases of a window tie exactly (the first must win)
    x[0, 40:, 40:] = 0.5
    w = torch.randn(c, 1, 3, 3, generator=g)
    bias = torch.randn(c, generator=g) * 0.2
    return x, w, bias


def _reference(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 conv + max pool (with its argmax as the phase 2a + c) + ReLU; phase 4 where the ReLU is off."""
    conv = F.conv2d(x[:, None].double(), w.double(), bias.double(), padding=1)
    pooled, where = F.max_pool2d(conv, 2, return_indices=True)
    phase = (where // 64 % 2) * 2 + where % 2
    phase = torch.where(pooled > 0, phase, torch.full_like(phase, 4))
    return pooled.relu().permute(0, 2, 3, 1), phase.permute(0, 2, 3, 1)


@pytest.mark.parametrize("channels", [16, 5, 21])  # one full vector; the one-at-a-time tail; both
def test_forward_equals_conv_max_pool_relu(layer1: native.Layer1, channels: int) -> None:
    x, w, bias = _inputs(3, channels, channels)
    h = torch.empty(3, 32, 32, channels)
    idx = torch.empty(3, 32, 32, channels, dtype=torch.uint8)
    layer1.forward(F.pad(x, (1, 1, 1, 1)).contiguous(), w.reshape(channels, 9).t().contiguous(), bias, h, idx)
    want_h, want_idx = _reference(x, w, bias)
    torch.testing.assert_close(h.double(), want_h, rtol=1e-5, atol=1e-5)
    # phases agree wherever the window's two largest values are not within float32 rounding of each other
    conv = F.conv2d(x[:, None].double(), w.double(), bias.double(), padding=1)
    top2 = F.unfold(conv.reshape(-1, 1, 64, 64), 2, stride=2).topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-5).reshape(3, channels, 32, 32).permute(0, 2, 3, 1)
    ties = (top2[:, 0] == top2[:, 1]).reshape(3, channels, 32, 32).permute(0, 2, 3, 1)
    assert int(ties.sum()) > 1000  # the flat background is in the test
    agree = (idx.long() == want_idx) | ~(clear | ties)
    assert bool(agree.all()), int((~agree).sum())


@pytest.mark.parametrize("channels", [16, 5])
def test_backward_equals_autograd(layer1: native.Layer1, channels: int) -> None:
    x, w, bias = _inputs(4, channels, 10 + channels)
    xp = F.pad(x, (1, 1, 1, 1)).contiguous()
    h = torch.empty(4, 32, 32, channels)
    idx = torch.empty(4, 32, 32, channels, dtype=torch.uint8)
    layer1.forward(xp, w.reshape(channels, 9).t().contiguous(), bias, h, idx)
    gh = torch.randn(4, 32, 32, channels, generator=torch.Generator().manual_seed(3))
    gw, gb = torch.empty(9, channels), torch.empty(channels)
    layer1.backward(gh, idx, xp, gw, gb)
    wd, bd = w.double().requires_grad_(), bias.double().requires_grad_()
    out = F.max_pool2d(F.conv2d(x[:, None].double(), wd, bd, padding=1), 2).relu()
    out.backward(gh.double().permute(0, 3, 1, 2))
    assert wd.grad is not None and bd.grad is not None
    torch.testing.assert_close(gw.t().reshape(channels, 1, 3, 3).double(), wd.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gb.double(), bd.grad, rtol=1e-5, atol=1e-4)


def test_bad_layout_is_refused_before_the_c_code(layer1: native.Layer1) -> None:
    x, w, bias = _inputs(2, 16, 0)
    xp = F.pad(x, (1, 1, 1, 1)).contiguous()
    h = torch.empty(2, 32, 32, 16)
    idx = torch.empty(2, 32, 32, 16, dtype=torch.uint8)
    with pytest.raises(ValueError, match="wt must be a contiguous"):
        layer1.forward(xp, w.reshape(16, 9).t(), bias, h, idx)  # transposed view, not contiguous
    with pytest.raises(ValueError, match="idx must be"):
        layer1.forward(xp, w.reshape(16, 9).t().contiguous(), bias, h, idx.float())


def test_built_once_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAPTRT_CACHE_DIR", str(tmp_path))
    source = (Path(native.__file__).parent / "_layer1.c").read_text()
    try:
        compiler = native._compiler()
        first = native._build(source, compiler)
    except native.NativeUnavailable as exc:
        pytest.skip(f"native kernels unavailable: {exc}")
    mtime = first.stat().st_mtime_ns
    assert native._build(source, compiler) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no build folder left behind
    with pytest.raises(native.NativeUnavailable, match="could not build"):
        native._build("this is not C", compiler)


def test_no_compiler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr(native.shutil, "which", lambda _name: None)
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        native._compiler()


def test_unwritable_cache_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ADAPTRT_CACHE_DIR", str(blocker / "adaptrt"))
    try:
        compiler = native._compiler()
    except native.NativeUnavailable as exc:
        pytest.skip(f"native kernels unavailable: {exc}")
    with pytest.raises(native.NativeUnavailable, match="could not write the built kernel under"):
        native._build("int x;", compiler)
