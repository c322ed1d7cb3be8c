"""Peer credentials (SO_PEERCRED) and the server's same-user check (Go's handshake tests)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest

from tests.ttrpc.harness import RawConnection, serving, wait_for
from tests.ttrpc.messages import TestPayload
from ttrpc import CallContext, Client, ClosedError, PeerCredentials, Service, rpc
from ttrpc._peercred import peer_credentials, require_same_user, require_uid_gid

pytestmark = pytest.mark.anyio


def test_peer_credentials_of_a_socketpair() -> None:
    a, b = socket.socketpair()
    with a, b:
        creds = peer_credentials(a)
    assert creds == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())


def test_checks() -> None:
    me = PeerCredentials(1, os.geteuid(), os.getegid())
    other = PeerCredentials(1, os.geteuid() + 1, os.getegid())
    assert require_same_user()(me)
    assert not require_same_user()(other)
    assert require_uid_gid(-1, -1)(other)
    assert require_uid_gid(-1, os.getegid())(other)
    assert not require_uid_gid(os.geteuid(), -1)(other)


class Who(Service):
    service_name = "test.v1.Who"

    @rpc
    async def who(self, request: TestPayload, context: CallContext) -> TestPayload:
        assert context.peer is not None
        return TestPayload(foo=f"{context.peer.uid}:{context.peer.gid}", deadline=context.peer.pid)


async def test_same_user_server_accepts_same_user_client() -> None:
    async with (
        serving(Who(), require_same_user=True) as (_, address),
        await Client.connect(address) as client,
    ):
        reply = await client.call("test.v1.Who", "Who", TestPayload(), TestPayload)
        assert reply.foo == f"{os.geteuid()}:{os.getegid()}"
        assert reply.deadline == os.getpid()


async def test_rejected_peer_is_closed_silently(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ttrpc"):
        async with serving(Who(), peer_check=lambda creds: False) as (server, address):
            raw = await RawConnection.open(address)
            assert await raw.at_eof()  # no bytes: just closed, as Go's handshaker does
            await raw.close()
            client = await Client.connect(address)
            with pytest.raises(ClosedError):
                await client.call("test.v1.Who", "Who", TestPayload(), TestPayload)
            await client.close()
            assert await wait_for(lambda: server.connection_count == 0)
            await asyncio.sleep(0)
    assert any("invalid credentials" in r.getMessage() for r in caplog.records)


_OTHER_USER_CLIENT = """
import os, socket, sys
os.setgid(65534)
os.setuid(65534)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(bytes.fromhex(sys.argv[1]))
s.settimeout(10)
try:
    s.sendall(bytes.fromhex(sys.argv[2]))
    print(len(s.recv(100)))
except (BrokenPipeError, ConnectionResetError):  # closed on us: a reset, not a reply
    print(0)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
async def test_same_user_server_rejects_another_user() -> None:
    import sys

    from ttrpc._envelope import Request, encode_request
    from ttrpc._wire import pack_header

    body = encode_request(Request("test.v1.Who", "Who"))
    frame = (pack_header(len(body), 1, 1, 0) + body).hex()
    async with serving(Who(), require_same_user=True) as (server, address):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _OTHER_USER_CLIENT,
            address.encode().hex(),
            frame,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.strip() == b"0"  # closed without a reply
        assert server.connection_count == 0
        # and the same user still gets served
        async with await Client.connect(address) as client:
            await client.call("test.v1.Who", "Who", TestPayload(), TestPayload)
