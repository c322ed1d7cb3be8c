"""Shared pieces of the ttrpc tests: Go's test service, a leak-checked server, raw sockets."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from tests.ttrpc.messages import TestPayload
from ttrpc import CallContext, Server, Service, rpc
from ttrpc._envelope import Request, Response, decode_response, encode_request
from ttrpc._wire import pack_header, parse_header

_names = itertools.count()


def fd_count() -> int:
    """Open file descriptors of this process.

    uvloop opens ``/dev/null`` once per loop, lazily (it is not ours to close): not counted.
    """
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "/dev/null":
                n += 1
        except OSError:
            pass  # the directory's own fd, already gone
    return n


def unique_address(tag: str = "t") -> str:
    """An abstract socket name no other test uses (Go's tests name theirs after the test)."""
    return f"\0ttrpc-py-{os.getpid()}-{tag}-{next(_names)}"


class TestService(Service):
    """Go's testService: foo doubled, the deadline as UnixNano, metadata ``foo``."""

    __test__ = False
    service_name = "testService"

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.parked = 0

    @rpc
    async def test(self, request: TestPayload, context: CallContext) -> TestPayload:
        if not self.release.is_set():
            self.parked += 1
            await self.release.wait()
        deadline = 0
        remaining = context.time_remaining()
        if remaining is not None:
            deadline = time.time_ns() + int(remaining * 1e9)
        return TestPayload(
            foo=request.foo + request.foo,
            deadline=deadline,
            metadata=context.metadata.first("foo") or "",
        )


async def wait_for(predicate: Any, within: float = 2.0) -> bool:
    """Poll ``predicate()`` until true or ``within`` seconds pass (Go's tests allow 2 s)."""
    end = time.monotonic() + within
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.005)
    return True


@asynccontextmanager
async def leak_check() -> AsyncIterator[None]:
    """Fail if the block leaves file descriptors or tasks behind, or if the loop saw an
    unhandled exception (a callback that raised, a task whose error nobody retrieved)."""
    fds = fd_count()
    tasks = set(asyncio.all_tasks())
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled, f"unhandled loop exceptions: {unhandled}"
    assert await wait_for(lambda: fd_count() <= fds), f"fd leak: {fd_count()} > {fds}"

    def no_new_tasks() -> bool:
        return not {t for t in asyncio.all_tasks() if not t.done()} - tasks

    assert await wait_for(no_new_tasks), f"task leak: {asyncio.all_tasks() - tasks}"


@asynccontextmanager
async def serving(
    *services: Service | tuple[Service, str], **server_args: Any
) -> AsyncIterator[tuple[Server, str]]:
    """A listening server on a fresh abstract address; shut down and leak-checked on exit."""
    async with leak_check():
        server = Server(**server_args)
        for item in services or (TestService(),):
            if isinstance(item, tuple):
                server.register(item[0], name=item[1])
            else:
                server.register(item)
        address = unique_address()
        await server.listen(address)
        serve = asyncio.create_task(server.serve_forever())
        try:
            yield server, address
        finally:
            await server.shutdown(timeout=5)
            await serve
            assert server.connection_count == 0


class RawConnection:
    """A client socket for hand-made frames (no ttrpc client in the way)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, address: str) -> RawConnection:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, address)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_request(
        self,
        sid: int,
        service: str,
        method: str,
        payload: bytes = b"",
        flags: int = 0,
        timeout_nano: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        body = encode_request(Request(service, method, payload, timeout_nano, list(metadata)))
        await self.send(pack_header(len(body), sid, 1, flags) + body)

    async def read_frame(self, within: float = 5.0) -> tuple[int, int, int, bytes]:
        """``(stream id, type, flags, data)`` of the next frame."""
        async with asyncio.timeout(within):
            header = await self.reader.readexactly(10)
            length, sid, mtype, flags = parse_header(header)
            return sid, mtype, flags, await self.reader.readexactly(length)

    async def read_response(self, within: float = 5.0) -> tuple[int, Response]:
        sid, mtype, flags, data = await self.read_frame(within)
        assert (mtype, flags) == (2, 0)
        return sid, decode_response(data)

    async def at_eof(self, within: float = 5.0) -> bool:
        async with asyncio.timeout(within):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
