"""Simulated cohorts with a known mechanism (the embedded default data of adaptrt)."""

from .phantom import PhantomConfig, write_phantom_cohort

__all__ = ["PhantomConfig", "write_phantom_cohort"]
