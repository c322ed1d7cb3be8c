"""The few protobuf wire primitives the shim's hand-written codecs share.

Hand-written codecs exist where betterproto2 is too slow (events, per-task replies) or too
heavy to import (``start``/``delete``, which must finish in tens of milliseconds), so this
module imports nothing but the standard library's builtins.

>>> encode_varint(300), encode_varint(-1)[-1], read_varint(b"\\xac\\x02", 0)
(b'\\xac\\x02', 1, (300, 2))
"""

from __future__ import annotations

__all__ = [
    "encode_timestamp",
    "encode_varint",
    "field_map",
    "iter_fields",
    "length_delimited",
    "read_varint",
]

_U64 = (1 << 64) - 1
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))
"""Varints below 128 (field keys, short lengths): most of what the codecs write."""


def encode_varint(value: int) -> bytes:
    """A varint; a negative int64 goes out as its 64-bit two's complement (10 bytes)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
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
    key, size = number << 3 | 2, len(payload)
    if key < 0x80 and size < 0x80:  # the usual case: two one-byte varints
        return _ONE_BYTE[key] + _ONE_BYTE[size] + payload
    return encode_varint(key) + encode_varint(size) + payload


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


def iter_fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(number, wire type, value) for each field of a message; the one field walker.

    Varints come as ints, fixed32/fixed64 as little-endian ints, length-delimited fields as
    bytes. Raises ValueError for a truncated field, field number 0 or a group wire type.
    """
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 2:
            size, pos = read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError(f"field {number} runs past the end of the message")
            value, pos = data[pos : pos + size], pos + size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise ValueError(f"field {number} runs past the end of the message")
            value, pos = int.from_bytes(data[pos : pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        if number == 0:
            raise ValueError("field number 0")
        out.append((number, wire, value))
    return out


def field_map(data: bytes) -> dict[int, list[int | bytes]]:
    """The values of each field number, in order (the last one wins for a scalar)."""
    out: dict[int, list[int | bytes]] = {}
    for number, _, value in iter_fields(data):
        out.setdefault(number, []).append(value)
    return out


def encode_timestamp(seconds: int, nanos: int) -> bytes:
    """The body of a ``google.protobuf.Timestamp``: zero fields omitted, as proto3 does.

    >>> encode_timestamp(1, 0)
    b'\\x08\\x01'
    """
    out = b""
    if seconds:
        out += b"\x08" + encode_varint(seconds)
    if nanos:
        out += b"\x10" + encode_varint(nanos)
    return out
