"""Cgroup stat files as the ``Metrics`` messages containerd decodes (sans-IO).

v1 hosts get ``io.containerd.cgroups.v1.Metrics`` (CPU from ``cpuacct`` and ``cpu.stat``),
v2 hosts ``io.containerd.cgroups.v2.Metrics`` (``cpu.stat``). The kernel cannot split memory
between the threads of one process, so ``memory`` is the engine's figure for the container
(:class:`EngineMemory`), not a cgroup's: the pod's cgroup holds the exact total.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runwasi_py._proto.messages import cgroups_v1, cgroups_v2

__all__ = ["CpuStatV1", "EngineMemory", "parse_flat_keyed", "v1_metrics", "v2_metrics"]

_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")  # cpuacct.stat is in USER_HZ


@dataclass(frozen=True, slots=True)
class EngineMemory:
    """A container's memory as its engine knows it: bytes in use and the limit it enforces."""

    usage: int = 0
    limit: int = 0


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``cpu.stat``, ``cpuacct.stat``) as a dict; odd lines are skipped."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True, slots=True)
class CpuStatV1:
    """The text of a v1 container cgroup's CPU files (empty when a file is missing)."""

    usage: str = ""
    usage_percpu: str = ""
    cpuacct_stat: str = ""
    cpu_stat: str = ""
    tasks: str = ""


def _num(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def v1_metrics(files: CpuStatV1, memory: EngineMemory) -> cgroups_v1.Metrics:
    """``io.containerd.cgroups.v1.Metrics`` from v1 file texts plus the engine's memory."""
    from runwasi_py._proto.messages import cgroups_v1

    acct = parse_flat_keyed(files.cpuacct_stat)
    throttle = parse_flat_keyed(files.cpu_stat)
    threads = sum(1 for line in files.tasks.split() if line.isdigit())
    entry = cgroups_v1.MemoryEntry(usage=memory.usage, limit=memory.limit)
    return cgroups_v1.Metrics(
        pids=cgroups_v1.PidsStat(current=threads, limit=0),
        cpu=cgroups_v1.CpuStat(
            usage=cgroups_v1.CpuUsage(
                total=_num(files.usage),
                user=acct.get("user", 0) * _NS_PER_TICK,
                kernel=acct.get("system", 0) * _NS_PER_TICK,
                per_cpu=[int(v) for v in files.usage_percpu.split() if v.isdigit()],
            ),
            throttling=cgroups_v1.Throttle(
                periods=throttle.get("nr_periods", 0),
                throttled_periods=throttle.get("nr_throttled", 0),
                throttled_time=throttle.get("throttled_time", 0),
            ),
        ),
        memory=cgroups_v1.MemoryStat(
            usage=entry, rss=memory.usage, total_rss=memory.usage, active_anon=memory.usage
        ),
    )


def v2_metrics(cpu_stat: str, threads: str, memory: EngineMemory) -> cgroups_v2.Metrics:
    """``io.containerd.cgroups.v2.Metrics`` from a v2 ``cpu.stat`` plus the engine's memory."""
    from runwasi_py._proto.messages import cgroups_v2

    cpu = parse_flat_keyed(cpu_stat)
    return cgroups_v2.Metrics(
        pids=cgroups_v2.PidsStat(current=sum(1 for t in threads.split() if t.isdigit())),
        cpu=cgroups_v2.CpuStat(
            usage_usec=cpu.get("usage_usec", 0),
            user_usec=cpu.get("user_usec", 0),
            system_usec=cpu.get("system_usec", 0),
            nr_periods=cpu.get("nr_periods", 0),
            nr_throttled=cpu.get("nr_throttled", 0),
            throttled_usec=cpu.get("throttled_usec", 0),
        ),
        memory=cgroups_v2.MemoryStat(
            usage=memory.usage, usage_limit=memory.limit, anon=memory.usage
        ),
    )
