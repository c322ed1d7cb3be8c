"""Shim socket addresses: Go's filepath.Join/Clean semantics, hashing, live-shim probe."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from runwasi_py._launch.address import (
    DEFAULT_SOCKET_DIR,
    go_clean,
    go_join,
    is_listening,
    socket_address,
    socket_dir,
    socket_path,
)

# Go's own path.Clean test table (cleantests in path_test.go), as input -> output pairs
CLEAN_CASES = [
    ("", "."),
    ("abc", "abc"),
    ("abc/def", "abc/def"),
    ("a/b/c", "a/b/c"),
    (".", "."),
    ("..", ".."),
    ("../..", "../.."),
    ("../../abc", "../../abc"),
    ("/abc", "/abc"),
    ("/", "/"),
    ("abc/", "abc"),
    ("abc/def/", "abc/def"),
    ("./", "."),
    ("../", ".."),
    ("/abc/", "/abc"),
    ("abc//def//ghi", "abc/def/ghi"),
    ("//abc", "/abc"),
    ("///abc", "/abc"),
    ("//abc//", "/abc"),
    ("abc//", "abc"),
    ("abc/./def", "abc/def"),
    ("/./abc/def", "/abc/def"),
    ("abc/.", "abc"),
    ("abc/def/ghi/../jkl", "abc/def/jkl"),
    ("abc/def/../ghi/../jkl", "abc/jkl"),
    ("abc/def/..", "abc"),
    ("abc/def/../..", "."),
    ("/abc/def/../..", "/"),
    ("abc/def/../../..", ".."),
    ("/abc/def/../../..", "/"),
    ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
    ("/../abc", "/abc"),
    ("abc/./../def", "def"),
    ("abc//./../def", "def"),
    ("abc/../../././../def", "../../def"),
]


@pytest.mark.parametrize(("path", "expected"), CLEAN_CASES)
def test_go_clean(path: str, expected: str) -> None:
    assert go_clean(path) == expected


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        (("a", "b", "c"), "a/b/c"),
        (("a", "", "c"), "a/c"),
        (("", ""), ""),
        ((), ""),
        (("a/", "b"), "a/b"),
        (("/", "a"), "/a"),
        (("a", "../b"), "b"),
        (
            ("/run/containerd/containerd.sock", "default", "c1"),
            "/run/containerd/containerd.sock/default/c1",
        ),
        (("", "default", "c1"), "default/c1"),
    ],
)
def test_go_join(elements: tuple[str, ...], expected: str) -> None:
    assert go_join(*elements) == expected


def test_socket_address_matches_go_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWASI_PY_SOCKET_DIR", raising=False)
    key = b"/run/containerd/containerd.sock/default/c1"
    expected = "unix:///run/containerd/s/" + hashlib.sha256(key).hexdigest()
    assert socket_address("/run/containerd/containerd.sock", "default", "c1") == expected
    # an unclean -address hashes the same as its clean form, as filepath.Join makes it
    assert socket_address("/run//containerd/./containerd.sock/", "default", "c1") == expected


def test_debug_socket_differs() -> None:
    key = b"/a.sock/ns/g/debug"
    assert socket_address("/a.sock", "ns", "g", directory="/s", debug=True) == (
        "unix:///s/" + hashlib.sha256(key).hexdigest()
    )


def test_socket_dir_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWASI_PY_SOCKET_DIR", raising=False)
    assert socket_dir() == DEFAULT_SOCKET_DIR
    monkeypatch.setenv("RUNWASI_PY_SOCKET_DIR", "/tmp/s")
    assert socket_dir() == "/tmp/s"
    assert socket_dir("/explicit") == "/explicit"
    assert socket_address("/a", "ns", "g").startswith("unix:///tmp/s/")


def test_too_long_path_refused() -> None:
    with pytest.raises(ValueError, match="longer than 107 bytes"):
        socket_address("/a", "ns", "g", directory="/" + "d" * 60)


def test_socket_path() -> None:
    assert socket_path("unix:///run/s/x") == "/run/s/x"
    assert socket_path("/run/s/x") == "/run/s/x"


def test_is_listening(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    assert not is_listening(f"unix://{path}")  # no file
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
        assert not is_listening(f"unix://{path}")  # bound, not listening
        sock.listen(1)
        assert is_listening(f"unix://{path}")
        assert is_listening(str(path))
    assert not is_listening(f"unix://{path}")  # stale file of a dead shim
    assert not is_listening("")
