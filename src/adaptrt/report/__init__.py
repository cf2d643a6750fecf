"""Run folders, figures and the self-contained HTML report."""

from .html import Report, Section
from .run import RunFolder

__all__ = ["Report", "RunFolder", "Section"]
