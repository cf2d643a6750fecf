"""Native (C) kernels of the fast trainer, built at first use with the system's C compiler.

The first encoder block of Part I's network (3×3 convolution 1 -> C, 2×2 max pool, ReLU) is memory-bound as
a matrix product: its ``(b, 32, 32, 4 phases, C)`` pre-pooling output and the gradient of the same shape are
16 MB each for a batch of 64, written and read once per step. ``_layer1.c`` computes the block and its weight
gradient directly from the padded image, one pooled pixel at a time, without them (see ``docs/response.md``
for the measurements).

The source is compiled once per machine (``cc -O3 -march=native``; the compiler is ``$CC`` if set) into
``$ADAPTRT_CACHE_DIR`` (default ``~/.cache/adaptrt``) under a name that hashes the source, the compiler, its
flags and the CPU, and loaded with :mod:`ctypes`. Where no compiler works, :func:`layer1` raises
:class:`NativeUnavailable` and the caller uses the equivalent torch operations.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

__all__ = ["Layer1", "NativeUnavailable", "layer1"]

_SOURCE = "_layer1.c"
_FLAGS = ("-O3", "-march=native", "-std=c11", "-fPIC", "-shared")
MAX_CHANNELS = 64  # the C code's accumulator size


class NativeUnavailable(RuntimeError):
    """The native kernels cannot be built or loaded here (no compiler, a failed build); the reason says which."""


def cache_dir() -> Path:
    """The folder of built kernels: ``$ADAPTRT_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptrt``, ``~/.cache/adaptrt``."""
    env = os.environ.get("ADAPTRT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptrt"


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise NativeUnavailable("no C compiler found (looked for $CC, cc, gcc, clang)")


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags (Linux), else the platform's description."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _build(source: str, compiler: str) -> Path:
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NativeUnavailable(f"the C compiler {compiler!r} does not run: {exc}") from exc
    key = hashlib.sha256(
        "\0".join([source, compiler, version, *_FLAGS, _cpu_signature()]).encode()
    ).hexdigest()
    out_dir = cache_dir()
    target = out_dir / f"layer1-{key[:20]}.so"
    if target.exists():
        return target
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-") as tmp:
            src = Path(tmp) / _SOURCE
            src.write_text(source, encoding="utf-8")
            lib = Path(tmp) / "layer1.so"
            proc = subprocess.run(
                [compiler, *_FLAGS, str(src), "-o", str(lib)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if proc.returncode != 0:
                raise NativeUnavailable(
                    f"{compiler} could not build {_SOURCE} (exit {proc.returncode}): {proc.stderr.strip()[:500]}"
                )
            os.replace(lib, target)  # atomic: a concurrent build leaves one complete file
    except OSError as exc:
        raise NativeUnavailable(f"could not write the built kernel under {out_dir}: {exc}") from exc
    return target


@dataclass(frozen=True)
class Layer1:
    """The loaded kernels (see :func:`layer1`)."""

    lib: ctypes.CDLL
    path: Path

    def forward(
        self, xp: torch.Tensor, wt: torch.Tensor, bias: torch.Tensor, h: torch.Tensor, idx: torch.Tensor
    ) -> None:
        """Write ``h`` and ``idx`` ``(b, 32, 32, C)`` from ``xp`` ``(b, 66, 66)``, ``wt`` ``(9, C)``, ``bias`` ``(C,)``.

        All float32 (``idx`` uint8), contiguous, on the CPU; ``h`` and ``idx`` are outputs (overwritten).
        """
        b, c = xp.shape[0], wt.shape[1]
        _check(xp, (b, 66, 66), torch.float32, "xp")
        _check(wt, (9, c), torch.float32, "wt")
        _check(bias, (c,), torch.float32, "bias")
        _check(h, (b, 32, 32, c), torch.float32, "h")
        _check(idx, (b, 32, 32, c), torch.uint8, "idx")
        self.lib.adaptrt_layer1_fwd(
            _ptr(xp), _ptr(wt), _ptr(bias), _ptr(h), _ptr(idx), ctypes.c_int64(b), ctypes.c_int64(c)
        )

    def backward(
        self, gh: torch.Tensor, idx: torch.Tensor, xp: torch.Tensor, gw: torch.Tensor, gb: torch.Tensor
    ) -> None:
        """Write the kernel's gradient ``gw`` ``(9, C)`` (tap-major) and the bias's ``gb`` ``(C,)``.

        ``gh`` ``(b, 32, 32, C)`` is the gradient at :meth:`forward`'s ``h``, ``idx`` its ``idx``.
        """
        b, c = xp.shape[0], gw.shape[1]
        _check(gh, (b, 32, 32, c), torch.float32, "gh")
        _check(idx, (b, 32, 32, c), torch.uint8, "idx")
        _check(xp, (b, 66, 66), torch.float32, "xp")
        _check(gw, (9, c), torch.float32, "gw")
        _check(gb, (c,), torch.float32, "gb")
        self.lib.adaptrt_layer1_bwd(
            _ptr(gh), _ptr(idx), _ptr(xp), _ptr(gw), _ptr(gb), ctypes.c_int64(b), ctypes.c_int64(c)
        )


def _check(t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, name: str) -> None:
    # a wrong layout here would be memory corruption in C, not an exception: check everything
    if tuple(t.shape) != shape or t.dtype != dtype or t.device.type != "cpu" or not t.is_contiguous():
        raise ValueError(
            f"native layer1: {name} must be a contiguous {dtype} CPU tensor of shape {shape}, got "
            f"{t.dtype} {tuple(t.shape)} on {t.device} (contiguous: {t.is_contiguous()})"
        )
    if len(shape) == 2 and name in ("wt", "gw") and not 1 <= shape[1] <= MAX_CHANNELS:
        raise ValueError(f"native layer1: at most {MAX_CHANNELS} channels, got {shape[1]}")


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


@functools.cache
def layer1() -> Layer1:
    """Build (once per machine) and load the native first-block kernels.

    Raises
    ------
    NativeUnavailable
        No working C compiler, a failed build or load; the message says which.
    """
    source = resources.files("adaptrt.response").joinpath(_SOURCE).read_text(encoding="utf-8")
    path = _build(source, _compiler())
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NativeUnavailable(f"could not load {path}: {exc}") from exc
    for name in ("adaptrt_layer1_fwd", "adaptrt_layer1_bwd"):
        fn = getattr(lib, name)
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64, ctypes.c_int64]
    return Layer1(lib, path)
