"""How much memory this machine has: sizes that cannot fit are refused before anything is allocated."""

from __future__ import annotations

import os

__all__ = ["format_bytes", "physical_memory_bytes"]


def physical_memory_bytes() -> int:
    """The machine's physical memory in bytes (``sysconf``), or 0 where it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 0


def format_bytes(n: float) -> str:
    """``n`` bytes for a person: ``"1.5 GB"``, ``"108 TB"``."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover - the loop always returns
