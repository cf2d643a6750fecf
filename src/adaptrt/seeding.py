"""The one seed helper of adaptrt.

Every function that draws random numbers takes ``seed: SeedLike`` and turns it into a generator with
:func:`as_generator`; nothing in the package touches global random state except :func:`seed_torch`, which
is called once per training run with an integer drawn from the run's generator.
"""

from __future__ import annotations

import random
from typing import TypeAlias

import numpy as np

__all__ = ["SeedLike", "as_generator", "seed_torch", "spawn"]

SeedLike: TypeAlias = int | np.random.Generator | None


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return a numpy generator for ``seed``.

    Parameters
    ----------
    seed
        An integer (reproducible), an existing generator (returned as is, so callers share its stream), or
        ``None`` (fresh OS entropy; not reproducible).
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise TypeError(f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    return np.random.default_rng(seed)


def spawn(seed: SeedLike, n: int) -> list[np.random.Generator]:
    """Return ``n`` independent child generators of ``seed`` (stable for an integer seed)."""
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def seed_torch(seed: int, *, deterministic: bool = True) -> None:
    """Seed torch (and Python's ``random``) for a training run.

    Parameters
    ----------
    seed
        Non-negative integer.
    deterministic
        Ask torch for deterministic algorithms where they exist (warn-only otherwise).
    """
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
