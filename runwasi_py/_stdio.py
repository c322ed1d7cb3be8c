"""A container's stdio, all of it: :class:`Stdio`, URI parsing, opening, unblocking, draining.

* :class:`Stdio` holds the paths containerd gave at Create (:meth:`Stdio.from_request`
  parses its URIs: a FIFO path or ``file://``); ``open_*`` open them on the worker thread.
* Opening one end of a FIFO blocks until the other end is opened. stdin:
  :func:`stdin_opens_at_once` (the client may never open its end). A task killed while its
  worker waits must still exit: :class:`FifoUnblocker`.
* stdout/stderr FIFOs: :class:`OutputHold`, read-write fds held for the whole run, as
  runc's shim holds its FIFOs (``open_stdout``/``open_stderr`` open them read-write too).
  An ``O_RDWR`` open of a FIFO never waits, and while it is held an engine's write-only
  open returns at once: ``ctr run -d`` (whose reader left with ``ctr``), ``ctr task attach``
  later and CRI all see the guest start. What the guest writes with no reader is kept up
  to the pipe's buffer, after which its writes block, as under runc; a later reader reads
  it. A kill drains a full pipe nobody reads (:meth:`OutputHold.discard_after_kill`), so a
  guest blocked writing returns to code where it can be stopped.
* stdout/stderr into a regular file (``file://`` log URIs), appended as runc does:
  :class:`AppendingOutput` (for engines that take a write callback).
* :func:`drain_outputs` holds a task's exit until containerd's client has read its output.

The kill side, done from the kill callback on the control thread: open every stdio FIFO
``O_RDWR | O_NONBLOCK``. On Linux an ``O_RDWR`` open of a FIFO never blocks and counts as
both a reader and a writer, so any open the worker is blocked in (or is about to start)
returns at once, whichever end it wants. The fds stay open until the run ends, because
Linux wakes a blocked opener by counting peer opens and an open-then-close right before
the worker's open would be missed. For stdin, one newline is written as well: that is the
only way to return a blocked ``fd_read`` (containerd still holds its writer, so no EOF
comes); the guest is back in wasm code, past its epoch deadline, and traps at its next
function entry or loop header.

Draining: containerd's client (``ctr``, CRI) opens
 its FIFO read ends in goroutines, and once the task
has exited it cancels any reader whose open has not completed: whatever the program wrote
is then dropped unread. runc's shim opens the write ends at Create, seconds earlier; a shim
that runs a short program at Start can finish before the client's reader is scheduled (seen
under load: 25 of 200 ``ctr run`` lost stdout or stderr). So the framework waits, after
``run_wasi`` returns and before the exit is reported, until each output pipe is empty or has
lost its readers (usually about a millisecond), for every Sandbox, not only the bundled one.
An :class:`OutputHold` is closed before the drain: it counts as a reader, and the drain
waits for the pipe to be read or to lose its readers. A real reader keeps the pipe and its
unread bytes alive and sees end-of-file once the drain lets go; with no reader at all the
bytes go, as they do when a runc container ends with nobody attached.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import stat
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from runwasi_py._errors import InvalidArgument

if TYPE_CHECKING:
    from runwasi_py._context import RuntimeContext

__all__ = [
    "AppendingOutput",
    "FifoUnblocker",
    "OutputDrain",
    "OutputHold",
    "Stdio",
    "drain_outputs",
    "stdin_opens_at_once",
]

log = logging.getLogger("runwasi_py")

_DISCARD_GRACE = 0.1  # seconds a killed guest's output stays for its reader before it goes


@dataclass(frozen=True, slots=True)
class Stdio:
    """The container's stdio: paths of containerd's FIFOs or files ("" = not connected).

    The ``open_*`` helpers must run on the instance's worker thread: opening the stdin FIFO
    blocks until its writer opens the other end; stdout/stderr FIFOs open read-write and
    never wait (output is kept up to the pipe's buffer until a reader comes).
    """

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    _fifos: dict[str, bool] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    """Which of the paths are FIFOs, looked up once per task: a run's stdio set-up, kill
    path and drain all ask, and each ``stat`` from Python is a GIL hand-over on a busy shim."""

    def is_fifo(self, path: str) -> bool:
        """Whether ``path`` (one of these paths) is a FIFO; remembered for this Stdio.

        containerd makes its FIFOs before Create and they stay for the task's life; a path
        that is not one (a log file, or none yet) never becomes one.
        """
        if not path:
            return False
        known = self._fifos.get(path)
        if known is None:
            known = self._fifos[path] = _is_fifo(path)
        return known

    @classmethod
    def from_request(cls, stdin: str, stdout: str, stderr: str) -> Stdio:
        """The paths of CreateTaskRequest's stdio URIs (a FIFO path or ``file://``).

        Raises InvalidArgument naming the stream for any other scheme.

        >>> Stdio.from_request("", "/run/fifo/out", "file:///var/log/c1.log").stderr
        '/var/log/c1.log'
        """
        return cls(
            stdin=_uri_path(stdin, "stdin"),
            stdout=_uri_path(stdout, "stdout"),
            stderr=_uri_path(stderr, "stderr"),
        )

    def unblocker(self) -> FifoUnblocker:
        """A :class:`FifoUnblocker` for these FIFOs, for the engine's kill callback."""
        return FifoUnblocker(self.stdin, [self.stdout, self.stderr], is_fifo=self.is_fifo)

    def output_hold(self) -> OutputHold:
        """An :class:`OutputHold` on the stdout/stderr FIFOs, for the length of a run."""
        return OutputHold([self.stdout, self.stderr], is_fifo=self.is_fifo)

    def open_stdin(self) -> BinaryIO | None:
        """stdin for reading, unbuffered; None when not connected."""
        return open(self.stdin, "rb", buffering=0) if self.stdin else None

    def open_stdout(self) -> BinaryIO | None:
        """stdout for appending, unbuffered; None when not connected."""
        return _open_out(self.stdout)

    def open_stderr(self) -> BinaryIO | None:
        """stderr for appending, unbuffered; None when not connected."""
        return _open_out(self.stderr)


def _open_out(path: str) -> BinaryIO | None:
    if not path:
        return None
    # A FIFO read-write, as runc's shim holds them: no wait for a reader (see OutputHold).
    mode = os.O_RDWR if _is_fifo(path) else os.O_WRONLY
    fd = os.open(path, mode | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb", buffering=0)


def _uri_path(value: str, which: str) -> str:
    if not value:
        return ""
    if "\0" in value:
        raise InvalidArgument(f"{which} {value!r}: a path cannot contain a NUL byte")
    if value.startswith("file://"):
        return value[len("file://") :]
    if "://" in value:
        raise InvalidArgument(f"{which} {value!r}: only FIFO and file:// stdio are supported")
    return value


class FifoUnblocker:
    """The stdio FIFOs of one instance, and the means to unblock anything waiting on them."""

    def __init__(
        self, stdin: str, outputs: list[str], *, is_fifo: Callable[[str], bool] | None = None
    ) -> None:
        is_fifo = is_fifo or _is_fifo
        self._stdin = stdin if is_fifo(stdin) else ""
        self._outputs = [p for p in outputs if is_fifo(p)]
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

    def __init__(self, paths: list[str], *, is_fifo: Callable[[str], bool] | None = None) -> None:
        is_fifo = is_fifo or _is_fifo
        self._fds: list[int] = []
        for path in paths:
            if not is_fifo(path):
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

    def watch(self, path: str, *, is_fifo: Callable[[str], bool] | None = None) -> None:
        """Hold a write fd on the FIFO ``path``; nothing if it is none or has no reader.

        ``is_fifo``: how to tell (default: a ``stat``; :meth:`Stdio.is_fifo` remembers)."""
        if not (is_fifo or _is_fifo)(path):
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
            drain.watch(path, is_fifo=ctx.stdio.is_fifo)
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
