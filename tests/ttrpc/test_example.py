"""The Example service over a real unix socket, and ``python -m ttrpc.example serve|call``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

import ttrpc
from ttrpc import CallContext, Code, TtrpcError
from ttrpc.example import (
    EchoRequest,
    EchoResponse,
    Empty,
    ExampleClient,
    ExampleService,
    FailRequest,
    SleepRequest,
)
from ttrpc.example._cli import serve

SERVICE = "ttrpc.example.v1.Example"


@pytest.fixture
async def server_path(tmp_path: Path) -> AsyncIterator[str]:
    server = ttrpc.Server()
    server.register(ExampleService())
    path = str(tmp_path / "example.sock")
    await server.listen(path)
    try:
        yield path
    finally:
        await server.close()
    assert server.connection_count == 0


@pytest.fixture
async def stub(server_path: str) -> AsyncIterator[ExampleClient]:
    client = await ttrpc.Client.connect(server_path)
    async with client:
        yield ExampleClient(client)


# --- the service, through the generated client stubs over a socket -----------------------


@pytest.mark.anyio
async def test_echo_returns_payload_seq_and_sorted_metadata(stub: ExampleClient) -> None:
    reply = await stub.echo(
        EchoRequest(payload=b"\x00hi\xff", seq=42),
        metadata=[("zeta", "1"), ("foo", "b"), ("foo", "a"), ("containerd-namespace-ttrpc", "x")],
    )
    assert reply.payload == b"\x00hi\xff"
    assert reply.seq == 42
    assert reply.metadata == ["containerd-namespace-ttrpc=x", "foo=a", "foo=b", "zeta=1"]
    assert await stub.echo(EchoRequest()) == EchoResponse()


@pytest.mark.anyio
async def test_sleep_returns_empty(stub: ExampleClient) -> None:
    assert await stub.sleep(SleepRequest(millis=1), timeout=30) == Empty()


@pytest.mark.anyio
async def test_sleep_past_the_deadline_is_deadline_exceeded(stub: ExampleClient) -> None:
    with pytest.raises(TtrpcError) as info:
        await stub.sleep(SleepRequest(millis=60_000), timeout=0.05)
    assert info.value.code == Code.DEADLINE_EXCEEDED
    # and the connection keeps working
    assert (await stub.echo(EchoRequest(seq=1))).seq == 1


@pytest.mark.anyio
async def test_sleep_handler_answers_at_the_deadline_not_after() -> None:
    """The server side alone: the handler gives up at the call's deadline with Go's text."""
    ctx = CallContext(SERVICE, "Sleep", deadline=time.monotonic() + 0.02)
    with pytest.raises(TtrpcError) as info:
        await asyncio.wait_for(ExampleService().sleep(SleepRequest(millis=60_000), ctx), 30)
    assert (info.value.code, info.value.message) == (
        Code.DEADLINE_EXCEEDED,
        "context deadline exceeded",
    )


@pytest.mark.anyio
async def test_sleep_with_a_huge_millis_is_still_cancellable() -> None:
    ctx = CallContext(SERVICE, "Sleep", deadline=time.monotonic() + 0.01)
    with pytest.raises(TtrpcError):
        await ExampleService().sleep(SleepRequest(millis=2**64 - 1), ctx)


@pytest.mark.anyio
@pytest.mark.parametrize("code", list(range(1, 17)))
async def test_fail_answers_the_status_asked_for(stub: ExampleClient, code: int) -> None:
    with pytest.raises(TtrpcError) as info:
        await stub.fail(FailRequest(code=code, message=f"failure {code}"))
    assert (info.value.code, info.value.message) == (Code(code), f"failure {code}")


@pytest.mark.anyio
async def test_fail_with_code_zero_succeeds_and_unknown_codes_are_unknown(
    stub: ExampleClient,
) -> None:
    assert await stub.fail(FailRequest(code=0, message="fine")) == Empty()
    with pytest.raises(TtrpcError) as info:
        await stub.fail(FailRequest(code=99, message="odd"))
    assert info.value.code == Code.UNKNOWN


@pytest.mark.anyio
async def test_echo_stream_round_trips_with_seq_plus_one(stub: ExampleClient) -> None:
    stream = await stub.echo_stream()
    for i in range(50):
        await stream.send(EchoRequest(payload=f"m{i}".encode(), seq=i))
        reply = await stream.recv()
        assert (reply.payload, reply.seq) == (f"m{i}".encode(), i + 1)
    await stream.send(EchoRequest(seq=2**32 - 1))
    assert (await stream.recv()).seq == 0  # wraps like a uint32
    await stream.close_send()
    with pytest.raises(EOFError):
        await stream.recv()


@pytest.mark.anyio
async def test_sum_stream_sums_and_concatenates_including_empty_messages(
    stub: ExampleClient,
) -> None:
    stream = await stub.sum_stream()
    for request in (EchoRequest(payload=b"ab", seq=1), EchoRequest(), EchoRequest(b"c", 41)):
        await stream.send(request)
    reply = await stream.close_and_recv()
    assert (reply.payload, reply.seq) == (b"abc", 42)
    empty = await stub.sum_stream()
    assert await empty.close_and_recv() == EchoResponse()


@pytest.mark.anyio
async def test_count_streams_one_to_seq(stub: ExampleClient) -> None:
    replies = [r async for r in await stub.count(EchoRequest(payload=b"p", seq=5))]
    assert [(r.payload, r.seq) for r in replies] == [(b"p", i) for i in range(1, 6)]
    assert [r async for r in await stub.count(EchoRequest())] == []


@pytest.mark.anyio
async def test_concurrent_calls_on_one_connection(stub: ExampleClient) -> None:
    async def one(i: int) -> int:
        return (await stub.echo(EchoRequest(payload=b"x" * i, seq=i))).seq

    assert await asyncio.gather(*(one(i) for i in range(64))) == list(range(64))


@pytest.mark.anyio
async def test_serve_shuts_down_gracefully(tmp_path: Path) -> None:
    """Stopping serve() lets an in-flight call finish, then removes the socket."""
    entered = asyncio.Event()

    class Observed(ExampleService):
        async def sleep(self, request: SleepRequest, context: CallContext) -> Empty:
            entered.set()
            return await super().sleep(request, context)

    path = str(tmp_path / "serve.sock")
    stop = asyncio.Event()
    serving = asyncio.create_task(serve(path, service=Observed(), stop=stop))
    try:
        for _ in range(500):
            if await anyio.Path(path).exists():
                break
            await asyncio.sleep(0.01)
        client = await ttrpc.Client.connect(path)
        async with client:
            call = asyncio.create_task(ExampleClient(client).sleep(SleepRequest(millis=200)))
            await asyncio.wait_for(entered.wait(), 30)
            stop.set()
            assert await asyncio.wait_for(call, 30) == Empty()
        await asyncio.wait_for(serving, 30)
    finally:
        serving.cancel()
    assert not await anyio.Path(path).exists()


# --- the command line -----------------------------------------------------------------------


def _cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ttrpc.example", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_for_socket(proc: subprocess.Popen[str], path: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        assert proc.poll() is None, f"server exited: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    path = str(tmp_path / "cli.sock")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ttrpc.example", "serve", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_socket(proc, path)
        yield proc, path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def test_cli_call_echo_prints_proto3_json(served: tuple[subprocess.Popen[str], str]) -> None:
    _, path = served
    result = _cli("call", path, "Echo", '{"payload": "aGk=", "seq": 1}', "-m", "k=v")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"payload": "aGk=", "seq": 1, "metadata": ["k=v"]}


def test_cli_errors_name_the_code_and_exit_non_zero(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    _, path = served
    fail = _cli("call", path, "Fail", '{"code": 5, "message": "no such thing"}')
    assert fail.returncode == 1
    assert fail.stderr.strip() == "NOT_FOUND: no such thing"
    late = _cli("call", path, "Sleep", '{"millis": "60000"}', "--timeout", "0.05")
    assert late.returncode == 1
    assert late.stderr.startswith("DEADLINE_EXCEEDED:")
    for bad in (
        ("Echo", "{not json"),
        ("Echo", '{"colour": 1}'),
        ("Echo", "[1, 2]"),
        ("Nope", "{}"),
    ):
        result = _cli("call", path, *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert result.stderr.startswith("python -m ttrpc.example:"), result.stderr
    assert _cli("call", path, "Echo", "{}", "-m", "novalue").returncode == 2


def test_cli_streams(served: tuple[subprocess.Popen[str], str]) -> None:
    _, path = served
    count = _cli("call", path, "Count", '{"seq": 3}')
    assert count.returncode == 0, count.stderr
    assert [json.loads(line) for line in count.stdout.splitlines()] == [
        {"seq": 1},
        {"seq": 2},
        {"seq": 3},
    ]
    summed = _cli("call", path, "SumStream", '[{"payload": "YQ==", "seq": 2}, {"seq": 3}]')
    assert json.loads(summed.stdout) == {"payload": "YQ==", "seq": 5}
    echoed = _cli("call", path, "EchoStream", '[{"seq": 1}, {"seq": 2}]')
    assert [json.loads(line) for line in echoed.stdout.splitlines()] == [{"seq": 2}, {"seq": 3}]


def test_cli_unreachable_server(tmp_path: Path) -> None:
    result = _cli("call", str(tmp_path / "nobody.sock"), "Echo", "{}")
    assert result.returncode == 1
    assert result.stderr.startswith("UNAVAILABLE:")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serve_exits_cleanly_on_signal(
    served: tuple[subprocess.Popen[str], str], sig: signal.Signals
) -> None:
    proc, path = served
    assert _cli("call", path, "Echo", "{}").returncode == 0
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "shutting down" in stderr
    assert not os.path.exists(path)
