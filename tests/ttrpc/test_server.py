"""Server behaviour: Go's server_test scenarios plus the bad-input cases, over real sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import socket
import stat
import time
from typing import Any

import pytest

from tests.ttrpc.harness import (
    RawConnection,
    TestService,
    fd_count,
    leak_check,
    serving,
    unique_address,
    wait_for,
)
from tests.ttrpc.messages import EchoRequest, EchoResponse, Empty, TestPayload
from ttrpc import CallContext, Client, ClosedError, Code, Server, Service, TtrpcError, rpc
from ttrpc._envelope import encode_response
from ttrpc._wire import MAX_MESSAGE, pack_header

pytestmark = pytest.mark.anyio


class Misc(Service):
    """Handlers for the error paths."""

    service_name = "test.v1.Misc"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.contexts: list[CallContext] = []

    @rpc
    async def sleep(self, request: EchoRequest, context: CallContext) -> Empty:
        self.contexts.append(context)
        self.started.set()
        try:
            await asyncio.sleep(request.seq / 1000)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Empty()

    @rpc
    async def fail(self, request: EchoRequest, context: CallContext) -> Empty:
        kind = request.payload.decode()
        if kind == "ttrpc":
            raise TtrpcError(Code.NOT_FOUND, "container c1 not found")
        if kind == "oserror":
            raise FileNotFoundError(2, "No such file or directory", "/x")
        if kind == "none":
            return None  # type: ignore[return-value]
        raise ValueError("boom")

    @rpc
    async def gated(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        if request.payload == b"wait":
            await self.gate.wait()
        return EchoResponse(seq=request.seq)

    @rpc
    async def big(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        return EchoResponse(payload=b"x" * request.seq)

    @rpc
    async def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        md = sorted(f"{k}={v}" for k, v in context.metadata.items())
        return EchoResponse(payload=request.payload, seq=request.seq, metadata=md)


async def call_test(client: Client, foo: str, **kw: Any) -> TestPayload:
    return await client.call("testService", "Test", TestPayload(foo=foo), TestPayload, **kw)


# --- Go: TestServer, Unimplemented, RequestTimeout -------------------------------------------


async def test_server_concurrent_calls_with_metadata() -> None:
    async with serving() as (_, address), await Client.connect(address) as client:
        names = ["TestServer-a", "TestServer-b"]
        replies = await asyncio.gather(*(call_test(client, n, metadata={"foo": n}) for n in names))
        assert [(r.foo, r.metadata) for r in replies] == [(n + n, n) for n in names]


async def test_unimplemented_service_and_method() -> None:
    async with serving() as (_server, address), await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("Not", "Found", Empty(), Empty)
        assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "service Not")
        with pytest.raises(TtrpcError) as info:
            await client.call("testService", "Found", Empty(), Empty)
        assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Found")


async def test_unknown_service_reply_is_byte_identical_to_go() -> None:
    async with serving() as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, "foo", "Bar")
        frame = await raw.read_frame()
        assert frame == (1, 2, 0, b"\x0a\x0f\x08\x0c\x12\x0bservice foo")
        await raw.close()


async def test_success_reply_has_no_status_and_empty_reply_is_zero_length() -> None:
    async with serving(Misc()) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, "test.v1.Misc", "Sleep")
        assert await raw.read_frame() == (1, 2, 0, b"")
        await raw.close()


async def test_request_deadline_is_visible_to_handler() -> None:
    async with serving() as (_, address), await Client.connect(address) as client:
        expected = time.time_ns() + 600 * 10**9
        reply = await call_test(client, "x", timeout=600.0)
        assert abs(reply.deadline - expected) < 5 * 10**9
        assert (await call_test(client, "x")).deadline == 0


async def test_expired_deadline_answers_deadline_exceeded() -> None:
    misc = Misc()
    async with serving(misc) as (_, address), await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("test.v1.Misc", "Sleep", EchoRequest(seq=10_000), Empty, timeout=0.05)
        assert info.value.code is Code.DEADLINE_EXCEEDED
        # the server side also gave up and cancelled the handler
        await asyncio.wait_for(misc.cancelled.wait(), 5)
        raw = await RawConnection.open(address)
        await raw.send_request(1, "test.v1.Misc", "Sleep", b"\x10\x01", timeout_nano=-1)
        sid, resp = await raw.read_response()
        assert (sid, resp.code, resp.message) == (1, 4, "context deadline exceeded")
        await raw.send_request(3, "test.v1.Misc", "Sleep", b"\x10\xe8\x07", timeout_nano=10**6)
        _, resp = await raw.read_response()
        assert (resp.code, resp.message) == (4, "context deadline exceeded")
        await raw.close()


# --- Go: Shutdown, Close, ImmediateShutdown, ConnectionsLeak, ServerEOF ----------------------


async def test_shutdown_finishes_parked_calls_and_closes_idle_connection() -> None:
    service = TestService()
    async with leak_check():
        server = Server()
        server.register(service)
        address = unique_address()
        await server.listen(address)
        serve = asyncio.create_task(server.serve_forever())
        busy = await Client.connect(address)
        idle_closed = asyncio.Event()
        idle = await Client.connect(address, on_close=idle_closed.set)
        await call_test(idle, "warm")
        service.release.clear()
        calls = [asyncio.create_task(call_test(busy, str(i))) for i in range(5)]
        assert await wait_for(lambda: service.parked == 5)
        shutdown = asyncio.create_task(server.shutdown())
        await asyncio.wait_for(idle_closed.wait(), 5)  # the idle connection goes first
        assert not shutdown.done()
        assert not busy.closed
        with pytest.raises(ConnectionRefusedError):
            await Client.connect(address)  # no longer accepting
        service.release.set()
        replies = await asyncio.gather(*calls)
        assert [r.foo for r in replies] == [str(i) * 2 for i in range(5)]
        await asyncio.wait_for(shutdown, 5)
        await asyncio.wait_for(serve, 5)
        assert server.connection_count == 0
        await busy.wait_closed()
        with pytest.raises(ClosedError):
            await call_test(busy, "late")
        await busy.close()
        await idle.close()


async def test_close_cancels_calls_and_returns_serve() -> None:
    misc = Misc()
    async with leak_check():
        server = Server()
        server.register(misc)
        address = unique_address()
        await server.listen(address)
        serve = asyncio.create_task(server.serve_forever())
        client = await Client.connect(address)
        call = asyncio.create_task(
            client.call("test.v1.Misc", "Sleep", EchoRequest(seq=60_000), Empty)
        )
        await misc.started.wait()
        await server.close()
        await asyncio.wait_for(serve, 5)
        with pytest.raises(ClosedError):
            await call
        assert misc.cancelled.is_set()
        assert server.connection_count == 0
        await client.close()


async def test_immediate_shutdown_then_serve_returns() -> None:
    async with leak_check():
        server = Server()
        await server.listen(unique_address())
        shutdown = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.001)
        await asyncio.wait_for(server.serve_forever(), 2)
        await shutdown
        await asyncio.wait_for(server.serve_forever(), 2)  # again: returns at once
        with pytest.raises(RuntimeError, match="server closed"):
            await server.listen(unique_address())


async def test_connections_do_not_leak() -> None:
    async with serving() as (server, address):
        before = server.connection_count
        fds = fd_count()
        client = await Client.connect(address)
        await call_test(client, "x")
        assert server.connection_count == before + 1
        await client.close()
        assert await wait_for(lambda: server.connection_count == before)
        assert await wait_for(lambda: fd_count() <= fds - 0)  # server closed its socket too


async def test_client_eof_after_server_close() -> None:
    closed = asyncio.Event()
    async with serving() as (server, address):
        client = await Client.connect(address, on_close=closed.set)
        await call_test(client, "x")
        await server.close()
        await asyncio.wait_for(closed.wait(), 5)
        with pytest.raises(ClosedError) as info:
            await call_test(client, "x")
        assert info.value.message == "ttrpc: closed"
        await client.close()


async def test_async_with_shuts_down() -> None:
    async with leak_check():
        async with Server() as server:
            server.register(TestService())
            address = unique_address()
            await server.listen(address)
            async with await Client.connect(address) as client:
                await call_test(client, "x")
        assert server.connection_count == 0


# --- bad input -----------------------------------------------------------------------------


async def test_oversize_call_is_refused_and_connection_stays_usable() -> None:
    async with serving() as (_, address), await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "a" * 4194305)
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert (await call_test(client, "ok")).foo == "okok"


async def test_oversize_frame_from_peer_is_answered_and_skipped() -> None:
    async with serving() as (_, address):
        raw = await RawConnection.open(address)
        n = MAX_MESSAGE + 1
        await raw.send(pack_header(n, 1, 1, 0) + b"\x00" * n)
        await raw.send_request(3, "testService", "Test", bytes(TestPayload(foo="z")))
        sid, resp = await raw.read_response()
        assert (sid, resp.code) == (1, Code.RESOURCE_EXHAUSTED)
        assert resp.message == f"message length {n} exceed maximum message size of 4194304"
        sid, resp = await raw.read_response()
        assert (sid, resp.code, TestPayload.FromString(resp.payload).foo) == (3, 0, "zz")
        await raw.close()


async def test_oversized_response_becomes_resource_exhausted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with serving(Misc()) as (_, address), await Client.connect(address) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("test.v1.Misc", "Big", EchoRequest(seq=MAX_MESSAGE), EchoResponse)
        assert info.value.code is Code.RESOURCE_EXHAUSTED
        assert "exceed maximum message size of 4194304" in info.value.message
        reply = await client.call("test.v1.Misc", "Big", EchoRequest(seq=10), EchoResponse)
        assert reply.payload == b"x" * 10


async def test_stream_id_rules_on_a_live_server() -> None:
    async with serving() as (_, address):
        raw = await RawConnection.open(address)
        payload = bytes(TestPayload(foo="a"))
        await raw.send_request(2, "testService", "Test", payload)
        assert await raw.read_response() == (
            2,
            _status(3, "StreamID must be odd for client initiated streams"),
        )
        await raw.send_request(5, "testService", "Test", payload)
        assert (await raw.read_response())[0] == 5
        for sid in (5, 3):
            await raw.send_request(sid, "testService", "Test", payload)
            assert await raw.read_response() == (
                sid,
                _status(3, "StreamID cannot be re-used and must increment"),
            )
        await raw.send(pack_header(1, 9, 3, 0) + b"x")
        assert await raw.read_response() == (9, _status(3, "StreamID is no longer active"))
        await raw.send(pack_header(2, 11, 1, 0) + b"\x0a\x05")
        sid, resp = await raw.read_response()
        assert (sid, resp.code) == (11, 3)
        assert resp.message.startswith("unmarshal request error: ")
        await raw.send_request(13, "testService", "Test", payload)
        sid, resp = await raw.read_response()
        assert (sid, TestPayload.FromString(resp.payload).foo) == (13, "aa")
        await raw.close()


def _status(code: int, message: str) -> Any:
    from ttrpc._envelope import Response

    return Response(code, message)


async def test_undecodable_payload_is_internal() -> None:
    async with serving() as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, "testService", "Test", b"\x0a")  # truncated field
        _, resp = await raw.read_response()
        assert resp.code == Code.INTERNAL
        assert resp.message.startswith("ttrpc: error unmarshalling payload: ")
        await raw.close()


async def test_handler_errors_map_to_statuses(caplog: pytest.LogCaptureFixture) -> None:
    async with serving(Misc()) as (_, address), await Client.connect(address) as client:

        async def fail(kind: str) -> TtrpcError:
            with pytest.raises(TtrpcError) as info:
                await client.call("test.v1.Misc", "Fail", EchoRequest(payload=kind.encode()), Empty)
            return info.value

        with caplog.at_level(logging.ERROR, logger="ttrpc"):
            err = await fail("ttrpc")
            assert (err.code, err.message) == (Code.NOT_FOUND, "container c1 not found")
            assert not caplog.records  # an intended status is not an error to log
            err = await fail("oserror")
            assert err.code is Code.NOT_FOUND
            err = await fail("none")
            assert (err.code, err.message) == (Code.UNKNOWN, "ttrpc: marshal called with nil")
            caplog.clear()
            err = await fail("value")
            assert (err.code, err.message) == (Code.UNKNOWN, "boom")
            (record,) = [r for r in caplog.records if r.exc_info]
            assert record.name == "ttrpc"
            assert "/test.v1.Misc/Fail" in record.getMessage()


async def test_peer_disconnecting_mid_call_cancels_handler() -> None:
    misc = Misc()
    async with serving(misc) as (server, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, "test.v1.Misc", "Sleep", bytes(EchoRequest(seq=60_000)))
        await misc.started.wait()
        await raw.close()
        await asyncio.wait_for(misc.cancelled.wait(), 5)
        assert await wait_for(lambda: server.connection_count == 0)
        assert misc.contexts[0].cancelled()


async def test_replies_in_completion_order() -> None:
    misc = Misc()
    async with serving(misc) as (_, address):
        raw = await RawConnection.open(address)
        await raw.send_request(1, "test.v1.Misc", "Gated", bytes(EchoRequest(payload=b"wait")))
        await raw.send_request(3, "test.v1.Misc", "Gated", bytes(EchoRequest(seq=3)))
        assert (await raw.read_response())[0] == 3
        misc.gate.set()
        assert (await raw.read_response())[0] == 1
        await raw.close()


async def test_unknown_frame_types_are_ignored() -> None:
    async with serving() as (_, address):
        raw = await RawConnection.open(address)
        await raw.send(pack_header(3, 1, 0x7F, 0) + b"abc" + pack_header(0, 1, 2, 0))
        await raw.send_request(3, "testService", "Test", bytes(TestPayload(foo="q")))
        sid, resp = await raw.read_response()
        assert sid == 3
        assert resp.code == 0
        await raw.close()


async def test_metadata_multi_values_and_case() -> None:
    async with serving(Misc()) as (_, address):
        raw = await RawConnection.open(address)
        md = [("Foo", "1"), ("bar", "x"), ("Foo", "2"), ("containerd-namespace-ttrpc", "default")]
        await raw.send_request(1, "test.v1.Misc", "Echo", b"", metadata=md)
        _, resp = await raw.read_response()
        assert EchoResponse.FromString(resp.payload).metadata == [
            "Foo=1",
            "Foo=2",
            "bar=x",
            "containerd-namespace-ttrpc=default",
        ]
        await raw.close()


async def test_slow_reader_bounds_server_memory() -> None:
    async with serving(Misc()) as (server, address):
        raw = await RawConnection.open(address)
        n = 64
        for i in range(n):
            await raw.send_request(
                2 * i + 1, "test.v1.Misc", "Big", bytes(EchoRequest(seq=1 << 20))
            )
        assert await wait_for(lambda: server.connection_count == 1)
        (conn,) = server._connections
        assert await wait_for(lambda: conn.write_paused)
        await asyncio.sleep(0.1)
        assert conn.transport is not None
        # unbounded would be 64 MiB; we stop at the high-water mark plus one reply
        assert conn.transport.get_write_buffer_size() < 8 << 20
        got = set()
        for _ in range(n):
            sid, resp = await raw.read_response()
            assert resp.code == 0
            assert len(resp.payload) > 1 << 20
            got.add(sid)
        assert got == {2 * i + 1 for i in range(n)}
        await raw.close()


# --- registration, interceptors, addresses -------------------------------------------------


async def test_same_service_under_two_names() -> None:
    svc = TestService()
    async with (
        serving((svc, "containerd.task.v2.Task"), (svc, "containerd.task.v3.Task")) as (
            server,
            address,
        ),
        await Client.connect(address) as client,
    ):
        for name in ("containerd.task.v2.Task", "containerd.task.v3.Task"):
            reply = await client.call(name, "Test", TestPayload(foo="v"), TestPayload)
            assert reply.foo == "vv"
        with pytest.raises(ValueError, match="already registered"):
            server.register(svc, name="containerd.task.v2.Task")


def test_method_full_name() -> None:
    assert CallContext("test.v1.service", "Foo").full_method == "/test.v1.service/Foo"


async def test_server_interceptor_chain_runs_in_order() -> None:
    order: list[int] = []

    def make(i: int) -> Any:
        async def interceptor(ctx: CallContext, request: Any, call_next: Any) -> Any:
            assert ctx.full_method == "/testService/Test"
            order.append(i)
            reply = await call_next(ctx, request)
            order.append(-i)
            if i == 0:
                reply.foo += "!"
            return reply

        return interceptor

    async with (
        serving(interceptors=[make(i) for i in range(5)]) as (_, address),
        await Client.connect(address) as client,
    ):
        assert (await call_test(client, "a")).foo == "aa!"
    assert order == [0, 1, 2, 3, 4, -4, -3, -2, -1, -0]


async def test_server_interceptor_can_reject() -> None:
    async def deny(ctx: CallContext, request: Any, call_next: Any) -> Any:
        if ctx.metadata.first("token") != "yes":
            raise TtrpcError(Code.PERMISSION_DENIED, "no token")
        return await call_next(ctx, request)

    async with (
        serving(interceptors=[deny]) as (_, address),
        await Client.connect(address) as client,
    ):
        with pytest.raises(TtrpcError) as info:
            await call_test(client, "a")
        assert info.value.code is Code.PERMISSION_DENIED
        assert (await call_test(client, "a", metadata={"Token": "yes"})).foo == "aa"


@pytest.fixture
def socket_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("sock")
    return str(d)


async def test_listen_on_path_mode_stale_and_cleanup(socket_dir: str) -> None:
    path = os.path.join(socket_dir, "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a leftover socket file nobody listens on
    async with leak_check():
        server = Server()
        server.register(TestService())
        await server.listen("unix://" + path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        other = Server()
        with pytest.raises(OSError, match="already in use"):
            await other.listen(path)
        async with await Client.connect("unix://" + path) as client:
            assert (await call_test(client, "p")).foo == "pp"
        await server.shutdown()
        assert not _exists(path)


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def test_listen_refuses_to_replace_a_regular_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        await Server().listen(str(path))
    assert path.read_bytes() == b"keep"


async def test_listen_socket_inherited() -> None:
    address = unique_address()
    async with leak_check():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address)
        sock.listen()
        server = Server()
        server.register(TestService())
        await server.listen_socket(sock)
        async with await Client.connect(address) as client:
            assert (await call_test(client, "i")).foo == "ii"
        await server.shutdown()
        assert sock.fileno() == -1  # closed with the server


async def test_shutdown_timeout_forces_close() -> None:
    misc = Misc()
    async with leak_check():
        server = Server()
        server.register(misc)
        address = unique_address()
        await server.listen(address)
        client = await Client.connect(address)
        call = asyncio.create_task(
            client.call("test.v1.Misc", "Sleep", EchoRequest(seq=60_000), Empty)
        )
        await misc.started.wait()
        await server.shutdown(timeout=0.05)
        with pytest.raises(ClosedError):
            await call
        assert server.connection_count == 0
        await client.close()


async def test_error_reply_bytes_for_status() -> None:
    # an error Response: status with code and message, no payload
    assert encode_response(5, "x") == b"\x0a\x05\x08\x05\x12\x01x"


async def test_concurrent_shutdowns_all_return() -> None:
    service = TestService()
    async with leak_check():
        server = Server()
        server.register(service)
        address = unique_address()
        await server.listen(address)
        client = await Client.connect(address)
        service.release.clear()
        call = asyncio.create_task(call_test(client, "s"))
        assert await wait_for(lambda: service.parked == 1)
        first = asyncio.create_task(server.shutdown())
        second = asyncio.create_task(server.shutdown())
        await asyncio.sleep(0.01)
        service.release.set()
        assert (await call).foo == "ss"
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        await server.close()  # after shutdown: a no-op
        await client.close()


async def test_random_garbage_never_takes_the_server_down() -> None:
    import random

    rng = random.Random(1234)
    async with serving() as (server, address):
        for _ in range(20):
            raw = await RawConnection.open(address)
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 400)))
            if rng.random() < 0.5:
                # a plausible header in front makes the junk reach the envelope decoder
                junk = pack_header(len(junk), rng.randrange(0, 8), rng.randrange(0, 5), 0) + junk
            await raw.send(junk)
            await raw.close()
        async with await Client.connect(address) as client:
            assert (await call_test(client, "alive")).foo == "alivealive"
        assert await wait_for(lambda: server.connection_count == 0)
