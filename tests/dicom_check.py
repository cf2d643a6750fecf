"""The one way tests run ``dciodvfy`` (Debian dicom3tools), the judge of DICOM conformance."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def dciodvfy_lines(path: Path, iod: str) -> list[str]:
    """``dciodvfy``'s output lines for ``path``, after checking that it recognised the IOD ``iod``.

    Skips the test when dciodvfy is missing, unless ``ADAPTRT_REQUIRE_DCIODVFY=1`` (as ``make test`` sets),
    in which case the test fails.
    """
    exe = shutil.which("dciodvfy")
    if exe is None:
        if os.environ.get("ADAPTRT_REQUIRE_DCIODVFY") == "1":
            pytest.fail("dciodvfy is required (ADAPTRT_REQUIRE_DCIODVFY=1) but not installed")
        pytest.skip(
            "dciodvfy (dicom3tools) is not installed, so DICOM conformance is not checked here: install it "
            "(Debian/Ubuntu: apt-get install dicom3tools; elsewhere build dicom3tools from source) and set "
            "ADAPTRT_REQUIRE_DCIODVFY=1 to make its absence a failure"
        )
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    assert any(iod in line for line in lines), lines  # dciodvfy recognised the IOD
    return lines
