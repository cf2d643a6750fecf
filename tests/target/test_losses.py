"""Losses of the 3D U-Net against adaptrt.metrics.segmentation on binary inputs; gradients; per patient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptrt.metrics.segmentation import dice, pcc, tversky
from adaptrt.target.losses import LOSSES, bce_loss, dice_loss, make_loss, pcc_loss, soft_counts, tversky_loss


def _phantom(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    brain = np.zeros((6, 8, 8), dtype=bool)
    brain[1:5, 1:7, 1:7] = True
    truth = brain & (rng.random(brain.shape) < 0.2)
    pred = brain & (rng.random(brain.shape) < 0.3)
    return pred, truth, brain


def _logits(pred: np.ndarray) -> torch.Tensor:
    # +-40: sigmoid is 0 or 1 to float32 precision, so the soft counts equal the hard ones
    return torch.tensor(np.where(pred, 40.0, -40.0), dtype=torch.float32)[None, None]


def _t(m: np.ndarray) -> torch.Tensor:
    return torch.tensor(m, dtype=torch.float32)[None, None]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_inputs_match_the_metrics(seed: int) -> None:
    pred, truth, brain = _phantom(seed)
    lg, t, b = _logits(pred), _t(truth), _t(brain)
    assert float(dice_loss(lg, t, b)) == pytest.approx(1 - dice(pred, truth), abs=1e-5)
    assert float(tversky_loss(lg, t, b, 0.3, 0.7)) == pytest.approx(
        1 - tversky(pred, truth, 0.3, 0.7), abs=1e-5
    )
    assert float(tversky_loss(lg, t, b)) == pytest.approx(1 - tversky(pred, truth), abs=1e-5)
    assert float(pcc_loss(lg, t, b)) == pytest.approx(1 - pcc(pred, truth, brain), abs=1e-5)


def test_pcc_weights_are_per_patient() -> None:
    # two patients in one batch: the batch loss is the mean of the single-patient losses
    a, b = _phantom(3), _phantom(4)
    both = pcc_loss(
        torch.cat([_logits(a[0]), _logits(b[0])]),
        torch.cat([_t(a[1]), _t(b[1])]),
        torch.cat([_t(a[2]), _t(b[2])]),
    )
    single = [float(pcc_loss(_logits(p), _t(t), _t(br))) for p, t, br in (a, b)]
    assert float(both) == pytest.approx(np.mean(single), abs=1e-6)
    assert float(both) == pytest.approx(np.mean([1 - pcc(p, t, br) for p, t, br in (a, b)]), abs=1e-5)


def test_hand_computed_soft_counts_and_bce() -> None:
    logits = torch.zeros(1, 1, 1, 1, 4)  # p = 0.5 everywhere
    target = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 1, 4)
    brain = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 1, 4)
    tp, fp, fn = soft_counts(logits, target, brain)
    assert (float(tp), float(fp), float(fn)) == (1.0, 0.5, 1.0)
    assert float(bce_loss(logits, target, brain)) == pytest.approx(np.log(2), abs=1e-6)


def test_empty_masks_give_zero_loss_and_every_loss_is_differentiable() -> None:
    b = torch.ones(1, 1, 2, 2, 2)
    empty = torch.zeros(1, 1, 2, 2, 2)
    assert float(pcc_loss(torch.full_like(b, -40.0), empty, b)) == pytest.approx(0.0, abs=1e-6)
    pred, truth, brain = _phantom(5)
    for name in LOSSES:
        lg = torch.randn(1, 1, *pred.shape, requires_grad=True)
        loss = make_loss(name)(lg, _t(truth), _t(brain))
        loss.backward()
        assert lg.grad is not None and torch.isfinite(lg.grad).all() and float(lg.grad.abs().sum()) > 0, name
    # the compound losses add BCE with weights 1 and 0.5
    lg = torch.randn(1, 1, *pred.shape)
    args = (lg, _t(truth), _t(brain))
    diff1 = float(make_loss("pcc+bce")(*args) - pcc_loss(*args))
    diff05 = float(make_loss("pcc+0.5bce")(*args) - pcc_loss(*args))
    assert diff1 == pytest.approx(float(bce_loss(*args)), rel=1e-5)
    assert diff05 == pytest.approx(0.5 * float(bce_loss(*args)), rel=1e-5)


def test_bad_loss_and_shapes() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")
    with pytest.raises(ValueError, match="share a shape"):
        dice_loss(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 2, 2, 3), torch.zeros(1, 1, 2, 2, 2))
