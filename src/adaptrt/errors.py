"""The package's exceptions.

Every error that a user can fix by changing their input is an :class:`InputError`. Its message names the
file (and, where it applies, the row or field), says what was found, and says what to do. The CLI turns an
``InputError`` into exit code 2 and a one-paragraph message without a traceback; any other exception is an
internal error (exit code 1).
"""

from __future__ import annotations

from os import PathLike

__all__ = ["AdaptrtError", "InputError", "NotFittedError"]


class AdaptrtError(Exception):
    """Base class of every exception raised on purpose by adaptrt."""


class InputError(AdaptrtError, ValueError):
    """Bad input that the user can fix: a file, a field of a file, a manifest row, a parameter.

    Parameters
    ----------
    problem
        What is wrong, e.g. ``"the slices are not evenly spaced (gaps 1.0 mm and 2.0 mm)"``.
    path
        The file or folder concerned, if any.
    field
        The DICOM attribute, CSV column, configuration key or parameter concerned, if any.
    row
        The 1-based data row of a CSV file (the header is row 0), if any.
    fix
        What the user should do about it.

    Examples
    --------
    >>> str(InputError("no slices found", path="/data/p1", fix="point to a folder of DICOM files"))
    "/data/p1: no slices found. Fix: point to a folder of DICOM files."
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | PathLike[str] | None = None,
        field: str | None = None,
        row: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.field = field
        self.row = row
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        text = (", ".join(where) + ": " if where else "") + self.problem.rstrip(".") + "."
        if self.fix:
            text += " Fix: " + self.fix.rstrip(".") + "."
        return text


class NotFittedError(AdaptrtError, AttributeError):
    """An estimator was used before ``fit``."""
