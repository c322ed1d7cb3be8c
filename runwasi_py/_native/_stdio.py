"""A native container's stdio: containerd's FIFOs opened for runc to hand to the init.

``runc create`` without a terminal passes its own stdin/stdout/stderr to the container's
init, so the shim opens containerd's paths and gives runc those fds:

* stdout/stderr FIFOs are opened ``O_RDWR``, as the runc shim does: an open for writing alone
  would block until containerd's reader arrives, and ``O_RDWR`` never blocks. The shim keeps
  its copies until the init has exited, so the pipe (and what the init wrote) outlives a
  reader that is still on its way; at the exit :meth:`NativeStdio.finish` waits, bounded,
  until the reader has taken what is left, then closes them so the reader sees end-of-file.
  (The wasm path's ``_output_drain`` cannot be reused as is: it treats "no reader" as
  drained, and our own ``O_RDWR`` fd is a reader.)
* a stdin FIFO is opened twice: ``O_RDWR`` by the shim, which holds that write end, and
  ``O_RDONLY`` (made blocking) for the init. While the shim holds its writer, the init's
  reads wait for data instead of seeing end-of-file before containerd's client has opened
  its own writer (a pipe with no writer reads as EOF); containerd's CloseIO (sent when the
  client's input ends) drops the shim's writer (:meth:`NativeStdio.close_stdin`), and the
  init then reads end-of-file, as with the runc shim's stdin pipe.
* ``file://`` paths (containerd's file logging) are files opened for appending; an empty
  path is ``/dev/null``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import stat
import struct
import termios
import time
from collections.abc import Callable

from runwasi_py._errors import InvalidArgument
from runwasi_py._stdio import Stdio

__all__ = ["NativeStdio"]

log = logging.getLogger("runwasi_py.native")


class NativeStdio:
    """The fds of one container's stdio, owned by the shim until the init has exited.

    Example:
        >>> stdio = NativeStdio.open(Stdio(stdin="", stdout="/run/fifo/out", stderr=""))
        >>> await runc.create("c1", bundle, stdio=stdio.fds)
        >>> stdio.handed_over()             # the init has its own stdin copy now
        >>> await stdio.finish(drain_timeout=10)  # after the init exited
    """

    def __init__(self, paths: Stdio, fds: tuple[int, int, int], stdin_writer: int = -1) -> None:
        self.paths = paths
        self.fds = fds
        """(stdin, stdout, stderr) for runc; closed by :meth:`handed_over`/:meth:`finish`."""
        self._stdin_writer = stdin_writer
        self._stdin_open = True
        self._outputs_open = True

    @classmethod
    def open(cls, paths: Stdio) -> NativeStdio:
        """Open the three paths; InvalidArgument naming the stream that cannot be opened."""
        opened: list[int] = []
        try:
            stdin, writer = _open_stdin(paths.stdin)
            opened += [stdin, writer] if writer >= 0 else [stdin]
            stdout = _open_output(paths.stdout, "stdout")
            opened.append(stdout)
            stderr = _open_output(paths.stderr, "stderr")
            opened.append(stderr)
        except BaseException:
            for fd in opened:
                os.close(fd)
            raise
        return cls(paths, (stdin, stdout, stderr), writer)

    def handed_over(self) -> None:
        """runc has given the init its stdin: drop our copy of the init's end."""
        if self._stdin_open:
            self._stdin_open = False
            with contextlib.suppress(OSError):
                os.close(self.fds[0])

    def close_stdin(self) -> None:
        """CloseIO: drop the shim's stdin writer; with containerd's closed, the init reads EOF."""
        self.handed_over()
        writer, self._stdin_writer = self._stdin_writer, -1
        if writer >= 0:
            with contextlib.suppress(OSError):
                os.close(writer)

    async def finish(self, drain_timeout: float, stop: Callable[[], bool] = lambda: False) -> None:
        """After the init exited: wait until the output FIFOs are read empty, then close ours.

        Our ``O_RDWR`` fds keep each pipe and its unread bytes alive, also for a reader that
        opens only now; the wait ends when every output pipe is empty, at ``drain_timeout``,
        or as soon as ``stop()`` is true (the task was killed: its exit must stay prompt).
        """
        self.close_stdin()
        if not self._outputs_open:
            return
        pending = [fd for fd in self.fds[1:] if _is_fifo_fd(fd)]
        deadline = time.monotonic() + drain_timeout
        pause = 0.0005
        while pending:
            pending = [fd for fd in pending if _unread(fd) > 0]
            if not pending or stop():
                break
            if time.monotonic() >= deadline:
                log.warning("native container output not read within %.1f s", drain_timeout)
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)
        self.close()

    def close(self) -> None:
        """Close everything now (a failed create, or a delete that skips the drain)."""
        self.close_stdin()
        if self._outputs_open:
            self._outputs_open = False
            for fd in self.fds[1:]:
                with contextlib.suppress(OSError):
                    os.close(fd)


def _is_fifo_fd(fd: int) -> bool:
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def _unread(fd: int) -> int:
    """Bytes waiting in the pipe behind ``fd`` (0 when it cannot be asked)."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def _file_path(value: str) -> str | None:
    if value.startswith("file://"):
        return value[len("file://") :]
    if "://" in value:
        return None
    return value


def _open_stdin(value: str) -> tuple[int, int]:
    """(the init's stdin, the shim's writer or -1)."""
    path = _file_path(value) if value else os.devnull
    if path is None:
        raise InvalidArgument(f"stdin {value!r}: only FIFO and file:// stdio are supported")
    writer = -1
    try:
        if path != os.devnull and stat.S_ISFIFO(os.stat(path).st_mode):
            writer = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if writer >= 0:
            os.close(writer)
        raise InvalidArgument(f"stdin {value!r} cannot be opened: {e.strerror}") from None
    os.set_blocking(fd, True)  # the init reads it as an ordinary blocking stdin
    return fd, writer


def _open_output(value: str, which: str) -> int:
    if not value:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    if value.startswith("file://"):
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        path = value[len("file://") :]
    elif "://" in value:
        raise InvalidArgument(f"{which} {value!r}: only FIFO and file:// stdio are supported")
    else:
        path = value
        flags = os.O_RDWR | os.O_CLOEXEC  # a FIFO: never blocks, whether a reader is there
    try:
        return os.open(path, flags, 0o600)
    except OSError as e:
        raise InvalidArgument(f"{which} {value!r} cannot be opened: {e.strerror}") from None
