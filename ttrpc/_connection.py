"""The sans-IO ttrpc connection: bytes in, events out; calls in, bytes out.

Theory of operation (in the manner of h11): a :class:`Connection` owns no socket and no
loop. The IO shell hands it whatever bytes arrived with :meth:`Connection.receive_data`
and gets back a list of events. To send, the shell calls ``send_*`` and writes the bytes
returned. Some input is answered by the core itself without involving the application
(bad stream ids, oversized frames, Data on a finished stream, undecodable envelopes): those
replies are queued and collected with :meth:`Connection.data_to_send`, so the rules of
the protocol live here and nowhere else.

Per-stream state is two booleans, written as in protocol 1.2 from each side's own view:
``local_closed`` (we will send no more) and ``remote_closed`` (the peer will send no more).
The server decides unary vs streaming from its method table, never from Request flags, so
this layer records the flags and leaves that choice to the server.

Receive path: a frame that arrives whole inside one chunk is sliced straight out of that
chunk; only a trailing partial frame is copied into the internal buffer. An oversized frame
(length > :data:`MAX_MESSAGE`) is skipped byte-exactly across any number of chunks and
answered with ResourceExhausted on its stream; the connection carries on.

Example:
    >>> server = Connection(Role.SERVER)
    >>> client = Connection(Role.CLIENT)
    >>> sid, wire = client.send_request(Request("svc", "M", b"hi"))
    >>> [type(e).__name__ for e in server.receive_data(wire)]
    ['RequestReceived']
    >>> client.receive_data(server.send_response(sid, b"ok"))[0].response.payload
    b'ok'
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from ttrpc._envelope import (
    EnvelopeError,
    Request,
    RequestDecoder,
    Response,
    _varint,
    decode_response,
    encode_request,
    encode_response,
)
from ttrpc._errors import Code, TtrpcError
from ttrpc._wire import (
    FLAG_NO_DATA,
    FLAG_REMOTE_CLOSED,
    FLAG_REMOTE_OPEN,
    HEADER,
    HEADER_SIZE,
    MAX_MESSAGE,
    MessageType,
    oversize_message,
)

__all__ = [
    "Connection",
    "DataReceived",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "StreamReset",
]

# Status texts the Go server sends; peers compare some of them byte for byte.
ODD_IDS = "StreamID must be odd for client initiated streams"
REUSED_ID = "StreamID cannot be re-used and must increment"
INACTIVE = "StreamID is no longer active"
DATA_AFTER_CLOSE = "data handling error: ttrpc: stream closed"
CLOSE_WITH_DATA = "data close message cannot include data"

_REQUEST = int(MessageType.REQUEST)
_RESPONSE = int(MessageType.RESPONSE)
_DATA = int(MessageType.DATA)
_unpack = HEADER.unpack_from
_pack = HEADER.pack
# A frame header followed by the tag and one-byte length of Response.payload.
_pack_short = struct.Struct(">IIBBBB").pack
_pack_mid = struct.Struct(">IIBBBBB").pack  # the same with a two-byte length


class Role(enum.Enum):
    """Which end of the connection this state machine plays."""

    CLIENT = "client"
    SERVER = "server"


@dataclass(slots=True)
class RequestReceived:
    """Server side: a valid Request opened ``stream_id``. ``flags`` as received."""

    stream_id: int
    flags: int
    request: Request


@dataclass(slots=True)
class DataReceived:
    """A Data frame on an open stream. ``data`` is None for a no-data frame (ND flag);
    ``end`` is True when the peer closed its side (RC flag)."""

    stream_id: int
    data: bytes | None
    end: bool


@dataclass(slots=True)
class ResponseReceived:
    """Client side: the Response that ends ``stream_id``."""

    stream_id: int
    response: Response


@dataclass(slots=True)
class StreamReset:
    """The core ended an open stream with a status (server: and answered the peer with it;
    client: the stream fails with it locally). The application drops the stream."""

    stream_id: int
    code: Code
    message: str


Event = RequestReceived | DataReceived | ResponseReceived | StreamReset


class _Stream:
    __slots__ = ("local_closed", "remote_closed")

    def __init__(self, local_closed: bool, remote_closed: bool) -> None:
        self.local_closed = local_closed
        self.remote_closed = remote_closed


# A server stream whose client sends nothing after its Request (unary, server-streaming):
# nothing ever changes it (Data on it is refused before _data, and send_close drops a server
# stream without touching it), so all such streams share this one object.
_PEER_CLOSED = _Stream(False, True)


def frame(stream_id: int, mtype: int, flags: int, data: bytes) -> bytes:
    """Header + data as one ``bytes``; refuse (ResourceExhausted) anything over the limit."""
    n = len(data)
    if n > MAX_MESSAGE:
        raise TtrpcError(Code.RESOURCE_EXHAUSTED, oversize_message(n))
    return _pack(n, stream_id, mtype, flags) + data


class Connection:
    """The ttrpc protocol state of one connection, for either role. Never raises on input."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._buf = bytearray()
        self._discard = 0  # bytes still to skip of an oversized frame
        self._streams: dict[int, _Stream] = {}
        self._last_id = 0  # server: highest accepted Request id
        self._next_id = 1  # client: next id to allocate
        self._outbox: list[bytes] = []
        decoder = RequestDecoder()  # remembers the last call's method
        self._decode_request = decoder.decode
        self._decode_request_view = decoder.decode_view

    # --- state queries ----------------------------------------------------------------

    @property
    def active_streams(self) -> int:
        """How many streams are open (idle when 0)."""
        return len(self._streams)

    @property
    def buffered_bytes(self) -> int:
        """Bytes of an unfinished frame held until the rest of it arrives."""
        return len(self._buf)

    def is_open(self, stream_id: int) -> bool:
        """Whether ``stream_id`` is an open stream of this connection."""
        return stream_id in self._streams

    def data_to_send(self) -> bytes:
        """Replies the core queued on its own (error statuses); b"" when none."""
        if not self._outbox:
            return b""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    # --- receiving --------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes; return the events they complete (possibly none).

        ``data`` is only read during the call (a shell may pass a view of a reused buffer).
        """
        events: list[Event] = []
        n = len(data)
        if not n:
            return events
        start = 0
        if self._discard:
            skip = min(self._discard, n)
            self._discard -= skip
            start = skip
            if start == n:
                return events
        if self._buf:
            buf = self._buf
            buf += memoryview(data)[start:] if start else data
            with memoryview(buf) as view:
                pos = self._parse(view, 0, len(buf), events)
            del buf[:pos]
        elif type(data) is memoryview:
            # The shell's view of its read buffer: parse it as is (no second view).
            pos = self._parse(data, start, n, events)
            if pos < n:
                self._buf = bytearray(data[pos:])
        else:
            with memoryview(data) as view:
                pos = self._parse(view, start, n, events)
                if pos < n:
                    self._buf = bytearray(view[pos:])
        return events

    def receive_request(
        self, buf: bytes | bytearray, view: memoryview, n: int
    ) -> tuple[int, int, Request] | None:
        """Server fast path: when ``buf[:n]`` is exactly one whole, valid new Request and
        nothing is buffered, accept it and return ``(stream_id, flags, request)`` (what
        :class:`RequestReceived` would carry); else return None having changed nothing,
        and the caller feeds the same bytes to :meth:`receive_data`.

        One read holding one request is what a client with one call in flight sends; the
        answer is the same as :meth:`receive_data`'s, without its list, loop and event.
        ``view`` is ``memoryview(buf)`` (the read buffer and its view, both kept by the
        caller: a view's own attributes cost more than the copy they would save).
        """
        if self._buf or self._discard or n < HEADER_SIZE or self.role is not Role.SERVER:
            return None
        length, sid, mtype, flags = _unpack(buf, 0)
        if (
            length + HEADER_SIZE != n
            or mtype != _REQUEST
            or not sid & 1
            or sid <= self._last_id
            or length > MAX_MESSAGE
        ):
            return None
        try:
            request = self._decode_request_view(buf, view, HEADER_SIZE, n)
        except EnvelopeError:
            return None  # receive_data answers it with the error status
        self._last_id = sid
        self._streams[sid] = _Stream(False, False) if flags & FLAG_REMOTE_OPEN else _PEER_CLOSED
        return sid, flags, request

    def _parse(self, view: memoryview, pos: int, end: int, events: list[Event]) -> int:
        server = self.role is Role.SERVER
        while end - pos >= HEADER_SIZE:
            length, sid, mtype, flags = _unpack(view, pos)
            if length > MAX_MESSAGE:
                pos += HEADER_SIZE
                skip = min(length, end - pos)
                pos += skip
                self._discard = length - skip
                self._oversize(sid, length, events)
                continue
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            payload = bytes(view[pos + HEADER_SIZE : stop])
            pos = stop
            if server:
                if mtype == _REQUEST and sid & 1 and sid > self._last_id:
                    # A new Request, the common case, inlined from _server_frame.
                    self._last_id = sid
                    try:
                        request = self._decode_request(payload)
                    except EnvelopeError as exc:
                        message = f"unmarshal request error: {exc}"
                        self._reply_status(sid, Code.INVALID_ARGUMENT, message, events)
                        continue
                    self._streams[sid] = (
                        _Stream(False, False) if flags & FLAG_REMOTE_OPEN else _PEER_CLOSED
                    )
                    events.append(RequestReceived(sid, flags, request))
                else:
                    self._server_frame(sid, mtype, flags, payload, events)
            else:
                self._client_frame(sid, mtype, flags, payload, events)
        return pos

    def _reply_status(self, sid: int, code: Code, message: str, events: list[Event]) -> None:
        self._outbox.append(frame(sid, _RESPONSE, 0, encode_response(code, message)))
        if self._streams.pop(sid, None) is not None:
            events.append(StreamReset(sid, code, message))

    def _oversize(self, sid: int, length: int, events: list[Event]) -> None:
        message = oversize_message(length)
        if self.role is Role.SERVER:
            self._reply_status(sid, Code.RESOURCE_EXHAUSTED, message, events)
        elif self._streams.pop(sid, None) is not None:
            events.append(StreamReset(sid, Code.RESOURCE_EXHAUSTED, message))

    def _server_frame(
        self, sid: int, mtype: int, flags: int, payload: bytes, events: list[Event]
    ) -> None:
        if not sid & 1:
            self._reply_status(sid, Code.INVALID_ARGUMENT, ODD_IDS, events)
        elif mtype == _REQUEST:
            if sid <= self._last_id:
                self._reply_status(sid, Code.INVALID_ARGUMENT, REUSED_ID, events)
                return
            self._last_id = sid
            try:
                request = self._decode_request(payload)
            except EnvelopeError as exc:
                self._reply_status(
                    sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}", events
                )
                return
            self._streams[sid] = _Stream(False, False) if flags & FLAG_REMOTE_OPEN else _PEER_CLOSED
            events.append(RequestReceived(sid, flags, request))
        elif mtype == _DATA:
            stream = self._streams.get(sid)
            if stream is None:
                self._reply_status(sid, Code.INVALID_ARGUMENT, INACTIVE, events)
            elif stream.remote_closed:
                self._reply_status(sid, Code.INVALID_ARGUMENT, DATA_AFTER_CLOSE, events)
            else:
                self._data(sid, stream, flags, payload, events)
                if flags & FLAG_REMOTE_CLOSED and payload:
                    self._reply_status(sid, Code.INVALID_ARGUMENT, CLOSE_WITH_DATA, events)
        # Other types (a Response, or a future type) are ignored for forward compatibility.

    def _data(
        self, sid: int, stream: _Stream, flags: int, payload: bytes, events: list[Event]
    ) -> None:
        end = bool(flags & FLAG_REMOTE_CLOSED)
        data = None if flags & FLAG_NO_DATA and not payload else payload
        if end:
            stream.remote_closed = True
        elif data is None:
            return  # an ND frame that closes nothing carries nothing
        events.append(DataReceived(sid, data, end))

    def _client_frame(
        self, sid: int, mtype: int, flags: int, payload: bytes, events: list[Event]
    ) -> None:
        stream = self._streams.get(sid)
        if stream is None:
            return  # a late reply to an abandoned call, or junk: nothing waits for it
        if mtype == _RESPONSE:
            del self._streams[sid]
            try:
                response = decode_response(payload)
            except EnvelopeError as exc:
                events.append(
                    StreamReset(sid, Code.INTERNAL, f"ttrpc: unmarshal response error: {exc}")
                )
                return
            events.append(ResponseReceived(sid, response))
        elif mtype == _DATA:
            if stream.remote_closed:
                return
            self._data(sid, stream, flags, payload, events)
            if stream.remote_closed and stream.local_closed:
                del self._streams[sid]

    # --- sending ----------------------------------------------------------------------

    def send_request(self, request: Request, flags: int = 0) -> tuple[int, bytes]:
        """Client: allocate the next stream id and frame ``request`` on it.

        ``flags``: 0 unary, ``FLAG_REMOTE_OPEN`` when the client will stream Data,
        ``FLAG_REMOTE_CLOSED`` for a server stream. Raises TtrpcError(ResourceExhausted)
        without allocating when the envelope is too large.
        """
        data = frame(self._next_id, _REQUEST, flags, encode_request(request))
        sid = self._next_id
        self._next_id += 2
        self._streams[sid] = _Stream(not flags & FLAG_REMOTE_OPEN, False)
        return sid, data

    def send_data(self, stream_id: int, payload: bytes) -> bytes:
        """Frame one stream message (flags 0; a zero-length payload is an empty message)."""
        return frame(stream_id, _DATA, 0, payload)

    def send_close(self, stream_id: int) -> bytes:
        """Close our sending side: an empty Data frame with RC|ND (never combined with data)."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            if self.role is Role.SERVER or stream.remote_closed:
                # The server's part of a stream ends with its close; the id stays burnt.
                del self._streams[stream_id]
            else:
                stream.local_closed = True
        return _pack(0, stream_id, _DATA, FLAG_REMOTE_CLOSED | FLAG_NO_DATA)

    def send_response(
        self, stream_id: int, payload: bytes = b"", code: int = 0, message: str = ""
    ) -> bytes:
        """Server: the Response that ends ``stream_id``. Go style: no status when OK.

        Raises TtrpcError(ResourceExhausted) when it would exceed the frame limit; the
        stream stays open so the caller can answer with that error instead.
        """
        if code or message:
            data = frame(stream_id, _RESPONSE, 0, encode_response(code, message, payload))
        else:
            # The common case, inlined: no status, the payload as field 2 (when non-empty).
            n = len(payload)
            if 0 < n < 0x80:
                data = _pack_short(n + 2, stream_id, _RESPONSE, 0, 0x12, n) + payload
            elif 0x80 <= n < 0x4000:
                head = _pack_mid(n + 3, stream_id, _RESPONSE, 0, 0x12, (n & 0x7F) | 0x80, n >> 7)
                data = head + payload
            else:
                head = b"\x12" + _varint(n) if n else b""
                size = len(head) + n
                if size > MAX_MESSAGE:
                    raise TtrpcError(Code.RESOURCE_EXHAUSTED, oversize_message(size))
                data = _pack(size, stream_id, _RESPONSE, 0) + head + payload
        self._streams.pop(stream_id, None)
        return data

    def end_stream(self, stream_id: int) -> None:
        """Forget a stream without sending anything (client timeout, handler gone)."""
        self._streams.pop(stream_id, None)
