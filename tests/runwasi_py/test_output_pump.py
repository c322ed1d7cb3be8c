"""AppendingPipe and hand_appending_file: file stdio appended, whatever the engine opens."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from runwasi_py import AppendingPipe, hand_appending_file


def write_through(pipe: AppendingPipe, data: bytes) -> None:
    """What wasmtime does with ``stdout_file``: open(O_WRONLY|O_CREAT|O_TRUNC), write, close."""
    fd = os.open(pipe.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    pipe.opened()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.close(fd)


def test_appends_to_what_the_file_held(tmp_path: Path) -> None:
    log = tmp_path / "c1.log"
    log.write_bytes(b"earlier line\n")
    pipe = AppendingPipe(str(log))
    write_through(pipe, b"hello\n")
    pipe.close()
    assert log.read_bytes() == b"earlier line\nhello\n"


def test_two_streams_into_one_file_keep_everything(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    out, err = AppendingPipe(str(log)), AppendingPipe(str(log))
    write_through(out, b"to stdout\n")
    write_through(err, b"to stderr\n")
    out.close()
    err.close()
    assert sorted(log.read_bytes().splitlines()) == [b"to stderr", b"to stdout"]


def test_more_than_a_pipe_holds_arrives_whole(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    data = os.urandom(3 << 20)
    pipe = AppendingPipe(str(log))
    writer = threading.Thread(target=write_through, args=(pipe, data))
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), "the writer blocked on a full pipe"
    pipe.close()
    assert log.read_bytes() == data


def test_a_writer_that_stays_open_ends_in_a_warning_not_a_hang(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "c1.log"
    pipe = AppendingPipe(str(log))
    leaked = os.open(pipe.path, os.O_WRONLY)
    os.write(leaked, b"partial\n")
    with caplog.at_level(logging.WARNING, logger="runwasi_py"):
        pipe.close(timeout=0.5)
    assert "a writer stayed open" in caplog.text
    assert pipe.done.is_set()
    with pytest.raises(BrokenPipeError):  # the read end is gone: no one is left waiting
        os.write(leaked, b"more\n")
    os.close(leaked)


def test_a_full_disk_loses_output_but_never_blocks_the_writer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pipe = AppendingPipe("/dev/full")
    with caplog.at_level(logging.WARNING, logger="runwasi_py"):
        writer = threading.Thread(target=write_through, args=(pipe, b"x" * (1 << 20)))
        writer.start()
        writer.join(30)
        assert not writer.is_alive(), "the writer blocked"
        pipe.close()
    assert "lost" in caplog.text


def test_the_path_is_gone_once_opened(tmp_path: Path) -> None:
    pipe = AppendingPipe(str(tmp_path / "c1.log"))
    pipe.opened()
    with pytest.raises(ValueError, match="closed"):
        _ = pipe.path
    pipe.close()


# -- hand_appending_file: the engine's own fd becomes an O_APPEND fd on the file ----------


class Engine:
    """Opens what it is handed as wasmtime's ``stdout_file`` does (O_TRUNC), writes later."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def open(self, path: str) -> None:
        self.fds.append(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC))

    def write(self, i: int, data: bytes) -> None:
        os.write(self.fds[i], data)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def test_the_engines_fd_appends_to_what_the_file_held(tmp_path: Path) -> None:
    log = tmp_path / "c1.log"
    log.write_bytes(b"earlier line\n")
    engine = Engine()
    assert hand_appending_file(str(log), engine.open)
    assert log.read_bytes() == b"earlier line\n"  # the engine's O_TRUNC reached a pipe
    engine.write(0, b"hello\n")
    engine.close()
    assert log.read_bytes() == b"earlier line\nhello\n"


def test_stdout_and_stderr_sharing_a_file_do_not_overwrite_each_other(tmp_path: Path) -> None:
    log = tmp_path / "c1.log"
    engine = Engine()
    assert hand_appending_file(str(log), engine.open)
    assert hand_appending_file(str(log), engine.open)
    engine.write(0, b"out 1\n")
    engine.write(1, b"err 1\n")
    engine.write(0, b"out 2\n")
    engine.close()
    assert log.read_bytes() == b"out 1\nerr 1\nout 2\n"
    assert os.stat(log).st_mode & 0o777 == 0o600


def test_the_engines_fd_is_found_when_another_open_took_the_expected_number(
    tmp_path: Path,
) -> None:
    """Another thread may open a file between the guess and the engine's open."""
    log = tmp_path / "c1.log"
    engine = Engine()
    other: list[int] = []

    def open_after_another(path: str) -> None:
        other.append(os.open(os.devnull, os.O_RDONLY))  # takes the lowest free fd
        engine.open(path)

    try:
        assert hand_appending_file(str(log), open_after_another)
        engine.write(0, b"hello\n")
    finally:
        engine.close()
        os.close(other[0])
    assert log.read_bytes() == b"hello\n"


def test_the_engines_fd_is_found_below_the_guess_when_a_lower_one_was_freed(
    tmp_path: Path,
) -> None:
    """Another thread may close a lower fd meanwhile: the engine's open then takes that."""
    log = tmp_path / "c1.log"
    engine = Engine()
    low = os.open(os.devnull, os.O_RDONLY)
    padding = [os.open(os.devnull, os.O_RDONLY) for _ in range(20)]

    def open_after_a_close(path: str) -> None:
        os.close(low)  # now the lowest free fd, far below the one hand_appending_file freed
        engine.open(path)

    try:
        assert hand_appending_file(str(log), open_after_a_close)
        assert engine.fds == [low]
        engine.write(0, b"hello\n")
    finally:
        engine.close()
        for fd in padding:
            os.close(fd)
    assert log.read_bytes() == b"hello\n"


def test_a_fifo_on_disk_with_the_pipes_inode_number_is_not_taken_for_the_engines(
    tmp_path: Path,
) -> None:
    """Inode numbers repeat across file systems: the pipe is known by device and inode."""
    from runwasi_py._output_pump import _engine_fd

    os.mkfifo(tmp_path / "other-containers-stdout")
    fifo = os.open(tmp_path / "other-containers-stdout", os.O_RDWR)
    r, w = os.pipe()
    try:
        pipefs = os.fstat(w).st_dev
        same_number = (pipefs, os.fstat(fifo).st_ino)  # as if our pipe had the FIFO's number
        assert _engine_fd(fifo, same_number, (r, w)) is None
        assert _engine_fd(fifo, (os.fstat(fifo).st_dev, os.fstat(fifo).st_ino), (r, w)) == fifo
    finally:
        for fd in (fifo, r, w):
            os.close(fd)


def test_an_engine_that_did_not_open_the_path_is_reported(tmp_path: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    assert not hand_appending_file(str(tmp_path / "c1.log"), lambda path: None)
    assert set(os.listdir("/proc/self/fd")) == before  # nothing of ours left open


def test_an_unopenable_file_raises_before_anything_is_handed_over(tmp_path: Path) -> None:
    handed: list[str] = []
    with pytest.raises(FileNotFoundError):
        hand_appending_file(str(tmp_path / "no-such-dir" / "c1.log"), handed.append)
    assert handed == []
