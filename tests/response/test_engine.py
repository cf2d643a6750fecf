"""Tests of :mod:`adaptrt.response.engine`: the hand-written trainer equals the autograd one to rounding."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from adaptrt.errors import InputError
from adaptrt.response.batched import TrialData
from adaptrt.response.engine import _Engine, _Kernels, _pool_map, _subpixel_map, fit_fast
from adaptrt.response.native import Layer1, NativeUnavailable
from adaptrt.response.native import layer1 as native_layer1
from adaptrt.response.train import TrainConfig

from .test_batched import _toy, assert_equal_to_fit

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pool_block_as_one_product_equals_conv_then_max_pool() -> None:
    # 4×4 stride-2 patches of the padded input times the mapped kernel = conv 3×3 'same' + max pool 2×2
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    want = F.max_pool2d(F.conv2d(x, w, padding=1), 2)  # (2, 4, 4, 4)
    pm = _pool_map(torch.float64, torch.device("cpu"))
    xp = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(2, 5, 2, 5, 2, 3)  # (n, I, qa, J, qc, ch)
    patches = torch.stack(
        [xp[:, u : u + 4, :, v : v + 4].permute(0, 1, 3, 2, 4, 5) for u in range(2) for v in range(2)], dim=3
    )  # (n, i, j, (u, v), qa, qc, ch)
    wm = torch.einsum("spk,oik->sipo", pm, w.reshape(4, 3, 9)).reshape(16 * 3, 4, 4)
    c = torch.einsum("nijs,spo->nijpo", patches.reshape(2, 4, 4, 48), wm)
    got = c.amax(dim=3).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want)


def test_subpixel_map_equals_upsample_then_conv() -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.rand(2, 5, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(3, 5, 3, 3, generator=g, dtype=torch.float64)
    want = F.conv2d(F.interpolate(z, scale_factor=2, mode="nearest"), w, padding=1)  # (2, 3, 8, 8)
    sm = _subpixel_map(torch.float64, torch.device("cpu"))
    ws = torch.einsum("uak,vcl,oikl->acoiuv", sm, sm, w).reshape(12, 5, 3, 3)
    got = F.pixel_shuffle(
        F.conv2d(z, ws, padding=1).view(2, 2, 2, 3, 4, 4).permute(0, 3, 1, 2, 4, 5).reshape(2, 12, 4, 4), 2
    )
    torch.testing.assert_close(got, want)


def _with_validation(sizes: tuple[int, ...]) -> list[TrialData]:
    """Toy training sets of the given sizes, each with a validation set of 10."""
    return [TrialData(*_toy(n, i), *_toy(10, 100 + i)) for i, n in enumerate(sizes)]


def _native_or_skip() -> Layer1:
    try:
        return native_layer1()
    except NativeUnavailable as exc:
        pytest.skip(f"native kernels unavailable: {exc}")


@pytest.mark.parametrize("first_layer", ["product", "native"])
def test_step_gradients_equal_autograd(first_layer: str) -> None:
    # one joint step without dropout: every parameter's gradient against loss.backward() of the module
    from adaptrt.response.batched import _to_device, trial_generators
    from adaptrt.response.engine import _PARAMS, _prepare
    from adaptrt.response.losses import joint_loss

    cfg = TrainConfig(epochs=1, batch_size=8, dropout=0.0, device="cpu")
    x, m, y = _toy(8, 3)
    net, _, _ = trial_generators(5, cfg)
    net.train()
    xt, mt, yt = _to_device(x, m, y, "", torch.device("cpu"))
    out = net(xt.contiguous(), mt)
    joint_loss(out, xt.contiguous(), mt, yt).total.backward()
    layer1 = _native_or_skip() if first_layer == "native" else None
    engine = _Engine(8, cfg.width, torch.device("cpu"), _Kernels(False, layer1))
    data = _prepare(xt, mt, yt, engine.maps, native=layer1 is not None)
    p = {k: q.detach().clone() for k, q in net.named_parameters()}
    bn = {k: v.detach().clone() for k, v in net.classifier[2].named_buffers()}
    grads = {k: torch.zeros_like(p[k]) for k, _ in _PARAMS}
    engine.step(p, bn, data, torch.arange(8), phase="joint", noise=None, grads=grads)
    for k, q in net.named_parameters():
        assert q.grad is not None
        if k == "classifier.1.bias":
            continue  # 0 in exact arithmetic: rounding noise on both sides
        # float32 sums over 8 x 1024 positions taken in another order: compare against the gradient's scale
        err = float((grads[k] - q.grad).abs().max())
        assert err <= 1e-4 * float(q.grad.abs().max()) + 1e-9, (k, err)


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_fit_fast_equals_fit(mode: str) -> None:
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", mode=mode)  # type: ignore[arg-type]
    seeds = [3, 7, 11]
    data = _with_validation((40, 33, 17))  # 3, 3 and 2 batches an epoch (33 = 16 + 16 + 1: the 1 sits out)
    fast = fit_fast(cfg, data, seeds, workers=2)
    assert_equal_to_fit(cfg, data, seeds, fast)


def test_worker_count_does_not_change_the_result() -> None:
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu")
    data = [TrialData(*_toy(24, i)) for i in range(3)]
    one = fit_fast(cfg, data, [0, 1, 2], workers=1)
    two = fit_fast(cfg, data, [0, 1, 2], workers=2)
    for a, b in zip(one, two, strict=True):
        for k, v in a.model_.state_dict().items():
            assert torch.equal(v, b.model_.state_dict()[k]), k
    assert torch.get_num_threads() == 1  # the caller's setting (the module fixture's) is restored


def test_fit_fast_rejects_bad_arguments() -> None:
    x, m, y = _toy(4, 0)
    cfg = TrainConfig(epochs=1, device="cpu")
    with pytest.raises(InputError, match="one seed per data set"):
        fit_fast(cfg, [TrialData(x, m, y)], [0, 1])
    with pytest.raises(InputError, match="given together"):
        fit_fast(cfg, [TrialData(x, m, y, x_val=x)], [0])
    with pytest.raises(InputError, match="workers"):
        fit_fast(cfg, [TrialData(x, m, y)], [0], workers=0)
    with pytest.raises(InputError, match="native"):
        fit_fast(cfg, [TrialData(x, m, y)], [0], native="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize("kernels", ["native", pytest.param("compiled", marks=pytest.mark.slow)])
def test_fast_kernels_equal_fit(kernels: str) -> None:
    # native: the C first block alone; compiled: the path the paper profile uses (torch.compile'd kernels
    # and the native block; compiling takes a minute on a cold cache, hence slow). Both in two workers.
    if kernels == "native":
        _native_or_skip()
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu")
    data = _with_validation((40, 33))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed build or compilation must not pass silently
        fast = fit_fast(cfg, data, [3, 7], workers=2, native=True, compile=kernels == "compiled")
    assert_equal_to_fit(cfg, data, [3, 7], fast)


def test_unavailable_native_kernel_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from adaptrt.response import engine

    def broken() -> Layer1:
        raise NativeUnavailable("no C compiler found (looked for $CC, cc, gcc, clang)")

    monkeypatch.setattr(engine, "native_layer1", broken)
    cfg = TrainConfig(epochs=1, batch_size=16, device="cpu")
    data = [TrialData(*_toy(24, 0), *_toy(8, 1))]
    with pytest.warns(RuntimeWarning, match="native first-layer kernel is unavailable .*no C compiler"):
        fast = fit_fast(cfg, data, [0], workers=1, native=True)
    assert_equal_to_fit(cfg, data, [0], fast)
