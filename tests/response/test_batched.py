"""Tests of :mod:`adaptrt.response.batched`: many networks trained at once equal the one-at-a-time trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptrt.errors import InputError
from adaptrt.response.batched import (
    TrialData,
    _ssim_band,
    _StackedAdamW,
    fit_many,
    ssim_matmul,
    subpixel_weight,
)
from adaptrt.response.losses import ssim
from adaptrt.response.train import AutoencoderClassifier, TrainConfig

# The bias of the dense layer before the batch norm gets a gradient that is 0 in exact arithmetic (the batch
# norm removes any constant), so its float32 gradient is rounding noise that AdamW scales up to +-lr per
# step: it follows no reproducible path, in this trainer or between two thread counts of the plain one.
# The running mean follows that bias. Neither changes the training-mode function; both are compared through
# the predictions instead.
_NOISE_ONLY = ("classifier.1.bias", "classifier.2.running_mean")


pytestmark = pytest.mark.usefixtures("one_thread")


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy images whose labels follow the brightness of a square GTV."""
    rng = np.random.default_rng(seed)
    x = (0.2 * rng.random((n, 64, 64))).astype(np.float32)
    y = np.arange(n) % 2
    x[:, 24:40, 24:40] += np.where(y == 1, 0.7, 0.3)[:, None, None].astype(np.float32)
    m = np.zeros((n, 16, 16), dtype=bool)
    m[:, 5:11, 5:11] = True
    return x, m, y


@pytest.mark.parametrize("mode", ["joint", "sequential"])
def test_fit_many_equals_fit(mode: str) -> None:
    cfg = TrainConfig(epochs=2, batch_size=16, device="cpu", mode=mode)  # type: ignore[arg-type]
    seeds = [3, 7, 11]
    data = []
    for i, n in enumerate((40, 33, 17)):  # 3, 3 and 2 batches an epoch (33 = 16 + 16 + 1: the 1 sits out)
        x, m, y = _toy(n, i)
        xv, mv, yv = _toy(10, 100 + i)
        data.append(TrialData(x, m, y, xv, mv, yv))
    many = fit_many(cfg, data, seeds)
    assert_equal_to_fit(cfg, data, seeds, many)


def assert_equal_to_fit(
    cfg: TrainConfig, data: list[TrialData], seeds: list[int], fitted: list[AutoencoderClassifier]
) -> None:
    """Each fitted estimator equals ``AutoencoderClassifier(cfg, seed).fit`` on its data to float32 rounding."""
    for d, s, got in zip(data, seeds, fitted, strict=True):
        want = AutoencoderClassifier(cfg, seed=s).fit(
            d.x, d.mask, d.y, x_val=d.x_val, mask_val=d.mask_val, y_val=d.y_val
        )
        sd_want, sd_got = want.model_.state_dict(), got.model_.state_dict()
        assert sd_want.keys() == sd_got.keys()
        for k in sd_want:
            if k in _NOISE_ONLY:
                continue
            # Same initial weights, batch order and dropout masks: only float32 rounding differs.
            torch.testing.assert_close(sd_got[k], sd_want[k], rtol=1e-4, atol=1e-5, msg=k)
        assert len(got.history_) == len(want.history_) == cfg.epochs + cfg.n_classifier_epochs
        for h_got, h_want in zip(got.history_, want.history_, strict=True):
            assert h_got["phase"] == h_want["phase"] and h_got["epoch"] == h_want["epoch"]
            assert h_got["train_loss"] == pytest.approx(h_want["train_loss"], abs=1e-4)
            assert h_got["train_acc"] == pytest.approx(h_want["train_acc"], abs=1e-9)
            assert h_got["val_loss"] == pytest.approx(h_want["val_loss"], abs=1e-3)
        np.testing.assert_allclose(
            got.predict_proba(d.x_val, d.mask_val), want.predict_proba(d.x_val, d.mask_val), atol=5e-3
        )


def test_subpixel_weight_is_upsample_then_conv() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.rand(3, 5, 8, 8, generator=g, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    want = F.conv2d(F.interpolate(z, scale_factor=2, mode="nearest"), w, b, padding=1)
    got = F.pixel_shuffle(F.conv2d(z, subpixel_weight(w), b.repeat_interleave(4), padding=1), 2)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="cout, cin, 3, 3"):
        subpixel_weight(w[:, :, :2])


def test_ssim_matmul_equals_ssim() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 64, 64, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.rand(4, 1, 64, 64, generator=g, dtype=torch.float64)).clamp(0, 1)
    band = _ssim_band(64, 11, 1.5, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(ssim_matmul(x, y, band), ssim(x, y), rtol=1e-12, atol=1e-12)


def test_stacked_adamw_is_per_model_adamw() -> None:
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(2)
    init = torch.randn(2, 6, generator=g)
    grads = [torch.randn(2, 6, generator=g) for _ in range(4)]
    # Model 1 skips steps 1 and 3: its bias corrections must count only its own steps.
    active = [
        np.array([True, True]),
        np.array([True, False]),
        np.array([True, True]),
        np.array([True, False]),
    ]
    stacked = init.clone()
    opt = _StackedAdamW([stacked], cfg, 2)
    refs = [init[t].clone().requires_grad_(True) for t in range(2)]
    ref_opts = [
        torch.optim.AdamW([r], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        for r in refs
    ]
    for grad, act in zip(grads, active, strict=True):
        stacked.grad = grad * torch.from_numpy(act)[:, None]
        opt.step(act)
        for t in np.flatnonzero(act):
            refs[t].grad = grad[t].clone()
            ref_opts[t].step()
    for t in range(2):
        torch.testing.assert_close(stacked[t], refs[t].detach(), rtol=0, atol=1e-7)
    assert opt.steps.tolist() == [4, 2]


def test_fit_many_rejects_mismatched_seeds() -> None:
    x, m, y = _toy(8, 0)
    with pytest.raises(InputError, match="one seed per data set"):
        fit_many(TrainConfig(epochs=1, device="cpu"), [TrialData(x, m, y)], [0, 1])
    with pytest.raises(InputError, match="given together"):
        fit_many(TrainConfig(epochs=1, device="cpu"), [TrialData(x, m, y, x_val=x)], [0])
