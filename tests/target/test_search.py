"""Optuna search: grid then random stage on one study, two worker processes on one SQLite file, bad URLs."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from adaptrt.errors import InputError
from adaptrt.target.dl import DLConfig, make_sample
from adaptrt.target.search import SearchSpace, open_storage, random_ranges, run_search, trial_rows

from .test_dl import phantom_patient

SPACE = SearchSpace(base_features=(2, 3), learning_rate=(1e-3, 3e-3), batch_size=(1,))
BASE = DLConfig(base_features=2, epochs=1, device="cpu")


def _samples() -> tuple[list, list]:  # type: ignore[type-arg]
    s = [make_sample(phantom_patient(i)) for i in range(3)]
    return s[:2], s[2:]  # patient 3 onwards would be the test patients: never given to the search


def _worker(storage: str, seed: int) -> None:
    train, val = _samples()
    run_search(train, val, BASE, storage=storage, stage="grid", n_grid=2, space=SPACE, seed=seed)


@pytest.mark.slow  # two spawned processes each import torch and train: 10-25 s on 2 busy cores
def test_two_workers_share_one_sqlite_study_then_a_random_stage(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'search.sqlite3'}"
    open_storage(storage)  # the first command creates the schema; workers then join
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(storage, k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    train, val = _samples()
    study = run_search(train, val, BASE, storage=storage, stage="random", n_random=1, space=SPACE, seed=7)
    rows = trial_rows(study)
    grid = [r for r in rows if r["stage"] == "grid"]
    assert len(grid) == 4 and all(r["state"] == "COMPLETE" for r in rows)
    assert len({r["worker_pid"] for r in grid}) == 2  # both processes wrote to the one study
    # every grid trial is a grid point (workers asking at the same instant may get the same one)
    assert all(r["base_features"] in (2, 3) and r["learning_rate"] in (1e-3, 3e-3) for r in grid)
    rnd = [r for r in rows if r["stage"] == "random"]
    assert len(rnd) == 1
    lo, hi = random_ranges(study.best_params, SPACE)["learning_rate"]
    assert lo <= rnd[0]["learning_rate"] <= hi
    assert 0.0 <= study.best_value <= 1.0


def test_search_refuses_overlapping_patients_and_unopenable_storage(tmp_path: Path) -> None:
    train, val = _samples()
    with pytest.raises(ValueError, match="both the training and the validation"):
        run_search(train, train[:1], BASE, storage=f"sqlite:///{tmp_path / 's.db'}", space=SPACE)
    with pytest.raises(InputError, match="cannot be opened"):
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'dir' / 's.db'}")
    with pytest.raises(InputError, match="cannot be opened"):
        open_storage("nosuchdb://host/x")
    with pytest.raises(InputError, match="cannot be opened"):
        open_storage(f"journal:{tmp_path / 'missing' / 'j.log'}")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(InputError, match="no completed trial"):
        run_search(train, val, BASE, storage=f"sqlite:///{tmp_path / 'e.db'}", stage="random", space=SPACE)
