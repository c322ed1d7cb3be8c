"""Client behaviour: on-close, closed errors, deadlines, ids, interceptors, odd servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.ttrpc.harness import TestService, leak_check, serving, unique_address, wait_for
from tests.ttrpc.messages import TestPayload
from ttrpc import (
    CallContext,
    Client,
    ClosedError,
    Code,
    Metadata,
    TtrpcError,
)
from ttrpc._envelope import Request, decode_request, encode_response
from ttrpc._wire import MAX_MESSAGE, pack_header

pytestmark = pytest.mark.anyio

Frame = tuple[int, int, int, bytes]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    header = await reader.readexactly(10)
    length = int.from_bytes(header[:4], "big")
    sid = int.from_bytes(header[4:8], "big")
    return sid, header[8], header[9], await reader.readexactly(length)


@asynccontextmanager
async def fake_server(handler: Handler) -> AsyncIterator[str]:
    """A hand-written ttrpc server: ``handler`` scripts exactly what it sends."""
    address = unique_address("fake")

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            await writer.wait_closed()

    async with leak_check():
        server = await asyncio.start_unix_server(run, address)
        try:
            yield address
        finally:
            server.close()
            await server.wait_closed()


def response(sid: int, body: bytes) -> bytes:
    return pack_header(len(body), sid, 2, 0) + body


async def call_test(client: Client, foo: str, **kw: Any) -> TestPayload:
    return await client.call("testService", "Test", TestPayload(foo=foo), TestPayload, **kw)


# --- Go: UserOnCloseWait, ClientEOF ----------------------------------------------------------


async def test_on_close_runs_once_and_wait_closed_waits_for_it() -> None:
    runs = 0
    release = asyncio.Event()

    async def on_close() -> None:
        nonlocal runs
        runs += 1
        await release.wait()

    async with serving() as (_, address):
        client = await Client.connect(address, on_close=on_close)
        await call_test(client, "x")
        close = asyncio.create_task(client.close())
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await client.wait_closed()
        assert client.closed
        release.set()
        await close
        await client.wait_closed()
        await client.close()
        assert runs == 1


async def test_sync_on_close_and_failing_on_close_are_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> None:
        raise RuntimeError("callback bug")

    async with serving() as (_, address):
        client = await Client.connect(address, on_close=broken)
        await client.close()
        assert any("on_close" in r.getMessage() for r in caplog.records)


async def test_pending_calls_fail_with_closed_error_when_peer_goes() -> None:
    service = TestService()
    service.release.clear()
    closed = asyncio.Event()
    async with serving(service) as (server, address):
        client = await Client.connect(address, on_close=closed.set)
        calls = [asyncio.create_task(call_test(client, str(i))) for i in range(3)]
        assert await wait_for(lambda: service.parked == 3)
        await server.close()
        for call in calls:
            with pytest.raises(ClosedError) as info:
                await call
            assert str(info.value) == "UNAVAILABLE: ttrpc: closed"
        await asyncio.wait_for(closed.wait(), 5)
        with pytest.raises(ClosedError):
            await call_test(client, "after")
        await client.close()


async def test_connect_failures() -> None:
    with pytest.raises(ConnectionRefusedError):
        await Client.connect(unique_address("nobody"))
    with pytest.raises(FileNotFoundError):
        await Client.connect("unix:///nonexistent/dir/x.sock")


# --- deadlines -------------------------------------------------------------------------------


async def test_client_deadline_sends_timeout_and_drops_late_reply() -> None:
    seen: list[Request] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid1, _, _, body1 = await read_frame(reader)
        seen.append(decode_request(body1))
        sid2, _, _, body2 = await read_frame(reader)  # sent after the first timed out
        seen.append(decode_request(body2))
        # the late reply to the first call, then the reply to the second
        writer.write(response(sid1, encode_response(payload=bytes(TestPayload(foo="late")))))
        writer.write(response(sid2, encode_response(payload=bytes(TestPayload(foo="ok")))))
        await writer.drain()
        await reader.read()

    async with fake_server(handler) as address, await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "a", timeout=0.05)
        assert (info.value.code, info.value.message) == (
            Code.DEADLINE_EXCEEDED,
            "context deadline exceeded",
        )
        assert (await call_test(client, "b")).foo == "ok"
        assert 0 < seen[0].timeout_nano <= 50_000_000
        assert seen[1].timeout_nano == 0
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "c", timeout=0)  # already expired: not even sent
        assert info.value.code is Code.DEADLINE_EXCEEDED


# --- wire details ------------------------------------------------------------------------------


async def test_ids_reach_the_server_strictly_increasing() -> None:
    ids: list[int] = []
    n = 200

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(n):
            sid, mtype, flags, _ = await read_frame(reader)
            assert (mtype, flags) == (1, 0)
            ids.append(sid)
            writer.write(response(sid, b""))
        await writer.drain()
        await reader.read()

    async with fake_server(handler) as address, await Client.connect(address) as client:
        await asyncio.gather(*(call_test(client, str(i)) for i in range(n)))
    assert ids == list(range(1, 2 * n, 2))


async def test_odd_server_replies() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sid, *_ = await read_frame(reader)
        # Rust style: an explicit OK status (0a 00) before the payload
        writer.write(response(sid, b"\x0a\x00" + encode_response(payload=b"\x0a\x01r")))
        sid, *_ = await read_frame(reader)
        n = MAX_MESSAGE + 1  # a frame over the limit fails that call only
        writer.write(pack_header(n, sid, 2, 0) + b"\x00" * n)
        sid, *_ = await read_frame(reader)
        writer.write(response(sid, encode_response(5, "nope")))
        sid, *_ = await read_frame(reader)
        writer.write(response(sid, b"\x0a"))  # a garbage envelope
        sid, *_ = await read_frame(reader)
        writer.write(response(sid, encode_response(payload=b"\x0a")))  # a garbage payload
        sid, *_ = await read_frame(reader)
        writer.write(pack_header(0, 99, 3, 0) + response(sid, b""))  # junk, then an Empty
        await writer.drain()
        await reader.read()

    async with fake_server(handler) as address, await Client.connect(address) as client:
        assert (await call_test(client, "1")).foo == "r"
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "2")
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "3")
        assert (info.value.code, info.value.message) == (Code.NOT_FOUND, "nope")
        for _ in range(2):
            with pytest.raises(TtrpcError) as info:
                await call_test(client, "4")
            assert info.value.code is Code.INTERNAL
        assert await call_test(client, "6") == TestPayload()


async def test_metadata_forms() -> None:
    got: list[list[tuple[str, str]]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            sid, _, _, body = await read_frame(reader)
            got.append(decode_request(body).metadata)
            writer.write(response(sid, b""))
        await writer.drain()
        await reader.read()

    async with fake_server(handler) as address, await Client.connect(address) as client:
        await call_test(client, "", metadata={"A": "1", "b": ["2", "3"]})
        md = Metadata()
        md.append("x", "1", "2")
        await call_test(client, "", metadata=md)
        await call_test(client, "", metadata=[("Raw-Key", "v")])
    assert got == [
        [("a", "1"), ("b", "2"), ("b", "3")],
        [("x", "1"), ("x", "2")],
        [("Raw-Key", "v")],
    ]


async def test_oversize_request_fails_locally() -> None:
    async with serving() as (_, address), await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "a" * 14155776)
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert (await call_test(client, "ok")).foo == "okok"


# --- interceptors ------------------------------------------------------------------------------


async def test_client_interceptor_chain_of_five() -> None:
    order: list[int] = []

    def make(i: int) -> Any:
        async def interceptor(ctx: CallContext, request: Any, call_next: Any) -> Any:
            assert ctx.full_method == "/testService/Test"
            order.append(i)
            if i == 2:
                ctx.metadata.set("foo", "from-interceptor")
            return await call_next(ctx, request)

        return interceptor

    async with (
        serving() as (_, address),
        await Client.connect(address, interceptors=[make(i) for i in range(5)]) as client,
    ):
        reply = await call_test(client, "a", timeout=30)
        assert (reply.foo, reply.metadata) == ("aa", "from-interceptor")
        assert reply.deadline > 0
    assert order == [0, 1, 2, 3, 4]


async def test_empty_interceptor_chain_is_a_no_op() -> None:
    async with serving() as (_, address), await Client.connect(address, interceptors=[]) as c:
        assert (await call_test(c, "q", metadata={"foo": "m"})).metadata == "m"


async def test_client_from_plain_path(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = str(tmp_path_factory.mktemp("c") / "s.sock")
    async with serving() as (server, _):
        await server.listen(path)
        async with await Client.connect(path) as client:
            assert (await call_test(client, "p")).foo == "pp"


async def test_close_of_a_never_connected_client_returns() -> None:
    client = Client()
    assert client.closed
    await asyncio.wait_for(client.close(), 1)


async def test_close_does_not_wait_for_a_server_that_stopped_reading() -> None:
    stop = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()  # never reads

    async with fake_server(handler) as address:
        client = await Client.connect(address)
        big = TestPayload(foo="x" * (MAX_MESSAGE - 100))
        calls = [asyncio.create_task(client.call("s", "m", big, TestPayload)) for _ in range(4)]
        await asyncio.sleep(0.05)
        await asyncio.wait_for(client.close(), 5)
        for call in calls:
            with pytest.raises(ClosedError):
                await call
        stop.set()
