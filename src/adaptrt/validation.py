"""Parameter validation shared by the typed configs (scikit-learn style messages).

Examples
--------
>>> print(bad_parameter("PreprocessConfig", "size", "an int >= 8", 3).problem)
The 'size' parameter of PreprocessConfig must be an int >= 8. Got 3 instead
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["bad_parameter", "is_int", "is_real"]


def is_int(value: Any) -> bool:
    """True for Python / numpy integers, False for booleans."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_real(value: Any) -> bool:
    """True for Python / numpy integers and floats, False for booleans."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def bad_parameter(owner: str, name: str, requirement: str, value: Any) -> InputError:
    """The error for a configuration field ``name`` of ``owner`` that does not meet ``requirement``."""
    return InputError(
        f"The {name!r} parameter of {owner} must be {requirement}. Got {value!r} instead",
        field=name,
        fix=f"set {name} to {requirement}",
    )
