"""The drift models as estimators: training, prediction, determinism, persistence, evaluation helpers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from adaptrt.drift import schedule as sch
from adaptrt.drift.evaluate import fit_gtv_threshold, lesion_metrics, predicted_gtv, psnr
from adaptrt.drift.methods import DriftModel, DriftModelConfig
from adaptrt.simulate.digits import zero_digit_pairs

TINY = DriftModelConfig(widths=(4, 8), iterations=4, batch_size=8, lr=1e-3, log_every=2)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    p = zero_digit_pairs(12, size=16, seed=0)
    return p.pre.astype(np.float32), p.post.astype(np.float32)


@pytest.mark.parametrize(
    ("method", "head"),
    [("method1", "shared"), ("method2", "separate"), ("method2", "decoupled"), ("regression", "shared")],
)
def test_fit_predict_shapes_and_history(
    digits: tuple[np.ndarray, np.ndarray], method: str, head: str
) -> None:
    pre, post = digits
    cfg = dataclasses.replace(TINY, method=method, head=head)  # type: ignore[arg-type]
    m = DriftModel(cfg, seed=0, device="cpu").fit(pre, post)
    assert [h["iteration"] for h in m.history_] == [2.0, 4.0]
    assert {"total", "recon", "drift"} <= set(m.history_[0])
    pr = m.predict(pre[:3], seed=1, keep_trajectory=True)
    assert pr.post.shape == pr.drift.shape == (3, 16, 16)
    if method == "regression":
        assert pr.trajectory_post is None
    else:
        assert pr.trajectory_post is not None and pr.trajectory_post.shape == (cfg.T, 3, 16, 16)
        assert len(pr.steps) == cfg.T


def test_same_seed_same_model_and_prediction(digits: tuple[np.ndarray, np.ndarray]) -> None:
    pre, post = digits
    a = DriftModel(TINY, seed=3, device="cpu").fit(pre, post)
    b = DriftModel(TINY, seed=3, device="cpu").fit(pre, post)
    for (ka, va), (_, vb) in zip(
        a.network_.state_dict().items(), b.network_.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), ka
    np.testing.assert_array_equal(a.predict(pre, seed=5).post, b.predict(pre, seed=5).post)
    c = DriftModel(TINY, seed=4, device="cpu").fit(pre, post)
    assert not np.array_equal(a.predict(pre, seed=5).post, c.predict(pre, seed=5).post)


def test_state_round_trip(digits: tuple[np.ndarray, np.ndarray]) -> None:
    pre, post = digits
    m = DriftModel(TINY, seed=0, device="cpu").fit(pre, post)
    back = DriftModel.from_state(m.state(), device="cpu")
    np.testing.assert_array_equal(m.predict(pre, seed=2).drift, back.predict(pre, seed=2).drift)
    assert back.n_parameters_ == m.n_parameters_


def test_method2_training_target_anchors_x0_on_post() -> None:
    """An oracle that outputs the training target eps* makes DDIM return the post image from noisy pre."""
    sched = sch.make_schedule()
    g = torch.Generator().manual_seed(0)
    pre = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    post = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64)
    x_start = sch.q_sample(
        pre, sched.T - 1, torch.randn(pre.shape, generator=g, dtype=torch.float64), sched, 0.2
    )

    def oracle(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sch.eps_target(x_t, post, t, sched, 0.2), post - pre

    out = sch.ddim_sample(oracle, x_start, sched.T - 1, sched, noise_scale=0.2)
    torch.testing.assert_close(out.x0, post)


def test_unfitted_and_bad_input() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        DriftModel(TINY).predict(np.zeros((1, 16, 16), np.float32))
    with pytest.raises(ValueError, match="method"):
        DriftModelConfig(method="method3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eval_step"):
        DriftModelConfig(eval_step=21)
    with pytest.raises(ValueError, match="differ in shape"):
        DriftModel(TINY, device="cpu").fit(np.zeros((2, 16, 16)), np.zeros((3, 16, 16)))


def test_evaluation_helpers_on_hand_made_images() -> None:
    img = np.zeros((1, 16, 16))
    img[0, 4:12, 4:12] = 1.0
    pre_mask = img > 0.5
    assert psnr(img, img) == float("inf")
    assert psnr(img * 0 + 0.1, img * 0) == pytest.approx(20.0)
    # a post image that shrank to a 4x4 square: the threshold reproduces it, predicted GTV inside the dilation
    post = np.zeros_like(img)
    post[0, 6:10, 6:10] = 0.8
    post_mask = post > 0.4
    thr = fit_gtv_threshold(post, post_mask, pre_mask, np.zeros(1, int))
    assert 0.0 < thr <= 0.8
    assert (predicted_gtv(post, pre_mask, thr) == post_mask).all()
    m = lesion_metrics(post, post - img, img, post, pre_mask, post_mask, thr)
    assert m["mae"] == 0.0 and m["drift_r"] == pytest.approx(1.0) and m["dice_post_gtv"] == 1.0
    assert m["area_ratio_pred"] == pytest.approx(16 / 64) and m["response_score"] == pytest.approx(
        1 - 16 / 64
    )
    # the no-change prediction: drift r undefined (constant map) -> NaN, not a silent 0
    m0 = lesion_metrics(img, np.zeros_like(img), img, post, pre_mask, post_mask, thr)
    assert np.isnan(m0["drift_r"]) and m0["area_ratio_pred"] == pytest.approx(1.0)


def test_x0_weighted_noise_loss_has_the_same_minimiser() -> None:
    """With eps_hat = eps*, both the paper's noise MSE and the x0-weighted option are exactly zero."""
    sched = sch.make_schedule()
    g = torch.Generator().manual_seed(1)
    pre = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    post = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 20])
    x_t = sch.q_sample(pre, t, torch.randn(pre.shape, generator=g, dtype=torch.float64), sched, 0.2)
    eps_star = sch.eps_target(x_t, post, t, sched, 0.2)
    torch.testing.assert_close(sch.predict_x0(x_t, eps_star, t, sched, 0.2), post)
    m = DriftModel(dataclasses.replace(TINY, method="method2", eps_loss="x0"), seed=0, device="cpu")
    pre_np = pre[:, 0].float().numpy()
    m.fit(pre_np, post[:, 0].float().numpy())
    assert np.isfinite(m.history_[-1]["recon"])
