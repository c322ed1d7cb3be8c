"""Streaming RPCs (protocol 1.2): Go's streaming integration suite and the flag rules of §1.9."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.ttrpc.harness import RawConnection, leak_check, serving, unique_address, wait_for
from tests.ttrpc.messages import EchoPayload, Empty, Part, Sum
from ttrpc import CallContext, Client, ClosedError, Code, MethodKind, Service, TtrpcError, rpc
from ttrpc._wire import pack_header

pytestmark = pytest.mark.anyio

NAME = "ttrpc.integration.streaming.Streaming"


class Streaming(Service):
    """Go's ``ttrpc.integration.streaming.Streaming`` test service."""

    service_name = NAME

    def __init__(self) -> None:
        self.contexts: list[CallContext] = []
        self.received: list[Any] = []
        self.unread_started = asyncio.Event()

    @rpc
    async def echo(self, request: EchoPayload, context: CallContext) -> EchoPayload:
        return EchoPayload(seq=request.seq + 1, msg=request.msg)

    @rpc
    async def echo_stream(
        self, requests: AsyncIterator[EchoPayload], context: CallContext
    ) -> AsyncIterator[EchoPayload]:
        async for r in requests:
            yield EchoPayload(seq=r.seq + 1, msg=r.msg)

    @rpc
    async def sum_stream(self, requests: AsyncIterator[Part], context: CallContext) -> Sum:
        total = num = 0
        async for part in requests:
            total += part.add
            num += 1
        return Sum(sum=total, num=num)

    @rpc
    async def divide_stream(self, request: Sum, context: CallContext) -> AsyncIterator[Part]:
        parts = [0] * request.num
        for i in range(request.sum):
            parts[i % max(request.num, 1)] += 1 if request.num else 0
        for p in parts:
            yield Part(add=p)  # zeros go out as zero-length Data frames

    @rpc
    async def echo_null(self, requests: AsyncIterator[EchoPayload], context: CallContext) -> Empty:
        async for r in requests:
            self.received.append(r)
        return Empty()

    @rpc
    async def echo_null_stream(
        self, requests: AsyncIterator[EchoPayload], context: CallContext
    ) -> AsyncIterator[Empty]:
        async for _ in requests:
            for _ in range(10):
                yield Empty()

    @rpc
    async def empty_payload_stream(
        self, request: Empty, context: CallContext
    ) -> AsyncIterator[EchoPayload]:
        yield EchoPayload(seq=1)
        yield EchoPayload(seq=2)

    @rpc
    async def context_probe(self, request: Empty, context: CallContext) -> AsyncIterator[Empty]:
        self.contexts.append(context)
        yield Empty()

    @rpc
    async def flood(self, request: Part, context: CallContext) -> AsyncIterator[Part]:
        for i in range(request.add):
            yield Part(add=i)

    @rpc
    async def never_read(self, requests: AsyncIterator[Part], context: CallContext) -> Sum:
        self.unread_started.set()
        await asyncio.sleep(3600)
        return Sum()

    @rpc
    async def fail_after(self, request: Part, context: CallContext) -> AsyncIterator[Part]:
        for i in range(request.add):
            yield Part(add=i + 1)
        raise TtrpcError(Code.ABORTED, "stopped")

    @rpc
    async def hang(self, request: Part, context: CallContext) -> AsyncIterator[Part]:
        await asyncio.sleep(3600)
        yield Part()


async def test_echo_then_bidi_stream_round_trips() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        reply = await client.call(NAME, "Echo", EchoPayload(seq=1, msg="hi"), EchoPayload)
        assert (reply.seq, reply.msg) == (2, "hi")
        stream = await client.stream(NAME, "EchoStream", MethodKind.BIDI_STREAM, EchoPayload)
        for i in range(100):
            await stream.send(EchoPayload(seq=i, msg=f"m{i}"))
            got = await stream.recv()
            assert (got.seq, got.msg) == (i + 1, f"m{i}")
        await stream.close_send()
        with pytest.raises(EOFError):
            await stream.recv()


async def test_client_stream_with_empty_messages() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(NAME, "SumStream", MethodKind.CLIENT_STREAM, Sum)
        parts = [Part(add=1), Part(), Part(add=-3), Part(), Part(add=40)]
        for p in parts:
            await stream.send(p)
        result = await stream.close_and_recv()
        assert (result.sum, result.num) == (38, 5)


async def test_server_stream_with_empty_parts() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(
            NAME, "DivideStream", MethodKind.SERVER_STREAM, Part, request=Sum(sum=3, num=6)
        )
        parts = [p.add async for p in stream]
        assert sorted(parts) == [0, 0, 0, 1, 1, 1]
        with pytest.raises(ValueError, match="needs its request"):
            await client.stream(NAME, "DivideStream", MethodKind.SERVER_STREAM, Part)


async def test_echo_null_client_stream() -> None:
    service = Streaming()
    async with serving(service) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(NAME, "EchoNull", MethodKind.CLIENT_STREAM, Empty)
        for i in range(5):
            await stream.send(EchoPayload(seq=i, msg="null"))
        assert isinstance(await stream.close_and_recv(), Empty)
        assert [r.seq for r in service.received] == list(range(5))


async def test_echo_null_stream_until_eof() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(NAME, "EchoNullStream", MethodKind.BIDI_STREAM, Empty)

        async def sender() -> None:
            for i in range(10):
                await stream.send(EchoPayload(seq=i))
            await stream.close_send()

        send = asyncio.create_task(sender())
        async with asyncio.timeout(10):
            count = sum([1 async for _ in stream])
        await send
        assert count == 100


async def test_empty_payload_server_stream_runs() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        async with asyncio.timeout(5):
            stream = await client.stream(
                NAME, "EmptyPayloadStream", MethodKind.SERVER_STREAM, EchoPayload, request=Empty()
            )
            assert [m.seq async for m in stream] == [1, 2]


async def test_handler_context_ends_when_handler_returns() -> None:
    service = Streaming()
    async with serving(service) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(
            NAME, "ContextProbe", MethodKind.SERVER_STREAM, Empty, request=Empty()
        )
        assert len([m async for m in stream]) == 1
        (ctx,) = service.contexts
        async with asyncio.timeout(2):
            await ctx.wait_done()
        assert ctx.cancelled()


async def test_unconsumed_stream_does_not_block_connection() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        flood = await client.stream(
            NAME, "Flood", MethodKind.SERVER_STREAM, Part, request=Part(add=1000)
        )
        # Never read `flood`: the connection must still serve other calls.
        reply = await client.call(NAME, "Echo", EchoPayload(seq=7), EchoPayload)
        assert reply.seq == 8
        # ~1 s after its buffer filled, the unread stream alone is failed
        assert await wait_for(lambda: flood._inbox.ended, within=5)
        with pytest.raises(TtrpcError) as info:
            await flood.recv()
        assert (info.value.code, info.value.message) == (
            Code.RESOURCE_EXHAUSTED,
            "ttrpc: stream buffer full",
        )
        again = await client.stream(NAME, "EchoStream", MethodKind.BIDI_STREAM, EchoPayload)
        await again.send(EchoPayload(seq=1))
        assert (await again.recv()).seq == 2
        await again.close_send()
        assert [m async for m in again] == []


async def test_stream_full_on_server_closes_that_stream_only() -> None:
    service = Streaming()
    async with serving(service) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(NAME, "NeverRead", MethodKind.CLIENT_STREAM, Sum)
        await service.unread_started.wait()
        for i in range(100):
            try:
                await stream.send(Part(add=i))
            except ClosedError:
                break
        reply = await client.call(NAME, "Echo", EchoPayload(seq=1), EchoPayload)
        assert reply.seq == 2
        with pytest.raises(TtrpcError) as info:
            async with asyncio.timeout(5):
                await stream.recv()
        assert (info.value.code, info.value.message) == (
            Code.RESOURCE_EXHAUSTED,
            "ttrpc: stream buffer full",
        )


async def test_server_stream_error_after_messages() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(
            NAME, "FailAfter", MethodKind.SERVER_STREAM, Part, request=Part(add=2)
        )
        assert (await stream.recv()).add == 1
        assert (await stream.recv()).add == 2
        with pytest.raises(TtrpcError) as info:
            await stream.recv()
        assert (info.value.code, info.value.message) == (Code.ABORTED, "stopped")


async def test_stream_deadline_and_connection_loss() -> None:
    async with serving(Streaming()) as (server, address):
        client = await Client.connect(address)
        stream = await client.stream(
            NAME, "Hang", MethodKind.SERVER_STREAM, Part, request=Part(), timeout=0.05
        )
        with pytest.raises(TtrpcError) as info:
            await stream.recv()
        assert info.value.code is Code.DEADLINE_EXCEEDED
        stream = await client.stream(NAME, "Hang", MethodKind.SERVER_STREAM, Part, request=Part())
        bidi = await client.stream(NAME, "EchoStream", MethodKind.BIDI_STREAM, EchoPayload)
        await server.close()
        with pytest.raises(ClosedError):
            await stream.recv()
        with pytest.raises(ClosedError):
            await bidi.send(EchoPayload())
        with pytest.raises(ClosedError):
            await bidi.recv()
        await client.close()


async def test_send_on_server_stream_is_refused() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(
            NAME, "EmptyPayloadStream", MethodKind.SERVER_STREAM, EchoPayload, request=Empty()
        )
        with pytest.raises(TtrpcError) as info:
            await stream.send(EchoPayload())
        assert info.value.code is Code.FAILED_PRECONDITION
        assert len([m async for m in stream]) == 2


# --- wire-level flag rules with hand-made frames --------------------------------------------


async def test_wire_flags_of_a_client_stream() -> None:
    async with serving(Streaming()) as (_, address):
        raw = await RawConnection.open(address)
        # Go client: Request RO with empty payload, Data 0 per message, close = empty Data RC|ND
        await raw.send_request(1, NAME, "SumStream", flags=0x2)
        await raw.send(pack_header(2, 1, 3, 0) + bytes(Part(add=5)))
        await raw.send(pack_header(0, 1, 3, 0))  # an empty Part
        await raw.send(pack_header(0, 1, 3, 0x5))
        sid, resp = await raw.read_response()
        result = Sum.FromString(resp.payload)
        assert (sid, resp.code, result.sum, result.num) == (1, 0, 5, 2)
        await raw.close()


async def test_wire_flags_of_a_server_stream() -> None:
    async with serving(Streaming()) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, NAME, "EmptyPayloadStream", flags=0x1)
        assert await raw.read_frame() == (1, 3, 0, bytes(EchoPayload(seq=1)))
        assert await raw.read_frame() == (1, 3, 0, bytes(EchoPayload(seq=2)))
        assert await raw.read_frame() == (1, 3, 0x5, b"")
        # the stream is over: more Data is "no longer active"
        await raw.send(pack_header(0, 1, 3, 0))
        sid, resp = await raw.read_response()
        assert (sid, resp.message) == (1, "StreamID is no longer active")
        await raw.close()


async def test_request_payload_is_first_message_of_client_stream_when_non_empty() -> None:
    async with serving(Streaming()) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, NAME, "SumStream", bytes(Part(add=7)), flags=0x2)
        await raw.send(pack_header(0, 1, 3, 0x5))
        _, resp = await raw.read_response()
        assert (Sum.FromString(resp.payload).sum, Sum.FromString(resp.payload).num) == (7, 1)
        # an empty Request payload is not a message (Go's rule, ttrpc #126)
        await raw.send_request(3, NAME, "SumStream", flags=0x2)
        await raw.send(pack_header(0, 3, 3, 0x5))
        _, resp = await raw.read_response()
        assert Sum.FromString(resp.payload).num == 0
        await raw.close()


async def test_close_frame_with_payload() -> None:
    async with serving(Streaming()) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, NAME, "SumStream", flags=0x2)
        await raw.send(pack_header(2, 1, 3, 0x1) + bytes(Part(add=5)))
        sid, resp = await raw.read_response()
        assert (sid, resp.code, resp.message) == (1, 3, "data close message cannot include data")
        # the connection carries on
        await raw.send_request(3, NAME, "Echo", bytes(EchoPayload(seq=1)))
        sid, resp = await raw.read_response()
        assert (sid, EchoPayload.FromString(resp.payload).seq) == (3, 2)
        await raw.close()


async def test_data_after_close_is_refused() -> None:
    service = Streaming()
    async with serving(service) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, NAME, "NeverRead", flags=0x2)
        await service.unread_started.wait()
        await raw.send(pack_header(0, 1, 3, 0x5))
        await raw.send(pack_header(0, 1, 3, 0))
        sid, resp = await raw.read_response()
        assert (sid, resp.code, resp.message) == (
            1,
            3,
            "data handling error: ttrpc: stream closed",
        )
        await raw.close()


async def test_client_sends_gos_flags() -> None:
    """Our client's frames, seen by a hand-written server."""
    frames: list[tuple[int, int, int, bytes]] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(5):
            header = await reader.readexactly(10)
            length = int.from_bytes(header[:4], "big")
            frames.append((header[4:8][-1], header[8], header[9], await reader.readexactly(length)))
        writer.write(pack_header(0, 1, 2, 0) + pack_header(0, 3, 3, 0x5))
        await writer.drain()
        done.set()
        await reader.read()
        writer.close()
        await writer.wait_closed()

    async with leak_check():
        address = unique_address()
        server = await asyncio.start_unix_server(handle, address)
        client = await Client.connect(address)
        cs = await client.stream(NAME, "SumStream", MethodKind.CLIENT_STREAM, Sum)
        await cs.send(Part())
        await cs.send(Part(add=1))
        await cs.close_send()
        ss = await client.stream(
            NAME, "DivideStream", MethodKind.SERVER_STREAM, Part, request=Sum()
        )
        await done.wait()
        assert [(f[0], f[1], f[2]) for f in frames] == [
            (1, 1, 0x2),  # Request, remote open
            (1, 3, 0),  # empty message: zero-length Data, no flags
            (1, 3, 0),
            (1, 3, 0x5),  # close: its own empty frame, RC|ND
            (3, 1, 0x1),  # server-streaming Request: RC
        ]
        assert frames[1][3] == b""
        assert isinstance(await cs.recv(), Sum)
        assert [p async for p in ss] == []
        await client.close()
        server.close()
        await server.wait_closed()


async def test_interleaved_unary_and_streams_share_a_connection() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:

        async def bidi(n: int) -> list[int]:
            s = await client.stream(NAME, "EchoStream", MethodKind.BIDI_STREAM, EchoPayload)
            out = []
            for i in range(n):
                await s.send(EchoPayload(seq=i))
                out.append((await s.recv()).seq)
            await s.close_send()
            return out

        async def unary(i: int) -> int:
            return (await client.call(NAME, "Echo", EchoPayload(seq=i), EchoPayload)).seq

        results = await asyncio.gather(bidi(20), bidi(20), *(unary(i) for i in range(20)))
        assert results[0] == results[1] == list(range(1, 21))
        assert results[2:] == list(range(1, 21))


async def test_unary_call_to_stream_method_and_back() -> None:
    async with serving(Streaming()) as (_, address), await Client.connect(address) as client:
        # the server decides by registration: a unary-style call of a client-stream method
        # gets the payload as the only message
        reply = await client.call(NAME, "SumStream", Part(add=4), Sum)
        assert (reply.sum, reply.num) == (4, 1)
        with pytest.raises(ValueError, match="call"):
            await client.stream(NAME, "Echo", MethodKind.UNARY, EchoPayload)


class NotAGenerator(Service):
    service_name = "test.v1.NotAGenerator"

    @rpc
    async def refuse(self, request: Part, context: CallContext) -> AsyncIterator[Part]:
        raise TtrpcError(Code.UNIMPLEMENTED, "method Refuse")

    @rpc
    async def handoff(self, request: Part, context: CallContext) -> AsyncIterator[Part]:
        async def parts() -> AsyncIterator[Part]:
            for i in range(request.add):
                yield Part(add=i + 1)

        return parts()


async def test_server_stream_handler_may_be_a_coroutine() -> None:
    name = NotAGenerator.service_name
    async with serving(NotAGenerator()) as (_, address), await Client.connect(address) as client:
        stream = await client.stream(name, "Refuse", MethodKind.SERVER_STREAM, Part, request=Part())
        with pytest.raises(TtrpcError) as info:
            await stream.recv()
        assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Refuse")
        stream = await client.stream(
            name, "Handoff", MethodKind.SERVER_STREAM, Part, request=Part(add=3)
        )
        assert [p.add async for p in stream] == [1, 2, 3]
