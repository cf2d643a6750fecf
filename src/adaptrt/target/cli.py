"""The ``adaptrt target`` subcommands: a thin layer over :mod:`adaptrt.target`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``adaptrt target ...`` on the top-level subparsers object ``sub``."""
    del sub  # filled in by the target study


_ = argparse
