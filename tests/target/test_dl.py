"""Deep-learning CTV pieces: samples, split, augmentation, the training loop, the DL CTV."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptrt.errors import InputError
from adaptrt.target.data import PatientVolumes
from adaptrt.target.dl import (
    DL_CHANNELS,
    AugmentConfig,
    DLConfig,
    apply_augmentation,
    contiguity,
    dl_ctv,
    draw_augmentation,
    make_sample,
    min_max,
    split_patients,
    train_model,
)
from adaptrt.types import Volume

SHAPE = (16, 20, 22)


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], r: float) -> np.ndarray:
    g = np.indices(shape).astype(float)
    return sum((g[i] - centre[i]) ** 2 for i in range(3)) <= r * r  # type: ignore[no-any-return]


def phantom_patient(
    i: int, *, treatment: str | None = None, maps: tuple[str, ...] = DL_CHANNELS
) -> PatientVolumes:
    """A tiny patient: an ellipsoid brain, a baseline ball, progression grown towards high nADC."""
    rng = np.random.default_rng(100 + i)
    brain = _ball(SHAPE, (7.5, 9.5, 10.5), 7.5) | _ball(SHAPE, (7.5, 9.5, 10.5), 6.5)
    c = (7.0 + rng.integers(-1, 2), 9.0 + rng.integers(-2, 3), 10.0 + rng.integers(-2, 3))
    t2l = _ball(SHAPE, c, 2.5) & brain
    cel = _ball(SHAPE, c, 1.2) & brain
    shift = (0, 2, 0) if i % 2 else (0, 0, 2)
    prog = _ball(SHAPE, tuple(a + b for a, b in zip(c, shift, strict=True)), 3.2) & brain
    arrays = {m: (rng.normal(0.0, 0.1, SHAPE)).astype(np.float32) for m in maps}
    if "nFLAIR" in arrays:
        arrays["nFLAIR"] += 2.0 * t2l
    if "nT1c" in arrays:
        arrays["nT1c"] += 2.0 * cel
    if "nADC" in arrays:
        arrays["nADC"] += 1.5 * (prog | t2l)
    ref = Volume(brain, (3.0, 3.0, 3.0))
    return PatientVolumes(
        patient_id=f"P{i:02d}",
        treatment=treatment or ("soc" if i % 3 else "aa"),
        ttp_months=4.0 + i,
        row=i + 2,
        reference=ref,
        maps=arrays,
        brain=brain,
        cavity=np.zeros(SHAPE, dtype=bool),
        cel_baseline=cel,
        t2l_baseline=t2l,
        cel_progression=np.zeros(SHAPE, dtype=bool),
        t2l_progression=prog,
        press_box=brain.copy(),
    )


def test_min_max_over_the_brain() -> None:
    x = np.array([[[1.0, 3.0, 5.0, 100.0]]], dtype=np.float32)
    brain = np.array([[[True, True, True, False]]])
    out = min_max(x, brain)
    assert out.tolist() == [[[0.0, 0.5, 1.0, 0.0]]]
    assert min_max(np.ones_like(x), brain).sum() == 0  # a flat map gives zeros


def test_make_sample_crops_pads_and_keeps_every_lesion_voxel() -> None:
    v = phantom_patient(1)
    s = make_sample(v)
    assert s.image.shape[0] == 6 and all(d % 8 == 0 for d in s.shape)
    assert s.image.dtype == np.float32 and 0.0 <= s.image.min() and s.image.max() <= 1.0
    composite = v.t2l_baseline | v.cel_baseline | v.t2l_progression | v.cel_progression
    assert int(s.target.sum()) == int(composite.sum())
    assert np.array_equal(s.paste(s.target, False), composite)
    assert np.array_equal(s.paste(s.brain, False), v.brain)
    sub = s.with_channels(("nFLAIR", "nT1c"))
    assert sub.image.shape[0] == 2 and np.array_equal(sub.image[0], s.image[DL_CHANNELS.index("nFLAIR")])


def test_a_missing_channel_is_named() -> None:
    v = phantom_patient(2, maps=("nADC", "nFA", "CNI", "nT1c", "nFLAIR"))
    with pytest.raises(InputError, match=r"P02 .*lacks the model input map\(s\) CCrI"):
        make_sample(v)


def test_split_is_stratified_and_follows_the_paper_fractions() -> None:
    treatments = ["aa"] * 57 + ["soc"] * 44
    sp = split_patients(treatments, seed=3)
    assert (len(sp.train), len(sp.val), len(sp.test)) == (67, 16, 18)
    assert sorted(sp.train + sp.val + sp.test) == list(range(101))
    aa_test = sum(treatments[i] == "aa" for i in sp.test)
    assert abs(aa_test - 18 * 57 / 101) <= 1  # the cohorts' proportions in the test split
    assert split_patients(treatments, seed=3) == sp and split_patients(treatments, seed=4) != sp
    small = split_patients(["a", "b", "a", "b", "a"], seed=0)
    assert min(len(small.train), len(small.val), len(small.test)) >= 1
    with pytest.raises(InputError, match="at least 3 patients"):
        split_patients(["a", "b"], seed=0)


def test_augmentation_is_drawn_from_the_seed_and_keeps_masks_binary() -> None:
    cfg = AugmentConfig(flip_p=1.0, rotate_p=1.0, noise_p=1.0, shuffle_p=1.0, drop_p=1.0)
    a1 = draw_augmentation(np.random.default_rng(5), 6, cfg)
    a2 = draw_augmentation(np.random.default_rng(5), 6, cfg)
    assert a1 == a2 and a1.flips == (True, True, True) and a1.drop >= 0 and a1.angle_deg != 0
    s = make_sample(phantom_patient(3))
    x = torch.from_numpy(s.image)
    t = torch.from_numpy(s.target.astype(np.float32))[None]
    b = torch.from_numpy(s.brain.astype(np.float32))[None]
    xa, ta, ba = apply_augmentation(a1, x, t, b, s.spacing_mm)
    xb, _, _ = apply_augmentation(a2, x, t, b, s.spacing_mm)
    assert torch.equal(xa, xb)
    assert set(torch.unique(ta).tolist()) <= {0.0, 1.0} and set(torch.unique(ba).tolist()) <= {0.0, 1.0}
    assert float(xa[a1.drop].abs().sum()) == 0.0
    # a pure flip is exact and reversible
    flip = draw_augmentation(np.random.default_rng(0), 6, AugmentConfig(1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    xf, tf, _ = apply_augmentation(flip, x, t, b, s.spacing_mm)
    assert torch.equal(tf.flip([1, 2, 3]), t) and torch.equal(xf.flip([1, 2, 3]), x)


def test_dl_ctv_keeps_the_largest_component_inside_the_brain() -> None:
    prob = np.zeros((6, 8, 8), dtype=np.float32)
    prob[1:4, 1:4, 1:4] = 0.9  # 27 voxels
    prob[2, 2, 2] = 0.1  # a hole, filled
    prob[5, 6, 6] = 0.8  # a separate voxel, dropped
    brain = np.ones(prob.shape, dtype=bool)
    critical = np.zeros(prob.shape, dtype=bool)
    critical[1, 1, 1] = True
    ctv, n = dl_ctv(prob, brain, (3.0, 3.0, 3.0), critical=critical)
    assert n == 2 and contiguity(ctv.mask) == 1
    assert ctv.n_voxels == 26 and not ctv.mask[1, 1, 1] and ctv.mask[2, 2, 2]
    empty, n0 = dl_ctv(np.zeros_like(prob), brain, (3.0, 3.0, 3.0))
    assert empty.empty and n0 == 0


def _tiny_config(**kw: object) -> DLConfig:
    base: dict[str, object] = dict(base_features=2, epochs=2, learning_rate=3e-3, device="cpu", seed=1)
    base.update(kw)
    return DLConfig(**base)  # type: ignore[arg-type]


def test_training_selects_on_validation_and_is_reproducible() -> None:
    samples = [make_sample(phantom_patient(i)) for i in range(2)]
    train, val = samples[:1], samples[1:]
    m1 = train_model(train, val, _tiny_config())
    m2 = train_model(train, val, _tiny_config())
    assert len(m1.history) == 2
    assert m1.best.val_tversky == max(r.val_tversky for r in m1.history)
    assert m1.train_ids == ("P00",) and m1.val_ids == ("P01",)
    for k, v in m1.state.items():
        assert torch.equal(v, m2.state[k]), k
    assert np.all(np.isfinite([r.train_loss for r in m1.history]))
    # batch 2 pads and stacks crops
    m3 = train_model(samples, val, _tiny_config(batch_size=2, epochs=1, loss="pcc+bce"))
    assert len(m3.history) == 1


def test_training_rejects_samples_with_other_channels() -> None:
    s = make_sample(phantom_patient(0))
    with pytest.raises(ValueError, match="channels"):
        train_model([s.with_channels(("nFLAIR",))], [s], _tiny_config())


def test_bad_config() -> None:
    with pytest.raises(InputError, match="'loss' parameter"):
        DLConfig(loss="focal")
    with pytest.raises(InputError, match="'device' parameter"):
        DLConfig(device="tpu")


@pytest.mark.slow  # five small trainings and a report: ~4 s on an idle 2-core machine, much more when shared
def test_dl_study_runs_every_comparison_and_writes_its_report(tmp_path: object) -> None:
    from pathlib import Path

    from adaptrt.report.run import RunFolder
    from adaptrt.target.run import add_dl_section, write_dl_results
    from adaptrt.target.study import run_dl_study, target_config

    cfg = target_config(
        "quick",
        dl_base_features=2,
        dl_epochs=1,
        dl_device="cpu",
        dl_losses=("pcc", "pcc+bce"),
        dl_betas=(0.9,),
        dl_modalities=("anatomical", "all"),
        dl_repeats=1,
    )
    samples = [make_sample(phantom_patient(i)) for i in range(6)]
    res = run_dl_study(samples, cfg)
    test_ids = set(res.split["test"])
    assert test_ids and not test_ids & (set(res.split["train"]) | set(res.split["val"]))
    assert set(res.model.train_ids) == set(res.split["train"])
    names = {r["ctv"] for r in res.test_rows}
    assert names == {"DL", "RTOG", "EORTC", "RTOG@DL", "EORTC@DL"}
    assert {r["patient_id"] for r in res.test_rows} == test_ids
    assert set(res.losses) == {"pcc", "pcc+bce"} and res.losses["pcc"][0] is res.model
    assert res.modalities["all"][0] is res.losses["pcc+bce"][0]  # the all-six PCC + BCE model is reused
    assert res.modalities["anatomical"][0].config.channels == ("nFLAIR", "nT1c")
    assert list(res.betas) == [0.9] and {r["repeat"] for r in res.repeats} == {1}
    assert all(r["components"] >= 0 for _, (_, rows) in res.losses.items() for r in rows)
    out = Path(str(tmp_path)) / "run"
    with RunFolder(out, command="test", config=cfg, seed=0, title="t") as run:
        write_dl_results(run, res)
        add_dl_section(run, run.report, res, cfg)
    for name in (
        "dl_test_metrics",
        "dl_wilcoxon",
        "dl_equal_volume",
        "dl_losses_summary",
        "dl_modalities_wilcoxon",
    ):
        assert (out / "results" / f"{name}.csv").is_file(), name
    assert (out / "models" / "dl_ctv.pt").is_file() and (out / "figures" / "dl_overlays.png").is_file()
    assert "equal volume" in (out / "report.html").read_text()
