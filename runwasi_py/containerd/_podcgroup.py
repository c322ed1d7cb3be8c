"""Pod-level cgroups as kubelet makes them (cgroupfs driver), for CRI tests and benchmarks.

kubelet creates a pod's cgroup (the ``cgroup_parent`` it hands to RunPodSandbox) before the
runtime creates container cgroups beneath it; containerd's ListPodSandboxStats reads it. On
cgroup v1 that is one directory per mounted hierarchy (found in /proc/self/mountinfo, never
assumed: here ``cpu`` and ``cpuacct`` are separate mounts); on v2 it is one directory in the
unified tree, with the controllers enabled in ``cgroup.subtree_control`` from the root down
so that containers below it can use them. Everything lives under one harness root
(``/runwasi-py-<tag>``), which :func:`remove_cgroup_tree` removes bottom-up, killing what
still runs in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from runwasi_py._mountinfo import parse as parse_mountinfo

__all__ = [
    "CgroupMount",
    "PodCgroup",
    "cgroup_mounts",
    "create_pod_cgroup",
    "processes_in",
    "remove_cgroup_tree",
]


@dataclass(frozen=True, slots=True)
class CgroupMount:
    """One mounted hierarchy: where it is, v1 or v2, and its controllers (v1: from options)."""

    path: Path
    version: int
    controllers: tuple[str, ...]


def cgroup_mounts(mountinfo: str | None = None) -> list[CgroupMount]:
    """The cgroup hierarchies mounted in this mount namespace, one entry per hierarchy."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    seen: dict[tuple[int, tuple[str, ...]], CgroupMount] = {}
    for entry in parse_mountinfo(mountinfo):
        if entry.root != "/":
            continue  # only mounts of a hierarchy's root
        fstype, opts = entry.fstype, entry.super_options.split(",")
        if fstype == "cgroup2":
            key: tuple[int, tuple[str, ...]] = (2, ())
            mount = CgroupMount(Path(entry.mount_point), 2, ())
        elif fstype == "cgroup":
            known = _kernel_controllers()
            ctrls = tuple(sorted(o for o in opts if o.startswith("name=") or o in known))
            key = (1, ctrls)
            mount = CgroupMount(Path(entry.mount_point), 1, ctrls)
        else:
            continue
        seen.setdefault(key, mount)
    mounts = list(seen.values())
    if any(m.version == 1 for m in mounts):
        # Hybrid: the unified mount holds no controllers; the v1 hierarchies are the ones.
        mounts = [m for m in mounts if m.version == 1 or _v2_controllers(m.path)]
    return mounts


def _kernel_controllers() -> set[str]:
    """The controllers this kernel has (``/proc/cgroups``), to tell them from mount options."""
    try:
        lines = Path("/proc/cgroups").read_text().splitlines()[1:]
    except OSError:
        lines = []
    found = {line.split()[0] for line in lines if line.strip()}
    return found or {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"}


def _v2_controllers(root: Path) -> list[str]:
    try:
        return (root / "cgroup.controllers").read_text().split()
    except OSError:
        return []


def _relative(cgroup: str) -> Path:
    rel = Path(cgroup.strip("/"))
    if not cgroup.strip("/") or ".." in rel.parts:
        raise ValueError(f"cgroup path {cgroup!r} must be a non-empty path below the root")
    return rel


@dataclass(frozen=True, slots=True)
class PodCgroup:
    """A pod's cgroup: ``path`` is the ``cgroup_parent`` to give RunPodSandbox."""

    path: str
    dirs: tuple[Path, ...]

    def remove(self) -> list[Path]:
        """Remove this cgroup and everything under it; return the directories that resisted."""
        return remove_cgroup_tree(self.path)

    def dir_for(self, controller: str) -> Path:
        """The directory of this cgroup in the hierarchy holding ``controller``.

        A v1 hierarchy with the controller wins (on a hybrid host the unified mount holds
        few controllers); on a v2 host it is the unified hierarchy.
        """
        mounts = cgroup_mounts()
        for m in mounts:
            if m.version == 1 and controller in m.controllers:
                return m.path / _relative(self.path)
        for m in mounts:
            if m.version == 2 and controller in _v2_controllers(m.path):
                return m.path / _relative(self.path)
        raise LookupError(f"no mounted cgroup hierarchy has the {controller} controller")


def create_pod_cgroup(path: str, *, mounts: list[CgroupMount] | None = None) -> PodCgroup:
    """Create ``path`` (e.g. ``/runwasi-py-ab12/pod<uid>``) in every hierarchy, as kubelet does.

    ``mounts`` defaults to this host's hierarchies (:func:`cgroup_mounts`).
    """
    rel = _relative(path)
    dirs = []
    for m in cgroup_mounts() if mounts is None else mounts:
        target = m.path / rel
        if m.version == 2:
            ctrls = _v2_controllers(m.path)
            node = m.path
            for part in rel.parts:
                # Enable the controllers on the way down so that children can use them.
                with contextlib.suppress(OSError):
                    (node / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in ctrls))
                node = node / part
                node.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                (target / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in ctrls))
        else:
            node = m.path
            for part in rel.parts:
                node = node / part
                node.mkdir(exist_ok=True)
                if "cpuset" in m.controllers:
                    _inherit_cpuset(node)
        dirs.append(target)
    return PodCgroup("/" + str(rel), tuple(dirs))


def _inherit_cpuset(node: Path) -> None:
    # A new v1 cpuset cgroup starts with no cpus and mems, and nothing can join it until
    # they are set: copy the parent's, as kubelet and runc do.
    for name in ("cpuset.cpus", "cpuset.mems"):
        with contextlib.suppress(OSError):
            if not (node / name).read_text().strip():
                (node / name).write_text((node.parent / name).read_text())


def processes_in(path: str, *, mounts: list[CgroupMount] | None = None) -> list[int]:
    """Pids in ``path`` or below it, in any hierarchy."""
    rel = _relative(path)
    pids: set[int] = set()
    for m in cgroup_mounts() if mounts is None else mounts:
        top = m.path / rel
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
    return sorted(pids)


def remove_cgroup_tree(
    path: str, *, timeout: float = 5.0, mounts: list[CgroupMount] | None = None
) -> list[Path]:
    """Kill what runs under ``path`` and rmdir it bottom-up in every hierarchy.

    Returns the directories still present afterwards (empty when all went).
    """
    rel = _relative(path)
    for pid in processes_in(path, mounts=mounts):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    left: list[Path] = []
    while True:
        left = []
        for m in cgroup_mounts() if mounts is None else mounts:
            top = m.path / rel
            if not top.is_dir():
                continue
            dirs = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
            for d in [*dirs, top]:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left.append(d)
        # A killed process leaves its cgroup only once the kernel has reaped it.
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)
