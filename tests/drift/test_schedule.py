"""Tests of the drift study's diffusion schedule and DDIM sampler (adaptrt.drift.schedule).

The step-by-step reference is MONAI's ``DDIMScheduler`` (a test-only dependency), configured with the same
``ᾱ``, ``clip_sample=False`` (MONAI clamps ``x̂0`` to [-1, 1] by default), ``set_alpha_to_one=True`` (the last
step returns ``x̂0``) and ``prediction_type="epsilon"``.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from adaptrt.drift.schedule import (
    SCHEDULE_KINDS,
    DiffusionSchedule,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    eps_target,
    make_schedule,
    predict_x0,
    q_sample,
    time_input,
)

F64 = torch.float64


def _images(b: int = 3, size: int = 8, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, 1, size, size), generator=g, dtype=dtype)


def _monai_scheduler(schedule: DiffusionSchedule) -> object:
    from monai.networks.schedulers import DDIMScheduler

    sched = DDIMScheduler(
        num_train_timesteps=schedule.T,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="epsilon",
    )
    # the same ᾱ as ours, in float64 (MONAI builds its own from a beta schedule otherwise)
    sched.alphas_cumprod = schedule.alpha_bar_tensor(dtype=F64)
    return sched


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("one_minus_alpha_bar", [0.95, 0.5, 0.05]),
        ("beta", [0.95, 0.95 * 0.5, 0.95 * 0.5 * 0.05]),
        ("noise_std", [1 - 0.05**2, 1 - 0.5**2, 1 - 0.95**2]),
    ],
)
def test_schedule_kinds_hand_values(kind: str, expected: list[float]) -> None:
    s = make_schedule(3, 0.05, 0.95, kind)
    assert s.kind == kind and s.T == 3 and (s.start, s.end) == (0.05, 0.95)
    assert s.alpha_bar == pytest.approx(expected, abs=1e-15)
    tensor = s.alpha_bar_tensor(dtype=torch.float32)
    assert tensor.dtype == torch.float32 and tensor.shape == (3,)


def test_default_schedule_is_the_papers_linspace_of_one_minus_alpha_bar() -> None:
    s = make_schedule()
    assert s.T == 21 and s.kind == "one_minus_alpha_bar"
    assert s.alpha_bar[0] == pytest.approx(0.95) and s.alpha_bar[-1] == pytest.approx(0.05)
    # the DDPM reading destroys the image at T = 21
    assert make_schedule(kind="beta").alpha_bar[-1] < 1e-8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"T": 1}, "'T' parameter .* int >= 2"),
        ({"T": 2.0}, "'T' parameter"),
        ({"start": 0.0}, "'start' parameter"),
        ({"start": 0.5, "end": 0.4}, "'end' parameter"),
        ({"end": 1.0}, "'end' parameter"),
        ({"kind": "cosine"}, "'kind' parameter .*'one_minus_alpha_bar', 'beta', 'noise_std'"),
    ],
)
def test_make_schedule_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_schedule(**kwargs)  # type: ignore[arg-type]


def test_schedule_record_validates_alpha_bar() -> None:
    with pytest.raises(ValueError, match="must hold T=3 values"):
        DiffusionSchedule((0.9, 0.5), "beta", 0.1, 0.9, 3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiffusionSchedule((0.5, 0.9), "beta", 0.1, 0.9, 2)


def test_time_input() -> None:
    s = make_schedule(21)
    out = time_input(torch.tensor([0, 20]), s)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([1 / 21, 1.0]))


# ------------------------------------------------------------------------------------- eqs. 2 and 4


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
@pytest.mark.parametrize("noise_scale", [1.0, 0.2])
def test_q_sample_and_predict_x0_round_trip(kind: str, noise_scale: float) -> None:
    s = make_schedule(kind=kind)
    x0 = _images(4)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    t = torch.tensor([0, 5, 13, 20])
    x_t = q_sample(x0, t, eps, s, noise_scale)
    ab = torch.tensor([s.alpha_bar[i] for i in (0, 5, 13, 20)], dtype=F64).view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, ab.sqrt() * x0 + (1 - ab).sqrt() * noise_scale * eps, rtol=0, atol=1e-14)
    torch.testing.assert_close(predict_x0(x_t, eps, t, s, noise_scale), x0, rtol=1e-9, atol=1e-9)


def test_int_step_equals_tensor_step() -> None:
    s = make_schedule()
    x0, eps = _images(2), _images(2, seed=5)
    torch.testing.assert_close(q_sample(x0, 7, eps, s), q_sample(x0, torch.tensor([7, 7]), eps, s))


@pytest.mark.parametrize("noise_scale", [1.0, 0.2])
def test_eps_target_makes_predict_x0_return_the_target(noise_scale: float) -> None:
    s = make_schedule()
    pre, post = _images(3, seed=1), _images(3, seed=2)
    eps = torch.randn(pre.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    t = torch.tensor([0, 10, 20])
    x_t = q_sample(pre, t, eps, s, noise_scale)
    target = eps_target(x_t, post, t, s, noise_scale)
    torch.testing.assert_close(predict_x0(x_t, target, t, s, noise_scale), post, rtol=0, atol=1e-12)
    # and it is the drawn noise when the target is the noised image itself
    torch.testing.assert_close(eps_target(x_t, pre, t, s, noise_scale), eps, rtol=0, atol=1e-12)


def test_float32_and_autograd() -> None:
    s = make_schedule()
    x0 = _images(2, dtype=torch.float32).requires_grad_(True)
    eps = torch.randn(x0.shape)
    x_t = q_sample(x0, torch.tensor([3, 4]), eps, s)
    assert x_t.dtype == torch.float32
    x_prev, x0_hat = ddim_step(x_t, eps, 4, 3, s)
    (x_prev.sum() + x0_hat.sum()).backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all()


# ------------------------------------------------------------------------------------------- DDIM step


def test_last_step_returns_x0_hat() -> None:
    s = make_schedule()
    x_t, eps = _images(2), _images(2, seed=9)
    gen = torch.Generator().manual_seed(0)
    for eta in (0.0, 1.0):
        x_prev, x0_hat = ddim_step(x_t, eps, 0, -1, s, eta=eta, noise=gen)
        torch.testing.assert_close(x_prev, x0_hat, rtol=0, atol=0)
        torch.testing.assert_close(x0_hat, predict_x0(x_t, eps, 0, s))


def test_ddim_step_eta0_is_eq5() -> None:
    s = make_schedule()
    x_t, eps = _images(2), _images(2, seed=4)
    x_prev, x0_hat = ddim_step(x_t, eps, 10, 9, s)
    a, ap = s.alpha_bar[10], s.alpha_bar[9]
    expected_x0 = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    torch.testing.assert_close(x0_hat, expected_x0, rtol=0, atol=1e-13)
    torch.testing.assert_close(
        x_prev, math.sqrt(ap) * expected_x0 + math.sqrt(1 - ap) * eps, rtol=0, atol=1e-13
    )


def test_per_sample_steps() -> None:
    s = make_schedule()
    x_t, eps = _images(2), _images(2, seed=4)
    x_prev, x0_hat = ddim_step(x_t, eps, torch.tensor([10, 3]), torch.tensor([9, -1]), s)
    for i, (t, tp) in enumerate([(10, 9), (3, -1)]):
        one_prev, one_x0 = ddim_step(x_t[i : i + 1], eps[i : i + 1], t, tp, s)
        torch.testing.assert_close(x_prev[i : i + 1], one_prev)
        torch.testing.assert_close(x0_hat[i : i + 1], one_x0)


def test_clip_clamps_x0_hat() -> None:
    s = make_schedule()
    x_t = _images(1) * 4 - 2
    eps = torch.zeros_like(x_t)
    x_prev, x0_hat = ddim_step(x_t, eps, 20, -1, s, clip=(-1.0, 1.0))
    assert float(x0_hat.max()) <= 1.0 and float(x0_hat.min()) >= -1.0
    assert float((x_t / math.sqrt(0.05)).abs().max()) > 1.0  # unclamped it would leave [-1, 1]
    torch.testing.assert_close(x_prev, x0_hat)


def test_ddim_step_rejects_bad_arguments() -> None:
    s = make_schedule()
    x, e = _images(2), _images(2, seed=1)
    with pytest.raises(ValueError, match=r"'eta' parameter .* \[0, 1\]"):
        ddim_step(x, e, 5, 4, s, eta=-0.1)
    with pytest.raises(ValueError, match="eta > 0 needs noise"):
        ddim_step(x, e, 5, 4, s, eta=0.5)
    with pytest.raises(ValueError, match="t_prev must be smaller than t"):
        ddim_step(x, e, 4, 5, s)
    with pytest.raises(ValueError, match=r"step must be an int in \[0, 20\]"):
        ddim_step(x, e, 21, 5, s)
    with pytest.raises(ValueError, match=r"steps must lie in \[-1, 20\]"):
        ddim_step(x, e, 5, torch.tensor([-2, 1]), s)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ddim_step(x, e, torch.tensor([5]), 4, s)
    with pytest.raises(TypeError, match="integer tensor"):
        ddim_step(x, e, torch.tensor([5.0, 5.0]), 4, s)
    with pytest.raises(ValueError, match="eps_hat must have the shape"):
        ddim_step(x, e[:1], 5, 4, s)
    with pytest.raises(ValueError, match="noise must have the shape"):
        ddim_step(x, e, 5, 4, s, eta=1.0, noise=e[:1])
    with pytest.raises(ValueError, match="'noise_scale' parameter"):
        ddim_step(x, e, 5, 4, s, noise_scale=0.0)
    with pytest.raises(ValueError, match="low < high"):
        ddim_step(x, e, 5, 4, s, clip=(1.0, 0.0))


# ------------------------------------------------------------------ against MONAI's DDIMScheduler


def _fake_eps(x: torch.Tensor, t: int) -> torch.Tensor:
    """A deterministic stand-in for a network: depends on the sample and the step."""
    return torch.tanh(3.0 * x - 1.0) * (1.0 + 0.05 * t) + 0.1 * torch.cos(7.0 * x + t)


@pytest.mark.parametrize("kind", SCHEDULE_KINDS)
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("noise_scale", [1.0, 0.2])
def test_every_step_matches_monai(kind: str, eta: float, noise_scale: float) -> None:
    s = make_schedule(21, 0.05, 0.95, kind)
    ref = _monai_scheduler(s)
    x = _images(2, size=6, seed=11)
    y = x.clone()
    gen_ours = torch.Generator().manual_seed(123)
    gen_ref = torch.Generator().manual_seed(123)
    steps = ddim_timesteps(s)
    assert steps == [*range(20, -1, -1), -1]
    for t, t_prev in itertools.pairwise(steps):
        eps = _fake_eps(x, t)
        # our noise term is s·ε: MONAI sees the model output s·ε̂, and its step noise σ·z is our σ·s·(z/s);
        # at s = 1 our sampler draws z from the generator itself, as MONAI does
        noise: torch.Tensor | torch.Generator | None = gen_ours
        if noise_scale != 1.0:
            noise = _draw_like(x, gen_ours) / noise_scale if eta > 0 else None
        x_next, x0_hat = ddim_step(x, eps, t, t_prev, s, eta=eta, noise=noise, noise_scale=noise_scale)
        y_next, y0_hat = ref.step(noise_scale * eps, t, y, eta=eta, generator=gen_ref)  # type: ignore[attr-defined]
        assert y_next.dtype == F64
        torch.testing.assert_close(x0_hat, y0_hat, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_next, y_next, rtol=1e-10, atol=1e-10)
        x, y = x_next, y_next
    torch.testing.assert_close(x, x0_hat, rtol=0, atol=0)


def _draw_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen, dtype=x.dtype)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_strided_steps_match_monai(eta: float) -> None:
    s = make_schedule()
    ref = _monai_scheduler(s)
    steps = ddim_timesteps(s, 5)
    assert steps == [20, 15, 10, 5, 0, -1]
    # MONAI's step goes to t - T // num_inference_steps; with T = 21 a stride of 5 is 21 // 4, so the
    # timesteps are passed explicitly and num_inference_steps is set to give that stride (its own
    # set_timesteps(5) would round linspace(20, 0, 5) and step by 21 // 5 = 4: the off-by-one of the issue)
    ref.num_inference_steps = 4  # type: ignore[attr-defined]
    x = _images(2, size=6, seed=3)
    y = x.clone()
    gen_ours, gen_ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for t, t_prev in itertools.pairwise(steps):
        eps = _fake_eps(x, t)
        x, x0_hat = ddim_step(x, eps, t, t_prev, s, eta=eta, noise=gen_ours)
        y, y0_hat = ref.step(eps, t, y, eta=eta, generator=gen_ref)  # type: ignore[attr-defined]
        torch.testing.assert_close(x0_hat, y0_hat, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------ timesteps


def test_ddim_timesteps() -> None:
    s = make_schedule()
    assert ddim_timesteps(s, 1) == [20, -1]
    assert ddim_timesteps(s, 21) == ddim_timesteps(s)
    assert ddim_timesteps(s, 2) == [20, 0, -1]
    assert ddim_timesteps(s, start=3) == [3, 2, 1, 0, -1]
    sub = ddim_timesteps(s, 8)
    assert len(sub) == 9 and sub[0] == 20 and sub[-2:] == [0, -1] and sub == sorted(sub, reverse=True)
    with pytest.raises(ValueError, match=r"'n_steps' parameter .* \[1, 21\]"):
        ddim_timesteps(s, 22)
    with pytest.raises(ValueError, match="'n_steps' parameter"):
        ddim_timesteps(s, 0)
    with pytest.raises(ValueError, match=r"'start' parameter .* \[0, 20\]"):
        ddim_timesteps(s, start=21)


# ------------------------------------------------------------------------------------------ sampling


def _oracle(
    target: torch.Tensor, schedule: DiffusionSchedule, noise_scale: float, drift: torch.Tensor
) -> tuple[object, list[int]]:
    seen: list[int] = []

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        assert t.dtype == torch.int64 and t.shape == (x_t.shape[0],)
        seen.append(int(t[0]))
        return eps_target(x_t, target, t, schedule, noise_scale), drift + int(t[0])

    return model_fn, seen


@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("n_steps", [None, 6])
def test_ddim_sample_with_oracle_recovers_target_at_every_step(eta: float, n_steps: int | None) -> None:
    s = make_schedule()
    noise_scale = 0.2
    pre, post = _images(4, seed=1), _images(4, seed=2)
    x_start = q_sample(pre, 20, torch.randn(pre.shape, dtype=F64), s, noise_scale)
    drift = post - pre
    model_fn, seen = _oracle(post, s, noise_scale, drift)
    out = ddim_sample(
        model_fn,  # type: ignore[arg-type]
        x_start,
        20,
        s,
        eta=eta,
        generator=torch.Generator().manual_seed(0),
        noise_scale=noise_scale,
        n_steps=n_steps,
        keep_trajectory=True,
    )
    n = 21 if n_steps is None else n_steps
    assert out.timesteps == tuple(ddim_timesteps(s, n_steps)) and seen == list(out.timesteps[:-1])
    assert out.trajectory_x0 is not None and out.trajectory_x0.shape == (n, 4, 1, 8, 8)
    assert out.trajectory_drift is not None and out.trajectory_drift.shape == (n, 4, 1, 8, 8)
    for k in range(n):
        torch.testing.assert_close(out.trajectory_x0[k], post, rtol=0, atol=1e-10)
        torch.testing.assert_close(out.trajectory_drift[k], drift + seen[k])
    torch.testing.assert_close(out.x0, post, rtol=0, atol=1e-10)
    assert out.drift is not None
    torch.testing.assert_close(out.drift, drift)  # the last step is t = 0


def test_ddim_sample_k_samples_of_one_lesion_and_no_drift_head() -> None:
    s = make_schedule()
    pre = _images(1, seed=1).expand(16, -1, -1, -1)
    x_start = q_sample(
        pre, 20, torch.randn(pre.shape, dtype=F64, generator=torch.Generator().manual_seed(2)), s
    )

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return 0.5 * x_t, None

    out = ddim_sample(model_fn, x_start, 20, s)
    assert out.x0.shape == (16, 1, 8, 8) and out.drift is None
    assert out.trajectory_x0 is None and out.trajectory_drift is None
    # different starting noise gives different samples, and the run is deterministic with eta = 0
    assert float(out.x0.std(dim=0).mean()) > 0
    torch.testing.assert_close(ddim_sample(model_fn, x_start, 20, s).x0, out.x0, rtol=0, atol=0)


def test_ddim_sample_eta_reproducible_with_generator() -> None:
    s = make_schedule()
    x_start = _images(2)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return 0.1 * x_t, None

    a = ddim_sample(model_fn, x_start, 20, s, eta=1.0, generator=torch.Generator().manual_seed(7))
    b = ddim_sample(model_fn, x_start, 20, s, eta=1.0, generator=torch.Generator().manual_seed(7))
    c = ddim_sample(model_fn, x_start, 20, s, eta=1.0, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a.x0, b.x0, rtol=0, atol=0)
    assert not torch.allclose(a.x0, c.x0)
    with pytest.raises(ValueError, match=r"eta > 0 needs a torch.Generator"):
        ddim_sample(model_fn, x_start, 20, s, eta=1.0)
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        ddim_sample(model_fn, x_start[0], 20, s)
    with pytest.raises(ValueError, match=r"'t_start' parameter of ddim_sample .* \[0, 20\]"):
        ddim_sample(model_fn, x_start, 21, s)
    with pytest.raises(ValueError, match="'eta' parameter"):
        ddim_sample(model_fn, x_start, 20, s, eta=-1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    s = make_schedule()
    x, e = _images(2), _images(2, seed=1)
    for dtype, tol in ((F64, 1e-12), (torch.float32, 1e-5)):
        xs, es = x.to(dtype), e.to(dtype)
        cpu = ddim_step(xs, es, torch.tensor([5, 6]), 4, s, eta=0.5, noise=torch.Generator().manual_seed(0))
        gpu = ddim_step(
            xs.cuda(),
            es.cuda(),
            torch.tensor([5, 6], device="cuda"),
            4,
            s,
            eta=0.5,
            noise=torch.Generator().manual_seed(0),  # a CPU generator: the same noise on either device
        )
        for a, b in zip(cpu, gpu, strict=True):
            assert b.device.type == "cuda" and b.dtype == dtype
            torch.testing.assert_close(a, b.cpu(), rtol=tol, atol=tol)
