"""RTOG and EORTC CTVs on phantoms with known answers (anisotropic grids included)."""

from __future__ import annotations

import numpy as np
import pytest

from adaptrt.target.ctv import CTV, eortc_ctv, margin_ctv, rtog_ctv, standard_ctvs
from adaptrt.types import Volume

SP = (3.0, 1.0, 1.0)  # (z, y, x) mm
SHAPE = (21, 61, 61)


def _brain() -> np.ndarray:
    return np.ones(SHAPE, dtype=bool)


def _voxel(k: int, j: int, i: int) -> np.ndarray:
    m = np.zeros(SHAPE, dtype=bool)
    m[k, j, i] = True
    return m


def test_rtog_of_a_single_voxel_is_a_20_mm_ellipsoid_on_an_anisotropic_grid() -> None:
    t2l = _voxel(10, 30, 30)
    ctv = rtog_ctv(t2l, np.zeros(SHAPE, dtype=bool), _brain(), SP)
    idx = np.nonzero(ctv.mask)
    extent = tuple(int(i.max() - i.min() + 1) for i in idx)
    # z: 6 slices of 3 mm each side (18 mm <= 20 < 21); y, x: 20 voxels each side
    assert extent == (13, 41, 41)
    k, j, i = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    want = ((k - 10) * 3.0) ** 2 + (j - 30) ** 2 + (i - 30) ** 2 <= 400.0
    np.testing.assert_array_equal(ctv.mask, want)
    assert ctv.name == "RTOG" and ctv.margin_mm == 20.0
    assert ctv.volume_cm3 == pytest.approx(want.sum() * 3.0 / 1000)


def test_rtog_expands_the_union_of_t2l_and_cel() -> None:
    t2l, cel = _voxel(10, 30, 10), _voxel(10, 30, 50)
    ctv = rtog_ctv(t2l, cel, _brain(), SP, margin_mm=6.0)
    both = rtog_ctv(t2l | cel, np.zeros(SHAPE, dtype=bool), _brain(), SP, margin_mm=6.0)
    np.testing.assert_array_equal(ctv.mask, both.mask)
    assert ctv.mask[10, 30, 4] and ctv.mask[10, 30, 56] and not ctv.mask[10, 30, 30]
    assert ctv.n_voxels == 2 * 293  # two disjoint 6 mm ellipsoids (see test_margins)


def test_eortc_excludes_the_oedema_and_uses_15_mm() -> None:
    cel, cavity = _voxel(10, 30, 20), _voxel(10, 30, 22)
    oedema = _voxel(10, 30, 50)  # far from CEL and cavity: in T2L only
    ctv = eortc_ctv(cel, cavity, _brain(), SP)
    assert ctv.name == "EORTC" and ctv.margin_mm == 15.0
    assert not ctv.mask[10, 30, 50]  # the oedema is not covered
    assert ctv.mask[10, 30, 37] and not ctv.mask[10, 30, 38]  # 15 mm beyond the cavity voxel at x = 22
    assert ctv.mask[15, 30, 22] and not ctv.mask[16, 30, 22]  # 15 mm = 5 slices of 3 mm
    rtog = rtog_ctv(oedema | cel, cel, _brain(), SP)
    assert rtog.mask[10, 30, 50]


def test_clipped_to_the_brain_and_critical_structures_removed() -> None:
    brain = np.zeros(SHAPE, dtype=bool)
    brain[:, :, :35] = True
    brainstem = np.zeros(SHAPE, dtype=bool)
    brainstem[:, 25:35, 20:25] = True
    thalamus = np.zeros(SHAPE, dtype=bool)
    thalamus[8:12, 40:45, 28:33] = True
    t2l = _voxel(10, 30, 30)
    ctv = rtog_ctv(
        t2l, np.zeros(SHAPE, dtype=bool), brain, SP, critical={"brainstem": brainstem, "thalamus": thalamus}
    )
    assert not (ctv.mask & ~brain).any()
    assert not (ctv.mask & (brainstem | thalamus)).any()
    assert ctv.critical_removed == ("brainstem", "thalamus")
    full = rtog_ctv(t2l, np.zeros(SHAPE, dtype=bool), brain, SP)
    np.testing.assert_array_equal(ctv.mask, full.mask & ~brainstem & ~thalamus)
    single = rtog_ctv(t2l, np.zeros(SHAPE, dtype=bool), brain, SP, critical=brainstem)
    assert single.critical_removed == ("critical",)


def test_empty_base_gives_an_empty_ctv() -> None:
    e = np.zeros(SHAPE, dtype=bool)
    ctv = eortc_ctv(e, e, _brain(), SP)
    assert ctv.empty and ctv.volume_cm3 == 0.0


def test_standard_ctvs_from_manifest_volumes() -> None:
    t2l, cel = _voxel(10, 30, 30), _voxel(10, 30, 31)
    vols = {
        "brain": Volume(_brain(), spacing=SP),
        "cavity": Volume(np.zeros(SHAPE, dtype=bool), spacing=SP),
        "cel_baseline": Volume(cel, spacing=SP),
        "t2l_baseline": Volume(t2l, spacing=SP),
    }
    ctvs = standard_ctvs(vols)
    assert list(ctvs) == ["RTOG", "EORTC"]
    np.testing.assert_array_equal(ctvs["RTOG"].mask, rtog_ctv(t2l, cel, _brain(), SP).mask)
    np.testing.assert_array_equal(ctvs["EORTC"].mask, eortc_ctv(cel, vols["cavity"], _brain(), SP).mask)
    with pytest.raises(KeyError, match="cavity"):
        standard_ctvs({k: v for k, v in vols.items() if k != "cavity"})


def test_ctv_record_is_read_only_and_validated() -> None:
    ctv = margin_ctv(_voxel(1, 1, 1), _brain(), SP, 0.0, name="GTV", definition="the voxel")
    assert ctv.n_voxels == 1
    with pytest.raises(ValueError, match="read-only"):
        ctv.mask[0, 0, 0] = True
    with pytest.raises(ValueError, match="boolean mask"):
        CTV("X", np.zeros(SHAPE, dtype=np.uint8), SP, "bad")
    with pytest.raises(ValueError, match="non-empty string"):
        CTV(" ", np.zeros(SHAPE, dtype=bool), SP, "bad")
    with pytest.raises(ValueError, match="one grid"):
        rtog_ctv(
            np.zeros((2, 2, 2), dtype=bool), np.zeros((2, 2, 3), dtype=bool), np.ones((2, 2, 2), bool), SP
        )
