"""Harness self-check: the private containerd runs a native image through the runc shim.

If this fails, the harness (not the wasm shim) is broken: the config, the image builder or
the machine (cgroups, overlayfs).
"""

from __future__ import annotations

import pytest

from runwasi_py.containerd import PrivateContainerd
from tests.integration._images import NATIVE

pytestmark = pytest.mark.containerd


def test_runc_runs_native_image_built_from_host_binary(imported: PrivateContainerd) -> None:
    res = imported.run(NATIVE, "runc-selfcheck-1", timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "hello from runc\n", "")


def test_runc_passes_args_and_exit_status(imported: PrivateContainerd) -> None:
    res = imported.run(NATIVE, "runc-selfcheck-2", "/bin/echo", "-n", "a b", timeout=60)
    assert (res.returncode, res.stdout) == (0, "a b")
    ls = imported.ctr("containers", "ls", "-q").stdout.split()
    assert "runc-selfcheck-2" not in ls  # --rm removed it


def test_images_listed_with_their_platforms(imported: PrivateContainerd) -> None:
    out = imported.ctr("images", "ls").stdout
    assert "wasip1/wasm" in out
    assert "linux/" in out
