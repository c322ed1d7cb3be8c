"""Streams of protocol 1.2: the bounded per-stream inbox, the client's stream object and the
request iterator a server handler reads.

A stream that nobody reads must not stall its connection (Go ttrpc before #229 deadlocked
there). Each stream buffers up to :data:`STREAM_BUFFER` messages; past that, reading from the
socket pauses, and if the consumer has not made room within :data:`STREAM_FULL_TIMEOUT`
seconds the stream alone is failed with ResourceExhausted ``"ttrpc: stream buffer full"``
and reading resumes. Memory stays bounded and the other streams carry on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from ttrpc._errors import ClosedError, Code, TtrpcError
from ttrpc._protocol import FrameProtocol
from ttrpc._service import MethodKind

__all__ = ["STREAM_BUFFER", "STREAM_FULL", "ClientStream", "Inbox", "RequestStream"]

STREAM_BUFFER = 64
STREAM_FULL_TIMEOUT = 1.0
STREAM_FULL = "ttrpc: stream buffer full"

T = TypeVar("T")


class Inbox:
    """Raw payloads received on one stream, in order, bounded (see the module docstring)."""

    __slots__ = (
        "_ended",
        "_error",
        "_items",
        "_key",
        "_on_full",
        "_on_taken",
        "_proto",
        "_timer",
        "_waiter",
        "nbytes",
    )

    def __init__(
        self,
        proto: FrameProtocol,
        key: object,
        on_full: Callable[[], None],
        on_taken: Callable[[], None] | None = None,
    ) -> None:
        self._proto = proto
        self._on_taken = on_taken
        self.nbytes = 0
        """Bytes buffered here, not yet taken by the consumer (the server counts them)."""
        self._key = ("stream", key)
        self._on_full = on_full
        self._items: deque[bytes] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    @property
    def ended(self) -> bool:
        """No more messages will be added."""
        return self._ended

    def put(self, data: bytes) -> None:
        if self._ended:
            return
        self._items.append(data)
        self.nbytes += len(data)
        self._wake()
        if len(self._items) >= STREAM_BUFFER and self._timer is None:
            self._proto.pause_reading(self._key)
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(STREAM_FULL_TIMEOUT, self._full)

    def end(self, error: BaseException | None = None) -> None:
        """No more messages; ``error`` (if any) is raised after the buffered ones."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._unblock()
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End now, dropping what is buffered: the next get raises ``error``."""
        self._items.clear()
        self.nbytes = 0
        self._ended = False
        self.end(error)

    def _full(self) -> None:
        # fail() -> end() -> _unblock() cancels the (fired) timer and resumes reading.
        self.fail(TtrpcError(Code.RESOURCE_EXHAUSTED, STREAM_FULL))
        self._on_full()

    def _unblock(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._proto.resume_reading(self._key)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> bytes:
        """The next payload; raises the end error, or EOFError at a clean end."""
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise EOFError
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._items.popleft()
        self.nbytes -= len(data)
        if self._on_taken is not None:
            self._on_taken()
        if self._timer is not None and len(self._items) < STREAM_BUFFER:
            self._unblock()
        return data


def _decode(message_type: type[T], data: bytes) -> T:
    try:
        return message_type.FromString(data)  # type: ignore[attr-defined,no-any-return]
    except Exception as exc:
        raise TtrpcError(Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}") from exc


class RequestStream(Generic[T]):
    """Server side: the messages a client streams, as an async iterator of ``T``."""

    def __init__(self, inbox: Inbox, message_type: type[T]) -> None:
        self._inbox = inbox
        self._type = message_type

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            data = await self._inbox.get()
        except EOFError:
            raise StopAsyncIteration from None
        return _decode(self._type, data)


class ClientStream(Generic[T]):
    """A streaming call from the client's side; made by ``Client.stream``.

    ``send``/``close_send`` while the method is client-streaming; ``recv`` or ``async for``
    to read replies (``recv`` raises ``EOFError`` at the end, like Go's ``io.EOF``);
    ``close_and_recv`` for a client-streaming method's single reply.

    Example:
        >>> stream = await client.stream("svc.Name", "EchoStream", MethodKind.BIDI_STREAM,
        ...                              EchoResponse)            # doctest: +SKIP
        >>> await stream.send(EchoRequest(seq=1)); await stream.close_send()  # doctest: +SKIP
        >>> async for reply in stream: ...                        # doctest: +SKIP
    """

    def __init__(
        self,
        proto: Any,
        stream_id: int,
        kind: MethodKind,
        response_type: type[T],
        on_done: Callable[[int], None],
    ) -> None:
        self._proto = proto
        self.stream_id = stream_id
        self.kind = kind
        self._type = response_type
        self._on_done = on_done
        self._send_closed = not kind.client_streams
        self._inbox = Inbox(proto, stream_id, self._buffer_full)
        self._timer: asyncio.TimerHandle | None = None

    # --- fed by the client connection --------------------------------------------------

    def _data(self, data: bytes | None, end: bool) -> None:
        if data is not None:
            self._inbox.put(data)
        if end:
            self._inbox.end()
            self._finish_if_done()

    def _response(self, code: int, message: str, payload: bytes) -> None:
        if code:
            self._inbox.end(TtrpcError(code, message))
        else:
            if not self.kind.server_streams:
                self._inbox.put(payload)
            self._inbox.end()
        self._send_closed = True
        self._finish()

    def _fail(self, error: BaseException) -> None:
        self._inbox.fail(error)
        self._send_closed = True
        self._finish()

    def _buffer_full(self) -> None:
        self._send_closed = True
        self._proto.core.end_stream(self.stream_id)
        self._finish()

    def _deadline(self) -> None:
        self._timer = None
        self._proto.core.end_stream(self.stream_id)
        self._fail(TtrpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded"))

    def _finish_if_done(self) -> None:
        if self._send_closed and self._inbox.ended:
            self._finish()

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_done(self.stream_id)

    # --- public -----------------------------------------------------------------------

    async def send(self, message: Any) -> None:
        """Send one message (client- or bidi-streaming methods only)."""
        if self._send_closed:
            if not self.kind.client_streams:
                raise TtrpcError(Code.FAILED_PRECONDITION, "ttrpc: method is not client-streaming")
            raise ClosedError("ttrpc: stream closed")
        proto = self._proto
        data = proto.core.send_data(self.stream_id, message.SerializeToString())
        while proto.write_paused and not proto.is_closed:
            await proto.drain()
        if proto.is_closed:
            raise ClosedError()
        if self._send_closed:  # the call ended while we waited
            raise ClosedError("ttrpc: stream closed")
        proto.write(data)

    async def close_send(self) -> None:
        """Tell the server no more messages follow (an empty Data frame, flags RC|ND)."""
        if self._send_closed:
            return
        self._send_closed = True
        proto = self._proto
        if proto.is_closed:
            raise ClosedError()
        proto.write(proto.core.send_close(self.stream_id))
        self._finish_if_done()

    async def recv(self) -> T:
        """The next reply; ``EOFError`` at the end; the call's status as ``TtrpcError``."""
        return _decode(self._type, await self._inbox.get())

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            data = await self._inbox.get()
        except EOFError:
            raise StopAsyncIteration from None
        return _decode(self._type, data)

    async def close_and_recv(self) -> T:
        """Client-streaming: close the sending side and return the single reply."""
        await self.close_send()
        try:
            return await self.recv()
        except EOFError:
            raise TtrpcError(Code.INTERNAL, "ttrpc: stream ended without a reply") from None
