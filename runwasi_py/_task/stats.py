"""Task Stats: an instance's CPU time and memory as a cgroup v2 ``Metrics`` message.

Instances are threads of one shim process, not processes in their own cgroups, so the
numbers come from the process itself: CPU time is the worker thread's (exact, from its CPU
clock), memory is the task's share of the shim's resident set (the RSS divided by the tasks
that are running, since threads share one address space). ``usage_limit`` is the memory
limit of the OCI spec, which the engine enforces. The message is packed into an ``Any`` with
the bare type url ``io.containerd.cgroups.v2.Metrics``, which ``ctr task metrics`` and the
CRI decode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runwasi_py._proto.messages import Any, pack_any
from runwasi_py._task.instance import Instance

if TYPE_CHECKING:
    from runwasi_py._cgroups import EngineMemory
    from runwasi_py._proto.messages import cgroups_v2

__all__ = ["engine_memory", "instance_metrics", "process_rss", "stats_any"]


def process_rss() -> int:
    """The shim process's resident set size in bytes."""
    import psutil  # only Stats needs it; keeps it off the daemon's start-up path

    return int(psutil.Process().memory_info().rss)


def engine_memory(instance: Instance, running_tasks: int) -> EngineMemory:
    """The memory figure of a task whose CPU comes from its cgroup: the share of the shim's
    resident set (threads cannot be charged apart) and the limit the engine enforces."""
    from runwasi_py._cgroups import EngineMemory

    usage = 0
    if instance.exit_status is None and instance.started:
        usage = process_rss() // max(1, running_tasks)
    return EngineMemory(usage=usage, limit=instance.ctx.memory_limit or 0)


def instance_metrics(
    instance: Instance, running_tasks: int, rss: int | None = None
) -> cgroups_v2.Metrics:
    """The Metrics of one instance; ``running_tasks`` share the process's memory.

    Example:
        >>> m = instance_metrics(inst, running_tasks=2)
        >>> m.cpu.usage_usec, m.memory.usage
        (1234, 21504000)
    """
    from runwasi_py._proto.messages import cgroups_v2  # first Stats loads it: off the boot path

    cpu = instance.cpu_usage()
    alive = instance.exit_status is None
    memory = 0
    if alive and instance.started:
        memory = (process_rss() if rss is None else rss) // max(1, running_tasks)
    limit = instance.ctx.memory_limit or 0
    return cgroups_v2.Metrics(
        pids=cgroups_v2.PidsStat(current=1 if alive else 0, limit=0),
        cpu=cgroups_v2.CpuStat(
            usage_usec=cpu.total_ns // 1000,
            user_usec=cpu.user_ns // 1000,
            system_usec=cpu.system_ns // 1000,
        ),
        memory=cgroups_v2.MemoryStat(usage=memory, usage_limit=limit, anon=memory),
    )


def stats_any(instance: Instance, running_tasks: int) -> Any:
    """:func:`instance_metrics` packed for ``StatsResponse.stats``."""
    return pack_any(instance_metrics(instance, running_tasks))
