"""The client half of the private Reserve RPC (docs/reserve.md): one raw ttrpc call, no asyncio.

``start`` runs it for every container of a pod after the first (the pod's daemon is live),
so it stays as light as ``start``: the ttrpc frame header is packed here with ``int.to_bytes``
rather than with ``ttrpc._wire`` (whose ``enum`` and ``struct`` cost more than the call).
"""

from __future__ import annotations

import _socket as socket  # not socket.py: start's imports (see address.py)

from runwasi_py._launch.address import socket_path
from runwasi_py._proto.wire import field_map, length_delimited

__all__ = ["RESERVE_METHOD", "RESERVE_SERVICE", "reserve"]

RESERVE_SERVICE = "runwasi.shim.v1.Shim"
RESERVE_METHOD = "Reserve"

_FAILED_PRECONDITION = 9
# ttrpc's frame header (ttrpc._wire, tests check they agree): length, stream id, type, flags
_HEADER_SIZE = 10
_REQUEST, _RESPONSE = 1, 2


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
            sock.sendall(_header(len(request), 1, _REQUEST) + request)
            header = _recv_exactly(sock, _HEADER_SIZE)
            length = int.from_bytes(header[0:4], "big")
            stream_id, kind = int.from_bytes(header[4:8], "big"), header[8]
            if stream_id != 1 or kind != _RESPONSE or length > 1 << 20:
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


def _header(length: int, stream_id: int, kind: int, flags: int = 0) -> bytes:
    """= ``ttrpc._wire.pack_header``: big-endian u32 length, u32 stream id, u8 type, u8 flags."""
    return length.to_bytes(4, "big") + stream_id.to_bytes(4, "big") + bytes((kind, flags))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf
