"""Simulated cohorts with a known mechanism (the embedded default data of adaptrt).

* :mod:`.metastases` — brain-metastasis (PULSAR) cohort with radio-resistant sub-regions (Parts I and II)
* :mod:`.glioblastoma` — glioblastoma cohort with a hidden reaction-diffusion tumour density (target study)
* :mod:`.digits` — the zero-digit toy of Part II
* :mod:`.phantom` — the smallest cohort that exercises every loader (tests)

Each simulator writes the same formats as clinical data plus a manifest, and keeps its ground truth in a
separate ``truth/`` folder that no model reads.
"""

from .digits import DigitPairs, zero_digit_pairs
from .glioblastoma import (
    GlioblastomaConfig,
    RecurrencePattern,
    SimulatedGlioblastoma,
    recurrence_pattern,
    summarise_recurrence,
    write_glioblastoma_cohort,
)
from .metastases import (
    MetastasisConfig,
    SimulatedLesion,
    SimulatedPatient,
    lesion_counts,
    write_metastasis_cohort,
)
from .phantom import PhantomConfig, write_phantom_cohort

__all__ = [
    "DigitPairs",
    "GlioblastomaConfig",
    "MetastasisConfig",
    "PhantomConfig",
    "RecurrencePattern",
    "SimulatedGlioblastoma",
    "SimulatedLesion",
    "SimulatedPatient",
    "lesion_counts",
    "recurrence_pattern",
    "summarise_recurrence",
    "write_glioblastoma_cohort",
    "write_metastasis_cohort",
    "write_phantom_cohort",
    "zero_digit_pairs",
]
