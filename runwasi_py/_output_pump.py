"""stdout/stderr into a regular file with no Python on the guest's writes: :class:`AppendingPipe`.

An engine that can only be given a path to open (wasmtime-py: ``stdout_file``) opens it
``O_TRUNC`` and writes at its own offset, which would wipe a log file and let stdout and
stderr overwrite each other; a write callback appends but runs Python on the guest's thread
for every write, so each write waits for the GIL: 20,000 small writes beside one busy
Python thread (a loaded shim's loop) took 37 s through the callback and 0.37 s through
this pipe. So the engine gets the write end of a pipe instead
(``/proc/self/fd/N``: opening it opens the pipe, where ``O_TRUNC`` means nothing), and one
process-wide pump thread appends what comes out of the pipes to their files (``O_APPEND``,
as runc's shim does). The guest writes at pipe speed and never waits for Python unless the
pipe is full.

:meth:`AppendingPipe.close`, after the engine has closed its end, copies what is left in
the pipe itself (so the file is complete before the exit is reported), bounded: a writer
that stays open (a leaked fd) ends in a warning, not a hang. stdout and stderr
sharing one file keep each stream's order; their interleaving is the pump's, as with runc.

Cheaper still, and the default where ``/proc`` is mounted: :func:`hand_appending_file`. The
pipe is only the target of the engine's open (O_TRUNC means nothing to a pipe and its inode
is ours alone); as soon as the engine holds its fd, that fd is replaced (``dup2``) by one on
the log file opened ``O_APPEND``. The guest then writes straight into the file, as a runc
container does: no pump, no thread, no copy, and nothing to finish at the end: a hello run
with file stdio took 1.0 instead of 1.45 ms of CPU on one thread, before counting the pump
thread's wake-ups, which each take the GIL from the shim's loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable

__all__ = ["AppendingPipe", "hand_appending_file", "pipe_paths_work"]

log = logging.getLogger("runwasi_py")

_CLOSE_TIMEOUT = 5.0


def hand_appending_file(path: str, hand_over: Callable[[str], None]) -> bool:
    """Let an engine that can only be given a path write ``path`` appending, with no copy.

    ``hand_over(p)`` must make the engine open ``p`` for writing at once (wasmtime-py: the
    ``WasiConfig.stdout_file`` setter) and keep that fd for the run. The fd it opened is
    then swapped for one on ``path`` (``O_APPEND | O_CREAT``, mode 0600, as runc's shim
    opens logs), so the file is never truncated and stdout and stderr may share it.

    Returns False, with the engine left holding a pipe nobody reads, if the engine's fd
    cannot be found (it did not open ``p`` during ``hand_over``); the caller then hands
    over something else. Raises OSError if ``path`` cannot be opened (nothing handed over).
    """
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError:
        os.close(log_fd)
        raise
    try:
        pipe_st = os.fstat(w)
        pipe = (pipe_st.st_dev, pipe_st.st_ino)  # FIFOs on disks have inode numbers too
        # The kernel gives an open the lowest free fd: most likely the engine's will be
        # the one this dup frees again (another thread may take it first: then look).
        guess = os.dup(w)
        _close_holding_gil(guess)  # see there: the guess then holds more often
        hand_over(f"/proc/self/fd/{w}")
        theirs = _engine_fd(guess, pipe, (r, w))
        if theirs is None:
            return False
        # Atomic: the engine's fd number now means the log file; nothing was written yet.
        os.dup2(log_fd, theirs, inheritable=False)
        return True
    finally:
        # The pipe's ends: closing them cannot block, so it need not let go of the GIL (each
        # release is a hand-off). The log file's may (every close flushes on NFS or FUSE).
        _close_holding_gil(r)
        _close_holding_gil(w)
        with contextlib.suppress(OSError):
            os.close(log_fd)


def _close_holding_gil(fd: int) -> None:
    """``close(fd)`` without letting go of the GIL, as ``os.close`` does; errors ignored.

    Only for fds whose close cannot block (pipes: no flush, no last-close work).

    Between freeing the guessed fd and the engine's open, a thread that gets the GIL may
    open or close fds and move the engine's open elsewhere; with 8 tasks starting at once
    one hand-over in five missed the guess through ``os.close``, one in ten without it.
    """
    global _libc_close
    if _libc_close is None:
        import ctypes

        _libc_close = ctypes.PyDLL(None).close
    _libc_close(fd)


_libc_close: Callable[[int], int] | None = None


def _engine_fd(guess: int, pipe: tuple[int, int], ours: tuple[int, int]) -> int | None:
    """The fd, other than ``ours``, open on the pipe whose (device, inode) is ``pipe``."""

    def on_pipe(fd: int) -> bool:
        try:
            st = os.fstat(fd)
        except OSError:
            return False
        return stat.S_ISFIFO(st.st_mode) and (st.st_dev, st.st_ino) == pipe

    if guess not in ours and on_pipe(guess):
        return guess
    # Missed: other threads opened or closed fds meanwhile, and the engine's open took the
    # lowest one free then, most often a few below the guess. Only that open can have
    # given a fd on this pipe besides ours, so the first one found is the engine's: looked
    # for nearest first (each fstat lets go of the GIL; a shim has ~140 fds open at 8
    # tasks starting at once, and a miss used to stat them all).
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None
    fds.sort(key=lambda fd: abs(fd - guess))
    return next((fd for fd in fds if fd not in ours and fd != guess and on_pipe(fd)), None)


class AppendingPipe:
    """A pipe whose reads the pump appends to ``path``; hand :attr:`path` to the engine.

    Example:
        >>> out = AppendingPipe("/var/log/c1.log")
        >>> wasi.stdout_file = out.path      # the engine opens the pipe's write end
        >>> out.opened()                     # ours is not needed any more
        >>> ...                              # the guest runs and ends, its stdio closed
        >>> out.close()                      # the file now holds everything
    """

    def __init__(self, path: str) -> None:
        self._file = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            os.close(self._file)
            raise
        self._w: int | None = w
        os.set_blocking(w, True)  # the engine's writes block when the pipe is full
        self.done = threading.Event()
        self._write_error = False
        _pump().add(self)

    @property
    def path(self) -> str:
        """A path that opens the pipe's write end (only in this process)."""
        if self._w is None:
            raise ValueError("the pipe's write end is closed")
        return f"/proc/self/fd/{self._w}"

    def opened(self) -> None:
        """The engine has opened :attr:`path`: close our write end (EOF comes with theirs)."""
        w, self._w = self._w, None
        if w is not None:
            os.close(w)

    def close(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Copy what is left (bounded wait for end-of-file), then release it all.

        The caller's thread finishes the copy itself rather than waiting for the pump:
        handing over to the pump thread and back costs a GIL switch interval each way
        when the process is busy.
        """
        self.opened()
        if not _pump().detach(self):
            self.done.wait(timeout)  # the pump already saw the end-of-file
            return
        deadline = time.monotonic() + timeout
        try:
            while not self._move():
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self._r], [], [], left)[0]:
                    log.warning(
                        "output to %s: a writer stayed open; closing it unfinished", self._name()
                    )
                    return
        finally:
            self._release()

    # -- the pump's side --------------------------------------------------------------

    def _name(self) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{self._file}")
        except OSError:
            return f"fd {self._file}"

    def _move(self) -> bool:
        """Copy what the pipe holds into the file; True at end-of-file (pump thread)."""
        while True:
            try:
                chunk = os.read(self._r, 65536)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not chunk:
                return True
            if not self._write_error:
                self._append(chunk)

    def _append(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[os.write(self._file, view) :]
        except OSError as exc:
            # Keep draining (the guest must not block on a full pipe), drop the rest.
            self._write_error = True
            log.warning("output to %s lost: %s", self._name(), os.strerror(exc.errno or errno.EIO))

    def _release(self) -> None:
        for fd in (self._r, self._file):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.done.set()


class _Pump:
    """The one thread that moves every :class:`AppendingPipe`'s bytes (started on first use)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._lock = threading.Lock()
        self._pipes: dict[int, AppendingPipe] = {}
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="output-pump", daemon=True).start()

    def add(self, pipe: AppendingPipe) -> None:
        with self._lock:
            self._pipes[pipe._r] = pipe
        # epoll_ctl from any thread reaches a poll already waiting
        self._epoll.register(pipe._r, select.EPOLLIN | select.EPOLLHUP)

    def detach(self, pipe: AppendingPipe) -> bool:
        """Stop pumping ``pipe``, leaving its fds open; False if the pump already let it go."""
        with self._lock:
            if self._pipes.get(pipe._r) is not pipe:
                return False
            del self._pipes[pipe._r]
            with contextlib.suppress(OSError, ValueError):
                self._epoll.unregister(pipe._r)
            return True

    def _drop_locked(self, pipe: AppendingPipe) -> None:
        if self._pipes.get(pipe._r) is not pipe:
            return
        del self._pipes[pipe._r]
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(pipe._r)
        pipe._release()

    def _run(self) -> None:
        while True:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                # Under the lock: a drop from another thread never closes fds mid-copy.
                with self._lock:
                    pipe = self._pipes.get(fd)
                    if pipe is not None and pipe._move():
                        self._drop_locked(pipe)


_pump_lock = threading.Lock()
_the_pump: _Pump | None = None


def _pump() -> _Pump:
    global _the_pump
    with _pump_lock:
        # A forked child has no pump thread: it makes its own.
        if _the_pump is None or _the_pump._pid != os.getpid():
            _the_pump = _Pump()
        return _the_pump


def pipe_paths_work() -> bool:
    """Whether ``/proc/self/fd`` opens a pipe here (it does wherever /proc is mounted)."""
    return os.path.isdir("/proc/self/fd")
