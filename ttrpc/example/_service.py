"""The Example service's behaviour: what every peer of ``ttrpc.example.v1.Example`` answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ttrpc import CallContext, Code, TtrpcError
from ttrpc.example._gen.google.protobuf import Empty
from ttrpc.example._gen.ttrpc.example.v1 import (
    EchoRequest,
    EchoResponse,
    FailRequest,
    SleepRequest,
)
from ttrpc.example.example_ttrpc import ExampleBase

__all__ = ["ExampleService"]

_UINT32 = 0xFFFFFFFF
# asyncio (and uvloop's timer wheel) cannot schedule uint64-sized delays; a year is forever.
_MAX_SLEEP = 365 * 86400.0
_DEADLINE = "context deadline exceeded"


class ExampleService(ExampleBase):
    """``ttrpc.example.v1.Example`` as the interop tests and benchmarks expect it.

    Example:
        >>> server = ttrpc.Server()                        # doctest: +SKIP
        >>> server.register(ExampleService())              # doctest: +SKIP
        >>> await server.listen("/run/example.sock")       # doctest: +SKIP
    """

    async def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        """The same payload and seq back; metadata as sorted ``key=value`` strings."""
        md = context.metadata
        # Most calls carry no metadata: no generator and sort for them (about 1 us a call).
        return EchoResponse(
            payload=request.payload,
            seq=request.seq,
            metadata=sorted([f"{k}={v}" for k, v in md.items()]) if md else [],
        )

    async def sleep(self, request: SleepRequest, context: CallContext) -> Empty:
        """Sleep ``millis``; answer DeadlineExceeded as soon as the call's deadline passes."""
        delay = min(request.millis / 1000.0, _MAX_SLEEP)
        remaining = context.time_remaining()
        if remaining is not None and remaining < delay:
            # Same text as Go's context.DeadlineExceeded, so both servers answer alike.
            await asyncio.sleep(max(remaining, 0.0))
            raise TtrpcError(Code.DEADLINE_EXCEEDED, _DEADLINE)
        await asyncio.sleep(delay)
        return Empty()

    async def fail(self, request: FailRequest, context: CallContext) -> Empty:
        """Answer the status asked for (code 0 is success; an unknown code is Unknown)."""
        if request.code == 0:
            return Empty()
        raise TtrpcError(request.code, request.message)

    async def echo_stream(
        self, requests: AsyncIterator[EchoRequest], context: CallContext
    ) -> AsyncIterator[EchoResponse]:
        """Each message back with ``seq + 1`` (wrapping like a uint32)."""
        async for request in requests:
            yield EchoResponse(payload=request.payload, seq=(request.seq + 1) & _UINT32)

    async def sum_stream(
        self, requests: AsyncIterator[EchoRequest], context: CallContext
    ) -> EchoResponse:
        """One reply: the seqs summed (as a uint32), the payloads concatenated."""
        total = 0
        parts: list[bytes] = []
        async for request in requests:
            total += request.seq
            parts.append(request.payload)
        return EchoResponse(payload=b"".join(parts), seq=total & _UINT32)

    async def count(
        self, request: EchoRequest, context: CallContext
    ) -> AsyncIterator[EchoResponse]:
        """``request.seq`` messages numbered 1..seq, each carrying the request's payload."""
        for i in range(1, request.seq + 1):
            yield EchoResponse(payload=request.payload, seq=i)
