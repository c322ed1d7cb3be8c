"""Where ``runwasi-py containerd up`` keeps its private containerd by default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_workdir"]


def default_workdir() -> Path:
    """``$XDG_RUNTIME_DIR/runwasi-py/containerd``, else ``/run/runwasi-py/containerd`` as
    root, else ``./.work/containerd``: short paths, as unix sockets allow 107 bytes.

    >>> default_workdir()  # doctest: +SKIP
    PosixPath('/run/runwasi-py/containerd')
    """
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "runwasi-py" / "containerd"
    if os.geteuid() == 0:
        return Path("/run/runwasi-py/containerd")
    return Path.cwd() / ".work" / "containerd"
