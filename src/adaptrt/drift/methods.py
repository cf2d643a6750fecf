"""The drift models of Part II as estimators: Method 1, Method 2 (DDIM), the decoupled pair, and the one-step
regression baseline, trained by one plain PyTorch loop (:func:`train_loop`).

Methods (``DriftModelConfig.method``)
-------------------------------------
``"method1"``
    The pre image is noised at a random step ``t`` (eq. 2, noise ``noise_scale`` = 0.2 of the largest
    intensity in the paper profile); the network predicts the **post image** and the drift in one step.
    Loss: ``recon_weight * (0.9 MSE + 0.1 (1 - SSIM))(post) + drift_weight * MSE(drift)`` (the paper's
    Fig. 5 ratios 1:1, 1:1.5, 1:3). Prediction: the pre image noised at ``eval_step`` (seeded noise).
``"method2"``
    DDIM. The forward process noises the **pre** image, ``x_t = sqrt(abar_t) pre + sqrt(1 - abar_t) s eps``,
    and the network is trained to predict ``eps* = (x_t - sqrt(abar_t) post) / (sqrt(1 - abar_t) s)``
    (:func:`adaptrt.drift.schedule.eps_target`): the noise for which eq. 4 returns the **post** image, which is
    how the paper "anchors the final target on the post-treatment image". ``eps*`` equals the drawn noise plus
    a term proportional to ``pre - post``, so the network learns the drift through the noise. Loss:
    ``recon_weight * MSE(eps) + drift_weight * (MSE + drift_ssim (1 - SSIM))(drift)``. Inference starts from
    the pre image noised at the last step and runs the DDIM reverse steps (eqs. 4-5, eta 0 by default).
    ``eps_loss="x0"`` (not the paper's) measures the same error as the MSE of eq. 4's estimate x̂0 against the
    post image, i.e. weights step t by (1 - abar_t) s² / abar_t: the unweighted MSE on eps* is dominated by the
    least noisy steps, where eps* carries the drift times about 22.
``"regression"``
    Baseline: the same backbone with no noise and a constant step; pre -> post and drift in one pass, with
    Method 1's loss. It tells whether noise adds anything over direct image-to-image regression.

Heads (``DriftModelConfig.head``): ``"shared"`` (drift head on the shared decoder), ``"separate"`` (the drift
has its own decoder layers, the paper's Fig. 6), ``"decoupled"`` (two networks: one for the image term, one
for the drift, each trained on its own loss; Fig. 3C).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from ..nn.ssim import ssim
from ..validation import bad_parameter, is_int, is_real
from . import schedule as sch
from .unet import DecoupledPair, DriftUNet

__all__ = [
    "DriftModel",
    "DriftModelConfig",
    "DriftPrediction",
    "resolve_device",
    "train_loop",
]

Method = Literal["method1", "method2", "regression"]
Head = Literal["shared", "separate", "decoupled"]
_METHODS = ("method1", "method2", "regression")
_HEADS = ("shared", "separate", "decoupled")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` / None: CUDA when present, else CPU; otherwise the named device."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class DriftModelConfig:
    """Hyper-parameters of one drift model (validated on construction).

    The optimiser is the paper's AdamW (lr 1e-4, weight decay 1e-4, betas 0.9 / 0.999, eps 1e-8), batch 64,
    about 5,000 iterations; the schedule ``linspace(0.05, 0.95, 21)`` of ``schedule_kind`` (see
    :func:`adaptrt.drift.schedule.make_schedule` and docs/drift.md for why 1 - abar is the default reading).
    """

    method: Method = "method2"
    head: Head = "separate"
    widths: tuple[int, ...] = (8, 16, 32)
    iterations: int = 5000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    noise_scale: float = 0.2
    schedule_kind: str = "one_minus_alpha_bar"
    T: int = 21
    schedule_start: float = 0.05
    schedule_end: float = 0.95
    recon_weight: float = 1.0
    drift_weight: float = 3.0
    recon_ssim: float = 0.1
    drift_ssim: float = 0.0
    eval_step: int = 0
    n_classes: int = 0
    label_dropout: float = 0.0
    log_every: int = 25
    eps_loss: Literal["eps", "x0"] = "eps"

    def __post_init__(self) -> None:
        name = "DriftModelConfig"
        if self.method not in _METHODS:
            raise bad_parameter(name, "method", f"one of {list(_METHODS)}", self.method)
        if self.head not in _HEADS:
            raise bad_parameter(name, "head", f"one of {list(_HEADS)}", self.head)
        w = self.widths
        if not (isinstance(w, tuple | list) and len(w) >= 2 and all(is_int(v) and v >= 1 for v in w)):
            raise bad_parameter(name, "widths", "a tuple of >= 2 ints >= 1", w)
        object.__setattr__(self, "widths", tuple(int(v) for v in w))
        for f, lo in (("iterations", 1), ("batch_size", 1), ("T", 2), ("log_every", 1)):
            v = getattr(self, f)
            if not (is_int(v) and v >= lo):
                raise bad_parameter(name, f, f"an int >= {lo}", v)
        for f in ("lr", "noise_scale"):
            v = getattr(self, f)
            if not (is_real(v) and math.isfinite(v) and v > 0):
                raise bad_parameter(name, f, "a finite float > 0", v)
        for f in ("weight_decay", "recon_weight", "drift_weight", "recon_ssim", "drift_ssim", "adam_eps"):
            v = getattr(self, f)
            if not (is_real(v) and math.isfinite(v) and v >= 0):
                raise bad_parameter(name, f, "a finite float >= 0", v)
        if not (0.0 <= self.recon_ssim <= 1.0):
            raise bad_parameter(name, "recon_ssim", "a fraction in [0, 1]", self.recon_ssim)
        if not (is_int(self.eval_step) and 0 <= self.eval_step < self.T):
            raise bad_parameter(name, "eval_step", f"an int in [0, T - 1 = {self.T - 1}]", self.eval_step)
        if self.eps_loss not in ("eps", "x0"):
            raise bad_parameter(name, "eps_loss", "'eps' or 'x0'", self.eps_loss)
        if not (is_int(self.n_classes) and self.n_classes >= 0):
            raise bad_parameter(name, "n_classes", "an int >= 0", self.n_classes)
        p = self.label_dropout
        if not (is_real(p) and 0.0 <= p < 1.0):
            raise bad_parameter(name, "label_dropout", "a fraction in [0, 1)", p)

    @property
    def label(self) -> str:
        """Short name, e.g. ``method2/separate``."""
        return f"{self.method}/{self.head}"


def build_network(config: DriftModelConfig) -> nn.Module:
    """The network of a configuration (untrained)."""
    if config.head == "decoupled":
        return DecoupledPair(config.widths, n_classes=config.n_classes)
    return DriftUNet(widths=config.widths, drift_head=config.head, n_classes=config.n_classes)


@dataclass(frozen=True)
class DriftPrediction:
    """Predictions for ``b`` images.

    Attributes
    ----------
    post, drift
        ``(b, h, w)`` float32: the predicted post image and drift map (normalised intensity units).
    trajectory_post, trajectory_drift
        ``(steps, b, h, w)`` or None: Method 2's intermediate x̂0 and drift at each reverse step (from the
        noisiest), Method 1's outputs at each noise step (from the least noisy).
    steps
        The step index of each trajectory entry.
    """

    post: NDArray[np.float32]
    drift: NDArray[np.float32]
    trajectory_post: NDArray[np.float32] | None = None
    trajectory_drift: NDArray[np.float32] | None = None
    steps: tuple[int, ...] = ()


def _ssim_loss(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    if a.shape[-1] < 11 or a.shape[-2] < 11:
        return a.new_zeros(())
    return 1.0 - ssim(a, b, data_range=data_range).mean()


def _t_input(t: torch.Tensor, T: int) -> torch.Tensor:
    """The network's scalar step input: (t + 1) / T in (0, 1]."""
    return (t.to(torch.float32) + 1.0) / float(T)


LossFn = Callable[[nn.Module, dict[str, torch.Tensor], torch.Generator], dict[str, torch.Tensor]]


def train_loop(
    network: nn.Module,
    data: dict[str, torch.Tensor],
    loss_fn: LossFn,
    *,
    iterations: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    seed: int,
    device: torch.device,
    log_every: int = 25,
    progress: bool = False,
    desc: str = "train",
) -> list[dict[str, float]]:
    """The drift study's one training loop: seeded batches, one optimiser step per iteration, loss history.

    Parameters
    ----------
    network
        The module (already on ``device``).
    data
        Named tensors of the training set, first axis = sample, on ``device``.
    loss_fn
        ``loss_fn(network, batch, generator) -> {"total": ..., other terms}``; draws its own noise from the
        (CPU) generator so that a run is reproducible on any device.
    iterations, batch_size
        Optimiser steps and samples per step. Batches walk through seeded permutations of the samples
        (epochs), the last one wrapping around.
    optimizer
        Optimiser over ``network``'s parameters.
    seed
        Seed of the batch order and of every random draw of ``loss_fn``.
    log_every
        Iterations between history entries (the mean of each term over them).

    Returns
    -------
    list of dict
        ``{"iteration": i, "<term>": mean, ...}`` every ``log_every`` iterations and at the end.
    """
    from tqdm.auto import tqdm

    n = next(iter(data.values())).shape[0]
    if n == 0:
        raise ValueError("no training samples")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n, generator=gen)
    pos = 0
    history: list[dict[str, float]] = []
    acc: dict[str, float] = {}
    count = 0
    network.train()
    bar = tqdm(range(iterations), desc=desc, disable=not progress, leave=False)
    for it in bar:
        if pos + batch_size > n:
            rest = order[pos:]
            order = torch.randperm(n, generator=gen)
            need = batch_size - len(rest)
            idx = torch.cat([rest, order[: min(need, n)]])
            pos = min(need, n)
        else:
            idx = order[pos : pos + batch_size]
            pos += batch_size
        idx_d = idx.to(device)
        batch = {k: v.index_select(0, idx_d) for k, v in data.items()}
        terms = loss_fn(network, batch, gen)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        for k, v in terms.items():
            acc[k] = acc.get(k, 0.0) + float(v.detach())
        count += 1
        if (it + 1) % log_every == 0 or it + 1 == iterations:
            history.append({"iteration": float(it + 1), **{k: v / count for k, v in acc.items()}})
            acc, count = {}, 0
            if progress:
                bar.set_postfix(loss=f"{history[-1]['total']:.4f}")
    network.eval()
    return history


class DriftModel:
    """One drift model as an estimator: ``fit`` on pre / post / drift samples, ``predict`` from pre images.

    Parameters
    ----------
    config
        Hyper-parameters (:class:`DriftModelConfig`).
    seed
        Seed of the initial weights, the batch order and every noise draw of training.
    device
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...

    Attributes
    ----------
    network_ : torch.nn.Module
    history_ : list of dict, the loss terms every ``log_every`` iterations
    schedule_ : DiffusionSchedule
    n_parameters_ : int
    """

    def __init__(
        self, config: DriftModelConfig | None = None, *, seed: int = 0, device: str = "auto"
    ) -> None:
        self.config = config if config is not None else DriftModelConfig()
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------------------------------ training
    def _loss_fn(self, sched: sch.DiffusionSchedule) -> LossFn:
        cfg = self.config
        s = cfg.noise_scale

        def loss(
            net: nn.Module, batch: dict[str, torch.Tensor], gen: torch.Generator
        ) -> dict[str, torch.Tensor]:
            pre, post, drift = batch["pre"], batch["post"], batch["drift"]  # (b, 1, h, w)
            b = pre.shape[0]
            label = batch.get("label")
            if label is not None and cfg.n_classes > 0 and "label_keep" in batch:
                label = torch.where(batch["label_keep"], label, torch.full_like(label, cfg.n_classes))
            elif label is not None and cfg.n_classes > 0 and cfg.label_dropout > 0:
                # classifier-free dropout: a share of the batch is shown the "no label" row, so the same
                # network also generates unconditionally (label=None)
                keep = (torch.rand(b, generator=gen) >= cfg.label_dropout).to(label.device)
                label = torch.where(keep, label, torch.full_like(label, cfg.n_classes))
            if cfg.method == "regression":
                t = torch.zeros(b, dtype=torch.long)
                x_in = pre
            else:
                t = torch.randint(0, cfg.T, (b,), generator=gen)
                eps = torch.randn(pre.shape, generator=gen).to(pre.device)
                t = t.to(pre.device)
                x_in = sch.q_sample(pre, t, eps, sched, noise_scale=s)
            t = t.to(pre.device)
            image_hat, drift_hat = net(x_in, _t_input(t, cfg.T), label)
            drift_mse = F.mse_loss(drift_hat, drift)
            drift_term = drift_mse
            if cfg.drift_ssim > 0:
                drift_term = drift_term + cfg.drift_ssim * _ssim_loss(drift_hat, drift, 2.0)
            if cfg.method == "method2" and cfg.eps_loss == "x0":
                # the same minimiser, each step weighted by (1 - abar) s^2 / abar: an MSE of eq. 4's x0 estimate
                recon = F.mse_loss(sch.predict_x0(x_in, image_hat, t, sched, noise_scale=s), post)
            elif cfg.method == "method2":
                target = sch.eps_target(x_in, post, t, sched, noise_scale=s)
                recon = F.mse_loss(image_hat, target)
            else:
                mse = F.mse_loss(image_hat, post)
                recon = (1.0 - cfg.recon_ssim) * mse
                if cfg.recon_ssim > 0:
                    recon = recon + cfg.recon_ssim * _ssim_loss(image_hat, post, 1.0)
            total = cfg.recon_weight * recon + cfg.drift_weight * drift_term
            return {"total": total, "recon": recon, "drift": drift_mse}

        return loss

    def fit(
        self,
        pre: NDArray[np.floating[Any]],
        post: NDArray[np.floating[Any]],
        drift: NDArray[np.floating[Any]] | None = None,
        *,
        labels: NDArray[np.integer[Any]] | None = None,
        progress: bool = False,
        desc: str | None = None,
    ) -> DriftModel:
        """Train on ``n`` samples.

        Parameters
        ----------
        pre, post
            ``(n, h, w)`` or ``(n, 1, h, w)`` images on one intensity scale per lesion.
        drift
            ``post - pre`` (computed when None).
        labels
            ``(n,)`` class per sample in ``[0, n_classes]`` when ``n_classes > 0``; ``n_classes`` = no label
            (e.g. a lesion without follow-up). Classifier-free dropout: each iteration shows a share
            ``label_dropout`` of the batch the "no label" row.
        """
        from ..seeding import seed_torch

        cfg = self.config
        dev = resolve_device(self.device)
        pre_t = _as_nchw(pre)
        post_t = _as_nchw(post)
        if pre_t.shape != post_t.shape:
            raise ValueError(f"pre {tuple(pre_t.shape)} and post {tuple(post_t.shape)} differ in shape")
        drift_t = post_t - pre_t if drift is None else _as_nchw(drift)
        seed_torch(int(self.seed))
        net = build_network(cfg).to(dev)
        self.schedule_ = sch.make_schedule(
            T=cfg.T, start=cfg.schedule_start, end=cfg.schedule_end, kind=cfg.schedule_kind
        )
        data = {"pre": pre_t.to(dev), "post": post_t.to(dev), "drift": drift_t.to(dev)}
        if labels is not None:
            data["label"] = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=dev)
        opt = torch.optim.AdamW(
            net.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
        )
        self.history_ = train_loop(
            net,
            data,
            self._loss_fn(self.schedule_),
            iterations=cfg.iterations,
            batch_size=cfg.batch_size,
            optimizer=opt,
            seed=int(self.seed) + 1,
            device=dev,
            log_every=cfg.log_every,
            progress=progress,
            desc=desc or cfg.label,
        )
        self.network_ = net
        self.n_parameters_ = int(sum(p.numel() for p in net.parameters()))
        return self

    # ------------------------------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise RuntimeError("this DriftModel is not fitted yet: call fit() first")

    @torch.no_grad()
    def predict(
        self,
        pre: NDArray[np.floating[Any]],
        *,
        seed: int = 0,
        eta: float = 0.0,
        n_steps: int | None = None,
        keep_trajectory: bool = False,
        label: int | None = None,
        batch_size: int = 256,
    ) -> DriftPrediction:
        """Predict the post image and the drift of ``b`` pre images.

        Method 2 starts each image from its pre image noised at the last step with noise drawn from ``seed``
        and runs the DDIM reverse steps; Method 1 noises the pre image at ``eval_step`` (seeded) and predicts in
        one pass (with ``keep_trajectory``, at every step: the paper's Fig. 5 rows); the regression baseline
        predicts from the pre image itself. ``label`` conditions a class-conditional network (None: no label).
        """
        self._check_fitted()
        cfg = self.config
        net = self.network_
        net.eval()
        dev = next(net.parameters()).device
        x_all = _as_nchw(pre)
        gen = torch.Generator().manual_seed(int(seed))
        sched = self.schedule_
        outs_post, outs_drift, traj_p, traj_d = [], [], [], []
        steps: tuple[int, ...] = ()
        for start in range(0, x_all.shape[0], batch_size):
            x0 = x_all[start : start + batch_size].to(dev)
            b = x0.shape[0]
            lab = None
            if cfg.n_classes > 0:
                lab = torch.full(
                    (b,), cfg.n_classes if label is None else int(label), dtype=torch.long, device=dev
                )
            eps = torch.randn(x0.shape, generator=gen).to(dev)
            if cfg.method == "regression":
                p, d = net(x0, _t_input(torch.zeros(b, dtype=torch.long, device=dev), cfg.T), lab)
                outs_post.append(p)
                outs_drift.append(d)
                continue
            if cfg.method == "method1":
                ts = list(range(cfg.T)) if keep_trajectory else [cfg.eval_step]
                tp, td = [], []
                for t_i in ts:
                    t = torch.full((b,), t_i, dtype=torch.long, device=dev)
                    x_t = sch.q_sample(x0, t, eps, sched, noise_scale=cfg.noise_scale)
                    p, d = net(x_t, _t_input(t, cfg.T), lab)
                    tp.append(p)
                    td.append(d)
                    if t_i == cfg.eval_step:
                        outs_post.append(p)
                        outs_drift.append(d)
                if keep_trajectory:
                    traj_p.append(torch.stack(tp))
                    traj_d.append(torch.stack(td))
                    steps = tuple(ts)
                continue
            # method 2: DDIM from the noisy pre image
            t_last = cfg.T - 1
            x_start = sch.q_sample(
                x0,
                torch.full((b,), t_last, dtype=torch.long, device=dev),
                eps,
                sched,
                noise_scale=cfg.noise_scale,
            )

            def model_fn(
                x_t: torch.Tensor, t: torch.Tensor, _lab: torch.Tensor | None = lab
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
                out: tuple[torch.Tensor, torch.Tensor] = net(x_t, _t_input(t, cfg.T), _lab)
                return out

            res = sch.ddim_sample(
                model_fn,
                x_start,
                t_last,
                sched,
                eta=eta,
                generator=gen,
                noise_scale=cfg.noise_scale,
                n_steps=n_steps,
                keep_trajectory=keep_trajectory,
            )
            if res.drift is None:
                raise RuntimeError("the network returned no drift")
            outs_post.append(res.x0)
            outs_drift.append(res.drift)
            if res.trajectory_x0 is not None and res.trajectory_drift is not None:
                traj_p.append(res.trajectory_x0)
                traj_d.append(res.trajectory_drift)
                steps = tuple(int(v) for v in res.timesteps[:-1])
        post = torch.cat(outs_post)[:, 0].float().cpu().numpy()
        drift = torch.cat(outs_drift)[:, 0].float().cpu().numpy()
        tp_np = torch.cat(traj_p, dim=1)[:, :, 0].float().cpu().numpy() if traj_p else None
        td_np = torch.cat(traj_d, dim=1)[:, :, 0].float().cpu().numpy() if traj_d else None
        return DriftPrediction(post, drift, tp_np, td_np, steps)

    # ------------------------------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """What :meth:`from_state` needs: config, seed, weights (CPU), history."""
        self._check_fitted()
        from ..config import to_jsonable

        return {
            "config": to_jsonable(self.config),
            "seed": self.seed,
            "weights": {k: v.detach().cpu() for k, v in self.network_.state_dict().items()},
            "history": self.history_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, device: str = "auto") -> DriftModel:
        """Rebuild a fitted model from :meth:`state`."""
        from ..config import from_dict

        cfg = from_dict(DriftModelConfig, state["config"])
        model = cls(cfg, seed=int(state["seed"]), device=device)
        net = build_network(cfg)
        net.load_state_dict(state["weights"])
        model.network_ = net.to(resolve_device(device)).eval()
        model.history_ = list(state.get("history", []))
        model.schedule_ = sch.make_schedule(
            T=cfg.T, start=cfg.schedule_start, end=cfg.schedule_end, kind=cfg.schedule_kind
        )
        model.n_parameters_ = int(sum(p.numel() for p in net.parameters()))
        return model


def _as_nchw(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"images must be (n, h, w) or (n, 1, h, w), got {tuple(t.shape)}")
    return t
