"""cgroups for the pod boundary: discovery, cgroupsPath, v1/v2 drivers, CPU limits, stats."""

from __future__ import annotations

from runwasi_py._cgroups._cpu import MIN_QUOTA_US, CpuLimits, shares_to_weight
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
from runwasi_py._cgroups._placement import (
    CgroupRequest,
    ContainerCgroup,
    DaemonCgroup,
    cleanup_bundle,
    daemon_cgroup_path,
)
from runwasi_py._cgroups._record import DAEMON_RECORD_NAME, RECORD_NAME, CreationRecord

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
    "parse_cgroups_path",
    "parse_mountinfo",
    "parse_proc_cgroup",
    "shares_to_weight",
    "systemd_cgroup_option",
]
