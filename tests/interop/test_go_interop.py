"""Interop with the real Go ttrpc (Debian's 1.1.1, the version containerd 1.6 vendors).

* Go client -> Python Example server (on uvloop and on the default loop): the scripted checks
  of ``ttrpcpeer client`` (tests/interop/go/ttrpcpeer).
* Python client -> Go Example server (``ttrpcpeer server``).
* The same raw request bytes to both servers give byte-identical replies wherever the
  reference says Go's replies are fixed (no status on success, exact status texts).

Go 1.1.1 is unary only, so streaming is not covered here.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from ttrpc import Code, TtrpcError
from ttrpc.example import (
    EchoRequest,
    EchoResponse,
    Empty,
    ExampleClient,
    FailRequest,
    SleepRequest,
)

pytestmark = pytest.mark.interop

SERVICE = "ttrpc.example.v1.Example"
MAX_MESSAGE = 4194304
OVERSIZE = re.compile(r"^message length \d+ exceed maximum message size of 4194304$")


# --- Go client -> Python server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def go_results(go_peer: Path, python_server: str) -> dict[str, list[dict[str, Any]]]:
    """Run the Go client's scripted checks once per server; results by check name."""
    result = subprocess.run(
        [str(go_peer), "client", python_server],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    by_name: dict[str, list[dict[str, Any]]] = {}
    for item in json.loads(result.stdout):
        by_name.setdefault(item["name"], []).append(item)
    return by_name


def _one(results: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    [item] = results[name]
    return item


def test_go_client_echo(go_results: dict[str, list[dict[str, Any]]]) -> None:
    echo = _one(go_results, "echo")
    assert (echo["code"], echo["payload"], echo["seq"], echo["metadata"]) == (
        0,
        "hello from go",
        7,
        [],
    )
    empty = _one(go_results, "echo_empty")
    assert (empty["code"], empty["payload_len"], empty["seq"]) == (0, 0, 0)


def test_go_client_32_concurrent_calls(go_results: dict[str, list[dict[str, Any]]]) -> None:
    concurrent = _one(go_results, "concurrent")
    assert concurrent["failures"] == []
    assert concurrent["ok"] == 32


def test_go_client_metadata(go_results: dict[str, list[dict[str, Any]]]) -> None:
    md = _one(go_results, "metadata")
    assert md["code"] == 0
    assert md["metadata"] == ["containerd-namespace-ttrpc=default", "foo=bar", "foo=baz"]


def test_go_client_deadlines(go_results: dict[str, list[dict[str, Any]]]) -> None:
    assert _one(go_results, "sleep_ok")["code"] == 0
    # timeout_nano of 100 ms on a 5 s Sleep: the server's own answer comes back.
    server = _one(go_results, "deadline_server")
    assert (server["code"], server["message"]) == (4, "context deadline exceeded")
    # the Go client's ctx deadline: it gives up by itself (or gets the server's status first).
    client = _one(go_results, "deadline_client")
    assert "context deadline exceeded" in (client.get("message") or client.get("error", ""))


def test_go_client_fail_codes(go_results: dict[str, list[dict[str, Any]]]) -> None:
    fails = go_results["fail"]
    assert [f["want_code"] for f in fails] == list(range(17))
    for f in fails:
        if f["want_code"] == 0:
            assert f["code"] == 0
        else:
            assert (f["code"], f["message"]) == (f["want_code"], f"failure {f['want_code']}")


def test_go_client_unknown_service_and_method(
    go_results: dict[str, list[dict[str, Any]]],
) -> None:
    service = _one(go_results, "unknown_service")
    assert (service["code"], service["message"]) == (12, "service nope.v1.Nope")
    method = _one(go_results, "unknown_method")
    assert (method["code"], method["message"]) == (12, "method Nope")


def test_go_client_undecodable_payload(go_results: dict[str, list[dict[str, Any]]]) -> None:
    bad = _one(go_results, "bad_payload")
    assert bad["code"] == Code.INTERNAL
    assert bad["message"].startswith("ttrpc: error unmarshalling payload")


def test_go_client_oversized_request(go_results: dict[str, list[dict[str, Any]]]) -> None:
    oversize = _one(go_results, "oversize")
    assert oversize["code"] == Code.RESOURCE_EXHAUSTED
    assert OVERSIZE.match(oversize["message"]), oversize["message"]
    after = _one(go_results, "after_oversize")  # same connection, still usable
    assert (after["code"], after["payload"], after["seq"]) == (0, "still here", 2)


# --- Python client -> Go server ---------------------------------------------------------------


@pytest.mark.anyio
async def test_python_client_echo_and_empty_replies(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        stub = ExampleClient(client)
        reply = await stub.echo(EchoRequest(payload=b"\x00py\xff", seq=9))
        assert reply == EchoResponse(payload=b"\x00py\xff", seq=9)
        assert await stub.echo(EchoRequest()) == EchoResponse()
        # Go answers an Empty reply with a zero-length Response frame (no status field)
        assert await stub.sleep(SleepRequest(millis=1)) == Empty()
        assert await stub.fail(FailRequest(code=0)) == Empty()


@pytest.mark.anyio
async def test_python_client_concurrency(go_server: str) -> None:
    clients = [await ttrpc.Client.connect(go_server) for _ in range(4)]
    try:
        stubs = [ExampleClient(c) for c in clients]

        async def one(i: int) -> tuple[bytes, int]:
            reply = await stubs[i % 4].echo(EchoRequest(payload=str(i).encode(), seq=i))
            return reply.payload, reply.seq

        results = await asyncio.gather(*(one(i) for i in range(128)))
        assert results == [(str(i).encode(), i) for i in range(128)]
    finally:
        for c in clients:
            await c.close()


@pytest.mark.anyio
async def test_python_client_metadata(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        reply = await ExampleClient(client).echo(
            EchoRequest(seq=1),
            metadata=[("foo", "b"), ("foo", "a"), ("containerd-namespace-ttrpc", "k8s.io")],
        )
        assert reply.metadata == ["containerd-namespace-ttrpc=k8s.io", "foo=a", "foo=b"]


@pytest.mark.anyio
async def test_python_client_deadline(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        stub = ExampleClient(client)
        with pytest.raises(TtrpcError) as info:
            await stub.sleep(SleepRequest(millis=60_000), timeout=0.1)
        assert info.value.code == Code.DEADLINE_EXCEEDED
        assert (await stub.echo(EchoRequest(seq=3))).seq == 3  # late reply is dropped cleanly


@pytest.mark.anyio
async def test_python_client_sees_go_status_codes(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        stub = ExampleClient(client)
        for code in range(1, 17):
            with pytest.raises(TtrpcError) as info:
                await stub.fail(FailRequest(code=code, message=f"go {code}"))
            assert (info.value.code, info.value.message) == (Code(code), f"go {code}")


@pytest.mark.anyio
async def test_python_client_unknown_service_and_method(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        with pytest.raises(TtrpcError) as info:
            await client.call("nope.v1.Nope", "Echo", EchoRequest(), EchoResponse)
        assert (info.value.code, info.value.message) == (
            Code.UNIMPLEMENTED,
            "service nope.v1.Nope",
        )
        with pytest.raises(TtrpcError) as info:
            await client.call(SERVICE, "Nope", EchoRequest(), EchoResponse)
        assert (info.value.code, info.value.message) == (Code.UNIMPLEMENTED, "method Nope")


@pytest.mark.anyio
async def test_python_client_oversized_request(go_server: str) -> None:
    async with await ttrpc.Client.connect(go_server) as client:
        stub = ExampleClient(client)
        with pytest.raises(TtrpcError) as info:
            await stub.echo(EchoRequest(payload=b"x" * (MAX_MESSAGE + 1)), timeout=30)
        assert info.value.code == Code.RESOURCE_EXHAUSTED
        assert OVERSIZE.match(info.value.message), info.value.message
        # the connection is still usable, and a reply just under the limit still fits
        assert (await stub.echo(EchoRequest(seq=5))).seq == 5
        big = b"y" * (MAX_MESSAGE - 64)
        assert (await stub.echo(EchoRequest(payload=big), timeout=30)).payload == big


# --- byte identity of replies -------------------------------------------------------------------


def _varint(v: int) -> bytes:
    out = bytearray()
    v &= (1 << 64) - 1
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value) if value else b""
    return _varint(number << 3 | 2) + _varint(len(value)) + value if value else b""


def _request(
    stream_id: int,
    service: str,
    method: str,
    payload: bytes = b"",
    *,
    timeout_nano: int = 0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> bytes:
    body = (
        _field(1, service.encode())
        + _field(2, method.encode())
        + _field(3, payload)
        + _field(4, timeout_nano)
        + b"".join(_field(5, _field(1, k.encode()) + _field(2, v.encode())) for k, v in metadata)
    )
    return struct.pack(">IIBB", len(body), stream_id, 1, 0) + body


def _exchange(path: str, frame: bytes) -> bytes:
    """Send raw bytes on a new connection; return the first reply frame, header included."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall(frame)
        header = _recv_exactly(sock, 10)
        (length,) = struct.unpack(">I", header[:4])
        return header + _recv_exactly(sock, length)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"peer closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _echo(payload: bytes, seq: int) -> bytes:
    return EchoRequest(payload=payload, seq=seq).SerializeToString()


IDENTICAL_CASES: dict[str, bytes] = {
    "echo": _request(1, SERVICE, "Echo", _echo(b"hello", 7)),
    "echo_empty": _request(1, SERVICE, "Echo"),
    "echo_metadata": _request(
        1,
        SERVICE,
        "Echo",
        _echo(b"m", 1),
        # keys as sent (no lower-casing on receive), values of one key in order
        metadata=(("foo", "b"), ("Key-Upper", "v"), ("foo", "a")),
    ),
    "empty_reply": _request(1, SERVICE, "Sleep", SleepRequest(millis=1).SerializeToString()),
    "fail_ok": _request(1, SERVICE, "Fail"),
    "fail_status": _request(
        1, SERVICE, "Fail", FailRequest(code=5, message="nope").SerializeToString()
    ),
    "deadline": _request(
        1,
        SERVICE,
        "Sleep",
        SleepRequest(millis=60_000).SerializeToString(),
        timeout_nano=50_000_000,
    ),
    "expired_deadline": _request(
        1,
        SERVICE,
        "Sleep",
        SleepRequest(millis=60_000).SerializeToString(),
        timeout_nano=-1,
    ),
    "unknown_service": _request(1, "foo", "Echo"),
    "unknown_method": _request(1, SERVICE, "Nope"),
    "even_stream_id": _request(2, SERVICE, "Echo", _echo(b"x", 1)),
    "oversize": struct.pack(">IIBB", MAX_MESSAGE + 1, 1, 1, 0) + bytes(MAX_MESSAGE + 1),
}


@pytest.mark.parametrize("case", list(IDENTICAL_CASES))
def test_replies_are_byte_identical(go_server: str, python_server: str, case: str) -> None:
    frame = IDENTICAL_CASES[case]
    go_reply = _exchange(go_server, frame)
    py_reply = _exchange(python_server, frame)
    assert py_reply.hex(" ") == go_reply.hex(" ")


def test_known_reply_bytes(go_server: str) -> None:
    """Anchor the comparison: the Go server's bytes are the ones the reference gives."""
    assert _exchange(go_server, IDENTICAL_CASES["unknown_service"]) == (
        bytes.fromhex("00000011 00000001 02 00") + bytes.fromhex("0a0f080c120b") + b"service foo"
    )
    assert _exchange(go_server, IDENTICAL_CASES["empty_reply"]) == bytes.fromhex(
        "00000000 00000001 02 00"
    )
