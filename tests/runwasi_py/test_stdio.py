"""OutputDrain: the exit waits until containerd's reader has taken the output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasi_py._stdio import OutputDrain


@pytest.fixture
def fifo(tmp_path: Path) -> str:
    path = tmp_path / "stdout"
    os.mkfifo(path)
    return str(path)


def _reader(path: str) -> int:
    """containerd's end, opened before the program's (non-blocking so the test cannot hang)."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def _program_writes(path: str, data: bytes) -> None:
    """The program's end: open, write, close (all before the drain starts)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_wait_returns_only_after_the_reader_took_the_output(fifo: str) -> None:
    rfd = _reader(fifo)
    _program_writes(fifo, b"to stdout\n")
    drain = OutputDrain()
    drain.watch(fifo)
    got: list[bytes] = []
    # Deterministic, no thread racing the check: while the output sits unread, the wait
    # does not succeed (it runs to its deadline); once the reader took it, it does.
    try:
        assert drain.wait(0.0) is False
        got.append(os.read(rfd, 100))
        assert drain.wait(30.0) is True
        assert got == [b"to stdout\n"]
    finally:
        drain.close()
    assert os.read(rfd, 100) == b""  # end-of-file once the drain let go
    os.close(rfd)


def test_the_unread_output_survives_the_programs_close(fifo: str) -> None:
    rfd = _reader(fifo)
    _program_writes(fifo, b"kept")
    drain = OutputDrain()
    drain.watch(fifo)
    try:
        assert drain.wait(0.01) is False  # nobody read it: the deadline ends the wait
        assert os.read(rfd, 100) == b"kept"
        assert drain.wait(30.0) is True
    finally:
        drain.close()
        os.close(rfd)


def test_a_reader_that_went_away_ends_the_wait(fifo: str) -> None:
    rfd = _reader(fifo)
    _program_writes(fifo, b"never read")
    drain = OutputDrain()
    drain.watch(fifo)
    os.close(rfd)
    try:
        assert drain.wait(30.0) is True
    finally:
        drain.close()


def test_stop_ends_the_wait(fifo: str) -> None:
    rfd = _reader(fifo)
    _program_writes(fifo, b"unread")
    drain = OutputDrain()
    drain.watch(fifo)
    try:
        assert drain.wait(30.0, stop=lambda: True) is False
    finally:
        drain.close()
        os.close(rfd)


def test_nothing_to_watch_without_a_reader_or_a_fifo(fifo: str, tmp_path: Path) -> None:
    regular = tmp_path / "log"
    regular.write_bytes(b"x")
    drain = OutputDrain()
    drain.watch(fifo)  # no reader: ENXIO, nothing held
    drain.watch(str(regular))
    drain.watch(str(tmp_path / "missing"))
    drain.watch("")
    assert drain.wait(30.0) is True
    drain.close()
    drain.close()  # idempotent


def test_a_tasks_stdio_is_classified_once_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's set-up, kill side and drain all ask which paths are FIFOs: one stat each."""
    import runwasi_py._stdio as stdio_mod
    from runwasi_py import Stdio

    out, err = tmp_path / "out", tmp_path / "err.log"
    os.mkfifo(out)
    calls: list[str] = []
    real = stdio_mod._is_fifo

    def counting(path: str) -> bool:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(stdio_mod, "_is_fifo", counting)
    stdio = Stdio(stdout=str(out), stderr=str(err))
    stdio.unblocker().close()
    stdio.output_hold().close()
    drain = OutputDrain()
    for path in (stdio.stdout, stdio.stderr):
        drain.watch(path, is_fifo=stdio.is_fifo)
    drain.close()
    assert sorted(calls) == sorted([str(out), str(err)])
    assert stdio.is_fifo(str(out))
    assert not stdio.is_fifo(str(err))
    assert stdio == Stdio(stdout=str(out), stderr=str(err))  # the memo is no part of it
