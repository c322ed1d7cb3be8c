"""The container's stdio for wasmtime-py: FIFOs that cannot outlive a kill, appended logs.

wasmtime-py takes stdio only as paths (or a Python callback) and opens them itself, and
opening one end of a FIFO blocks until the other end is opened.

- stdin: :func:`stdin_opens_at_once` (the client may never open its end).
- stdout/stderr in a regular file (``file://`` log URIs): :class:`AppendingOutput`.
- stdout/stderr: containerd opens its readers before Create, so the open normally returns
  at once; it is allowed to wait for a late reader. But a task killed while the worker
  waits (a peer that never came) must still exit, and a guest blocked in ``fd_read`` on
  stdin sits in host code, where epoch interruption cannot reach it: :class:`FifoUnblocker`.

The kill side, done from the kill callback on the control thread: open every stdio FIFO
``O_RDWR | O_NONBLOCK``. On Linux an ``O_RDWR`` open of a FIFO never blocks and counts as
both a reader and a writer, so any open the worker is blocked in (or is about to start)
returns at once, whichever end it wants. The fds stay open until the run ends, because
Linux wakes a blocked opener by counting peer opens and an open-then-close right before
the worker's open would be missed. For stdin, one newline is written as well: that is the
only way to return a blocked ``fd_read`` (containerd still holds its writer, so no EOF
comes); the guest is back in wasm code, past its epoch deadline, and traps at its next
function entry or loop header.

Output must be read before the exit is reported: the framework's ``runwasi_py._stdio``
waits for that after ``run_wasi`` returns, for every Sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator

__all__ = ["AppendingOutput", "FifoUnblocker", "stdin_opens_at_once"]


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


@contextlib.contextmanager
def stdin_opens_at_once(path: str) -> Iterator[None]:
    """While inside, an ``O_RDONLY`` open of the stdin FIFO ``path`` does not wait for a writer.

    containerd's client may have come and gone: ``ctr run`` without ``-i`` copies an empty
    stdin and closes its end before it ever opened, so no writer will come and wasmtime's
    blocking open would wait forever (runc's shim opens stdin ``O_NONBLOCK`` for the same
    reason). Holding an ``O_RDWR`` fd makes the open return at once; it is closed on the
    way out so the guest does see end-of-file once the real writers are gone. A writer
    that is late is no problem: containerd's writer waits in ``open(O_WRONLY)``, and Linux
    counts a writer from the moment its open starts, so the guest's read blocks for its
    data instead of seeing a false end-of-file.
    """
    fd = None
    if _is_fifo(path):
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


class AppendingOutput:
    """stdout/stderr into a regular file, appended, as wasmtime's ``*_custom`` callback.

    wasmtime-py opens an output path with ``O_TRUNC`` and writes at its own offset, which
    would wipe a log file (``ctr run --log-uri file://…``) and let stdout and stderr
    overwrite each other when they share it. runc's shim appends; so does this. It runs
    Python (with the GIL) per write, so it is used for regular files only, never for
    containerd's FIFOs. Open on the worker thread; close after the Store is gone.
    """

    def __init__(self, path: str) -> None:
        self.fd: int | None = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def __call__(self, data: bytes) -> int:
        fd = self.fd
        if fd is None:
            return -errno.EBADF
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:  # never raise: wasmtime-py would only print it
            return -(exc.errno or errno.EIO)
        return len(data)

    def close(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _is_fifo(path: str) -> bool:
    if not path:
        return False
    try:
        return stat.S_ISFIFO(os.stat(path).st_mode)
    except OSError:
        return False
