import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from adaptrt.config import from_dict, load_config, to_jsonable
from adaptrt.errors import InputError
from adaptrt.seeding import as_generator, spawn


@dataclass(frozen=True)
class Inner:
    size: int = 64
    angles: tuple[float, ...] = (0.0, 90.0)


@dataclass(frozen=True)
class Outer:
    seed: int = 0
    mode: Literal["quick", "paper"] = "quick"
    inner: Inner = field(default_factory=Inner)
    path: Path | None = None


def test_round_trip_through_json(tmp_path):
    cfg = Outer(seed=3, mode="paper", inner=Inner(32, (0.0, 10.0)), path=Path("x/y"))
    p = tmp_path / "c.json"
    p.write_text(json.dumps(to_jsonable(cfg)))
    assert load_config(Outer, p) == cfg


def test_unknown_key_and_wrong_type(tmp_path):
    with pytest.raises(InputError, match=r"unknown setting\(s\) \['sed'\]"):
        from_dict(Outer, {"sed": 1})
    with pytest.raises(InputError, match="must be one of"):
        from_dict(Outer, {"mode": "fast"})
    with pytest.raises(InputError, match=r"inner\.size"):
        from_dict(Outer, {"inner": {"size": "big"}})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(Outer, bad)


def test_to_jsonable_numpy_and_nan():
    out = to_jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": None}


def test_seeding_reproducible():
    assert as_generator(5).random() == as_generator(5).random()
    g = as_generator(1)
    assert as_generator(g) is g
    a, b = spawn(7, 2)
    assert a.random() != b.random()
    assert [x.random() for x in spawn(7, 2)] == [y.random() for y in spawn(7, 2)]
    with pytest.raises(TypeError, match="seed must be"):
        as_generator(1.5)  # type: ignore[arg-type]
