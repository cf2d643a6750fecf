"""Hyper-parameter search of the DL CTV with Optuna: a grid stage, then a random stage, on one study.

Tran et al. 2025 ("Hyperparameter search and model training details"): a grid search over the number of
base features, the learning rate and the mini-batch size to find the promising ranges, then 30 random
experiments within them (15 per model of the modality ablation); model selection on the validation Tversky
coefficient (α 0.02, β 0.98). Here:

* **grid stage** — ``optuna.samplers.GridSampler`` over :attr:`SearchSpace.grid`;
* **random stage** — ``optuna.samplers.RandomSampler`` over ranges around the grid's best trial
  (:func:`random_ranges`: learning rate log-uniform within a factor ``lr_factor`` of the best, base features
  an integer between the grid values on either side of the best, batch size within the grid's range), on
  **the same study** (the grid's trials stay in it and count for the best);
* the objective trains on the training patients and returns the best validation Tversky over epochs: the
  search is given the training and validation samples only and never sees the test patients.

Storage (``--storage URL``): any Optuna RDB URL (``sqlite:///path.db``, ``postgresql://...``) or
``journal:PATH`` (a journal file, for file systems without SQLite locking).
Several processes or machines that run the same command with the same
storage and study name share the work: each trial is recorded in the storage, and the grid sampler skips
grid points already taken (workers that ask at the same instant can still get the same point: Optuna's
``GridSampler`` documents this for distributed runs; the grid stage then simply has a repeat). A URL that
cannot be opened is an :class:`~adaptrt.errors.InputError` before any training. ``adaptrt target search``
keeps the default SQLite file inside its output folder (``OUT/search.sqlite3``); workers on other machines
give an explicit ``--storage``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .dl import DLConfig, DLSample, train_model

__all__ = ["SearchSpace", "open_storage", "random_ranges", "run_search", "trial_rows"]


@dataclass(frozen=True)
class SearchSpace:
    """The searched hyper-parameters.

    Attributes
    ----------
    base_features, learning_rate, batch_size
        The grid stage's values (the paper's final model: 48, 5e-5, 1).
    lr_factor
        The random stage draws the learning rate log-uniformly in ``[best / lr_factor, best * lr_factor]``.
    """

    base_features: tuple[int, ...] = (16, 32, 48, 64)
    learning_rate: tuple[float, ...] = (1e-5, 5e-5, 1e-4, 5e-4)
    batch_size: tuple[int, ...] = (1, 2)
    lr_factor: float = 3.0
    grid: dict[str, list[Any]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "grid",
            {
                "base_features": list(self.base_features),
                "learning_rate": list(self.learning_rate),
                "batch_size": list(self.batch_size),
            },
        )


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` (RDB URL or ``journal:PATH``), checked by opening it.

    Raises
    ------
    InputError
        The URL cannot be opened (bad scheme, missing folder, unreachable server...).
    """
    import optuna

    try:
        if url.startswith("journal:"):
            path = Path(url[len("journal:") :]).expanduser()
            if not path.parent.is_dir():
                raise OSError(f"folder {path.parent} does not exist")
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        for attempt in range(5):
            try:
                storage = optuna.storages.RDBStorage(url)
                storage.get_all_studies()
                return storage
            except Exception as exc:  # two workers creating one new SQLite schema at once: retry
                if "IntegrityError" not in type(exc).__name__ or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except Exception as exc:  # Optuna / SQLAlchemy raise many types for a bad URL
        raise InputError(
            f"the search storage {url!r} cannot be opened: {type(exc).__name__}: {str(exc).splitlines()[0]}",
            field="--storage",
            fix="give an Optuna storage URL that can be opened, e.g. sqlite:///PATH/search.sqlite3 (the folder "
            "must exist) or journal:PATH",
        ) from exc


def random_ranges(best: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Ranges of the random stage around the grid's best parameters ``best`` (see the module docstring)."""
    feats = sorted(space.base_features)
    i = feats.index(int(best["base_features"])) if int(best["base_features"]) in feats else 0
    lr = float(best["learning_rate"])
    return {
        "base_features": feats[max(0, i - 1) : i + 2],
        "learning_rate": (lr / space.lr_factor, lr * space.lr_factor),
        "batch_size": sorted(space.batch_size),
    }


def _objective(
    train: Sequence[DLSample], val: Sequence[DLSample], base: DLConfig, params: dict[str, Any]
) -> float:
    cfg = dataclasses.replace(
        base,
        base_features=int(params["base_features"]),
        learning_rate=float(params["learning_rate"]),
        batch_size=int(params["batch_size"]),
    )
    model = train_model(train, val, cfg)
    return float(model.best.val_tversky)


def run_search(
    train: Sequence[DLSample],
    val: Sequence[DLSample],
    base: DLConfig,
    *,
    storage: str,
    study_name: str = "adaptrt-dl-ctv",
    stage: str = "both",
    n_grid: int | None = None,
    n_random: int = 30,
    space: SearchSpace | None = None,
    seed: int = 0,
) -> Any:
    """Run (or join) the search on ``storage``; return the Optuna study.

    Parameters
    ----------
    train, val
        Training and validation samples (never the test patients).
    base
        Settings of every trial but the searched ones (epochs, loss, channels, device...).
    storage
        Optuna storage URL (see the module docstring).
    study_name
        Workers with the same storage and name share one study.
    stage
        ``"grid"``, ``"random"`` or ``"both"`` (grid, then random on the same study).
    n_grid
        Grid trials this worker runs (default: the whole grid; workers share the grid points).
    n_random
        Random trials this worker runs (the paper: 30).
    space
        The searched values.
    seed
        Of the random sampler (each worker should use its own).

    Raises
    ------
    InputError
        A storage that cannot be opened; ``stage`` unknown; the random stage without a completed grid trial.
    """
    import optuna

    if stage not in ("grid", "random", "both"):
        raise InputError(f"stage must be 'grid', 'random' or 'both', got {stage!r}", field="--stage")
    sp = space or SearchSpace()
    store = open_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train_ids = {s.patient_id for s in train}
    if train_ids & {s.patient_id for s in val}:
        raise ValueError("a patient is in both the training and the validation samples")
    if stage in ("grid", "both"):
        grid = optuna.samplers.GridSampler(sp.grid, seed=seed)
        study = optuna.create_study(
            study_name=study_name, storage=store, direction="maximize", sampler=grid, load_if_exists=True
        )

        def grid_objective(trial: Any) -> float:
            # numeric distributions (not categorical) so that the random stage may use other ranges on the
            # same study; the grid sampler returns the grid's values
            params = {
                "base_features": trial.suggest_int(
                    "base_features", min(sp.base_features), max(sp.base_features)
                ),
                "learning_rate": trial.suggest_float(
                    "learning_rate", min(sp.learning_rate), max(sp.learning_rate), log=True
                ),
                "batch_size": trial.suggest_int("batch_size", min(sp.batch_size), max(sp.batch_size)),
            }
            trial.set_user_attr("stage", "grid")
            trial.set_user_attr("worker_pid", os.getpid())
            return _objective(train, val, base, params)

        total = math.prod(len(v) for v in sp.grid.values())
        study.optimize(grid_objective, n_trials=n_grid if n_grid is not None else total)
    if stage in ("random", "both"):
        try:
            study = optuna.load_study(
                study_name=study_name, storage=store, sampler=optuna.samplers.RandomSampler(seed=seed)
            )
        except KeyError:
            study = None  # type: ignore[assignment]
        done = (
            [] if study is None else [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        )
        if not done:
            raise InputError(
                f"the study {study_name!r} has no completed trial to centre the random stage on",
                field="--stage",
                fix="run the grid stage first (--stage grid or both)",
            )
        assert study is not None
        ranges = random_ranges(study.best_params, sp)

        def random_objective(trial: Any) -> float:
            feats = ranges["base_features"]
            params = {
                "base_features": trial.suggest_int("base_features", min(feats), max(feats)),
                "learning_rate": trial.suggest_float("learning_rate", *ranges["learning_rate"], log=True),
                "batch_size": trial.suggest_int(
                    "batch_size", min(ranges["batch_size"]), max(ranges["batch_size"])
                ),
            }
            trial.set_user_attr("stage", "random")
            trial.set_user_attr("worker_pid", os.getpid())
            return _objective(train, val, base, params)

        study.optimize(random_objective, n_trials=n_random)
    return study


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, stage, state, value (validation Tversky), parameters, worker pid."""
    return [
        {
            "trial": t.number,
            "stage": t.user_attrs.get("stage", ""),
            "state": t.state.name,
            "val_tversky": t.value,
            **t.params,
            "worker_pid": t.user_attrs.get("worker_pid"),
        }
        for t in study.trials
    ]


def default_storage(run: str | os.PathLike[str]) -> str:
    """``sqlite:///RUN/search.sqlite3`` (the folder is created)."""
    p = Path(run).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p / 'search.sqlite3'}"
