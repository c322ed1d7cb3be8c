"""Frame header layout and limits (reference §1.1, §1.4)."""

from __future__ import annotations

import pytest

from ttrpc._wire import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    HEADER_SIZE,
    MAX_MESSAGE,
    MessageType,
    oversize_message,
    pack_header,
    parse_header,
)


def test_header_is_ten_big_endian_bytes() -> None:
    # The Connect example of reference §1.2: 40 bytes of data on stream 1, a Request.
    assert pack_header(0x28, 1, MessageType.REQUEST, 0) == bytes.fromhex("00000028000000010100")
    assert HEADER_SIZE == 10


def test_parse_header_at_offset() -> None:
    data = b"xx" + pack_header(4194304, 0xFFFFFFFF, MessageType.DATA, 0x05)
    assert parse_header(data, 2) == (4194304, 0xFFFFFFFF, 3, 5)


def test_constants_match_the_protocol() -> None:
    assert MAX_MESSAGE == 4 << 20 == 4194304
    assert (FLAG_REMOTE_CLOSED, FLAG_REMOTE_OPEN, FLAG_NO_DATA) == (1, 2, 4)
    assert [int(t) for t in MessageType] == [1, 2, 3]


def test_oversize_text_is_gos() -> None:
    assert oversize_message(4194305) == (
        "message length 4194305 exceed maximum message size of 4194304"
    )


def test_parse_short_header_raises() -> None:
    import struct

    with pytest.raises(struct.error):
        parse_header(b"\x00" * 9)
