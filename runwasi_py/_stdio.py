"""Hold a task's exit until containerd's client has read its stdout and stderr.

containerd's client (``ctr``, CRI) opens its FIFO read ends in goroutines, and once the task
has exited it cancels any reader whose open has not completed: whatever the program wrote
is then dropped unread. runc's shim opens the write ends at Create, seconds earlier; a shim
that runs a short program at Start can finish before the client's reader is scheduled (seen
under load: 25 of 200 ``ctr run`` lost stdout or stderr). So the framework waits, after
``run_wasi`` returns and before the exit is reported, until each output pipe is empty or has
lost its readers (usually about a millisecond), for every Sandbox, not only the bundled one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import stat
import struct
import termios
import time
from collections.abc import Callable

from runwasi_py._context import RuntimeContext

__all__ = ["OutputDrain", "drain_outputs"]

log = logging.getLogger("runwasi_py")


class OutputDrain:
    """Waits, bounded, until the readers of stdout/stderr FIFOs have taken what was written.

    Used after the program's end, its stdio closed: :meth:`watch` each output FIFO (this
    opens a non-blocking write end, which works while a reader is there or on its way, and
    keeps the pipe's unread bytes alive); :meth:`wait` returns when every watched pipe is
    empty or has lost its readers, or at the deadline; :meth:`close` then gives the readers
    their end-of-file. All on the worker thread.

    Example:
        >>> drain = OutputDrain()
        >>> drain.watch("/run/fifo/ctr-stdout")
        >>> drain.wait(5.0)
        True
        >>> drain.close()
    """

    def __init__(self) -> None:
        self._fds: list[int] = []

    def watch(self, path: str) -> None:
        """Hold a write fd on the FIFO ``path``; nothing if it is none or has no reader."""
        if not _is_fifo(path):
            return
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # ENXIO: no reader, so nothing will be read (or lost) through it
        self._fds.append(fd)

    def wait(self, timeout: float, stop: Callable[[], bool] = lambda: False) -> bool:
        """Sleep until every watched pipe is drained or has no reader; False at the deadline.

        ``stop`` is asked between naps; True ends the wait early (a kill: exit at once).
        """
        deadline = time.monotonic() + timeout
        pause = 0.0005
        pending = list(self._fds)
        while True:
            pending = [fd for fd in pending if not _drained(fd)]
            if not pending:
                return True
            left = deadline - time.monotonic()
            if left <= 0 or stop():
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)

    def close(self) -> None:
        """Close the held fds (end-of-file for the readers once the program's are closed)."""
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _drained(fd: int) -> bool:
    """Nothing left in the pipe behind ``fd``, or nobody left to read it."""
    try:
        unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return True
    if unread == 0:
        return True
    # A pipe reports POLLERR to a writer once its last reader has closed.
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & select.POLLERR for _, ev in poller.poll(0))


def _is_fifo(path: str) -> bool:
    if not path:
        return False
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False


def drain_outputs(ctx: RuntimeContext, timeout: float) -> None:
    """Hold the exit until containerd's client has read the output (see :class:`OutputDrain`).

    Skipped (and cut short) when the task is killed: a kill must stay prompt.
    """
    drain = OutputDrain()
    try:
        for path in (ctx.stdio.stdout, ctx.stdio.stderr):
            drain.watch(path)
        if not drain.wait(timeout, stop=lambda: ctx.kill_signal is not None):
            if ctx.kill_signal is not None:
                return  # killed while waiting: the exit must not wait for the reader
            log.warning(
                "container %s: output not read within %.1f s; reporting the exit anyway",
                ctx.container_id,
                timeout,
            )
    finally:
        drain.close()
