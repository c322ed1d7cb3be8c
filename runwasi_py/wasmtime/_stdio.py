"""Keep a kill from hanging on the container's stdio FIFOs: :class:`FifoUnblocker`.

wasmtime-py takes stdio only as paths and opens them itself, and opening one end of a FIFO
blocks until the other end is opened. containerd opens its ends first, so this normally
costs nothing; but a task killed while the worker waits (a peer that never came, a
debugger holding the pipe) would never exit. Likewise a guest blocked in ``fd_read`` on
stdin sits in host code, where epoch interruption cannot reach it.

The fix, done from the kill callback on the control thread: open every stdio FIFO
``O_RDWR | O_NONBLOCK``. On Linux an ``O_RDWR`` open of a FIFO never blocks and counts as
both a reader and a writer, so any open the worker is blocked in (or is about to start)
returns at once, whichever end it wants. The fds stay open until the run ends, because
Linux wakes a blocked opener by counting peer opens and an open-then-close right before
the worker's open would be missed. For stdin, one newline is written as well: that is the
only way to return a blocked ``fd_read`` (containerd still holds its writer, so no EOF
comes); the guest is back in wasm code, past its epoch deadline, and traps at its next
function entry or loop header.

Alternatives weighed: opening the FIFOs ourselves ``O_RDWR`` before wasmtime does would
make the worker never block, but then the instance would hold a writer on its own stdin
(no EOF, ever) or lose the blocking wait for containerd's writer; an ``/proc/self/fd``
path would have the same problem.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading

__all__ = ["FifoUnblocker"]


class FifoUnblocker:
    """The stdio FIFOs of one instance, and the means to unblock anything waiting on them."""

    def __init__(self, stdin: str, outputs: list[str]) -> None:
        self._stdin = stdin if _is_fifo(stdin) else ""
        self._outputs = [p for p in outputs if _is_fifo(p)]
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._released = False
        self._closed = False

    def release(self) -> None:
        """Unblock opens and stdin reads on these FIFOs (any thread; idempotent, quick)."""
        with self._lock:
            if self._released or self._closed:
                return
            self._released = True
            for path in [self._stdin, *self._outputs]:
                if not path:
                    continue
                try:
                    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue  # gone: nothing can be blocked on it
                self._fds.append(fd)
                if path == self._stdin:
                    with contextlib.suppress(OSError):  # a full pipe is readable anyway
                        os.write(fd, b"\n")

    def close(self) -> None:
        """Drop the fds :meth:`release` opened; later releases do nothing (worker thread)."""
        with self._lock:
            self._closed = True
            fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _is_fifo(path: str) -> bool:
    if not path:
        return False
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False
