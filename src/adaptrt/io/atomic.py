"""Atomic file and folder writes.

A reader never sees a half-written output: everything is written under a temporary name in the target's
own folder and renamed into place when complete (``os.replace`` is atomic on one file system). An existing
target is never replaced unless ``overwrite=True``.

Stale staging folders
---------------------
A process killed outright (SIGKILL, power loss) cannot remove its staging folder ``.NAME.XXXX.partial``. So
every staging folder holds an owner file (:data:`OWNER_FILE`: host name, process id, the process' start time
and the boot id), removed just before the folder is committed, and the next :func:`atomic_dir` on the same
target removes the staging folders of ``.NAME.*`` whose owner is dead: same host, and either another boot
(``/proc/sys/kernel/random/boot_id`` differs), or no process with that id, or a process with that id that
started at another time (a recycled pid; Linux ``/proc/PID/stat``). Where the start time cannot be read
(macOS), a running process with that id counts as the owner. Folders of another host (a shared network
drive), folders without a readable owner file and folders of live processes are never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError

__all__ = [
    "OWNER_FILE",
    "atomic_dir",
    "atomic_file",
    "check_output_writable",
    "check_writable",
    "remove_stale_staging",
]

#: Name of the owner file inside a staging folder (see the module notes).
OWNER_FILE = ".adaptrt-staging-owner.json"


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


def check_output_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Check, before any work, that ``path`` can be created: not there (or ``overwrite``), folder writable.

    The nearest existing folder above ``path`` must be a folder (not a regular file) in which a file can be
    created: a probe file is created and removed there, so read-only and immutable folders and read-only
    file systems are found even where permission bits do not tell (e.g. for root).

    Raises
    ------
    InputError
        Naming ``path`` (or the parent that blocks it) and the fix.
    """
    p = check_writable(path, overwrite=overwrite)
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(
            f"cannot be created: {parent} is a file, not a folder",
            path=p,
            fix="choose an output path whose parent folders are folders",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".adaptrt-write-test.", dir=parent)
    except OSError as exc:
        raise InputError(
            f"cannot be created: the folder {parent} is not writable ({exc.strerror or exc})",
            path=p,
            fix="choose an output folder you can write to, or change the folder's permissions",
        ) from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return p


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _owner_record() -> dict[str, object]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid), "boot_id": _boot_id()}


def _write_owner(folder: Path) -> None:
    (folder / OWNER_FILE).write_text(json.dumps(_owner_record()))


def _owner_is_dead(folder: Path) -> bool:
    """True only when the owner recorded in ``folder`` is certainly not running (see the module notes)."""
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        host, pid = str(owner["host"]), int(owner["pid"])
        start, boot = str(owner.get("start", "")), str(owner.get("boot_id", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return False  # no owner file (being created, or not ours): leave it
    if host != socket.gethostname():
        return False
    if boot and _boot_id() and boot != _boot_id():
        return True
    if pid == os.getpid():
        return bool(start) and _start_time(pid) not in ("", start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a live process of another user
    now = _start_time(pid)
    return bool(start) and bool(now) and now != start


def remove_stale_staging(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders ``.NAME.*.partial`` / ``.NAME.*.old`` of ``path`` whose owner is dead.

    Returns the folders removed. See the module notes for how a dead owner is decided.
    """
    target = Path(path)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for suffix in (".partial", ".old"):
        for folder in target.parent.glob(f".{glob_escape(target.name)}.*{suffix}"):
            if folder.is_dir() and not folder.is_symlink() and _owner_is_dead(folder):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


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
    error the temporary folder is removed and ``path`` is left as it was. Staging folders of ``path`` left
    by dead processes are removed first (see the module notes); the staging folder holds
    :data:`OWNER_FILE` until it is committed.
    """
    target = check_writable(path, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _write_owner(tmp)
        yield tmp
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            _write_owner(trash)
            os.replace(target, trash / "old")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
