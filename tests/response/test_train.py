"""Tests of the trainer / estimator of Part I's autoencoder + classifier on tiny separable phantoms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from adaptrt.errors import InputError, NotFittedError
from adaptrt.response.train import PAPER, QUICK, AutoencoderClassifier, TrainConfig

TINY = TrainConfig(epochs=2, batch_size=8)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy(
    n: int, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.bool_], NDArray[np.int64], NDArray[np.bool_]]:
    """Dim noisy images with a square GTV; responders (y = 1) have a bright GTV, the others a dark one.

    Returns the images ``(n, 64, 64)``, the bottleneck masks ``(n, 16, 16)``, the labels ``(n,)`` and the GTV
    at the input resolution ``(n, 64, 64)``.
    """
    rng = np.random.default_rng(seed)
    x = (0.1 + 0.1 * rng.random((n, 64, 64))).astype(np.float32)
    y = np.arange(n) % 2
    gtv = np.zeros((n, 64, 64), dtype=bool)
    gtv[:, 20:44, 20:44] = True
    x[(y == 1)[:, None, None] & gtv] = 0.9
    x[(y == 0)[:, None, None] & gtv] = 0.3
    mask = np.zeros((n, 16, 16), dtype=bool)
    mask[:, 5:11, 5:11] = True
    return x, mask, y.astype(np.int64), gtv


@pytest.fixture(scope="module")
def fitted() -> AutoencoderClassifier:
    x, mask, y, _ = toy(32)
    xv, mv, yv, _ = toy(8, seed=1)
    return AutoencoderClassifier(TrainConfig(epochs=6, batch_size=8), seed=0).fit(
        x, mask, y, x_val=xv, mask_val=mv, y_val=yv
    )


# ---------------------------------------------------------------------------------------------- config
def test_config_defaults_are_the_papers() -> None:
    assert (PAPER.batch_size, PAPER.lr, PAPER.weight_decay, PAPER.betas, PAPER.eps) == (
        64,
        5e-4,
        1e-4,
        (0.9, 0.999),
        1e-8,
    )
    assert (PAPER.dropout, PAPER.mode, PAPER.width) == (0.1, "joint", 16)
    assert QUICK.epochs < PAPER.epochs
    assert TrainConfig(mode="sequential").n_classifier_epochs == 150
    assert TrainConfig(mode="sequential", classifier_epochs=3).n_classifier_epochs == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "'epochs' parameter of TrainConfig must be an int >= 1"),
        ({"batch_size": 1}, "'batch_size' .* int >= 2"),
        ({"lr": -1.0}, "'lr' .* > 0"),
        ({"betas": (0.9, 1.0)}, "'betas' .* each in"),
        ({"dropout": 1.0}, "'dropout' .* in"),
        ({"mode": "both"}, "'mode' .* one of"),
        ({"classifier_epochs": 3}, "'classifier_epochs' .* None in joint mode"),
        ({"device": "gpu"}, "'device' .* 'auto', 'cpu'"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InputError, match=match):
        TrainConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- fitting
def test_learns_a_separable_toy_and_records_history(fitted: AutoencoderClassifier) -> None:
    x, mask, y, _ = toy(32)
    assert np.mean(fitted.predict(x, mask) == y) > 0.9
    xv, mv, yv, _ = toy(8, seed=1)
    assert np.mean(fitted.predict(xv, mv) == yv) > 0.9
    h = fitted.history_
    assert [r["epoch"] for r in h] == [1, 2, 3, 4, 5, 6]
    assert {r["phase"] for r in h} == {"joint"}
    keys = {"train_loss", "train_recon_loss", "train_clf_loss", "train_acc", "val_loss", "val_acc"}
    assert keys <= set(h[0])
    assert all(isinstance(r["val_acc"], float) for r in h)
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[0]["train_loss"] == pytest.approx(h[0]["train_recon_loss"] + h[0]["train_clf_loss"])
    assert fitted.n_features_in_ == 4096
    assert not fitted.model_.training


def test_output_shapes(fitted: AutoencoderClassifier) -> None:
    x, mask, _, _ = toy(5)
    p = fitted.predict_proba(x, mask)
    assert p.shape == (5,) and p.dtype == np.float64 and np.all((p >= 0) & (p <= 1))
    labels = fitted.predict(x, mask)
    assert labels.dtype == np.int64 and set(labels.tolist()) <= {0, 1}
    assert np.array_equal(fitted.predict(x, mask, threshold=0.0), np.ones(5, dtype=np.int64))
    r = fitted.reconstruct(x, mask)
    assert r.shape == (5, 64, 64) and r.dtype == np.float32
    assert fitted.decision_function(x, mask).shape == (5,)


def test_same_seed_same_model_other_seed_other_model() -> None:
    x, mask, y, _ = toy(16)
    state_before = torch.get_rng_state()
    a = AutoencoderClassifier(TINY, seed=3).fit(x, mask, y)
    # fit leaves torch's global generator as it found it
    assert torch.equal(torch.get_rng_state(), state_before)
    b = AutoencoderClassifier(TINY, seed=3).fit(x, mask, y)
    c = AutoencoderClassifier(TINY, seed=4).fit(x, mask, y)
    for name, w in a.model_.state_dict().items():
        assert torch.equal(w, b.model_.state_dict()[name]), name
    assert np.array_equal(a.predict_proba(x, mask), b.predict_proba(x, mask))
    assert not np.array_equal(a.predict_proba(x, mask), c.predict_proba(x, mask))
    assert a.history_ == b.history_
    assert all(r["val_loss"] is None for r in a.history_)


def test_sequential_mode_freezes_the_encoder() -> None:
    x, mask, y, _ = toy(16)
    cfg0 = TrainConfig(epochs=2, batch_size=8, mode="sequential", classifier_epochs=0)
    cfg2 = TrainConfig(epochs=2, batch_size=8, mode="sequential", classifier_epochs=2)
    after_ae = AutoencoderClassifier(cfg0, seed=0).fit(x, mask, y).model_
    full = AutoencoderClassifier(cfg2, seed=0).fit(x, mask, y)
    for part in ("encoder", "decoder"):
        for name, w in getattr(after_ae, part).state_dict().items():
            assert torch.equal(w, getattr(full.model_, part).state_dict()[name]), f"{part}.{name}"
    w_after_ae = dict(after_ae.named_parameters())["classifier.1.weight"]
    assert not torch.equal(w_after_ae, dict(full.model_.named_parameters())["classifier.1.weight"])
    assert [r["phase"] for r in full.history_] == ["autoencoder"] * 2 + ["classifier"] * 2
    assert all(p.requires_grad for p in full.model_.parameters())


# ------------------------------------------------------------------------------------------ save / load
def test_save_load_round_trip(fitted: AutoencoderClassifier, tmp_path: Path) -> None:
    x, mask, _, _ = toy(6, seed=5)
    path = fitted.save(tmp_path / "model.pt")
    loaded = AutoencoderClassifier.load(path, device="cpu")
    assert np.array_equal(loaded.predict_proba(x, mask), fitted.predict_proba(x, mask))
    assert np.array_equal(loaded.reconstruct(x, mask), fitted.reconstruct(x, mask))
    assert loaded.config == dataclasses.replace(fitted.config, device="cpu") and loaded.seed == fitted.seed
    assert loaded.history_ == fitted.history_
    with pytest.raises(InputError, match="already exists"):
        fitted.save(path)
    fitted.save(path, overwrite=True)
    junk = tmp_path / "junk.pt"
    torch.save({"something": torch.zeros(2)}, junk)
    with pytest.raises(InputError, match="not a saved AutoencoderClassifier"):
        AutoencoderClassifier.load(junk)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["classifier.1.weight"]
    damaged = tmp_path / "damaged.pt"
    torch.save(payload, damaged)
    with pytest.raises(InputError, match="damaged or incompatible model"):
        AutoencoderClassifier.load(damaged)
    with pytest.raises(InputError, match="model file not found"):
        AutoencoderClassifier.load(tmp_path / "missing.pt")
    assert [p.name for p in tmp_path.iterdir() if ".partial" in p.name] == []


# ------------------------------------------------------------------------------------------------- CAMs
@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "pixelwise"])
def test_explain_shapes_and_gtv(fitted: AutoencoderClassifier, method: str) -> None:
    x, mask, y, gtv = toy(10, seed=2)
    res = fitted.explain(x, mask, method=method, target="pos", upsample_mask=gtv)  # type: ignore[arg-type]
    assert res.raw.shape == res.normalised.shape == (10, 64, 64)
    assert res.feature_raw.shape == (10, 16, 16)
    assert np.all(res.raw[~gtv] == 0) and np.all(res.raw >= 0)
    assert res.raw.max() > 0
    assert (res.weights is None) == (method == "pixelwise")
    if res.weights is not None:
        assert res.weights.shape == (10, 5)
    assert np.array_equal(res.class_index, np.ones(10))
    np.testing.assert_allclose(res.score, fitted.decision_function(x, mask), rtol=1e-5, atol=1e-5)
    per_sample = fitted.explain(x, mask, method=method, target=y, upsample_mask=gtv)  # type: ignore[arg-type]
    assert np.array_equal(per_sample.class_index, y)


# ------------------------------------------------------------------------------------------- bad inputs
def test_bad_inputs_raise(fitted: AutoencoderClassifier) -> None:
    x, mask, y, _ = toy(4)
    est = AutoencoderClassifier(TINY)
    with pytest.raises(InputError, match=r"x must have shape \(n, 64, 64\), got \(4, 32, 32\)"):
        est.fit(x[:, :32, :32], mask, y)
    with pytest.raises(InputError, match=r"mask must have shape \(4, 16, 16\) .*got \(4, 64, 64\)"):
        est.fit(x, np.ones((4, 64, 64), bool), y)
    with pytest.raises(InputError, match=r"y must have shape \(4,\)"):
        est.fit(x, mask, y[:3])
    with pytest.raises(InputError, match="y must hold only 0 and 1"):
        est.fit(x, mask, y + 1)
    with pytest.raises(InputError, match=r"x must lie in \[0, 1\]"):
        est.fit(x * 255, mask, y)
    with pytest.raises(InputError, match="x must be a floating-point array"):
        est.fit((x * 255).astype(np.uint8), mask, y)
    with pytest.raises(InputError, match="mask must be boolean"):
        est.fit(x, mask * 2, y)
    with pytest.raises(InputError, match="must be given together"):
        est.fit(x, mask, y, x_val=x)
    with pytest.raises(InputError, match="seed must be a non-negative int"):
        AutoencoderClassifier(TINY, seed=-1).fit(x, mask, y)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.predict(x, mask)
    with pytest.raises(InputError, match=r"mask must have shape \(4, 16, 16\)"):
        fitted.predict_proba(x, mask[:2])
    with pytest.raises(InputError, match=r"upsample_mask must have shape \(4, 64, 64\)"):
        fitted.explain(x, mask, method="gradcam", upsample_mask=mask)
    with pytest.raises(InputError, match="threshold must be a number in"):
        fitted.predict(x, mask, threshold=2.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_cuda_without_cuda_raises() -> None:
    x, mask, y, _ = toy(4)
    with pytest.raises(InputError, match="torch sees no CUDA device"):
        AutoencoderClassifier(TrainConfig(epochs=1, device="cuda")).fit(x, mask, y)
