"""The ttrpc frame: a 10-byte big-endian header (length, stream id, type, flags) and its limits.

No IO here: these helpers pack and parse headers; :mod:`ttrpc._connection` drives them.

Example:
    >>> pack_header(3, 1, MessageType.REQUEST, 0).hex()
    '00000003000000010100'
    >>> parse_header(bytes.fromhex("00000003000000010100"))
    (3, 1, 1, 0)
"""

from __future__ import annotations

import enum
import struct

__all__ = [
    "FLAG_NO_DATA",
    "FLAG_REMOTE_CLOSED",
    "FLAG_REMOTE_OPEN",
    "HEADER",
    "HEADER_SIZE",
    "MAX_MESSAGE",
    "MessageType",
    "oversize_message",
    "pack_header",
    "parse_header",
]

#: Largest frame *data* (header excluded) a peer may send or accept: ``4 << 20``.
MAX_MESSAGE = 4194304
HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10

#: Flags are written from the receiver's point of view (protocol 1.2).
FLAG_REMOTE_CLOSED = 0x01
FLAG_REMOTE_OPEN = 0x02
FLAG_NO_DATA = 0x04


class MessageType(enum.IntEnum):
    """Frame type byte."""

    REQUEST = 1
    RESPONSE = 2
    DATA = 3


pack_header = HEADER.pack
"""``pack_header(length, stream_id, type, flags) -> bytes`` (10 bytes)."""


def parse_header(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[int, int, int, int]:
    """Return ``(length, stream_id, type, flags)`` from the 10 bytes at ``offset``."""
    return HEADER.unpack_from(data, offset)


def oversize_message(length: int) -> str:
    """The status text Go uses for a frame over :data:`MAX_MESSAGE` (byte-identical)."""
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE}"
