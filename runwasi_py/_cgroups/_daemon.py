"""The pod daemon's own cgroup, and the cleanup of every recorded cgroup of a bundle.

:class:`DaemonCgroup` is the pod's shim daemon's cgroup below the pod's ``cgroup_parent``
(``<cgroup_parent>/runwasi-py-shim-<sandbox id>``). ``start`` imports this module (to join it
before spawning the daemon) and ``delete`` does (:func:`cleanup_bundle`), so it and what it
imports stay light: no dataclasses, typing, logging or protobuf at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from runwasi_py._cgroups._driver import CgroupDriver, driver_for
from runwasi_py._cgroups._hierarchy import discover
from runwasi_py._cgroups._path import CgroupPath, parse_cgroups_path
from runwasi_py._cgroups._record import DAEMON_RECORD_NAME, RECORD_NAME, CreationRecord

# Not typing.TYPE_CHECKING: ``start`` imports this module, and typing costs it ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "DAEMON_CGROUP_PREFIX",
    "DaemonCgroup",
    "cleanup_bundle",
    "daemon_cgroup_path",
    "join_daemon_cgroup",
    "leave_daemon_cgroup",
]

DAEMON_CGROUP_PREFIX = "runwasi-py-shim-"


def daemon_cgroup_path(cgroup_parent: CgroupPath, sandbox_id: str) -> CgroupPath:
    """The pod daemon's own cgroup: ``<cgroup_parent>/runwasi-py-shim-<sandbox id>``."""
    return cgroup_parent.child(DAEMON_CGROUP_PREFIX + sandbox_id)


class DaemonCgroup:
    """The pod's shim daemon in a cgroup of its own below the pod's ``cgroup_parent``.

    Join before the daemon allocates its working set: memory charges stay where they were
    made (never moved on v2; on v1 only with ``memory.move_charge_at_immigrate``).
    """

    def __init__(
        self, driver: CgroupDriver, path: CgroupPath, record: CreationRecord, pid: int
    ) -> None:
        self.driver = driver
        self.path = path
        self.record = record
        self.pid = pid
        if not record.home:
            record.home = driver.own_cgroups(pid)
        self._home = record.home

    @classmethod
    def join(
        cls,
        driver: CgroupDriver,
        path: CgroupPath,
        record: CreationRecord,
        pid: int | None = None,
    ) -> DaemonCgroup:
        """Create ``path`` (mkdir -p) in every hierarchy and move the process in."""
        pid = os.getpid() if pid is None else pid
        daemon = cls(driver, path, record, pid)
        record.save()
        try:
            driver.join_process(path, pid, record)
        except BaseException:
            driver.leave(pid, daemon._home)
            driver.remove(record)
            raise
        return daemon

    def leave(self) -> list[Path]:
        """Move the process back where it came from and remove what was created."""
        self.driver.leave(self.pid, self._home)
        return self.driver.remove(self.record)


def cleanup_bundle(
    bundle: str | os.PathLike[str], driver: CgroupDriver | None = None
) -> list[Path]:
    """Remove the cgroups recorded in ``bundle`` (the ``delete`` action); returns leftovers.

    The container's record goes first, then the daemon's (on v2 the container's cgroup sits
    inside the daemon's).
    """
    left: list[Path] = []
    for name in (RECORD_NAME, DAEMON_RECORD_NAME):
        record = CreationRecord.load(Path(bundle) / name)
        if record.dirs:
            driver = driver or driver_for(discover())
            left += driver.remove(record)
    return left


def _host_driver() -> CgroupDriver | None:
    if os.geteuid() != 0:
        return None
    try:
        return driver_for(discover())
    except (OSError, ValueError):
        return None


def join_daemon_cgroup(
    spec: Mapping[str, Any],
    bundle: str | os.PathLike[str],
    grouping_id: str,
    *,
    systemd: bool = False,
    pid: int | None = None,
    driver: CgroupDriver | None = None,
) -> DaemonCgroup | None:
    """Move ``pid`` (this process) into ``<cgroup_parent>/runwasi-py-shim-<grouping id>``.

    ``cgroup_parent`` is the parent of the first container's ``linux.cgroupsPath`` (the
    sandbox container's ``<cgroup_parent>/<sandbox id>`` in a pod). The record goes into the
    bundle, for the daemon's exit and the ``delete`` action. None when there is nothing to
    join (no cgroupsPath, not root, no cgroups).
    """
    linux = spec.get("linux") or {}
    raw = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(raw, str):
        return None
    path = parse_cgroups_path(raw, systemd=systemd)
    if path is None or path.parent is None:
        return None
    driver = driver or _host_driver()
    if driver is None:
        return None
    record = CreationRecord(Path(bundle) / DAEMON_RECORD_NAME)
    return DaemonCgroup.join(driver, daemon_cgroup_path(path.parent, grouping_id), record, pid)


def leave_daemon_cgroup(
    bundle: str | os.PathLike[str], pid: int | None = None, driver: CgroupDriver | None = None
) -> list[Path]:
    """The daemon's exit: move ``pid`` (this process) back where the record says it came
    from, then remove what :func:`join_daemon_cgroup` created. Returns what could not go."""
    record = CreationRecord.load(Path(bundle) / DAEMON_RECORD_NAME)
    if not record.dirs and not record.home:
        return []
    driver = driver or _host_driver()
    if driver is None:
        return record.dirs
    if record.home:
        driver.leave(os.getpid() if pid is None else pid, record.home)
    return driver.remove(record)
