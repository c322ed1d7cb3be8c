"""AppendingPipe: a path any writer opens (even O_TRUNC) that ends up appended to a file."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from runwasi_py import AppendingPipe


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
