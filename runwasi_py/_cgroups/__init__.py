"""cgroups for the pod boundary: discovery, cgroupsPath, v1/v2 drivers, CPU limits, stats.

Names are loaded on first use (PEP 562): ``start`` and ``delete`` import only the light
modules they need (:mod:`._daemon` and below), not the limits and metrics ones.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._cgroups._cpu import MIN_QUOTA_US, CpuLimits, shares_to_weight
    from runwasi_py._cgroups._daemon import (
        DaemonCgroup,
        cleanup_bundle,
        daemon_cgroup_path,
        join_daemon_cgroup,
        leave_daemon_cgroup,
    )
    from runwasi_py._cgroups._driver import CgroupDriver, driver_for
    from runwasi_py._cgroups._hierarchy import (
        CgroupLayout,
        CgroupMode,
        Hierarchy,
        discover,
        parse_mountinfo,
        parse_proc_cgroup,
    )
    from runwasi_py._cgroups._metrics import EngineMemory
    from runwasi_py._cgroups._path import (
        CgroupPath,
        expand_slice,
        parse_cgroups_path,
        systemd_cgroup_option,
    )
    from runwasi_py._cgroups._placement import CgroupRequest, ContainerCgroup
    from runwasi_py._cgroups._record import DAEMON_RECORD_NAME, RECORD_NAME, CreationRecord

_WHERE = {
    "MIN_QUOTA_US": "_cpu",
    "CpuLimits": "_cpu",
    "shares_to_weight": "_cpu",
    "DaemonCgroup": "_daemon",
    "cleanup_bundle": "_daemon",
    "daemon_cgroup_path": "_daemon",
    "join_daemon_cgroup": "_daemon",
    "leave_daemon_cgroup": "_daemon",
    "CgroupDriver": "_driver",
    "driver_for": "_driver",
    "CgroupLayout": "_hierarchy",
    "CgroupMode": "_hierarchy",
    "Hierarchy": "_hierarchy",
    "discover": "_hierarchy",
    "parse_mountinfo": "_hierarchy",
    "parse_proc_cgroup": "_hierarchy",
    "EngineMemory": "_metrics",
    "CgroupPath": "_path",
    "expand_slice": "_path",
    "parse_cgroups_path": "_path",
    "systemd_cgroup_option": "_path",
    "CgroupRequest": "_placement",
    "ContainerCgroup": "_placement",
    "DAEMON_RECORD_NAME": "_record",
    "RECORD_NAME": "_record",
    "CreationRecord": "_record",
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DAEMON_RECORD_NAME",
    "MIN_QUOTA_US",
    "RECORD_NAME",
    "CgroupDriver",
    "CgroupLayout",
    "CgroupMode",
    "CgroupPath",
    "CgroupRequest",
    "ContainerCgroup",
    "CpuLimits",
    "CreationRecord",
    "DaemonCgroup",
    "EngineMemory",
    "Hierarchy",
    "cleanup_bundle",
    "daemon_cgroup_path",
    "discover",
    "driver_for",
    "expand_slice",
    "join_daemon_cgroup",
    "leave_daemon_cgroup",
    "parse_cgroups_path",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "shares_to_weight",
    "systemd_cgroup_option",
]
