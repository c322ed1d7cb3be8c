"""The cgroup v2 driver: one unified hierarchy; threads are split in a threaded subtree.

v2 lets the threads of one process sit in different cgroups only inside one *threaded
subtree*, whose root (the "threaded domain") holds the process itself. So a container's
thread cgroup is a **child of the daemon's own cgroup**, not the sibling its spec names:
``<cgroup_parent>/<daemon>/<container name>``, with ``cgroup.type = threaded`` and ``cpu``
enabled in the daemon cgroup's ``cgroup.subtree_control``. Where the figures come from:

* a container's CPU (usage, throttling) is its threaded child's ``cpu.stat``;
* the pod's CPU and memory are the pod cgroup's, which holds the daemon and every child, so
  pod-level accounting stays exact;
* memory is a domain controller and cannot be split between threads: per-container memory is
  the engine's figure.
"""

from __future__ import annotations

import os
from pathlib import Path

from runwasi_py._cgroups._driver import CgroupDriver, read_text, write_text
from runwasi_py._cgroups._hierarchy import Hierarchy
from runwasi_py._cgroups._path import CgroupPath
from runwasi_py._cgroups._record import CreationRecord, log
from runwasi_py._errors import FailedPrecondition

# Not typing.TYPE_CHECKING: ``start`` imports this module, and typing costs it ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._cgroups._cpu import CpuLimits
    from runwasi_py._cgroups._metrics import EngineMemory
    from runwasi_py._proto.messages import cgroups_v2

__all__ = ["PROCESS_CONTROLLERS", "CgroupV2"]


PROCESS_CONTROLLERS = ("cpu", "memory", "pids", "io")
"""Enabled down the daemon's path (when the parent offers them), as runc enables them."""


class CgroupV2(CgroupDriver):
    """cgroup v2 (unified hierarchy)."""

    version = 2

    @property
    def _unified(self) -> Hierarchy:
        if self.layout.unified is None:
            raise FailedPrecondition("cgroup v2: no unified hierarchy is mounted")
        return self.layout.unified

    def _dir(self, path: CgroupPath) -> Path:
        return self._unified.dir_of(path.path)

    def _enable(self, directory: Path, wanted: tuple[str, ...]) -> None:
        offered = read_text(directory / "cgroup.controllers").split()
        enabled = read_text(directory / "cgroup.subtree_control").split()
        for name in wanted:
            if name in offered and name not in enabled:
                try:
                    write_text(directory / "cgroup.subtree_control", f"+{name}")
                except FailedPrecondition as e:
                    # a domain controller cannot be enabled where processes live: not fatal,
                    # the cgroup still exists and is accounted by its ancestors
                    log().info("%s", e)

    def thread_cgroup(self, spec_path: CgroupPath) -> CgroupPath:
        """``<daemon's cgroup>/<spec name>``: inside the daemon's threaded subtree."""
        own = self.own_cgroups(os.getpid()).get("", "/")
        if own in ("", "/"):
            raise FailedPrecondition(
                "cgroup v2: the shim daemon is in the root cgroup; container threads need a"
                " daemon cgroup of its own to form a threaded subtree"
            )
        return CgroupPath(own).child(spec_path.name)

    def create_thread_cgroup(self, path: CgroupPath, record: CreationRecord) -> None:
        """Create the threaded child and enable ``cpu`` for it in its parent."""
        d = self._dir(path)
        self._mkdir_p(record, [d], path)
        if read_text(d / "cgroup.type").strip() != "threaded":
            write_text(d / "cgroup.type", "threaded")
        self._enable(d.parent, ("cpu",))

    def apply_cpu(self, path: CgroupPath, limits: CpuLimits, field: str) -> None:
        """Write ``cpu.weight`` and ``cpu.max``."""
        from runwasi_py._cgroups._cpu import v2_files

        d = self._dir(path)
        files = v2_files(limits, read_text(d / "cpu.max") or None)
        if files and not (d / "cpu.max").exists():
            raise FailedPrecondition(f"cgroup v2: the cpu controller is not enabled for {d}")
        for name, value in files:
            key = "shares" if name == "cpu.weight" else "quota"
            write_text(d / name, value, f"{field}.cpu.{key}")

    def place_thread(self, path: CgroupPath, tid: int) -> None:
        """Write the tid to the threaded child's ``cgroup.threads``."""
        write_text(self._dir(path) / "cgroup.threads", str(tid))

    def thread_dirs(self, path: CgroupPath) -> list[Path]:
        """The threaded child."""
        return [self._dir(path)]

    def join_process(self, path: CgroupPath, pid: int, record: CreationRecord) -> None:
        """``mkdir -p`` with controllers enabled down the path, then ``cgroup.procs``."""
        chain = self._chain(self._unified, path)
        for d in chain:
            self._enable(d.parent, PROCESS_CONTROLLERS)
            self._mkdir_p(record, [d], path)
        write_text(chain[-1] / "cgroup.procs", str(pid))

    def metrics(self, path: CgroupPath, memory: EngineMemory) -> cgroups_v2.Metrics:
        """The threaded child's ``cpu.stat``, the engine's memory."""
        from runwasi_py._cgroups._metrics import v2_metrics

        d = self._dir(path)
        return v2_metrics(read_text(d / "cpu.stat"), read_text(d / "cgroup.threads"), memory)

    def move_out(self, directory: Path) -> None:
        """Threads go to the parent (the threaded domain), processes to the parent too.

        Children go first: below a daemon's cgroup every child is a container's threaded
        cgroup this shim made, and a ``delete`` for the sandbox may come before a
        container's, so removing the daemon's cgroup removes what is left of them.
        """
        for child in sorted(p for p in directory.iterdir() if p.is_dir()):
            self.move_out(child)
            self.rmdir(child)
        for name in ("cgroup.threads", "cgroup.procs"):
            for ident in read_text(directory / name).split():
                try:
                    write_text(directory.parent / name, ident)
                except FailedPrecondition:
                    if Path(self.proc, ident).exists():
                        raise

    def leave(self, pid: int, home: dict[str, str]) -> None:
        """Write ``pid`` to ``cgroup.procs`` of its earlier unified cgroup."""
        if "" in home:
            write_text(self._unified.dir_of(home[""]) / "cgroup.procs", str(pid))
