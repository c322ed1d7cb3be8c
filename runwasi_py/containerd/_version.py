"""Which containerd build a harness runs: its binaries and the version they report.

containerd's config format follows its major version (1.6/1.7 read config version 2 with the
CRI plugin ``io.containerd.grpc.v1.cri``; 2.x reads version 3 with ``io.containerd.cri.v1.*``),
so the harness asks the binary itself (``containerd --version``) rather than trusting a name.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from runwasi_py.containerd._errors import ContainerdUnavailable

__all__ = [
    "BIN_ENV",
    "ContainerdBuild",
    "ContainerdVersion",
    "build_of",
    "find_build",
    "parse_version",
]

#: Environment variable naming a folder with ``containerd`` and ``ctr`` to use.
BIN_ENV = "RUNWASI_PY_CONTAINERD_BIN"

_VERSION = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True, order=True)
class ContainerdVersion:
    """A containerd release number (``1.6.20``, ``2.3.4``)."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def config_version(self) -> int:
        """The config file version this release reads natively (2 for 1.x, 3 for 2.x)."""
        return 2 if self.major < 2 else 3


def parse_version(text: str) -> ContainerdVersion:
    """The version in ``containerd --version`` output.

    >>> parse_version("containerd github.com/containerd/containerd/v2 v2.3.4 ")
    ContainerdVersion(major=2, minor=3, patch=4)
    >>> str(parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"))
    '1.6.20'
    """
    # The module path (".../containerd/v2") carries no dots, so the first x.y.z is the release.
    m = _VERSION.search(text)
    if m is None:
        raise ContainerdUnavailable(f"cannot read a version from `containerd --version`: {text!r}")
    return ContainerdVersion(int(m[1]), int(m[2]), int(m[3]))


@dataclass(frozen=True, slots=True)
class ContainerdBuild:
    """The ``containerd`` and ``ctr`` executables of one build, and its version."""

    containerd: str
    ctr: str
    version: ContainerdVersion

    @property
    def bin_dir(self) -> Path:
        return Path(self.containerd).parent


def _version_of(containerd: str) -> ContainerdVersion:
    try:
        res = subprocess.run(
            [containerd, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except OSError as e:
        raise ContainerdUnavailable(f"cannot run {containerd}: {e.strerror}") from e
    if res.returncode != 0:
        out = (res.stderr or res.stdout).strip()
        raise ContainerdUnavailable(f"`{containerd} --version` exited {res.returncode}: {out}")
    return parse_version(res.stdout)


def find_build(bin_dir: str | os.PathLike[str] | None = None) -> ContainerdBuild:
    """The containerd build in ``bin_dir``, else in ``$RUNWASI_PY_CONTAINERD_BIN``, else on PATH.

    Raises :class:`ContainerdUnavailable` naming the folder when it does not exist or holds
    no runnable ``containerd`` and ``ctr``.
    """
    where = os.fspath(bin_dir) if bin_dir is not None else os.environ.get(BIN_ENV) or None
    if where is None:
        containerd, ctr = shutil.which("containerd"), shutil.which("ctr")
        if containerd is None or ctr is None:
            missing = "containerd" if containerd is None else "ctr"
            raise ContainerdUnavailable(
                f"{missing!r} not found on PATH: as root run `apt-get install containerd` "
                f"(or `bash scripts/setup.sh`), or name a build with --containerd-bin/{BIN_ENV}"
            )
        return ContainerdBuild(containerd, ctr, _version_of(containerd))
    folder = Path(where).absolute()
    if not folder.is_dir():
        raise ContainerdUnavailable(f"containerd bin folder {folder} does not exist")
    exes = {}
    for name in ("containerd", "ctr"):
        exe = folder / name
        if not (exe.is_file() and os.access(exe, os.X_OK)):
            raise ContainerdUnavailable(
                f"containerd bin folder {folder} holds no executable {name}"
            )
        exes[name] = str(exe)
    return ContainerdBuild(exes["containerd"], exes["ctr"], _version_of(exes["containerd"]))


def build_of(containerd: str, ctr: str) -> ContainerdBuild:
    """The build made of the executables ``containerd`` and ``ctr`` (names or paths)."""
    found = {}
    for name in (containerd, ctr):
        exe = shutil.which(name)
        if exe is None:
            raise ContainerdUnavailable(
                f"{name!r} not found: as root run `apt-get install containerd` "
                f"(or `bash scripts/setup.sh`), or name a build with --containerd-bin/{BIN_ENV}"
            )
        found[name] = exe
    return ContainerdBuild(found[containerd], found[ctr], _version_of(found[containerd]))
