"""The hand-written Request/Response codec: Go's exact bytes, and tolerant decoding."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ttrpc._envelope import (
    EnvelopeError,
    Request,
    RequestDecoder,
    Response,
    _decode_request_general,
    _decode_response_general,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)


def test_request_bytes_match_go_connect_example() -> None:
    # reference §1.2: Task/Connect with ConnectRequest{id:"c1"}, no deadline, no metadata.
    req = Request("containerd.task.v2.Task", "Connect", bytes.fromhex("0a026331"))
    wire = encode_request(req)
    assert wire == (b"\x0a\x17containerd.task.v2.Task\x12\x07Connect\x1a\x04\x0a\x02c1")
    assert len(wire) == 40
    assert decode_request(wire) == req


def test_success_response_has_no_status_field() -> None:
    # Go: ConnectResponse{shim_pid:1234,task_pid:5678} -> body 12 06 08 d2 09 10 ae 2c.
    assert encode_response(payload=bytes.fromhex("08d20910ae2c")).hex() == "120608d20910ae2c"
    assert encode_response() == b""  # an Empty reply is a zero-length Response


def test_unknown_service_status_bytes() -> None:
    assert encode_response(12, "service foo") == b"\x0a\x0f\x08\x0c\x12\x0bservice foo"


def test_rust_style_empty_status_is_ok() -> None:
    resp = decode_response(b"\x0a\x00\x12\x01x")
    assert (resp.code, resp.message, resp.payload) == (0, "", b"x")


def test_negative_timeout_is_ten_byte_twos_complement() -> None:
    wire = encode_request(Request("s", "m", timeout_nano=-1))
    assert wire.endswith(b"\x20" + b"\xff" * 9 + b"\x01")
    assert decode_request(wire).timeout_nano == -1


def test_negative_status_code_round_trips() -> None:
    wire = encode_response(-3, "odd")
    assert decode_response(wire).code == -3


def test_metadata_repeated_in_order_and_empty_values_kept() -> None:
    req = Request("s", "m", metadata=[("k", "a"), ("k", "b"), ("e", ""), ("", "v")])
    wire = encode_request(req)
    assert b"\x2a\x03\x0a\x01e" in wire  # key only: value omitted as a proto3 default
    assert decode_request(wire).metadata == req.metadata


def test_details_are_kept_raw() -> None:
    any_bytes = b"\x0a\x03foo\x12\x02hi"
    wire = encode_response(5, "nope", details=[any_bytes, b""])
    assert decode_response(wire).details == [any_bytes, b""]


def test_unknown_fields_and_wire_types_are_skipped() -> None:
    extra = b"\x30\x05" + b"\x39" + b"\x00" * 8 + b"\x45" + b"\x00" * 4 + b"\x52\x01z"
    req = decode_request(b"\x0a\x01s" + extra + b"\x12\x01m")
    assert (req.service, req.method) == ("s", "m")


def test_last_scalar_wins() -> None:
    assert decode_request(b"\x0a\x01a\x0a\x01b").service == "b"


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x0a",  # truncated length
        b"\x0a\x05ab",  # length past the end
        b"\x20\xff\xff",  # truncated varint
        b"\x20" + b"\xff" * 11,  # overlong varint
        b"\x0b",  # group start (wire type 3)
        b"\x00\x01",  # field number 0
        b"\x0a\x02\xff\xfe",  # invalid UTF-8 in a string
        b"\x20\x0a\x01\x02",  # timeout 10, then a key with field number 0
        b"\x22\x00",  # timeout_nano with the wrong wire type
        b"\x39\x00",  # truncated fixed64
    ],
)
def test_garbage_raises_envelope_error(garbage: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_request(garbage)


_text = st.text(max_size=20)


@given(
    st.builds(
        Request,
        _text,
        _text,
        st.binary(max_size=300),
        st.integers(-(2**63), 2**63 - 1),
        st.lists(st.tuples(_text, _text), max_size=4),
    )
)
def test_request_round_trip(req: Request) -> None:
    assert decode_request(encode_request(req)) == req


@given(
    st.integers(-(2**31), 2**31 - 1),
    _text,
    st.binary(max_size=300),
    st.lists(st.binary(max_size=10), max_size=3),
)
def test_response_round_trip(code: int, message: str, payload: bytes, details: list[bytes]) -> None:
    resp = decode_response(encode_response(code, message, payload, details))
    assert resp == Response(code, message, payload, details)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_envelope_error(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        with contextlib.suppress(EnvelopeError):
            decode(data)


def test_repr_does_not_dump_payload() -> None:
    assert "<3 bytes>" in repr(Request("s", "m", b"abc"))
    assert "<3 bytes>" in repr(Response(payload=b"abc"))


def _outcome(decode: Any, data: bytes) -> object:
    try:
        return decode(data)
    except EnvelopeError:
        return EnvelopeError


@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda r: encode_request(r),
            st.builds(
                Request,
                _text,
                _text,
                st.binary(max_size=300),
                st.integers(-(2**63), 2**63 - 1),
                st.lists(st.tuples(_text, _text), max_size=4),
            ),
        ),
    )
)
def test_fast_request_path_agrees_with_general_decoder(data: bytes) -> None:
    assert _outcome(decode_request, data) == _outcome(_decode_request_general, data)


_envelopes = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda r: encode_request(r),
        st.builds(
            Request,
            st.sampled_from(["svc", "", "é" * 70, "s" * 127]),
            st.sampled_from(["M", "", "N"]),
            st.binary(max_size=20000),
            st.sampled_from([0, 0, 5]),
            st.lists(st.tuples(_text, _text), max_size=1),
        ),
    ),
)


@given(st.lists(_envelopes, min_size=1, max_size=8), st.data())
def test_connection_decoder_agrees_with_decode_request(
    envelopes: list[bytes], data: st.DataObject
) -> None:
    # The memo is state: each envelope is decoded after the ones before it, and also after
    # an edit (a truncation, a byte appended) of an envelope that matched the memo.
    decoder = RequestDecoder()
    for wire in envelopes:
        cut = data.draw(st.integers(0, len(wire)))
        for candidate in (wire, wire[:cut], wire + b"\x00", wire):
            assert _outcome(decoder.decode, candidate) == _outcome(decode_request, candidate)


@given(st.lists(_envelopes, min_size=1, max_size=8), st.data())
def test_decode_view_agrees_with_decode_request(
    envelopes: list[bytes], data: st.DataObject
) -> None:
    # In place in a read buffer: bytes before the envelope, older bytes after it.
    decoder = RequestDecoder()
    for wire in envelopes:
        cut = data.draw(st.integers(0, len(wire)))
        for candidate in (wire, wire[:cut], wire + b"\x00", wire):
            tail = data.draw(st.binary(max_size=8))
            buf = bytearray(b"\xff" * 10 + candidate + tail)
            end = 10 + len(candidate)
            try:
                got: object = decoder.decode_view(buf, memoryview(buf), 10, end)
            except EnvelopeError:
                got = EnvelopeError
            assert got == _outcome(decode_request, candidate)


def test_a_new_decoder_has_no_memo_to_match_bad_input() -> None:
    # Field 31 with wire type 7 is no envelope: a fresh decoder raises as decode_request does.
    with pytest.raises(EnvelopeError):
        RequestDecoder().decode(b"\xff\x00")
    buf = bytearray(b"\xff\x00")
    with pytest.raises(EnvelopeError):
        RequestDecoder().decode_view(buf, memoryview(buf), 0, 2)


def test_connection_decoder_memo_follows_the_method() -> None:
    decoder = RequestDecoder()
    a = encode_request(Request("svc", "A", b"1"))
    b = encode_request(Request("svc", "B", b"2"))
    assert [decoder.decode(w).method for w in (a, a, b, a, b, b)] == ["A", "A", "B", "A", "B", "B"]
    long = encode_request(Request("svc", "B", b"x" * 300))
    assert decoder.decode(long).payload == b"x" * 300


@given(
    st.one_of(
        st.binary(max_size=200), st.binary(max_size=300).map(lambda p: encode_response(payload=p))
    )
)
def test_fast_response_path_agrees_with_general_decoder(data: bytes) -> None:
    assert _outcome(decode_response, data) == _outcome(_decode_response_general, data)
