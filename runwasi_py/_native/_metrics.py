"""runc's cgroup statistics (``runc events --stats``) as the Metrics message containerd expects.

containerd decodes a task's ``StatsResponse.stats`` by its type url: the runc shim sends
``io.containerd.cgroups.v1.Metrics`` on a cgroup v1 host and ``io.containerd.cgroups.v2.Metrics``
on a unified (v2) host, and so do we, so ``ctr task metrics`` and the CRI plugin read a native
container's figures as they read a runc container's. runc reports both hierarchies in one
JSON shape (its ``types.Stats``: CPU in nanoseconds, memory entries, the raw ``memory.stat``
keys in ``memory.raw``), so the mapping is pure: JSON in, message out.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runwasi_py._proto.messages import Any as AnyMessage
from runwasi_py._proto.messages import pack_any

if TYPE_CHECKING:
    from runwasi_py._proto.messages import cgroups_v1, cgroups_v2

__all__ = ["cgroup_v2_host", "metrics_any", "metrics_v1", "metrics_v2"]

_BLKIO_KEYS = {
    "io_service_bytes_recursive": "ioServiceBytesRecursive",
    "io_serviced_recursive": "ioServicedRecursive",
    "io_queued_recursive": "ioQueueRecursive",
    "io_service_time_recursive": "ioServiceTimeRecursive",
    "io_wait_time_recursive": "ioWaitTimeRecursive",
    "io_merged_recursive": "ioMergedRecursive",
    "io_time_recursive": "ioTimeRecursive",
    "sectors_recursive": "sectorsRecursive",
}
# cgroups v1 MemoryStat field -> memory.stat key, where the names differ
_V1_RAW_NAMES = {
    "pg_pg_in": "pgpgin",
    "pg_pg_out": "pgpgout",
    "pg_fault": "pgfault",
    "pg_maj_fault": "pgmajfault",
    "hierarchical_swap_limit": "hierarchical_memsw_limit",
    "total_pg_pg_in": "total_pgpgin",
    "total_pg_pg_out": "total_pgpgout",
    "total_pg_fault": "total_pgfault",
    "total_pg_maj_fault": "total_pgmajfault",
}
_V1_RAW_FIELDS = (
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pg_pg_in",
    "pg_pg_out",
    "pg_fault",
    "pg_maj_fault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_swap_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pg_pg_in",
    "total_pg_pg_out",
    "total_pg_fault",
    "total_pg_maj_fault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
)
_V2_RAW_FIELDS = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)


def cgroup_v2_host(root: str = "/sys/fs/cgroup") -> bool:
    """True on a unified (cgroup v2) host: ``cgroup.controllers`` at the cgroup root."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _u(obj: Any, key: str) -> int:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, int) and value >= 0 else 0


def _d(obj: Any, key: str) -> Mapping[str, Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _l(obj: Any, key: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, Mapping) else None
    return value if isinstance(value, list) else []


def metrics_v1(stats: Mapping[str, Any]) -> cgroups_v1.Metrics:
    """``io.containerd.cgroups.v1.Metrics`` from runc's stats JSON (the ``data`` object).

    >>> metrics_v1({"cpu": {"usage": {"total": 5000}}}).cpu.usage.total
    5000
    """
    from runwasi_py._proto.messages import cgroups_v1 as v1

    cpu, memory, pids = _d(stats, "cpu"), _d(stats, "memory"), _d(stats, "pids")
    usage, throttling = _d(cpu, "usage"), _d(cpu, "throttling")
    raw = _d(memory, "raw")

    def entry(name: str) -> v1.MemoryEntry:
        e = _d(memory, name)
        return v1.MemoryEntry(
            limit=_u(e, "limit"), usage=_u(e, "usage"), max=_u(e, "max"), failcnt=_u(e, "failcnt")
        )

    memory_fields = {f: _u(raw, _V1_RAW_NAMES.get(f, f)) for f in _V1_RAW_FIELDS}
    blkio = _d(stats, "blkio")
    blkio_fields = {
        field: [
            v1.BlkIoEntry(
                op=str(e.get("op", "")),
                major=_u(e, "major"),
                minor=_u(e, "minor"),
                value=_u(e, "value"),
            )
            for e in _l(blkio, key)
            if isinstance(e, Mapping)
        ]
        for field, key in _BLKIO_KEYS.items()
    }
    return v1.Metrics(
        pids=v1.PidsStat(current=_u(pids, "current"), limit=_u(pids, "limit")),
        cpu=v1.CpuStat(
            usage=v1.CpuUsage(
                total=_u(usage, "total"),
                kernel=_u(usage, "kernel"),
                user=_u(usage, "user"),
                per_cpu=[p for p in _l(usage, "percpu") if isinstance(p, int)],
            ),
            throttling=v1.Throttle(
                periods=_u(throttling, "periods"),
                throttled_periods=_u(throttling, "throttledPeriods"),
                throttled_time=_u(throttling, "throttledTime"),
            ),
        ),
        memory=v1.MemoryStat(
            **memory_fields,
            usage=entry("usage"),
            swap=entry("swap"),
            kernel=entry("kernel"),
            kernel_tcp=entry("kernelTCP"),
        ),
        blkio=v1.BlkIoStat(**blkio_fields),
        hugetlb=[
            v1.HugetlbStat(
                pagesize=str(size), usage=_u(h, "usage"), max=_u(h, "max"), failcnt=_u(h, "failcnt")
            )
            for size, h in _d(stats, "hugetlb").items()
        ],
    )


def metrics_v2(stats: Mapping[str, Any]) -> cgroups_v2.Metrics:
    """``io.containerd.cgroups.v2.Metrics`` from runc's stats JSON on a unified host.

    runc reports v2's microsecond CPU figures in nanoseconds, as on v1; they are divided back.

    >>> metrics_v2({"cpu": {"usage": {"total": 5000}}}).cpu.usage_usec
    5
    """
    from runwasi_py._proto.messages import cgroups_v2 as v2

    cpu, memory, pids = _d(stats, "cpu"), _d(stats, "memory"), _d(stats, "pids")
    usage, throttling = _d(cpu, "usage"), _d(cpu, "throttling")
    raw = _d(memory, "raw")
    mem_usage, swap = _d(memory, "usage"), _d(memory, "swap")
    memory_fields = {f: _u(raw, f) for f in _V2_RAW_FIELDS}
    if not memory_fields["workingset_refault"]:  # newer kernels split it into anon and file
        memory_fields["workingset_refault"] = _u(raw, "workingset_refault_anon") + _u(
            raw, "workingset_refault_file"
        )
    io: dict[tuple[int, int], dict[str, int]] = {}
    blkio = _d(stats, "blkio")
    for key, unit in (("ioServiceBytesRecursive", "bytes"), ("ioServicedRecursive", "ios")):
        for e in _l(blkio, key):
            if not isinstance(e, Mapping):
                continue
            op = str(e.get("op", "")).lower()
            if op in ("read", "write"):
                dev = io.setdefault((_u(e, "major"), _u(e, "minor")), {})
                dev[f"{op[0]}{unit}"] = dev.get(f"{op[0]}{unit}", 0) + _u(e, "value")
    return v2.Metrics(
        pids=v2.PidsStat(current=_u(pids, "current"), limit=_u(pids, "limit")),
        cpu=v2.CpuStat(
            usage_usec=_u(usage, "total") // 1000,
            user_usec=_u(usage, "user") // 1000,
            system_usec=_u(usage, "kernel") // 1000,
            nr_periods=_u(throttling, "periods"),
            nr_throttled=_u(throttling, "throttledPeriods"),
            throttled_usec=_u(throttling, "throttledTime") // 1000,
        ),
        memory=v2.MemoryStat(
            **memory_fields,
            usage=_u(mem_usage, "usage"),
            usage_limit=_u(mem_usage, "limit"),
            max_usage=_u(mem_usage, "max"),
            swap_usage=_u(swap, "usage"),
            swap_limit=_u(swap, "limit"),
            swap_max_usage=_u(swap, "max"),
        ),
        io=v2.IoStat(
            usage=[
                v2.IoEntry(major=major, minor=minor, **counts)
                for (major, minor), counts in sorted(io.items())
            ]
        ),
        hugetlb=[
            v2.HugeTlbStat(pagesize=str(size), current=_u(h, "usage"), max=_u(h, "max"))
            for size, h in _d(stats, "hugetlb").items()
        ],
    )


def metrics_any(stats: Mapping[str, Any], *, v2: bool | None = None) -> AnyMessage:
    """The Metrics for this host's cgroup version, packed for ``StatsResponse.stats``."""
    use_v2 = cgroup_v2_host() if v2 is None else v2
    return pack_any(metrics_v2(stats) if use_v2 else metrics_v1(stats))
