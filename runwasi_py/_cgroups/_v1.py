"""The cgroup v1 driver: one directory per hierarchy; threads go in by tid through ``tasks``.

A container's thread is placed in the ``cpu`` and ``cpuacct`` hierarchies (one directory
when they are joined in one mount), the only v1 controllers that account and limit per
thread. The daemon joins the cpu, cpuacct, memory and pids hierarchies through
``cgroup.procs``. A new ``cpuset`` directory (when cpuset is mounted with one of those) starts
with no CPUs and no memory nodes, and the kernel refuses tasks in it, so it gets its parent's
values first, as runc does.
"""

from __future__ import annotations

import os
from pathlib import Path

from runwasi_py._cgroups._driver import CgroupDriver, read_text, write_text
from runwasi_py._cgroups._hierarchy import Hierarchy
from runwasi_py._cgroups._path import CgroupPath
from runwasi_py._cgroups._record import CreationRecord
from runwasi_py._errors import FailedPrecondition

# Not typing.TYPE_CHECKING: ``start`` imports this module, and typing costs it ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._cgroups._cpu import CpuLimits
    from runwasi_py._cgroups._metrics import EngineMemory
    from runwasi_py._proto.messages import cgroups_v1

__all__ = ["PROCESS_CONTROLLERS", "THREAD_CONTROLLERS", "CgroupV1"]

THREAD_CONTROLLERS = ("cpu", "cpuacct")
PROCESS_CONTROLLERS = frozenset({"cpu", "cpuacct", "memory", "pids"})
"""What a pod daemon must join: the pod's CPU, memory and pid accounting and limits."""


class CgroupV1(CgroupDriver):
    """cgroup v1 (and hybrid hosts, whose controllers are all in v1 hierarchies)."""

    version = 1

    def _thread_hierarchies(self) -> list[Hierarchy]:
        found = self.layout.v1_for(THREAD_CONTROLLERS)
        if self.layout.v1.get("cpu") is None:
            raise FailedPrecondition("cgroup v1: the cpu controller is not mounted")
        return found

    def _hierarchy_of(self, directory: Path) -> Hierarchy | None:
        for h in self.layout.hierarchies():
            if directory.is_relative_to(h.mountpoint):
                return h
        return None

    def thread_cgroup(self, spec_path: CgroupPath) -> CgroupPath:
        """On v1 a container's cgroup is exactly the one its spec names."""
        return spec_path

    def create_thread_cgroup(self, path: CgroupPath, record: CreationRecord) -> None:
        """``mkdir -p`` the path in the cpu and cpuacct hierarchies."""
        for h in self._thread_hierarchies():
            self._mkdir_p(record, self._chain(h, path), path)

    def apply_cpu(self, path: CgroupPath, limits: CpuLimits, field: str) -> None:
        """Write shares, period, quota to the cpu hierarchy's directory."""
        from runwasi_py._cgroups._cpu import v1_files

        cpu_dir = self.layout.v1["cpu"].dir_of(path.path)
        for name, value in v1_files(limits):
            key = {"cpu.shares": "shares", "cpu.cfs_period_us": "period"}.get(name, "quota")
            write_text(cpu_dir / name, value, f"{field}.cpu.{key}")

    def place_thread(self, path: CgroupPath, tid: int) -> None:
        """Write the tid to ``tasks`` in the cpu and cpuacct directories."""
        for h in self._thread_hierarchies():
            write_text(h.dir_of(path.path) / "tasks", str(tid))

    def thread_dirs(self, path: CgroupPath) -> list[Path]:
        """The cpu and cpuacct directories (one when they are joined)."""
        return [h.dir_of(path.path) for h in self._thread_hierarchies()]

    def join_process(self, path: CgroupPath, pid: int, record: CreationRecord) -> None:
        """Create ``path`` in the cpu, cpuacct, memory and pids hierarchies and write ``pid``
        to each ``cgroup.procs``: the pod's CPU, memory and pid accounting and limits.

        The other hierarchies (blkio, devices, freezer, cpuset, named ones) are left alone:
        each move of a process costs the kernel an RCU grace period when it is the first in
        a while, and nothing the pod is measured or limited by lives there.
        """
        for h in self.layout.v1_for(sorted(PROCESS_CONTROLLERS)):
            self._join_one(h, path, pid, record)

    def _join_one(self, h: Hierarchy, path: CgroupPath, pid: int, record: CreationRecord) -> None:
        chain = self._chain(h, path)
        created = self._mkdir_p(record, chain, path)
        if "cpuset" in h.controllers:  # mounted together with one of ours
            for d in created:
                for name in ("cpuset.cpus", "cpuset.mems"):
                    write_text(d / name, read_text(d.parent / name).strip() or "\n")
        write_text(chain[-1] / "cgroup.procs", str(pid))

    def metrics(self, path: CgroupPath, memory: EngineMemory) -> cgroups_v1.Metrics:
        """cpuacct usage and times, cpu throttling, the engine's memory."""
        from runwasi_py._cgroups._metrics import CpuStatV1, v1_metrics

        cpu_dir = self.layout.v1["cpu"].dir_of(path.path)
        acct = self.layout.v1.get("cpuacct")
        acct_dir = acct.dir_of(path.path) if acct else cpu_dir
        files = CpuStatV1(
            usage=read_text(acct_dir / "cpuacct.usage"),
            usage_percpu=read_text(acct_dir / "cpuacct.usage_percpu"),
            cpuacct_stat=read_text(acct_dir / "cpuacct.stat"),
            cpu_stat=read_text(cpu_dir / "cpu.stat"),
            tasks=read_text(cpu_dir / "tasks"),
        )
        return v1_metrics(files, memory)

    def move_out(self, directory: Path) -> None:
        """Move the tids left in ``directory`` to the daemon's cgroup of that hierarchy.

        When ``directory`` is the daemon's own cgroup (or holds it), they go to its parent.
        """
        h = self._hierarchy_of(directory)
        tids = [t for t in read_text(directory / "tasks").split() if t.isdigit()]
        if h is None or not tids:
            return
        home = self.own_cgroups(os.getpid())
        target = directory.parent
        for name in h.controllers:
            if name in home:
                candidate = h.dir_of(home[name])
                if not candidate.is_relative_to(directory):
                    target = candidate
                break
        for tid in tids:
            try:
                write_text(target / "tasks", tid)
            except FailedPrecondition:
                if Path(self.proc, tid).exists():  # a thread that exited meanwhile is fine
                    raise

    def leave(self, pid: int, home: dict[str, str]) -> None:
        """Write ``pid`` to ``cgroup.procs`` of its earlier cgroup in each joined hierarchy."""
        for h in self.layout.v1_for(sorted(PROCESS_CONTROLLERS)):
            path = next((home[n] for n in h.controllers if n in home), None)
            if path is None:
                continue
            try:
                write_text(h.dir_of(path) / "cgroup.procs", str(pid))
            except FailedPrecondition as e:
                if "No such process" not in str(e):
                    raise
