"""The daemon's reaper: the one waiter for every process the shim starts or adopts.

Theory of operation: a container's init is a child of ``runc create``; when that exits the
kernel reparents the init to the nearest *child subreaper*, so the daemon marks itself one
(:func:`become_subreaper`) and can then learn the init's exit status with ``waitpid``.

Who calls ``waitpid`` is the whole design. ``waitpid(-1)`` on SIGCHLD (what a Go shim does)
would steal the status of every other child of the process: the runc commands we run, and
whatever asyncio's child watcher (``ThreadedChildWatcher``, ``PidfdChildWatcher``, uvloop's
libuv handles) or a Sandbox's ``subprocess.run`` waits for, each of which waits for its own
pid only. So the :class:`Reaper` also waits per pid, never for "any child": it opens a pidfd
for each process it starts (:meth:`Reaper.spawn`, used for every runc command, so the
framework never starts a process through asyncio's subprocess API) or adopts (:meth:`Reaper.adopt`,
a container's init, read from runc's pid file), and reaps that pid with ``WNOHANG`` when the
pidfd becomes readable on the loop. Each pid has exactly one waiter, so nothing races.

Orphans (a container's descendants reparented to the daemon when their parent died, in a
container without its own pid namespace) have no waiter: :meth:`Reaper.sweep_orphans` reaps a
child that is not ours and was a zombie on two sweeps in a row (a child someone waits for is
reaped at once, never seen twice).

The status rule (:func:`exit_code`) is the runc shim's: the exit code, or 128+signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "ProcessExit",
    "Reaper",
    "become_subreaper",
    "exit_code",
    "is_subreaper",
    "process_reaper",
]

log = logging.getLogger("runwasi_py.native")

_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
# Reset for every process we start: the daemon ignores SIGPIPE, and an ignored signal stays
# ignored across exec, so a container would inherit it (``yes | head`` would never end).
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """How a process ended: ``code`` (exit code, or 128+signal) and when (ns since the epoch)."""

    code: int
    exited_at_ns: int


def exit_code(wait_status: int) -> int:
    """A ``waitpid`` status as containerd reports it: the exit code, or 128+signal.

    >>> exit_code(3 << 8), exit_code(9)
    (3, 137)
    """
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255  # stopped/continued statuses never reach us without WUNTRACED


def become_subreaper() -> bool:
    """Make this process a child subreaper (``PR_SET_CHILD_SUBREAPER``); True on success."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    """True when this process is a child subreaper."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        if libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
        return flag.value != 0
    except (OSError, AttributeError):
        return False


class Reaper:
    """Waits for each process the shim starts or adopts, by pid, on the running loop.

    Example:
        >>> reaper = Reaper()
        >>> pid, done = reaper.spawn(["/usr/sbin/runc", "--version"], {1: out_w})
        >>> (await done).code
        0
        >>> init_done = reaper.adopt(init_pid)   # a container's init, after runc create
    """

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[int, asyncio.Future[ProcessExit]]] = {}
        self._zombies_seen: set[int] = set()

    @property
    def pids(self) -> frozenset[int]:
        """The pids this reaper waits for now."""
        return frozenset(self._waiting)

    def spawn(
        self,
        argv: Sequence[str],
        fds: Mapping[int, int],
        *,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, asyncio.Future[ProcessExit]]:
        """Start ``argv[0]`` (an absolute path) with ``fds`` (child fd -> our fd) and wait for it.

        Fds 0-2 not in ``fds`` are /dev/null; no other fd of ours is inherited (they are all
        close-on-exec). ``posix_spawn`` (vfork and exec) is safe in a process with threads,
        where ``fork`` is not. Returns the pid and a future for its :class:`ProcessExit`.
        """
        loop = asyncio.get_running_loop()
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            actions: list[tuple[int, ...]] = [
                (os.POSIX_SPAWN_DUP2, fds.get(n, devnull), n) for n in (0, 1, 2)
            ]
            actions += [(os.POSIX_SPAWN_DUP2, src, n) for n, src in fds.items() if n > 2]
            pid = os.posix_spawn(
                argv[0],
                list(argv),
                dict(os.environ if env is None else env),
                file_actions=actions,
                setsigmask=(),
                setsigdef=_DEFAULT_SIGNALS,
            )
        finally:
            os.close(devnull)
        # Registered before the loop runs again: the exit cannot be missed even if the
        # process is already a zombie (a pidfd opens on a zombie and is readable at once).
        return pid, self._watch(loop, pid)

    def adopt(self, pid: int) -> asyncio.Future[ProcessExit]:
        """Wait for ``pid``, a process reparented to us (a container's init).

        Raises ProcessLookupError when no such process exists any more.
        """
        if pid in self._waiting:
            return self._waiting[pid][1]
        return self._watch(asyncio.get_running_loop(), pid)

    def _watch(self, loop: asyncio.AbstractEventLoop, pid: int) -> asyncio.Future[ProcessExit]:
        pidfd = os.pidfd_open(pid)
        future: asyncio.Future[ProcessExit] = loop.create_future()
        self._waiting[pid] = (pidfd, future)
        loop.add_reader(pidfd, self._on_ready, loop, pid)
        return future

    def _on_ready(self, loop: asyncio.AbstractEventLoop, pid: int) -> None:
        entry = self._waiting.get(pid)
        if entry is None:
            return
        pidfd, future = entry
        try:
            reaped, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            # Not our child: the subreaper flag was not set when its parent died, so the
            # init went to pid 1 and its status is lost. Report a failure, not a hang.
            log.warning("pid %d exited but is not our child: its exit status is unknown", pid)
            reaped, status = pid, 255 << 8
        if reaped == 0:
            return  # readable but not yet reapable (spurious wake-up): keep waiting
        loop.remove_reader(pidfd)
        os.close(pidfd)
        del self._waiting[pid]
        if not future.done():
            future.set_result(ProcessExit(exit_code(status), time.time_ns()))

    def sweep_orphans(self) -> list[int]:
        """Reap zombie children nobody waits for (seen on this and the previous sweep)."""
        zombies = _zombie_children() - set(self._waiting)
        reaped = []
        for pid in zombies & self._zombies_seen:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped.append(pid)
        self._zombies_seen = zombies - set(reaped)
        return reaped

    async def sweep_forever(self, interval: float = 5.0) -> None:
        """Call :meth:`sweep_orphans` every ``interval`` seconds (a daemon background task)."""
        while True:
            await asyncio.sleep(interval)
            self.sweep_orphans()

    def close(self) -> None:
        """Stop waiting: cancel the futures and close the pidfds (the loop is ending)."""
        waiting, self._waiting = self._waiting, {}
        for pidfd, future in waiting.values():
            with contextlib.suppress(Exception):
                future.get_loop().remove_reader(pidfd)
            os.close(pidfd)
            future.cancel()


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


_PROCESS_REAPER: Reaper | None = None


def process_reaper() -> Reaper:
    """This process's one :class:`Reaper` (the daemon's orphan sweep and runc share it)."""
    global _PROCESS_REAPER
    if _PROCESS_REAPER is None:
        _PROCESS_REAPER = Reaper()
    return _PROCESS_REAPER
