"""Skip or fail when this machine cannot run a real containerd.

Outside CI a missing root or containerd skips with the reason; in CI (``CI=true``) the
end-to-end tests must run, so the same reason fails the test instead.
"""

from __future__ import annotations

import os
import shutil

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
    """The wasmtime shim's console script is installed; returns its path."""
    path = shutil.which(SHIM_BINARY, path=str(scripts_dir()))
    if path is None:
        unavailable(f"{SHIM_BINARY} is not installed in {scripts_dir()} (pip install -e .)")
    assert path is not None
    return path
