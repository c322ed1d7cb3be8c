"""RawMessage: wire bytes through a real server and client, untouched either way."""

from __future__ import annotations

import pytest

import ttrpc
from tests.ttrpc.harness import serving
from ttrpc import CallContext, RawMessage, Service, rpc


class Mirror(Service):
    service_name = "test.v1.Mirror"

    @rpc
    async def mirror(self, request: RawMessage, context: CallContext) -> RawMessage:
        return RawMessage(request.data[::-1])


def test_from_string_copies_a_view_of_a_reused_buffer() -> None:
    buf = bytearray(b"\x0a\x02hi")
    msg = RawMessage.FromString(memoryview(buf))  # type: ignore[arg-type]
    buf[:] = b"\x00\x00\x00\x00"
    assert msg.data == b"\x0a\x02hi"
    assert msg == RawMessage(b"\x0a\x02hi")
    assert msg != RawMessage(b"")
    assert RawMessage().SerializeToString() == b""


@pytest.mark.anyio
async def test_bytes_cross_the_wire_untouched() -> None:
    payload = bytes(range(256)) * 3
    async with serving(Mirror()) as (_, address), await ttrpc.Client.connect(address) as client:
        reply = await client.call("test.v1.Mirror", "Mirror", RawMessage(payload), RawMessage)
        assert reply.data == payload[::-1]
        empty = await client.call("test.v1.Mirror", "Mirror", RawMessage(), RawMessage)
        assert empty.data == b""
