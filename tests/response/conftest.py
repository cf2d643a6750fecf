"""Fixtures of the response tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for a module's tests, restored after.

    The trainers' reference setting; and on a busy 2-core machine, threads that wait on each other run up to
    20× slower.
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
