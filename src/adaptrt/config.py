"""Typed, frozen configurations and their serialisation.

Every run saves its resolved configuration as ``config.json`` next to its results, so a run can be read and
replayed. Configs are frozen dataclasses; :func:`to_jsonable` turns one (nested dataclasses, tuples, paths,
numpy scalars) into plain JSON types and :func:`from_dict` builds one back, rejecting unknown keys.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from .errors import InputError

__all__ = ["PROFILES", "Profile", "from_dict", "load_config", "to_jsonable"]

#: Profiles: "quick" runs in CPU minutes (demo, tests); "paper" uses the papers' values.
Profile = Literal["quick", "paper"]
PROFILES: tuple[str, ...] = ("quick", "paper")

T = TypeVar("T")


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses, mappings, sequences, paths and numpy values to JSON-compatible objects."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None if np.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise InputError(f"expected a table of settings, got {value!r}", field=where)
        return from_dict(tp, value, _where=where)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise InputError(f"expected a list, got {value!r}", field=where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise InputError(f"expected {len(args)} values, got {len(value)}", field=where)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for a in typing.get_args(tp):
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except (InputError, TypeError, ValueError):
                continue
        raise InputError(f"value {value!r} does not fit type {tp}", field=where)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise InputError(f"must be one of {list(typing.get_args(tp))}, got {value!r}", field=where)
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    if tp is Path and isinstance(value, str):
        return Path(value)
    if tp is Any:
        return value
    raise InputError(f"expected {getattr(tp, '__name__', tp)}, got {value!r}", field=where)


def from_dict(cls: type[T], data: Mapping[str, Any], *, _where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping; unknown keys and wrong types raise InputError.

    Missing keys keep the dataclass defaults, so a config file need only list what it changes.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            f"unknown setting(s) {unknown} for {cls.__name__}",
            field=_where or None,
            fix=f"use only {sorted(names)}",
        )
    kwargs = {
        k: _coerce(hints[k], v, f"{_where}.{k}" if _where else k) for k, v in data.items() if k in names
    }
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(str(exc), field=_where or cls.__name__) from exc


def load_config(cls: type[T], path: str | Path) -> T:
    """Read a JSON config file into ``cls`` (see :func:`from_dict`)."""
    p = Path(path)
    if not p.is_file():
        raise InputError("config file not found", path=p, fix="check the path")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON ({exc.msg} at line {exc.lineno})", path=p, fix="fix the JSON syntax"
        ) from exc
    if not isinstance(data, dict):
        raise InputError("expected a JSON object of settings", path=p, fix='write {"key": value, ...}')
    try:
        return from_dict(cls, data)
    except InputError as exc:
        raise InputError(exc.problem, path=p, field=exc.field, fix=exc.fix) from exc
