"""The shared protobuf wire primitives agree with betterproto2 and refuse bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runwasi_py._proto.messages import ConnectRequest
from runwasi_py._proto.wire import encode_varint, length_delimited, read_varint


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))
def test_varint_round_trips_as_uint64(value: int) -> None:
    data = encode_varint(value)
    assert read_varint(data, 0) == (value % (1 << 64), len(data))
    assert len(data) <= 10


def test_negative_int64_is_ten_bytes_and_out_of_range_is_refused() -> None:
    assert len(encode_varint(-1)) == 10
    with pytest.raises(ValueError, match="64-bit"):
        encode_varint(1 << 64)
    with pytest.raises(ValueError, match="64-bit"):
        encode_varint(-(1 << 63) - 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "truncated"), (b"\x80", "truncated"), (b"\xff" * 11, "too long")],
)
def test_bad_varints(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        read_varint(data, 0)


def test_length_delimited_matches_betterproto2() -> None:
    assert length_delimited(1, b"c1") == bytes(ConnectRequest(id="c1"))
    long_id = "x" * 300  # a two-byte length
    assert length_delimited(1, long_id.encode()) == bytes(ConnectRequest(id=long_id))
