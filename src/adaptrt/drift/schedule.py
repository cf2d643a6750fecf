"""The drift study's diffusion schedule and DDIM sampler (Part II, eqs. 2, 4 and 5): pure functions, no state.

References
----------
* Part II's Method: eq. 2 (forward process) ``X_t = √ᾱ_t·X_0 + √(1 − ᾱ_t)·ε``, eq. 4 (the estimate
  ``X̂_0 = (X_t − √(1 − ᾱ_t)·ε_θ) / √ᾱ_t``), eq. 5 (the DDIM step
  ``X_{t−1} = √ᾱ_{t−1}·X̂_0 + √(1 − ᾱ_{t−1})·ε_θ``); "a linear noise schedule defined as
  linspace(0.05, 0.95, T), where T = 21"; noise "at 20 % of the largest signal intensity".
* Song, Meng & Ermon, *Denoising Diffusion Implicit Models* (ICLR 2021), eqs. 12 and 16: the step with
  ``σ_t(η) = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)``; η = 0 is eq. 5 above, η = 1 is DDPM.

Conventions
-----------
* Step indices ``t = 0 .. T−1``, ``t = 0`` the least noisy; ``t = −1`` is the clean end (``ᾱ = 1``), so the
  last reverse step ``t = 0 -> −1`` returns ``X̂_0``.
* What the paper's ``linspace(0.05, 0.95, T)`` schedules is not stated. :func:`make_schedule` offers the three
  readings (``kind``); the default ``"one_minus_alpha_bar"`` (``1 − ᾱ_t = linspace``) keeps ``ᾱ = 0.05`` at
  the last step, so the pre-treatment image is never fully destroyed: inference starts from "only a noisy
  version of the pre-treatment image", as the paper says. The ``"beta"`` reading (DDPM's) gives
  ``ᾱ_{T−1} ≈ 1e−9`` at T = 21: pure noise.
* ``noise_scale`` ``s`` multiplies the unit-variance noise wherever noise enters: ``X_t = √ᾱ_t·X_0 +
  √(1 − ᾱ_t)·s·ε``. With ``ε' = s·ε`` the DDIM equations are unchanged; the network predicts ``ε`` (unit
  variance). The paper profile uses ``s = 0.2`` on images in [0, 1] ("20 % of the largest intensity").
* Images are ``(b, c, h, w)`` tensors; a step ``t`` is a Python int (the same step for the whole batch) or
  a ``(b,)`` integer tensor. Everything works on CPU and CUDA, in float32 and float64, with or without
  autograd. Nothing is clamped unless asked (``clip``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..validation import bad_parameter, is_int, is_real

__all__ = [
    "SCHEDULE_KINDS",
    "DDIMResult",
    "DiffusionSchedule",
    "ModelFn",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "eps_target",
    "make_schedule",
    "predict_x0",
    "q_sample",
    "time_input",
]

#: The readings of the paper's ``linspace(start, end, T)``: the quantity that is linear in ``t``.
SCHEDULE_KINDS: tuple[str, ...] = ("one_minus_alpha_bar", "beta", "noise_std")

#: ``model_fn(x_t, t) -> (eps_hat, drift_hat)``: ``x_t`` ``(b, c, h, w)``, ``t`` ``(b,)`` int64 step indices;
#: ``eps_hat`` like ``x_t``; ``drift_hat`` ``(b, c, h, w)`` or ``None`` for a network without a drift head.
ModelFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]

Step = int | torch.Tensor


@dataclass(frozen=True)
class DiffusionSchedule:
    """A discrete noise schedule: the cumulative signal fractions ``ᾱ_t``.

    Attributes
    ----------
    alpha_bar
        ``T`` floats, ``ᾱ_t`` for ``t = 0 .. T−1`` (``t = 0`` the least noisy), strictly decreasing in (0, 1).
    kind
        Which quantity :func:`make_schedule` spaced linearly (one of :data:`SCHEDULE_KINDS`).
    start, end
        The end points of that linear spacing.
    T
        The number of steps.
    """

    alpha_bar: tuple[float, ...]
    kind: str
    start: float
    end: float
    T: int

    def __post_init__(self) -> None:
        a = np.asarray(self.alpha_bar, dtype=np.float64)
        if a.shape != (self.T,):
            raise ValueError(f"alpha_bar must hold T={self.T} values, got {a.shape[0]}")
        if not (np.all(a > 0) and np.all(a < 1) and np.all(np.diff(a) < 0)):
            raise ValueError("alpha_bar must be strictly decreasing in (0, 1)")

    def alpha_bar_tensor(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """``(T,)`` tensor of ``ᾱ_t`` on ``device`` in ``dtype``."""
        return torch.tensor(self.alpha_bar, dtype=dtype, device=device)


def make_schedule(
    T: int = 21, start: float = 0.05, end: float = 0.95, kind: str = "one_minus_alpha_bar"
) -> DiffusionSchedule:
    """The paper's linear schedule ``linspace(start, end, T)``, read as ``kind``.

    Parameters
    ----------
    T
        Number of steps (>= 2); the paper's 21.
    start, end
        ``0 < start < end < 1``; the paper's 0.05 and 0.95.
    kind
        * ``"one_minus_alpha_bar"`` (default): ``1 − ᾱ_t = linspace(start, end, T)``; eq. 2 is written in ᾱ,
          and ``ᾱ_{T−1} = 1 − end`` keeps part of the pre-treatment image at the noisiest step.
        * ``"beta"``: ``β_t = linspace(start, end, T)``, ``ᾱ_t = ∏_{s<=t} (1 − β_s)`` (DDPM's reading).
        * ``"noise_std"``: ``√(1 − ᾱ_t) = linspace(start, end, T)``.

    Returns
    -------
    DiffusionSchedule

    Examples
    --------
    >>> [round(a, 6) for a in make_schedule(3, 0.1, 0.9).alpha_bar]
    [0.9, 0.5, 0.1]
    """
    owner = "make_schedule"
    if not is_int(T) or T < 2:
        raise bad_parameter(owner, "T", "an int >= 2", T)
    if kind not in SCHEDULE_KINDS:
        raise bad_parameter(owner, "kind", "one of " + ", ".join(repr(k) for k in SCHEDULE_KINDS), kind)
    if not is_real(start) or not 0 < start < 1:
        raise bad_parameter(owner, "start", "a float in (0, 1)", start)
    if not is_real(end) or not start < end < 1:
        raise bad_parameter(owner, "end", f"a float in (start={start}, 1)", end)
    lin = np.linspace(float(start), float(end), int(T), dtype=np.float64)
    if kind == "one_minus_alpha_bar":
        alpha_bar = [1.0 - v for v in lin]
    elif kind == "beta":
        alpha_bar = list(np.cumprod(1.0 - lin))
    else:
        alpha_bar = [1.0 - v * v for v in lin]
    return DiffusionSchedule(tuple(float(a) for a in alpha_bar), kind, float(start), float(end), int(T))


def time_input(t: torch.Tensor, schedule: DiffusionSchedule) -> torch.Tensor:
    """The network's scalar step input: ``(t + 1) / T`` as float32, ``(b,)`` -> ``(b,)`` in (0, 1]."""
    return (t.to(torch.float32) + 1.0) / schedule.T


def _check_noise_scale(noise_scale: float) -> float:
    if not is_real(noise_scale) or not noise_scale > 0 or not math.isfinite(noise_scale):
        raise bad_parameter("the diffusion schedule", "noise_scale", "a finite float > 0", noise_scale)
    return float(noise_scale)


def _alpha_bar_at(
    t: Step, schedule: DiffusionSchedule, like: torch.Tensor, *, allow_end: bool
) -> torch.Tensor:
    """``ᾱ_t`` shaped to broadcast against ``like`` (``(b, 1, 1, 1)`` for a tensor ``t``, 0-d for an int).

    ``t = −1`` (allowed when ``allow_end``) gives ``ᾱ = 1``.
    """
    low = -1 if allow_end else 0
    table = torch.tensor((1.0, *schedule.alpha_bar), dtype=like.dtype, device=like.device)
    if isinstance(t, torch.Tensor):
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"a step must be an integer tensor, got {t.dtype}")
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(f"a step tensor must have shape ({like.shape[0]},), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < low or int(t.max()) > schedule.T - 1):
            raise ValueError(f"steps must lie in [{low}, {schedule.T - 1}], got {t.tolist()}")
        return table[t.to(like.device).long() + 1].view(-1, *([1] * (like.ndim - 1)))
    if not is_int(t) or not low <= t <= schedule.T - 1:
        raise ValueError(f"a step must be an int in [{low}, {schedule.T - 1}], got {t!r}")
    return table[int(t) + 1]


def _same_shape(name: str, a: torch.Tensor, ref: torch.Tensor) -> None:
    if a.shape != ref.shape:
        raise ValueError(f"{name} must have the shape of the image {tuple(ref.shape)}, got {tuple(a.shape)}")


def q_sample(
    x0: torch.Tensor, t: Step, eps: torch.Tensor, schedule: DiffusionSchedule, noise_scale: float = 1.0
) -> torch.Tensor:
    """Eq. 2: ``x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·s·eps``.

    Parameters
    ----------
    x0
        ``(b, c, h, w)`` clean image (the pre-treatment image in both methods).
    t
        ``(b,)`` int64 step indices in ``[0, T−1]``, or one int for the batch.
    eps
        ``(b, c, h, w)`` unit-variance Gaussian noise.
    schedule
        The schedule.
    noise_scale
        ``s`` (> 0): the noise's standard deviation in image units at ``ᾱ = 0``.

    Returns
    -------
    torch.Tensor
        ``(b, c, h, w)`` noisy image ``x_t``.
    """
    _same_shape("eps", eps, x0)
    s = _check_noise_scale(noise_scale)
    ab = _alpha_bar_at(t, schedule, x0, allow_end=False)
    return ab.sqrt() * x0 + (1.0 - ab).sqrt() * s * eps


def predict_x0(
    x_t: torch.Tensor, eps_hat: torch.Tensor, t: Step, schedule: DiffusionSchedule, noise_scale: float = 1.0
) -> torch.Tensor:
    """Eq. 4: ``x̂0 = (x_t − √(1 − ᾱ_t)·s·eps_hat) / √ᾱ_t``; shapes as :func:`q_sample`."""
    _same_shape("eps_hat", eps_hat, x_t)
    s = _check_noise_scale(noise_scale)
    ab = _alpha_bar_at(t, schedule, x_t, allow_end=False)
    return (x_t - (1.0 - ab).sqrt() * s * eps_hat) / ab.sqrt()


def eps_target(
    x_t: torch.Tensor, x0_target: torch.Tensor, t: Step, schedule: DiffusionSchedule, noise_scale: float = 1.0
) -> torch.Tensor:
    """The noise that makes eq. 4 return ``x0_target`` exactly: ``(x_t − √ᾱ_t·x0_target) / (√(1 − ᾱ_t)·s)``.

    Method 2 noises the PRE image and trains on this target with ``x0_target`` = POST, so that the DDIM
    estimate x̂0 is the post image ("anchoring the final target on the post-treatment image"). With
    ``x_t = q_sample(pre, t, eps)`` the target is ``eps + √ᾱ_t·(pre − post) / (√(1 − ᾱ_t)·s)``: the drawn
    noise plus the scaled negative drift, so the network learns both the noise and the change.

    Parameters
    ----------
    x_t
        ``(b, c, h, w)`` noisy image.
    x0_target
        ``(b, c, h, w)`` the image that :func:`predict_x0` must return.
    t, schedule, noise_scale
        As in :func:`q_sample`.

    Returns
    -------
    torch.Tensor
        ``(b, c, h, w)`` the regression target for the network's noise output.
    """
    _same_shape("x0_target", x0_target, x_t)
    s = _check_noise_scale(noise_scale)
    ab = _alpha_bar_at(t, schedule, x_t, allow_end=False)
    return (x_t - ab.sqrt() * x0_target) / ((1.0 - ab).sqrt() * s)


def _check_eta(eta: float) -> float:
    if not is_real(eta) or not 0.0 <= eta <= 1.0:
        raise bad_parameter("the DDIM sampler", "eta", "a float in [0, 1] (0: DDIM, 1: DDPM)", eta)
    return float(eta)


def ddim_step(
    x_t: torch.Tensor,
    eps_hat: torch.Tensor,
    t: Step,
    t_prev: Step,
    schedule: DiffusionSchedule,
    eta: float = 0.0,
    noise: torch.Tensor | torch.Generator | None = None,
    noise_scale: float = 1.0,
    clip: tuple[float, float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One reverse DDIM step from ``t`` to ``t_prev`` (eq. 5, generalised with DDIM's ``σ_t(η)``).

    ``x̂0 = (x_t − √(1 − ᾱ_t)·s·ε̂) / √ᾱ_t`` and
    ``x_prev = √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ²)·s·ε̂ + σ·s·z`` with
    ``σ = η·√((1 − ᾱ_prev)/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_prev)``; ``t_prev = −1`` means ``ᾱ_prev = 1``, so the last
    step returns ``x̂0`` (``σ = 0`` there).

    Parameters
    ----------
    x_t
        ``(b, c, h, w)`` the current sample.
    eps_hat
        ``(b, c, h, w)`` the network's noise prediction at ``(x_t, t)``.
    t, t_prev
        Current and next step: ints (the same for the batch) or ``(b,)`` integer tensors, ``t_prev < t``,
        ``t`` in ``[0, T−1]``, ``t_prev`` in ``[−1, T−2]``.
    schedule
        The schedule.
    eta
        ``η`` in [0, 1]: 0 is deterministic DDIM (the paper), 1 is DDPM's variance.
    noise
        ``(b, c, h, w)`` unit-variance noise ``z``, or a ``torch.Generator`` to draw it from (on the
        generator's device, then moved to ``x_t``'s); required when ``eta > 0``, ignored when ``eta == 0``.
    noise_scale
        ``s`` (> 0), as in :func:`q_sample`.
    clip
        ``(low, high)`` to clamp ``x̂0`` (and to recompute ``ε̂`` from the clamped ``x̂0``, as in DDIM's
        "direction pointing to x_t"); ``None`` (default): no clamping.

    Returns
    -------
    x_prev : torch.Tensor
        ``(b, c, h, w)`` the sample at ``t_prev``.
    x0_hat : torch.Tensor
        ``(b, c, h, w)`` the estimate ``x̂0`` (eq. 4), after clamping if ``clip``.
    """
    _same_shape("eps_hat", eps_hat, x_t)
    s = _check_noise_scale(noise_scale)
    eta = _check_eta(eta)
    ab_t = _alpha_bar_at(t, schedule, x_t, allow_end=False)
    ab_p = _alpha_bar_at(t_prev, schedule, x_t, allow_end=True)
    if bool(torch.any(ab_p <= ab_t)):
        raise ValueError(f"t_prev must be smaller than t, got t={t!r}, t_prev={t_prev!r}")
    x0_hat = (x_t - (1.0 - ab_t).sqrt() * s * eps_hat) / ab_t.sqrt()
    if clip is not None:
        low, high = clip
        if not low < high:
            raise ValueError(f"clip must be (low, high) with low < high, got {clip!r}")
        x0_hat = x0_hat.clamp(low, high)
        eps_hat = (x_t - ab_t.sqrt() * x0_hat) / ((1.0 - ab_t).sqrt() * s)
    x_prev = ab_p.sqrt() * x0_hat
    if eta == 0.0:
        return x_prev + (1.0 - ab_p).sqrt() * s * eps_hat, x0_hat
    sigma = eta * ((1.0 - ab_p) / (1.0 - ab_t)).sqrt() * (1.0 - ab_t / ab_p).sqrt()
    if noise is None:
        raise ValueError("eta > 0 needs noise: pass a noise tensor or a torch.Generator")
    if isinstance(noise, torch.Generator):
        # drawn on the generator's device (a CPU generator gives the same noise for a CUDA run)
        z = torch.randn(x_t.shape, generator=noise, device=noise.device, dtype=x_t.dtype).to(x_t.device)
    else:
        _same_shape("noise", noise, x_t)
        z = noise
    direction = (1.0 - ab_p - sigma**2).clamp(min=0.0).sqrt() * s * eps_hat
    return x_prev + direction + sigma * s * z, x0_hat


def ddim_timesteps(
    schedule: DiffusionSchedule, n_steps: int | None = None, *, start: int | None = None
) -> list[int]:
    """The descending step indices of a reverse run, ending with ``−1``.

    Parameters
    ----------
    schedule
        The schedule.
    n_steps
        Number of network evaluations, ``1 .. start + 1``; ``None``: every step from ``start`` to 0.
        Fewer steps give ``round(linspace(start, 0, n_steps))``: evenly spaced, always ``start`` first and
        ``0`` last when ``n_steps >= 2``.
    start
        The first step (the noise level of the starting image); ``None``: ``T − 1``.

    Returns
    -------
    list[int]
        ``n_steps + 1`` indices, e.g. ``[20, 19, ..., 0, -1]`` for T = 21.

    Examples
    --------
    >>> ddim_timesteps(make_schedule(21), 5)
    [20, 15, 10, 5, 0, -1]
    """
    first = schedule.T - 1 if start is None else start
    if not is_int(first) or not 0 <= first <= schedule.T - 1:
        raise bad_parameter("ddim_timesteps", "start", f"an int in [0, {schedule.T - 1}]", start)
    n = int(first) + 1 if n_steps is None else n_steps
    if not is_int(n) or not 1 <= n <= first + 1:
        raise bad_parameter("ddim_timesteps", "n_steps", f"an int in [1, {int(first) + 1}]", n_steps)
    steps = np.rint(np.linspace(float(first), 0.0, int(n))).astype(np.int64)
    return [int(v) for v in steps] + [-1]


@dataclass(frozen=True)
class DDIMResult:
    """What :func:`ddim_sample` returns.

    Attributes
    ----------
    x0
        ``(b, c, h, w)`` the final sample (``x̂0`` of the last step).
    drift
        ``(b, c, h, w)`` the drift predicted at the last step, or ``None`` if the model has no drift head.
    timesteps
        The step indices visited, ending with ``−1``.
    trajectory_x0
        ``(n_steps, b, c, h, w)`` ``x̂0`` after each step (``keep_trajectory``), else ``None``.
    trajectory_drift
        ``(n_steps, b, c, h, w)`` the drift predicted at each step (``keep_trajectory`` and a drift head).
    """

    x0: torch.Tensor
    drift: torch.Tensor | None
    timesteps: tuple[int, ...]
    trajectory_x0: torch.Tensor | None = None
    trajectory_drift: torch.Tensor | None = None


def ddim_sample(
    model_fn: ModelFn,
    x_start: torch.Tensor,
    t_start: int,
    schedule: DiffusionSchedule,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    noise_scale: float = 1.0,
    n_steps: int | None = None,
    keep_trajectory: bool = False,
    clip: tuple[float, float] | None = None,
) -> DDIMResult:
    """Run the reverse DDIM steps from ``x_start`` at step ``t_start`` down to the clean end.

    Parameters
    ----------
    model_fn
        ``model_fn(x_t, t) -> (eps_hat, drift_hat)`` with ``t`` a ``(b,)`` int64 tensor of step indices
        (convert with :func:`time_input` for the network); a class label, guidance or a network in eval mode
        are the caller's closure. Runs under the caller's grad mode (wrap in ``torch.no_grad()`` to sample).
    x_start
        ``(b, c, h, w)`` the noisy start, e.g. ``q_sample(pre, t_start, eps, ...)``. A batch may hold K
        copies of one lesion with different noise: K samples in one call.
    t_start
        The step of ``x_start``, in ``[0, T−1]``.
    schedule
        The schedule.
    eta
        ``η`` in [0, 1] (0: deterministic DDIM).
    generator
        Source of the step noise; required when ``eta > 0``.
    noise_scale
        ``s`` (> 0), as in :func:`q_sample`.
    n_steps
        Number of network evaluations (:func:`ddim_timesteps`); ``None``: every step.
    keep_trajectory
        Keep ``x̂0`` and the drift of every step.
    clip
        As in :func:`ddim_step`.

    Returns
    -------
    DDIMResult
    """
    eta = _check_eta(eta)
    if eta != 0.0 and generator is None:
        raise ValueError("eta > 0 needs a torch.Generator for the step noise (generator=...)")
    if not is_int(t_start) or not 0 <= t_start <= schedule.T - 1:
        raise bad_parameter("ddim_sample", "t_start", f"an int in [0, {schedule.T - 1}]", t_start)
    if x_start.ndim != 4:
        raise ValueError(f"x_start must be (b, c, h, w), got shape {tuple(x_start.shape)}")
    steps = ddim_timesteps(schedule, n_steps, start=t_start)
    b = x_start.shape[0]
    x = x_start
    x0_hat = x_start
    drift: torch.Tensor | None = None
    xs: list[torch.Tensor] = []
    drifts: list[torch.Tensor] = []
    for t, t_prev in itertools.pairwise(steps):
        t_batch = torch.full((b,), t, dtype=torch.int64, device=x.device)
        eps_hat, drift = model_fn(x, t_batch)
        x, x0_hat = ddim_step(x, eps_hat, t, t_prev, schedule, eta, generator, noise_scale, clip)
        if keep_trajectory:
            xs.append(x0_hat)
            if drift is not None:
                drifts.append(drift)
    return DDIMResult(
        x0=x,
        drift=drift,
        timesteps=tuple(steps),
        trajectory_x0=torch.stack(xs) if keep_trajectory else None,
        trajectory_drift=torch.stack(drifts) if drifts else None,
    )
