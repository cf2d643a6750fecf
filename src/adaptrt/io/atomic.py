"""Atomic file and folder writes.

A reader never sees a half-written output: everything is written under a temporary name in the target's
own folder and renamed into place when complete (``os.replace`` is atomic on one file system). An existing
target is never replaced unless ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = ["atomic_dir", "atomic_file", "check_writable"]


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once (mkstemp/mkdtemp create 0600/0700 entries,
    # which we widen to what open()/mkdir() would have given so that other users and services can read outputs)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Raise :class:`InputError` when ``path`` exists and ``overwrite`` is False; return it as a Path."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(
            "already exists and would be overwritten",
            path=p,
            fix="choose another output path, remove it, or pass overwrite=True (--overwrite on the command line)",
        )
    return p


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error remove it.

    Examples
    --------
    >>> with atomic_file(tmp / "table.csv") as tmp_path:     # doctest: +SKIP
    ...     tmp_path.write_text("a,b\\n")
    """
    target = check_writable(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffixes so that libraries that dispatch on them (nibabel: .nii.gz) behave
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it becomes ``path``.

    With ``overwrite=True`` an existing ``path`` is replaced only once the new folder is complete. On
    error the temporary folder is removed and ``path`` is left as it was.
    """
    target = check_writable(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, trash / "old")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
