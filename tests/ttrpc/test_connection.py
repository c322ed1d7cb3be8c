"""The sans-IO state machine: every protocol rule without a socket or an event loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttrpc import Code, ProtocolError, TtrpcError
from ttrpc._connection import (
    Connection,
    DataReceived,
    Event,
    RequestReceived,
    ResponseReceived,
    Role,
    StreamReset,
)
from ttrpc._envelope import Request, Response, decode_response, encode_request, encode_response
from ttrpc._wire import MAX_MESSAGE, pack_header


def req_frame(sid: int, service: str = "svc", method: str = "M", flags: int = 0) -> bytes:
    body = encode_request(Request(service, method, b"p"))
    return pack_header(len(body), sid, 1, flags) + body


def data_frame(sid: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return pack_header(len(payload), sid, 3, flags) + payload


def status_reply(sid: int, code: int, message: str) -> bytes:
    body = encode_response(code, message)
    return pack_header(len(body), sid, 2, 0) + body


# --- unary ---------------------------------------------------------------------------------


def test_unary_round_trip_between_cores() -> None:
    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    sid, wire = client.send_request(Request("svc", "M", b"hi", 5, [("k", "v")]))
    assert sid == 1
    (event,) = server.receive_data(wire)
    assert event == RequestReceived(1, 0, Request("svc", "M", b"hi", 5, [("k", "v")]))
    assert server.active_streams == 1
    reply = server.send_response(1, b"ok")
    assert server.active_streams == 0
    assert reply == pack_header(4, 1, 2, 0) + b"\x12\x02ok"
    assert client.receive_data(reply) == [ResponseReceived(1, Response(payload=b"ok"))]
    assert client.active_streams == 0


def test_client_ids_are_odd_and_increase() -> None:
    client = Connection(Role.CLIENT)
    assert [client.send_request(Request("s", "m"))[0] for _ in range(4)] == [1, 3, 5, 7]


def test_send_refuses_oversized_frame_without_allocating_an_id() -> None:
    # Go's TestMessageOversize: 14,155,776 bytes fail with ResourceExhausted, nothing written.
    client = Connection(Role.CLIENT)
    with pytest.raises(TtrpcError) as info:
        client.send_request(Request("s", "m", b"x" * 14155776))
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert "exceed maximum message size of 4194304" in info.value.message
    assert client.send_request(Request("s", "m"))[0] == 1
    with pytest.raises(TtrpcError):
        client.send_data(1, b"x" * (MAX_MESSAGE + 1))
    assert len(client.send_data(1, b"x" * MAX_MESSAGE)) == MAX_MESSAGE + 10


def test_oversized_response_raises_and_keeps_stream_open() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1))
    with pytest.raises(TtrpcError) as info:
        server.send_response(1, b"x" * MAX_MESSAGE)  # the envelope adds bytes
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    assert server.is_open(1)


# --- stream-id rules ------------------------------------------------------------------------


def test_even_id_is_rejected_on_that_id() -> None:
    server = Connection(Role.SERVER)
    assert server.receive_data(req_frame(2)) == []
    assert server.data_to_send() == status_reply(
        2, 3, "StreamID must be odd for client initiated streams"
    )
    assert server.data_to_send() == b""


def test_reused_or_lower_id_is_rejected() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(5))
    msg = "StreamID cannot be re-used and must increment"
    # Go answers on 5 and lets the first call run on, so two Responses share one id; we
    # end the open stream with that one answer instead (its handler is cancelled).
    assert server.receive_data(req_frame(5) + req_frame(3)) == [
        StreamReset(5, Code.INVALID_ARGUMENT, msg)
    ]
    assert server.data_to_send() == status_reply(5, 3, msg) + status_reply(3, 3, msg)
    assert server.active_streams == 0


def test_data_on_unknown_stream() -> None:
    server = Connection(Role.SERVER)
    assert server.receive_data(data_frame(7, b"x")) == []
    assert server.data_to_send() == status_reply(7, 3, "StreamID is no longer active")


def test_unknown_message_types_and_responses_are_ignored_by_the_server() -> None:
    server = Connection(Role.SERVER)
    junk = pack_header(3, 1, 9, 0) + b"abc" + pack_header(0, 1, 2, 0)
    assert server.receive_data(junk + req_frame(1)) == [
        RequestReceived(1, 0, Request("svc", "M", b"p"))
    ]
    assert server.data_to_send() == b""


def test_garbage_envelope_is_invalid_argument() -> None:
    server = Connection(Role.SERVER)
    assert server.receive_data(pack_header(2, 1, 1, 0) + b"\x0a\x05") == []
    resp = decode_response(server.data_to_send()[10:])
    assert resp.code == Code.INVALID_ARGUMENT
    assert resp.message.startswith("unmarshal request error: ")
    # the connection carries on
    assert len(server.receive_data(req_frame(3))) == 1


# --- streaming flags (§1.9) -----------------------------------------------------------------


def test_client_stream_data_then_close() -> None:
    server = Connection(Role.SERVER)
    events = server.receive_data(
        req_frame(1, flags=0x2) + data_frame(1, b"a") + data_frame(1) + data_frame(1, b"", 0x5)
    )
    assert events[1:] == [
        DataReceived(1, b"a", False),
        DataReceived(1, b"", False),  # zero-length Data without ND = one empty message
        DataReceived(1, None, True),
    ]
    # Data after the close is refused and ends the stream.
    assert server.receive_data(data_frame(1, b"late")) == [
        StreamReset(1, Code.INVALID_ARGUMENT, "data handling error: ttrpc: stream closed")
    ]
    assert decode_response(server.data_to_send()[10:]).message == (
        "data handling error: ttrpc: stream closed"
    )


def test_nd_without_rc_is_nothing() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1, flags=0x2))
    assert server.receive_data(data_frame(1, b"", 0x4)) == []
    assert server.data_to_send() == b""


def test_unary_request_does_not_accept_data() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1))  # flags 0: the client sends nothing more
    assert [type(e) for e in server.receive_data(data_frame(1, b"x"))] == [StreamReset]


def test_close_with_payload_delivers_then_answers_invalid_argument() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1, flags=0x2))
    events = server.receive_data(data_frame(1, b"last", 0x1))
    assert events == [
        DataReceived(1, b"last", True),
        StreamReset(1, Code.INVALID_ARGUMENT, "data close message cannot include data"),
    ]
    assert server.data_to_send() == status_reply(1, 3, "data close message cannot include data")


def test_server_close_frame_bytes_and_state() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1, flags=0x1))
    assert server.send_data(1, b"") == pack_header(0, 1, 3, 0)
    assert server.send_close(1) == pack_header(0, 1, 3, 0x5)
    assert not server.is_open(1)


def test_client_stream_lifecycle() -> None:
    client = Connection(Role.CLIENT)
    sid, wire = client.send_request(Request("s", "m"), flags=0x2)
    assert wire[9] == 0x2
    assert client.receive_data(data_frame(sid, b"r1")) == [DataReceived(sid, b"r1", False)]
    assert client.receive_data(data_frame(sid, b"", 0x5)) == [DataReceived(sid, None, True)]
    assert client.is_open(sid)  # we have not closed our side yet
    assert client.receive_data(data_frame(sid, b"after")) == []  # after RC: ignored
    client.send_close(sid)
    assert not client.is_open(sid)


def test_client_accepts_rc_with_payload() -> None:
    client = Connection(Role.CLIENT)
    sid, _ = client.send_request(Request("s", "m"), flags=0x1)
    assert client.receive_data(data_frame(sid, b"x", 0x1)) == [DataReceived(sid, b"x", True)]
    assert not client.is_open(sid)


# --- client receive rules -------------------------------------------------------------------


def test_late_response_after_abandon_is_dropped() -> None:
    client = Connection(Role.CLIENT)
    sid, _ = client.send_request(Request("s", "m"))
    client.end_stream(sid)
    assert client.receive_data(status_reply(sid, 0, "")) == []
    assert client.receive_data(data_frame(99, b"x")) == []


def test_client_accepts_rust_style_ok_status() -> None:
    client = Connection(Role.CLIENT)
    sid, _ = client.send_request(Request("s", "m"))
    body = b"\x0a\x00\x12\x02ok"
    (event,) = client.receive_data(pack_header(len(body), sid, 2, 0) + body)
    assert isinstance(event, ResponseReceived)
    assert (event.response.code, event.response.payload) == (0, b"ok")


def test_client_garbage_response_fails_only_that_stream() -> None:
    client = Connection(Role.CLIENT)
    sid, _ = client.send_request(Request("s", "m"))
    (event,) = client.receive_data(pack_header(1, sid, 2, 0) + b"\x0a")
    assert isinstance(event, StreamReset)
    assert event.code is Code.INTERNAL


# --- oversize frames (§1.4) -----------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1 << 20, 65536, 4194315])
def test_oversized_request_is_discarded_exactly(chunk: int) -> None:
    server = Connection(Role.SERVER)
    n = MAX_MESSAGE + 1
    stream = pack_header(n, 1, 1, 0) + b"\x00" * n + req_frame(3)
    events: list[Event] = []
    for i in range(0, len(stream), chunk):
        events += server.receive_data(stream[i : i + chunk])
    assert events == [RequestReceived(3, 0, Request("svc", "M", b"p"))]
    assert server.data_to_send() == status_reply(
        1, 8, "message length 4194305 exceed maximum message size of 4194304"
    )


def test_oversized_data_on_open_stream_resets_it() -> None:
    server = Connection(Role.SERVER)
    server.receive_data(req_frame(1, flags=0x2))
    n = MAX_MESSAGE + 10
    events = server.receive_data(pack_header(n, 1, 3, 0))
    assert events == [
        StreamReset(
            1, Code.RESOURCE_EXHAUSTED, f"message length {n} exceed maximum message size of 4194304"
        )
    ]
    assert server.receive_data(b"\x01" * (n - 1)) == []
    assert server.receive_data(b"\x01" + req_frame(3)) != []


def test_oversized_response_on_client_fails_that_stream_only() -> None:
    client = Connection(Role.CLIENT)
    s1, _ = client.send_request(Request("s", "m"))
    s3, _ = client.send_request(Request("s", "m"))
    n = MAX_MESSAGE + 1
    events = client.receive_data(pack_header(n, s1, 2, 0) + b"\x00" * n)
    assert events == [
        StreamReset(
            s1,
            Code.RESOURCE_EXHAUSTED,
            f"message length {n} exceed maximum message size of 4194304",
        )
    ]
    assert client.receive_data(status_reply(s3, 0, "")) == [ResponseReceived(s3, Response())]


def test_frame_inside_one_chunk_is_not_copied_into_the_buffer() -> None:
    server = Connection(Role.SERVER)
    wire = req_frame(1) + req_frame(3)[:5]
    server.receive_data(memoryview(wire))
    assert bytes(server._buf) == req_frame(3)[:5]  # only the partial tail is kept
    assert len(server.receive_data(req_frame(3)[5:])) == 1
    assert server._buf == b""


# --- property tests -------------------------------------------------------------------------


@st.composite
def server_byte_streams(draw: st.DrawFn) -> bytes:
    """Valid and invalid frames a client might send: requests, data, closes, bad ids."""
    out = []
    sid = 1
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["req", "stream", "data", "close", "even", "junk", "bad"]))
        if kind == "req":
            out.append(req_frame(sid, method=draw(st.text(max_size=5))))
            sid += 2
        elif kind == "stream":
            out.append(req_frame(sid, flags=0x2))
            sid += 2
        elif kind == "data":
            target = draw(st.integers(0, sid))
            out.append(data_frame(target, draw(st.binary(max_size=20)), draw(st.integers(0, 7))))
        elif kind == "close":
            out.append(data_frame(draw(st.integers(0, sid)), b"", 0x5))
        elif kind == "even":
            out.append(req_frame(sid + 1))
        elif kind == "junk":
            body = draw(st.binary(max_size=20))
            out.append(pack_header(len(body), sid, draw(st.integers(0, 255)), 0) + body)
            sid += 2
        else:
            body = draw(st.binary(max_size=20))
            out.append(pack_header(len(body), draw(st.integers(0, 2**32 - 1)), 1, 0) + body)
    return b"".join(out)


def _feed(role: Role, data: bytes, cuts: list[int]) -> tuple[list[Event], bytes]:
    conn = Connection(role)
    if role is Role.CLIENT:
        for _ in range(8):
            conn.send_request(Request("s", "m"), flags=0x2)
    events: list[Event] = []
    out = b""
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += conn.receive_data(data[last:cut])
        out += conn.data_to_send()
        last = cut
    return events, out


@given(server_byte_streams(), st.lists(st.integers(0, 2000), max_size=10))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    cuts = [c for c in cuts if c <= len(data)]
    assert _feed(Role.SERVER, data, cuts) == _feed(Role.SERVER, data, [])
    assert _feed(Role.CLIENT, data, cuts) == _feed(Role.CLIENT, data, [])


def test_one_byte_at_a_time() -> None:
    data = req_frame(1, flags=0x2) + data_frame(1, b"abc") + data_frame(1, b"", 0x5)
    assert _feed(Role.SERVER, data, list(range(len(data)))) == _feed(Role.SERVER, data, [])


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=400), server_byte_streams()), st.lists(st.integers(0, 400)))
def test_arbitrary_bytes_give_only_events_and_statuses(data: bytes, cuts: list[int]) -> None:
    for role in Role:
        try:
            events, out = _feed(role, data, [c for c in cuts if c <= len(data)])
        except ProtocolError:
            continue
        assert all(
            isinstance(e, RequestReceived | DataReceived | ResponseReceived | StreamReset)
            for e in events
        )
        # whatever the core answered on its own is a sequence of well-formed status Responses
        pos = 0
        while pos < len(out):
            length = int.from_bytes(out[pos : pos + 4], "big")
            assert out[pos + 8] == 2
            assert decode_response(out[pos + 10 : pos + 10 + length]).code != 0
            pos += 10 + length
        assert pos == len(out)


def test_read_write_messages_over_a_socket_pair() -> None:
    """Go's TestReadWriteMessage: frames written by one core arrive byte-exact, then EOF."""
    import socket

    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    a, b = socket.socketpair()
    with a, b:
        sent = []
        for payload in (b"hello", b"this is a test", b"x" * 70000):
            sid, wire = client.send_request(Request("svc", "M", payload))
            sent.append((sid, payload))
            a.sendall(wire)
        a.shutdown(socket.SHUT_WR)
        events: list[Event] = []
        while chunk := b.recv(4096):
            events += server.receive_data(chunk)
    assert [
        (e.stream_id, e.request.payload) for e in events if isinstance(e, RequestReceived)
    ] == sent
    assert len(events) == 3
    assert server._buf == b""  # nothing left over at EOF


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 1000, 16383, 16384, 20000, 1 << 20])
def test_ok_response_framing_matches_the_general_encoder(size: int) -> None:
    # send_response frames an OK reply by hand (one-, two-byte and general lengths): it must
    # be byte-identical to header + encode_response.
    server = Connection(Role.SERVER)
    client = Connection(Role.CLIENT)
    sid, wire = client.send_request(Request("svc", "M"))
    server.receive_data(wire)
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    body = encode_response(0, "", payload)
    assert server.send_response(sid, payload) == pack_header(len(body), sid, 2, 0) + body
    assert not server.is_open(sid)


@given(st.binary(max_size=40_000), st.integers(min_value=0, max_value=2**40))
@settings(max_examples=200, deadline=None)
def test_request_fast_decode_matches_general(payload: bytes, timeout: int) -> None:
    from ttrpc._envelope import _decode_request_general, decode_request

    req = Request("ttrpc.example.v1.Example", "Echo", payload, timeout, [("k", "v")])
    data = encode_request(req)
    assert decode_request(data) == _decode_request_general(data) == req


# --- the server's one-request-per-read fast path ------------------------------------------


def _state(conn: Connection) -> tuple[object, ...]:
    streams = {sid: (s.local_closed, s.remote_closed) for sid, s in conn._streams.items()}
    return (conn._last_id, streams, bytes(conn._buf), conn._discard, list(conn._outbox))


_reads = st.one_of(
    st.binary(max_size=80),
    st.builds(req_frame, st.integers(0, 9), st.sampled_from(["svc", "s"]), st.just("M")),
    st.builds(
        lambda sid, flags, cut: req_frame(sid, flags=flags)[:cut],
        st.integers(1, 9),
        st.sampled_from([0, 1, 2, 4]),
        st.integers(0, 40),
    ),
    st.builds(lambda a, b: a + b, st.builds(req_frame, st.integers(1, 9)), st.binary(max_size=30)),
    st.builds(lambda sid: pack_header(3, sid, 1, 0) + b"\xff\xff\xff", st.integers(1, 9)),
    st.builds(lambda sid: pack_header(MAX_MESSAGE + 1, sid, 1, 0), st.integers(1, 9)),
)


@given(st.lists(_reads, max_size=6))
@settings(max_examples=300)
def test_receive_request_is_receive_data_for_one_whole_request(reads: list[bytes]) -> None:
    # Two cores fed the same reads, one trying the fast path first: same events, same state.
    fast, slow = Connection(Role.SERVER), Connection(Role.SERVER)
    for data in reads:
        # A read buffer is larger than a read, and holds older bytes after it.
        buf = bytearray(data) + b"\x80\x0a\x1a" * 8
        view = memoryview(buf)
        before = _state(fast)
        accepted = fast.receive_request(buf, view, len(data))
        if accepted is None:
            assert _state(fast) == before  # nothing changed: the caller falls back
            fast_events = fast.receive_data(view[: len(data)])
        else:
            sid, flags, request = accepted
            fast_events = [RequestReceived(sid, flags, request)]
        assert fast_events == slow.receive_data(data)
        assert fast.data_to_send() == slow.data_to_send()
        assert _state(fast) == _state(slow)


def test_receive_request_leaves_everything_else_to_receive_data() -> None:
    conn = Connection(Role.SERVER)
    one = req_frame(3)
    assert conn.receive_request(one, memoryview(one), len(one)) is not None
    for data in (
        req_frame(3),  # a reused id
        req_frame(4),  # an even id
        req_frame(5) + req_frame(7),  # two requests in one read
        req_frame(5)[:10],  # a partial frame
        data_frame(3, b"x"),  # not a request
    ):
        assert conn.receive_request(data, memoryview(data), len(data)) is None
    client = Connection(Role.CLIENT)
    assert client.receive_request(one, memoryview(one), len(one)) is None
