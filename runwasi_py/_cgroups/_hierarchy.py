"""Where the cgroup hierarchies are: parse ``/proc/self/mountinfo`` and ``/proc/<pid>/cgroup``.

Theory of operation: nothing about the layout is hard-coded. Every ``cgroup`` (v1) mount names
its controllers in its super options (``rw,cpu`` or ``rw,cpu,cpuacct`` when they are joined,
``rw,name=systemd`` for a named hierarchy); a ``cgroup2`` mount is the unified hierarchy. The
mode follows from what is mounted, as containerd's ``cgroups.Mode()`` decides it in effect:

* **legacy** (v1 only): controllers live in v1 hierarchies;
* **hybrid**: v1 hierarchies hold the controllers, and a cgroup2 mount (usually
  ``/sys/fs/cgroup/unified``) exists with none of them; it is treated as v1 for resources;
* **unified** (v2): no v1 hierarchy has a controller; the cgroup2 mount holds them all.

Parsing is sans-IO (text in, :class:`CgroupLayout` out); :func:`discover` reads the files.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from runwasi_py import _mountinfo as mountinfo

__all__ = [
    "CgroupLayout",
    "CgroupMode",
    "Hierarchy",
    "discover",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "read_proc_cgroup",
]

_V1_NON_CONTROLLER_OPTIONS = frozenset(
    {"rw", "ro", "noprefix", "clone_children", "xattr", "cpuset_v2_mode", "nosuid", "nodev"}
)


class CgroupMode(enum.Enum):
    """Which cgroup version holds the controllers on this host."""

    LEGACY = "legacy"
    HYBRID = "hybrid"
    UNIFIED = "unified"

    @property
    def is_v2(self) -> bool:
        """True when resources are set through the unified (v2) hierarchy."""
        return self is CgroupMode.UNIFIED


class Hierarchy:
    """One mounted cgroup hierarchy (a plain class: ``start`` imports this module).

    ``controllers`` are a v1 mount's controllers (``name=systemd`` for a named one) and empty
    for cgroup2, whose controllers are read from ``cgroup.controllers`` when needed.
    ``root`` is the mount's root inside the hierarchy (``/`` unless a bind or a cgroup
    namespace shows only a subtree).
    """

    __slots__ = ("controllers", "mountpoint", "root", "version")

    def __init__(
        self,
        mountpoint: Path,
        version: int,
        controllers: frozenset[str] = frozenset(),
        root: str = "/",
    ) -> None:
        self.mountpoint = mountpoint
        self.version = version
        self.controllers = controllers
        self.root = root

    def _key(self) -> tuple[Path, int, frozenset[str], str]:
        return (self.mountpoint, self.version, self.controllers, self.root)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hierarchy) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Hierarchy({str(self.mountpoint)!r}, v{self.version}, {sorted(self.controllers)})"

    def dir_of(self, cgroup: str) -> Path:
        """The directory of the cgroup at hierarchy path ``cgroup`` (``/a/b``).

        A mount whose root is a subtree (``/docker/x``) shows ``/docker/x/a`` as ``a``; a
        path outside that subtree is not reachable through this mount.
        """
        rel = cgroup.strip("/")
        root = self.root.strip("/")
        if root:
            if rel != root and not rel.startswith(root + "/"):
                raise ValueError(f"cgroup {cgroup!r} is outside mount root {self.root!r}")
            rel = rel[len(root) :].lstrip("/")
        return self.mountpoint / rel if rel else self.mountpoint


class CgroupLayout:
    """The host's cgroup hierarchies: v1 ones by controller, and the unified one if mounted.

    Example:
        >>> layout = discover()
        >>> layout.mode, layout.v1["cpu"].mountpoint
        (<CgroupMode.LEGACY: 'legacy'>, PosixPath('/sys/fs/cgroup/cpu'))
    """

    __slots__ = ("mode", "unified", "v1")

    def __init__(
        self,
        mode: CgroupMode,
        v1: Mapping[str, Hierarchy] | None = None,
        unified: Hierarchy | None = None,
    ) -> None:
        self.mode = mode
        self.v1: Mapping[str, Hierarchy] = dict(v1 or {})
        self.unified = unified

    def hierarchies(self) -> list[Hierarchy]:
        """Every distinct hierarchy that holds controllers for this mode."""
        if self.mode.is_v2:
            return [self.unified] if self.unified else []
        seen: dict[Path, Hierarchy] = {}
        for h in self.v1.values():
            seen.setdefault(h.mountpoint, h)
        return list(seen.values())

    def v1_for(self, controllers: Iterable[str]) -> list[Hierarchy]:
        """The distinct v1 hierarchies holding ``controllers``, skipping unmounted ones.

        With ``cpu`` and ``cpuacct`` joined in one mount this is one hierarchy, not two.
        """
        out: list[Hierarchy] = []
        for name in controllers:
            h = self.v1.get(name)
            if h is not None and h not in out:
                out.append(h)
        return out


def parse_mountinfo(text: str) -> CgroupLayout:
    """The cgroup layout described by the text of a ``/proc/<pid>/mountinfo`` file.

    The first mount of a hierarchy wins; a later bind of the same one is ignored, except that
    a mount showing the whole hierarchy (root ``/``) replaces one showing a subtree.
    """
    v1: dict[str, Hierarchy] = {}
    unified: Hierarchy | None = None
    for entry in mountinfo.parse(text):
        fstype, super_options = entry.fstype, entry.super_options
        root, mountpoint = entry.root, Path(entry.mount_point)
        if fstype == "cgroup2":
            if unified is None or (unified.root != "/" and root == "/"):
                unified = Hierarchy(mountpoint=mountpoint, version=2, root=root)
        elif fstype == "cgroup":
            names = frozenset(
                o for o in super_options.split(",") if o and o not in _V1_NON_CONTROLLER_OPTIONS
            )
            names = frozenset(n for n in names if "=" not in n or n.startswith("name="))
            if not names:
                continue
            h = Hierarchy(mountpoint=mountpoint, version=1, controllers=names, root=root)
            for name in names:
                old = v1.get(name)
                if old is None or (old.root != "/" and root == "/"):
                    v1[name] = h
    has_v1_controllers = any(not n.startswith("name=") for n in v1)
    if has_v1_controllers:
        mode = CgroupMode.HYBRID if unified is not None else CgroupMode.LEGACY
    elif unified is not None:
        mode = CgroupMode.UNIFIED
    else:
        raise ValueError("no cgroup hierarchy is mounted")
    return CgroupLayout(mode=mode, v1=v1, unified=unified)


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """A ``/proc/<pid>/cgroup`` file as controller -> cgroup path; ``""`` is the unified one.

    ``4:cpu,cpuacct:/a`` gives both ``cpu`` and ``cpuacct``; ``1:name=systemd:/`` gives
    ``name=systemd``; ``0::/pod/shim`` gives ``""``.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if parts[0] == "0" and not controllers:
            out[""] = path
            continue
        for name in controllers.split(","):
            if name:
                out[name] = path
    return out


def discover(proc: str | os.PathLike[str] = "/proc") -> CgroupLayout:
    """The cgroup layout this process sees (reads ``<proc>/self/mountinfo``)."""
    with open(os.path.join(os.fspath(proc), "self", "mountinfo"), encoding="utf-8") as f:
        return parse_mountinfo(f.read())


def read_proc_cgroup(
    pid: int | str = "self", proc: str | os.PathLike[str] = "/proc"
) -> dict[str, str]:
    """:func:`parse_proc_cgroup` of ``<proc>/<pid>/cgroup`` (``pid`` may be ``self/task/<tid>``)."""
    with open(os.path.join(os.fspath(proc), str(pid), "cgroup"), encoding="utf-8") as f:
        return parse_proc_cgroup(f.read())
