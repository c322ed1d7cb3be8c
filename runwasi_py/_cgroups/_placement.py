"""A container's cgroup as an object: created, joined by its thread, updated, removed.

:class:`CgroupRequest` is what a spec asks for, validated before anything is created.
:class:`ContainerCgroup` is one container's thread cgroup (its worker thread joins it for
``cpu``/``cpuacct`` on v1, a threaded child on v2). It keeps a :class:`CreationRecord` in
its bundle, so ``cleanup_bundle`` (:mod:`._daemon`, the ``delete`` action) removes what a
SIGKILLed shim left.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runwasi_py._cgroups._cpu import CpuLimits
from runwasi_py._cgroups._driver import CgroupDriver, read_text
from runwasi_py._cgroups._metrics import EngineMemory
from runwasi_py._cgroups._path import CgroupPath, parse_cgroups_path
from runwasi_py._cgroups._record import CreationRecord
from runwasi_py._errors import InvalidArgument

if TYPE_CHECKING:
    import betterproto2

__all__ = ["CgroupRequest", "ContainerCgroup"]


@dataclass(frozen=True, slots=True)
class CgroupRequest:
    """``linux.cgroupsPath`` and ``linux.resources.cpu`` of a spec, validated.

    Example:
        >>> req = CgroupRequest.from_spec({"linux": {"cgroupsPath": "/kubepods/p1/c1"}})
        >>> req.path.parent.path
        '/kubepods/p1'
    """

    path: CgroupPath | None
    cpu: CpuLimits = field(default_factory=CpuLimits)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], *, systemd: bool = False) -> CgroupRequest:
        """Read the spec's cgroup fields; InvalidArgument naming the field on bad input."""
        linux = spec.get("linux") or {}
        if not isinstance(linux, Mapping):
            raise InvalidArgument("linux must be an object")
        raw = linux.get("cgroupsPath") or ""
        if not isinstance(raw, str):
            raise InvalidArgument(f"linux.cgroupsPath must be a string, not {raw!r}")
        path = parse_cgroups_path(raw, systemd=systemd)
        return cls(path=path, cpu=CpuLimits.from_resources(linux.get("resources")))


class ContainerCgroup:
    """One container's thread cgroup.

    Example:
        >>> cg = ContainerCgroup.create(driver, req.path, req.cpu, CreationRecord(rec_file))
        >>> cg.place_current_thread()   # on the container's worker thread
        >>> cg.update(CpuLimits(quota=50000, period=100000))
        >>> cg.remove()
        []
    """

    def __init__(self, driver: CgroupDriver, path: CgroupPath, record: CreationRecord) -> None:
        self.driver = driver
        self.path = path
        """The cgroup the thread is in (on v2 below the daemon's, not the spec's path)."""
        self.record = record
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls,
        driver: CgroupDriver,
        spec_path: CgroupPath,
        cpu: CpuLimits,
        record: CreationRecord,
    ) -> ContainerCgroup:
        """Create the cgroup and write its limits; on failure nothing created is left."""
        path = driver.thread_cgroup(spec_path)
        try:
            driver.create_thread_cgroup(path, record)
            if not cpu.empty:
                driver.apply_cpu(path, cpu, "linux.resources")
        except BaseException:
            driver.remove(record)
            raise
        return cls(driver, path, record)

    def place_current_thread(self) -> int:
        """Move the calling thread in; returns its tid (the task's pid)."""
        tid = threading.get_native_id()
        self.driver.place_thread(self.path, tid)
        return tid

    def release_current_thread(self) -> None:
        """Move the calling thread back to the daemon's cgroup (its job is over)."""
        tid = str(threading.get_native_id())
        for d in self.driver.thread_dirs(self.path):
            if (
                tid
                in read_text(
                    d / ("tasks" if self.driver.version == 1 else "cgroup.threads")
                ).split()
            ):
                self.driver.move_out(d)

    def update(self, cpu: CpuLimits, field: str = "resources") -> None:
        """Change CPU limits of a running container (Update)."""
        with self._lock:
            self.driver.apply_cpu(self.path, cpu, field)

    def metrics(self, memory: EngineMemory) -> betterproto2.Message:
        """The Metrics message for Stats (v1 or v2, as the host is)."""
        return self.driver.metrics(self.path, memory)

    def remove(self) -> list[Path]:
        """Move threads out and remove every directory this container created."""
        with self._lock:
            return self.driver.remove(self.record)
