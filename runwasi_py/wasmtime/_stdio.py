"""The container's stdio for wasmtime-py: FIFOs that cannot outlive a kill, appended logs.

wasmtime-py takes stdio only as paths (or a Python callback) and opens them itself, and
opening one end of a FIFO blocks until the other end is opened.

- stdin: :func:`stdin_opens_at_once` (the client may never open its end).
- stdout/stderr in a regular file (``file://`` log URIs): :class:`AppendingOutput`.
- stdout/stderr FIFOs: :class:`OutputHold`, read-write fds held for the whole run, as
  runc's shim holds its FIFOs. An ``O_RDWR`` open of a FIFO never waits, and while it is
  held wasmtime's write-only open returns at once too: ``ctr run -d`` (whose reader left
  with ``ctr``), ``ctr task attach`` later and CRI all see the guest start. What the guest
  writes with no reader is kept up to the pipe's buffer, after which its writes block, as
  under runc; a reader that comes later reads it.
- a guest blocked in ``fd_read`` on stdin, or in ``fd_write`` on a full pipe, sits in host
  code, where epoch interruption cannot reach it: :class:`FifoUnblocker` and
  :meth:`OutputHold.discard_after_kill`.

The kill side, done from the kill callback on the control thread: open every stdio FIFO
``O_RDWR | O_NONBLOCK``. On Linux an ``O_RDWR`` open of a FIFO never blocks and counts as
both a reader and a writer, so any open the worker is blocked in (or is about to start)
returns at once, whichever end it wants. The fds stay open until the run ends, because
Linux wakes a blocked opener by counting peer opens and an open-then-close right before
the worker's open would be missed. For stdin, one newline is written as well: that is the
only way to return a blocked ``fd_read`` (containerd still holds its writer, so no EOF
comes); the guest is back in wasm code, past its epoch deadline, and traps at its next
function entry or loop header.

Output must be read before the exit is reported: the framework's ``runwasi_py._output_drain``
waits for that after ``run_wasi`` returns, for every Sandbox. The hold is closed before:
it counts as a reader, and the drain waits for the pipe to be read or to lose its readers.
Closing it first keeps end-of-file and the drain as they were: a real reader keeps the pipe
and its unread bytes alive and sees end-of-file once the drain lets go; with no reader at
all the bytes go, as they do when a runc container ends with nobody attached.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Iterator

__all__ = ["AppendingOutput", "FifoUnblocker", "OutputHold", "stdin_opens_at_once"]

_DISCARD_GRACE = 0.1  # seconds a killed guest's output stays for its reader before it is dropped


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


class OutputHold:
    """Read-write fds on the stdout/stderr FIFOs for the length of one run.

    Open before wasmtime opens the paths (worker thread); :meth:`close` after the Store is
    closed and before the output drain.
    """

    def __init__(self, paths: list[str]) -> None:
        self._fds: list[int] = []
        for path in paths:
            if not _is_fifo(path):
                continue
            try:
                self._fds.append(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
            except OSError:
                continue  # gone: wasmtime's own open will report it
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._discarding = False

    def discard_after_kill(self) -> None:
        """A kill: if the guest is still running after a short grace, keep reading (and
        dropping) its output, so a write blocked on a full pipe returns and the guest
        reaches its epoch check. Any thread; idempotent."""
        with self._lock:
            if self._discarding or not self._fds or self._closed.is_set():
                return
            self._discarding = True
        threading.Thread(target=self._discard, name="stdio-discard", daemon=True).start()

    def _discard(self) -> None:
        if self._closed.wait(_DISCARD_GRACE):
            return
        while not self._closed.is_set():
            with self._lock:  # close() must not free an fd number while it is read here
                if self._closed.is_set():
                    return
                for fd in self._fds:
                    with contextlib.suppress(OSError):
                        while os.read(fd, 65536):
                            pass
            self._closed.wait(0.005)

    def close(self) -> None:
        """Let go of the FIFOs (worker thread, once the guest's own fds are closed)."""
        with self._lock:
            self._closed.set()
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
