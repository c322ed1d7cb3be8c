"""Import an image tarball into a containerd through ``ctr image import --all-platforms``.

``--all-platforms`` is not optional for wasm: without it ctr drops a ``wasip1/wasm`` image
as "filtered out" (rc 1, nothing imported).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from runwasi_py.image._errors import ImageError

__all__ = ["import_image"]


def import_image(
    tarball: str | os.PathLike[str],
    *,
    address: str,
    namespace: str = "default",
    ctr: str = "ctr",
    timeout: float = 60.0,
) -> str:
    """Run ``ctr image import --all-platforms`` and return ctr's output.

    Example:
        >>> import_image("hello.tar", address="/run/runwasi-py/containerd/containerd.sock")
    """
    exe = shutil.which(ctr)
    if exe is None:
        raise ImageError(f"{ctr!r} not found: as root run `apt-get install containerd`")
    argv = [exe, "--address", address, "--namespace", namespace, "image", "import"]
    argv += ["--all-platforms", os.fspath(tarball)]
    try:
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ImageError(f"ctr image import timed out after {timeout:g}s") from e
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip()
        raise ImageError(f"ctr image import failed (exit {res.returncode}): {msg}")
    return res.stdout
