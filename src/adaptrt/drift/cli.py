"""The ``adaptrt drift`` subcommands: a thin layer over :mod:`adaptrt.drift`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register ``adaptrt drift ...`` on the top-level subparsers object ``sub``."""
    del sub  # filled in by the drift study


_ = argparse
