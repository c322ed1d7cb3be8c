"""``CallContext``: what a handler or interceptor knows about the call it is serving."""

from __future__ import annotations

import asyncio
import time

from ttrpc._metadata import Metadata
from ttrpc._peercred import PeerCredentials

__all__ = ["CallContext", "server_context"]


class CallContext:
    """One RPC as seen by its handler (server) or by client interceptors.

    ``deadline`` is an absolute ``time.monotonic()`` value or None; ``peer`` holds the
    client's credentials on a server connection when they could be read.

    Example:
        >>> ctx = CallContext("test.v1.service", "Foo")
        >>> ctx.full_method
        '/test.v1.service/Foo'
    """

    __slots__ = ("_ended", "_metadata", "_waiter", "_wire", "deadline", "method", "peer", "service")

    def __init__(
        self,
        service: str,
        method: str,
        metadata: Metadata | None = None,
        deadline: float | None = None,
        peer: PeerCredentials | None = None,
    ) -> None:
        self.service = service
        self.method = method
        self._metadata = metadata
        self._wire: list[tuple[str, str]] | None = None
        self.deadline = deadline
        self.peer = peer
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def metadata(self) -> Metadata:
        """The call's metadata (on a server: as received; built on first use)."""
        md = self._metadata
        if md is None:
            wire = self._wire
            md = Metadata.from_wire(wire) if wire else Metadata()
            self._metadata = md
            self._wire = None
        return md

    @metadata.setter
    def metadata(self, value: Metadata) -> None:
        self._metadata = value
        self._wire = None

    @property
    def full_method(self) -> str:
        """``"/" + service + "/" + method``, as Go's interceptors see it."""
        return f"/{self.service}/{self.method}"

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (negative when past), or None without a deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def cancelled(self) -> bool:
        """True once the call has ended (handler returned, deadline, or connection gone)."""
        return self._ended

    async def wait_done(self) -> None:
        """Wait until the call has ended (see :meth:`cancelled`)."""
        if self._ended:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)

    def _finish(self) -> None:
        """Mark the call ended (called by the server once the handler is done)."""
        self._ended = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __repr__(self) -> str:
        return (
            f"CallContext({self.full_method!r}, metadata={self.metadata!r}, "
            f"deadline={self.deadline!r}, peer={self.peer!r})"
        )


def server_context(
    service: str,
    method: str,
    wire_metadata: list[tuple[str, str]],
    deadline: float | None,
    peer: PeerCredentials | None,
) -> CallContext:
    """A server call's context; its Metadata is built from the wire pairs only if read."""
    ctx = _new(CallContext)
    ctx.service = service
    ctx.method = method
    ctx._metadata = None
    ctx._wire = wire_metadata
    ctx.deadline = deadline
    ctx.peer = peer
    ctx._ended = False
    ctx._waiter = None
    return ctx


_new = object.__new__
