"""The client half of the private Reserve RPC (docs/reserve.md): one raw ttrpc call, no asyncio."""

from __future__ import annotations

import _socket as socket  # not socket.py: start's imports (see address.py)

from runwasi_py._daemon.reservations import RESERVE_METHOD, RESERVE_SERVICE
from runwasi_py._launch.address import socket_path
from runwasi_py._proto.wire import field_map, length_delimited
from ttrpc._wire import HEADER_SIZE, MessageType, pack_header, parse_header

__all__ = ["reserve"]

_FAILED_PRECONDITION = 9


def reserve(address: str, container_id: str, timeout: float = 2.0) -> str:
    """Ask the live shim on ``address`` to hold itself for ``container_id``'s Create.

    One raw ttrpc request (``runwasi.shim.v1.Shim/Reserve``) over a blocking socket, so
    that ``start`` imports neither asyncio nor ttrpc. Returns ``"reserved"`` (also for a
    shim that does not know Reserve, or that is too slow to answer: it is alive),
    ``"refused"`` (the shim is exiting and has already unlinked its socket), ``"dead"``
    (nobody accepts) or ``"unknown"`` (the connection closed without an answer).
    """
    request = (
        length_delimited(1, RESERVE_SERVICE.encode())
        + length_delimited(2, RESERVE_METHOD.encode())
        + length_delimited(3, length_delimited(1, container_id.encode("utf-8", "surrogateescape")))
    )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path(address))
        except OSError:
            return "dead"
        try:
            sock.sendall(pack_header(len(request), 1, MessageType.REQUEST, 0) + request)
            length, stream_id, kind, _ = parse_header(_recv_exactly(sock, HEADER_SIZE))
            if stream_id != 1 or kind != MessageType.RESPONSE or length > 1 << 20:
                return "reserved"  # not a reply we understand, but a live ttrpc server
            body = _recv_exactly(sock, length)
        except TimeoutError:
            return "reserved"
        except (OSError, EOFError):
            return "unknown"  # closed without an answer: not a Reserve-aware shim, or exiting
    finally:
        sock.close()
    try:
        status = field_map(body).get(1, [b""])[-1]
        code = field_map(status).get(1, [0])[-1] if isinstance(status, bytes) else 0
    except ValueError:
        return "reserved"
    return "refused" if code == _FAILED_PRECONDITION else "reserved"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf
