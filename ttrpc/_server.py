"""``Server``: serves registered services over unix sockets.

Each accepted socket gets a :class:`ttrpc._dispatch.ServerConnection` (the asyncio shell
plus dispatch; see there how calls run). The server keeps the method tables built at
:meth:`Server.register`, the listeners and the connections.

Resource caps (:mod:`ttrpc._limits`): connections over ``max_connections`` are closed at
accept; past ``max_buffered_bytes`` of buffered request bytes, reading pauses until they drain.

A connection is never closed for being idle (containerd treats a dropped connection as a
dead shim); it closes when the peer goes, on :meth:`Server.close`, or once idle during
:meth:`Server.shutdown`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Sequence

from ttrpc._dispatch import CallNext, ServerConnection, ServerInterceptor, _Method
from ttrpc._limits import DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_CONNECTIONS, ServerLimits
from ttrpc._peercred import PeerCheck
from ttrpc._peercred import require_same_user as _same_user_check
from ttrpc._protocol import logger
from ttrpc._service import Service

__all__ = ["CallNext", "Server", "ServerConnection", "ServerInterceptor", "parse_address"]


def parse_address(address: str) -> str:
    """``unix:///p`` -> ``/p``; ``\\0name`` (abstract) and plain paths unchanged."""
    if address.startswith("unix://"):
        return address[len("unix://") :]
    return address


class Server:
    """A ttrpc server for unix sockets.

    Example:
        >>> async def main() -> None:                       # doctest: +SKIP
        ...     server = Server()
        ...     server.register(EchoService())
        ...     await server.listen("/run/example.sock")
        ...     async with server:
        ...         await server.serve_forever()             # until shutdown() or close()
    """

    def __init__(
        self,
        *,
        interceptors: Sequence[ServerInterceptor] = (),
        require_same_user: bool = False,
        peer_check: PeerCheck | None = None,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_buffered_bytes: int | None = DEFAULT_MAX_BUFFERED_BYTES,
    ) -> None:
        """``max_connections`` (default 1024) caps the connections held at once: one more
        is closed at accept, with a log line. ``max_buffered_bytes`` (default 64 MiB) caps
        the request bytes buffered across connections (unfinished frames and payloads of
        running handlers): past it, reading pauses until they drain. ``None`` = no cap.
        """
        self._interceptors = tuple(interceptors)
        self._limits = ServerLimits(max_connections, max_buffered_bytes)
        self._services: dict[str, dict[str, _Method]] = {}
        self._peer_check: PeerCheck | None = peer_check
        if require_same_user:
            same = _same_user_check()  # the parameter shadows the function's name
            self._peer_check = same if peer_check is None else _both(same, peer_check)
        self._listeners: list[asyncio.Server] = []
        self._paths: list[tuple[str, int]] = []
        self._connections: set[ServerConnection] = set()
        self._closing = False
        self._done: asyncio.Event | None = None
        self._conns_gone: asyncio.Event | None = None  # made when stopping starts

    # --- registration -----------------------------------------------------------------

    def register(self, service: Service, name: str | None = None) -> None:
        """Serve ``service`` under ``name`` (default ``service.service_name``).

        The same object may be registered under several names (e.g. containerd's
        ``containerd.task.v2.Task`` and ``containerd.task.v3.Task``).
        """
        name = name or service.service_name
        if not name:
            raise ValueError(f"{type(service).__qualname__} has no service_name; pass name=")
        if name in self._services:
            raise ValueError(f"service {name} is already registered")
        table = {
            wire: _Method(spec, getattr(service, spec.attribute), self._interceptors)
            for wire, spec in type(service).ttrpc_methods().items()
        }
        self._services[name] = table

    @property
    def connection_count(self) -> int:
        """Open (accepted and not yet closed) connections."""
        return len(self._connections)

    @property
    def buffered_bytes(self) -> int:
        """Request bytes buffered across connections (counted against max_buffered_bytes)."""
        return self._limits.buffered

    # --- listening --------------------------------------------------------------------

    async def listen(self, address: str, *, backlog: int = 128) -> None:
        """Listen on a socket path, an abstract name (``"\\0name"``) or ``unix:///path``.

        A path socket gets mode 0600; a stale socket file (nobody listening) is replaced;
        a live one raises ``OSError(EADDRINUSE)``. The file is removed on close.
        """
        if self._closing:
            raise RuntimeError("ttrpc: server closed")
        path = parse_address(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            abstract = path.startswith("\0")
            if not abstract:
                _remove_stale(path)
            sock.bind(path)
            if not abstract:
                os.chmod(path, 0o600)
                self._paths.append((path, os.stat(path).st_ino))
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        await self.listen_socket(sock)

    async def listen_socket(self, sock: socket.socket) -> None:
        """Serve on an already listening unix socket (e.g. the shim's inherited fd 3)."""
        if self._closing:
            raise RuntimeError("ttrpc: server closed")
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: ServerConnection(self), sock=sock)
        self._listeners.append(listener)

    async def serve_forever(self) -> None:
        """Return once :meth:`shutdown` or :meth:`close` has finished."""
        await self._done_event().wait()

    # --- stopping ---------------------------------------------------------------------

    def _done_event(self) -> asyncio.Event:
        if self._done is None:
            self._done = asyncio.Event()
        return self._done

    def _connection_gone(self, conn: ServerConnection) -> None:
        self._connections.discard(conn)
        if not self._connections and self._conns_gone is not None:
            self._conns_gone.set()

    def _stop_listening(self) -> asyncio.Event:
        self._closing = True
        if self._conns_gone is None:
            self._conns_gone = asyncio.Event()
        if not self._connections:
            self._conns_gone.set()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        for path, ino in self._paths:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == ino:
                    os.unlink(path)
        self._paths.clear()
        return self._conns_gone

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Stop accepting, let in-flight calls finish and reply, close connections as they
        go idle. After ``timeout`` seconds the rest are closed hard.

        Do not await this from inside a handler of this server (it waits for that
        handler); start it as a task instead.
        """
        gone = self._stop_listening()
        for conn in list(self._connections):
            conn.begin_close()
        if self._connections:
            try:
                async with asyncio.timeout(timeout):
                    await gone.wait()
            except TimeoutError:
                logger.warning(
                    "ttrpc: shutdown timed out; closing %d connections", len(self._connections)
                )
                await self._close_all()
        self._done_event().set()

    async def close(self) -> None:
        """Stop accepting, cancel in-flight handlers and close every connection now."""
        self._stop_listening()
        await self._close_all()
        self._done_event().set()

    async def _close_all(self) -> None:
        assert self._conns_gone is not None
        for conn in list(self._connections):
            for task in conn.tasks.values():
                task.cancel()
            conn.close()
        if self._connections:
            try:
                async with asyncio.timeout(5.0):
                    await self._conns_gone.wait()
            except TimeoutError:
                for conn in list(self._connections):
                    conn.abort()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


def _both(a: PeerCheck, b: PeerCheck) -> PeerCheck:
    return lambda creds: a(creds) and b(creds)


def _remove_stale(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FileExistsError(errno.EEXIST, "not a socket; refusing to replace it", path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)  # a full backlog must not block the loop: EAGAIN = alive
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: a leftover from a dead process
        return
    except BlockingIOError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "address already in use (a server is listening)", path)
