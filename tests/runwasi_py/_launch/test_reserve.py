"""The Reserve client's hand-packed ttrpc frames agree with ttrpc's, and its answers."""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._daemon import reservations
from runwasi_py._launch import reserve as reserve_mod
from runwasi_py._launch.reserve import reserve
from runwasi_py._proto.wire import encode_varint, field_map, length_delimited
from ttrpc._wire import HEADER_SIZE, MessageType, pack_header, parse_header


@pytest.mark.parametrize(
    ("length", "stream_id", "kind", "flags"),
    [(0, 1, 1, 0), (3, 1, 2, 4), ((1 << 32) - 1, (1 << 32) - 1, 3, 255), (300, 7, 1, 1)],
)
def test_header_is_ttrpc_s(length: int, stream_id: int, kind: int, flags: int) -> None:
    assert reserve_mod._header(length, stream_id, kind, flags) == pack_header(
        length, stream_id, kind, flags
    )


def test_constants_are_ttrpc_s_and_the_daemon_s() -> None:
    assert reserve_mod._HEADER_SIZE == HEADER_SIZE
    assert (reserve_mod._REQUEST, reserve_mod._RESPONSE) == (
        MessageType.REQUEST,
        MessageType.RESPONSE,
    )
    assert reservations.RESERVE_SERVICE == reserve_mod.RESERVE_SERVICE
    assert reservations.RESERVE_METHOD == reserve_mod.RESERVE_METHOD


@pytest.fixture
def sock_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rsv", dir="/tmp") as d:  # sun_path is short
        yield Path(d) / "s"


def _serve_once(path: Path, reply: bytes | None, seen: list[bytes]) -> threading.Thread:
    """Accept one connection, keep the request, answer ``reply`` on stream 1 (None: close)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            header = conn.recv(HEADER_SIZE, socket.MSG_WAITALL)
            length = parse_header(header)[0]
            seen.append(header + conn.recv(length, socket.MSG_WAITALL))
            if reply is not None:
                conn.sendall(pack_header(len(reply), 1, MessageType.RESPONSE, 0) + reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _status(code: int) -> bytes:
    """A ttrpc Response whose status has ``code`` (field 1 of Status in field 1)."""
    return length_delimited(1, b"\x08" + encode_varint(code) if code else b"")


@pytest.mark.parametrize(("code", "answer"), [(0, "reserved"), (9, "refused"), (5, "reserved")])
def test_answers_by_status(sock_path: Path, code: int, answer: str) -> None:
    seen: list[bytes] = []
    thread = _serve_once(sock_path, _status(code), seen)
    assert reserve(f"unix://{sock_path}", "c1") == answer
    thread.join(5)
    length, stream_id, kind, flags = parse_header(seen[0])
    assert (length, stream_id, kind, flags) == (len(seen[0]) - HEADER_SIZE, 1, 1, 0)
    request = field_map(seen[0][HEADER_SIZE:])
    assert request[1] == [b"runwasi.shim.v1.Shim"]
    assert request[2] == [b"Reserve"]
    assert request[3] == [length_delimited(1, b"c1")]


def test_closed_without_answer_is_unknown_and_nobody_is_dead(sock_path: Path) -> None:
    thread = _serve_once(sock_path, None, [])
    assert reserve(f"unix://{sock_path}", "c1") == "unknown"
    thread.join(5)
    sock_path.unlink()
    assert reserve(f"unix://{sock_path}", "c1") == "dead"
