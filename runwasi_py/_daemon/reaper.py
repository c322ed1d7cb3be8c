"""Orphan reaping: the daemon is a child subreaper and waits for zombies nobody else waits for."""

from __future__ import annotations

import contextlib
import os

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    pass


async def reap_orphans(interval: float = 5.0) -> None:
    """Reap zombies nobody waits for: as a subreaper the daemon inherits orphans.

    Not ``waitpid(-1)`` on SIGCHLD: that would steal the exit status of subprocesses a
    Sandbox (or the event loop's own child watcher; uvloop even refuses a SIGCHLD handler)
    is waiting for. A child found a zombie on two scans ``interval`` apart is one nobody
    will ever wait for.
    """
    import asyncio

    seen: set[int] = set()
    while True:
        await asyncio.sleep(interval)
        zombies = _zombie_children()
        for pid in zombies & seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        seen = zombies - seen


def _zombie_children() -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                for pid in f.read().split():
                    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                            found.add(int(pid))
    return found


def set_child_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
