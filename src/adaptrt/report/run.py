"""Run folders: one folder per run, written completely or not at all.

A run folder holds::

    config.json    the resolved configuration of the run
    run.json       seed, adaptrt version, command, start/end time, platform and library versions
    results/       tables (CSV) and results (JSON) written by the study
    figures/       PNG figures (also embedded in the report)
    report.html    a self-contained report (no network needed to open it)

Everything is written into a hidden staging folder next to the target and renamed into place when the run
finishes without error (see :func:`adaptrt.io.atomic.atomic_dir`). A failed or interrupted run leaves no
partial folder behind, and an existing run folder is replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import platform
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .. import __version__
from ..config import to_jsonable
from ..io.atomic import atomic_dir, check_output_writable
from .html import Report

__all__ = ["RunFolder", "command_line", "write_csv_rows"]


def command_line(api_call: str) -> str:
    """The ``adaptrt ...`` command line of this process, or ``api_call`` when called from Python."""
    if sys.argv and "adaptrt" in Path(sys.argv[0]).name:
        return " ".join(["adaptrt", *sys.argv[1:]])
    return api_call


def _library_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "scipy", "torch", "nibabel", "pydicom", "sklearn", "skimage"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = str(getattr(mod, "__version__", "?"))
    return out


def write_csv_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows as CSV; columns are the union of keys in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: to_jsonable(v) for k, v in r.items()})


class RunFolder:
    """Context manager that stages a run folder and commits it atomically.

    Parameters
    ----------
    path
        The run folder to create.
    command
        The command line or API call that made the run (saved in ``run.json``).
    config
        The resolved configuration (a dataclass or a mapping), saved as ``config.json``.
    seed
        The run's seed, saved in ``run.json``.
    title
        Title of ``report.html``.
    overwrite
        Replace an existing folder at ``path`` (only once the new run has finished).
    started
        When the run's work began (UTC), for runs that compute first and open their folder at the end;
        default: when the folder is opened.

    Examples
    --------
    >>> with RunFolder(tmp / "run1", command="demo", config=cfg, seed=0) as run:   # doctest: +SKIP
    ...     run.write_json("results/summary.json", {"n": 3})
    ...     run.report.section("Cohort").text("3 lesions")
    """

    def __init__(
        self,
        path: str | Path,
        *,
        command: str,
        config: Any,
        seed: int | None,
        title: str = "adaptrt run",
        overwrite: bool = False,
        started: _dt.datetime | None = None,
    ) -> None:
        self.path = check_output_writable(path, overwrite=overwrite)
        self.command = command
        self.config = config
        self.seed = seed
        self.overwrite = overwrite
        self.report = Report(title)
        self._stack: contextlib.ExitStack | None = None
        self._stage: Path | None = None
        self._started = started or _dt.datetime.now(_dt.UTC)
        self._started_given = started is not None

    # --------------------------------------------------------------- context protocol
    def __enter__(self) -> RunFolder:
        self._stack = contextlib.ExitStack()
        self._stage = self._stack.enter_context(atomic_dir(self.path, overwrite=self.overwrite))
        if not self._started_given:
            self._started = _dt.datetime.now(_dt.UTC)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is None:
            return
        try:
            if exc_type is None:
                self._finalise()
        except BaseException:
            self._stack.__exit__(*sys.exc_info())
            raise
        finally:
            stack, self._stack = self._stack, None
        stack.__exit__(exc_type, exc, tb)
        self._stage = None

    # --------------------------------------------------------------- writing
    @property
    def stage(self) -> Path:
        """The staging folder (becomes :attr:`path` on success). Only valid inside the ``with`` block."""
        if self._stage is None:
            raise RuntimeError("RunFolder is not open: use it as a context manager")
        return self._stage

    def file(self, relpath: str | Path) -> Path:
        """Path of ``relpath`` inside the staged run folder (parent folders created)."""
        rel = Path(relpath)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"run files must be relative paths inside the run folder, got {relpath}")
        p = self.stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, relpath: str | Path, obj: Any) -> Path:
        p = self.file(relpath)
        p.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")
        return p

    def write_csv(self, relpath: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
        p = self.file(relpath)
        write_csv_rows(p, rows)
        return p

    def write_text(self, relpath: str | Path, text: str) -> Path:
        p = self.file(relpath)
        p.write_text(text)
        return p

    def save_figure(self, fig: Any, name: str, *, dpi: int = 110) -> bytes:
        """Save a matplotlib figure as ``figures/<name>.png``, close it, and return the PNG bytes."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        png = buf.getvalue()
        self.file(f"figures/{name}.png").write_bytes(png)
        return png

    @contextlib.contextmanager
    def section(self, title: str) -> Iterator[Any]:
        """Shortcut: ``with run.section("Cohort") as s: s.text(...)``."""
        yield self.report.section(title)

    # --------------------------------------------------------------- finalise
    def _finalise(self) -> None:
        finished = _dt.datetime.now(_dt.UTC)
        self.write_json("config.json", self.config)
        info = {
            "adaptrt_version": __version__,
            "command": self.command,
            "seed": self.seed,
            "started_utc": self._started.isoformat(timespec="seconds"),
            "finished_utc": finished.isoformat(timespec="seconds"),
            "duration_s": round((finished - self._started).total_seconds(), 3),
            "platform": platform.platform(),
            "versions": _library_versions(),
        }
        self.write_json("run.json", info)
        self.report.meta.update(
            {
                "adaptrt": __version__,
                "command": self.command,
                "seed": str(self.seed),
                "run folder": str(self.path),
            }
        )
        self.file("report.html").write_text(self.report.render())
