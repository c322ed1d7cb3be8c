"""Skip or fail when this machine cannot run a real containerd.

Outside CI a missing root or containerd skips with the reason; in CI (``CI=true``) the
end-to-end tests must run, so the same reason fails the test instead.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

from runwasi_py.containerd import ContainerdUnavailable, check_available
from runwasi_py.examples._demo import SHIM_BINARY, scripts_dir


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Fail in CI, else skip, with ``reason``."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def require_containerd() -> None:
    """A private containerd can run here (root, containerd and ctr installed)."""
    try:
        check_available()
    except ContainerdUnavailable as e:
        unavailable(str(e))


def require_shim() -> str:
    """The wasmtime shim's console script is installed and runs; returns its path."""
    problem, path = _shim_problem()
    if problem:
        unavailable(problem)
    return path


@functools.cache
def _shim_problem() -> tuple[str, str]:
    path = shutil.which(SHIM_BINARY, path=str(scripts_dir()))
    if path is None:
        return f"{SHIM_BINARY} is not installed in {scripts_dir()} (pip install -e .)", ""
    res = subprocess.run(
        [path, "-v"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        return f"{SHIM_BINARY} -v exited {res.returncode}: {tail[0]}", path
    return "", path


def require_root() -> None:
    """The test runs as root (cgroups, setns); skipped otherwise, failed under CI."""
    if os.geteuid() != 0:
        unavailable("needs root (cgroups and namespaces)")
