"""The daemon's log: logrus text lines written to the bundle's ``log`` FIFO.

containerd creates ``<bundle>/log`` as a FIFO, holds it open for reading (``O_RDWR``) from
before ``start`` until the shim is gone, and copies every line into its own log. Go shims
write logrus text there; so does this module, so a line reads the same in containerd's log
whichever shim wrote it::

    time="2026-11-28T23:59:59.123456789Z" level=info msg="task started" id=c1 pid=42

Two properties matter more than format: logging must never block the daemon's event loop
(the FIFO is written non-blocking; if containerd stops reading for 100 ms a line is dropped
and counted), and must never take the daemon down (write errors are swallowed: containerd
restarting closes the reader and a write then fails with EPIPE, SIGPIPE being ignored).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Final

__all__ = [
    "LogrusFormatter",
    "LogrusHandler",
    "format_value",
    "open_log_fifo",
    "setup_logging",
]

_LEVELS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
# attributes every LogRecord has; anything else came in through ``extra=`` and is a field
_RECORD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)
_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")
_WRITE_PATIENCE = 0.1  # seconds a full FIFO may hold up one line before it is dropped


def _level_name(levelno: int) -> str:
    if levelno in _LEVELS:
        return _LEVELS[levelno]
    if levelno < logging.DEBUG:
        return "trace"
    return _LEVELS[max(lvl for lvl in _LEVELS if lvl <= levelno)]


def _go_quote(text: str) -> str:
    """Go's ``%q``: double quotes, backslash escapes, printable Unicode kept as is."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_value(value: object) -> str:
    """A field value as logrus writes it: bare when made of safe characters, else quoted.

    >>> format_value("c1"), format_value("two words"), format_value("")
    ('c1', '"two words"', '')
    """
    text = value if isinstance(value, str) else str(value)
    if all(ch in _PLAIN for ch in text):
        return text
    return _go_quote(text)


def _timestamp(created: float, created_ns: int | None = None) -> str:
    ns = created_ns if created_ns is not None else int(created * 1e9)
    secs, frac = divmod(ns, 1_000_000_000)
    # containerd's RFC3339NanoFixed: always nine digits, UTC "Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class LogrusFormatter(logging.Formatter):
    """Format records as logrus text: ``time=… level=… msg=…`` then sorted ``key=value``.

    Fields come from ``extra=`` (``log.info("started", extra={"id": "c1"})``); an exception
    becomes an ``error`` field with the traceback on one line.

    Example:
        >>> handler.setFormatter(LogrusFormatter())
    """

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            "time=" + format_value(_timestamp(record.created, getattr(record, "created_ns", None))),
            "level=" + _level_name(record.levelno),
            "msg=" + format_value(record.getMessage()),
        ]
        fields = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
        fields.pop("created_ns", None)
        if record.exc_info and record.exc_info[0] is not None:
            fields.setdefault("error", self.formatException(record.exc_info).rstrip())
        elif record.exc_text:
            fields.setdefault("error", record.exc_text)
        if record.stack_info:
            fields.setdefault("stack", record.stack_info)
        parts.extend(f"{key}={format_value(fields[key])}" for key in sorted(fields))
        return " ".join(parts)


class LogrusHandler(logging.Handler):
    """Write formatted lines to a file descriptor without ever blocking for long or raising.

    The descriptor is typically the bundle's ``log`` FIFO (see :func:`open_log_fifo`); it is
    set non-blocking. A line that cannot be written within 100 ms is dropped and counted in
    :attr:`dropped`; the next line that gets through reports how many were lost.
    """

    def __init__(self, fd: int, level: int = logging.NOTSET, *, close_fd: bool = False) -> None:
        super().__init__(level)
        self.fd = fd
        self.dropped = 0
        self._close_fd = close_fd
        self._write_lock = threading.Lock()
        with contextlib.suppress(OSError):
            os.set_blocking(fd, False)
        self.setFormatter(LogrusFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        with self._write_lock:
            if self.dropped:
                note = f"{self.dropped} log lines dropped: the log FIFO was full or closed"
                if self._write(self._note(note)):
                    self.dropped = 0
            if not self._write(line.encode("utf-8", "backslashreplace")):
                self.dropped += 1

    def _note(self, text: str) -> bytes:
        stamp = _timestamp(time.time(), time.time_ns())
        return f'time="{stamp}" level=warning msg={format_value(text)}\n'.encode()

    def _write(self, data: bytes) -> bool:
        """Write all of ``data``; False if it could not (nothing or part written)."""
        view = memoryview(data)
        deadline = None
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                now = time.monotonic()
                deadline = deadline or now + _WRITE_PATIENCE
                if now >= deadline:
                    return False
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self.fd], [], deadline - now)
                continue
            except InterruptedError:
                continue
            except OSError:
                return False  # EPIPE (reader gone), EBADF...: logging must not fail the shim
            view = view[n:]
        return True

    def close(self) -> None:
        super().close()
        if self._close_fd:
            self._close_fd = False
            with contextlib.suppress(OSError):
                os.close(self.fd)


def open_log_fifo(bundle: str | os.PathLike[str]) -> int | None:
    """Open ``<bundle>/log`` for writing; None when there is none or nobody reads it.

    containerd holds the FIFO open for reading before it runs ``start``, so opening the
    writer side succeeds at once; the open is non-blocking anyway so that a FIFO left
    without a reader (containerd gone) fails with ENXIO instead of hanging the daemon.
    A regular file (tests, or an operator's choice) is appended to.
    """
    path = Path(bundle) / "log"
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        if not stat.S_ISFIFO(os.stat(path).st_mode):
            flags |= os.O_APPEND
        return os.open(path, flags)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENXIO, errno.EACCES, errno.ENOTDIR):
            raise
        return None


def setup_logging(
    bundle: str | os.PathLike[str] | None,
    *,
    debug: bool = False,
    default_level: int = logging.INFO,
    redirect_stderr: bool = True,
    logger: logging.Logger | None = None,
) -> LogrusHandler:
    """Send ``logger`` (default: the root logger) to the bundle's log FIFO in logrus format.

    With ``redirect_stderr`` the FIFO is also ``dup2``'d onto fd 2, as Go shims do, so that
    a crash traceback reaches containerd's log. Without a FIFO the lines go to fd 2 (which
    is ``/dev/null`` in a detached daemon). ``debug`` (containerd's ``-debug``) lowers the
    level to DEBUG.

    Example:
        >>> setup_logging(Path.cwd(), debug="-debug" in sys.argv)
    """
    fd = open_log_fifo(bundle) if bundle is not None else None
    if fd is None:
        handler = LogrusHandler(sys.stderr.fileno() if sys.stderr else 2)
    elif redirect_stderr:
        os.dup2(fd, 2)
        os.close(fd)
        handler = LogrusHandler(2)
    else:
        handler = LogrusHandler(fd, close_fd=True)
    target = logger if logger is not None else logging.getLogger()
    for old in [h for h in target.handlers if isinstance(h, LogrusHandler)]:
        target.removeHandler(old)
        old.close()
    target.addHandler(handler)
    target.setLevel(logging.DEBUG if debug else default_level)
    return handler
