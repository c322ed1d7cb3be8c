"""The few protobuf wire primitives the shim's hand-written codecs share.

Hand-written codecs exist where betterproto2 is too slow (events, per-task replies) or too
heavy to import (``start``/``delete``, which must finish in tens of milliseconds), so this
module imports nothing but the standard library's builtins.

>>> encode_varint(300), encode_varint(-1)[-1], read_varint(b"\\xac\\x02", 0)
(b'\\xac\\x02', 1, (300, 2))
"""

from __future__ import annotations

__all__ = ["encode_varint", "length_delimited", "read_varint"]

_U64 = (1 << 64) - 1


def encode_varint(value: int) -> bytes:
    """A varint; a negative int64 goes out as its 64-bit two's complement (10 bytes)."""
    if value < -(1 << 63) or value > _U64:
        raise ValueError(f"{value} is not representable as a 64-bit integer")
    value &= _U64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` with wire type 2 (bytes, string, or an embedded message)."""
    return encode_varint(number << 3 | 2) + encode_varint(len(payload)) + payload


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); ValueError when truncated or longer than 10 bytes."""
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")
