"""The error vocabulary of ttrpc: gRPC status codes, a status error, and local failures.

This module is the single place where Python exceptions are mapped to status codes
(:func:`status_from_exception`), so a server answers every failure the same way.
"""

from __future__ import annotations

import enum
import errno


class Code(enum.IntEnum):
    """The gRPC status codes that ttrpc carries in ``google.rpc.Status.code``."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TtrpcError(Exception):
    """An RPC failed with a status: raised by clients, and raised by handlers to answer one.

    Example:
        >>> raise TtrpcError(Code.NOT_FOUND, "container c1 not created")
        Traceback (most recent call last):
        ...
        ttrpc._errors.TtrpcError: NOT_FOUND: container c1 not created
    """

    def __init__(self, code: Code | int, message: str = "") -> None:
        try:
            self.code: Code = Code(code)
        except ValueError:
            self.code = Code.UNKNOWN
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"TtrpcError({self.code.name}, {self.message!r})"


class ClosedError(TtrpcError):
    """The connection is closed (by us or by the peer); the call did not complete.

    Matches Go's ``ttrpc.ErrClosed`` ("ttrpc: closed").
    """

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)


class ProtocolError(Exception):
    """The peer broke the wire protocol in a way that ends the connection."""


_ERRNO_CODES = {
    errno.ENOENT: Code.NOT_FOUND,
    errno.EEXIST: Code.ALREADY_EXISTS,
    errno.EPERM: Code.PERMISSION_DENIED,
    errno.EACCES: Code.PERMISSION_DENIED,
    errno.EINVAL: Code.INVALID_ARGUMENT,
}


def status_from_exception(exc: BaseException) -> tuple[Code, str]:
    """Map an exception raised by a handler to the status the peer receives.

    The same classes map as in Go's ``convertCode``: a :class:`TtrpcError` keeps its
    code, timeouts are DeadlineExceeded, cancellation is Canceled, ``OSError`` by errno,
    ``NotImplementedError`` is Unimplemented, anything else Unknown with its text.
    """
    if isinstance(exc, TtrpcError):
        return exc.code, exc.message
    import asyncio  # here, not at the top: the shim's start path imports this module

    if isinstance(exc, TimeoutError):
        return Code.DEADLINE_EXCEEDED, str(exc) or "context deadline exceeded"
    if isinstance(exc, asyncio.CancelledError):
        return Code.CANCELLED, "context canceled"
    if isinstance(exc, EOFError):
        return Code.OUT_OF_RANGE, str(exc) or "EOF"
    if isinstance(exc, NotImplementedError):
        return Code.UNIMPLEMENTED, str(exc) or "not implemented"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_CODES:
        return _ERRNO_CODES[exc.errno], str(exc)
    if isinstance(exc, FileNotFoundError):
        return Code.NOT_FOUND, str(exc)
    if isinstance(exc, PermissionError):
        return Code.PERMISSION_DENIED, str(exc)
    return Code.UNKNOWN, str(exc) or type(exc).__name__
