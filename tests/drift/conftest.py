"""Fixtures of the drift tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for a module's tests, restored after: on a busy 2-core machine threads that
    wait on each other run many times slower, and the tiny networks of the tests gain nothing from two."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
