"""logrus text format and the bundle's log FIFO."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._daemon.log import (
    LogrusFormatter,
    LogrusHandler,
    format_value,
    open_log_fifo,
    setup_logging,
)

LINE = re.compile(r'^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=(\w+) msg=(.*)$')


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("runwasi_py.test", level, __file__, 1, msg, None, None)
    rec.created = 1795910399.123456  # 2026-11-28T23:59:59.123456Z
    vars(rec).update(extra)
    return rec


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("c1", "c1"),
        ("a-b.c_d/e@f^g+h", "a-b.c_d/e@f^g+h"),
        ("", ""),
        ("two words", '"two words"'),
        ('say "hi"', r'"say \"hi\""'),
        ("a\nb\tc\\", r'"a\nb\tc\\"'),
        ("x=1", '"x=1"'),
        ("\x01", r'"\x01"'),
        ("héllo", '"héllo"'),
        (42, "42"),
    ],
)
def test_format_value_quotes_like_logrus(value: object, expected: str) -> None:
    assert format_value(value) == expected


def test_line_shape() -> None:
    line = LogrusFormatter().format(record("task started", id="c1", pid=42, bundle="/run/b"))
    assert line.startswith('time="2026-11-28T23:59:59.123456')
    assert line.endswith('Z" level=info msg="task started" bundle=/run/b id=c1 pid=42')
    assert LINE.match(line)


def test_single_word_message_is_bare() -> None:
    assert LogrusFormatter().format(record("started")).endswith(" level=info msg=started")


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warning"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "fatal"),
        (5, "trace"),
        (35, "warning"),
    ],
)
def test_levels(level: int, name: str) -> None:
    match = LINE.match(LogrusFormatter().format(record("m", level)))
    assert match is not None
    assert match.group(1) == name


def test_exception_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("run_wasi failed", logging.ERROR)
        rec.exc_info = sys.exc_info()
    line = LogrusFormatter().format(rec)
    assert "\n" not in line
    assert 'error="Traceback (most recent call last):\\n' in line
    assert "ValueError: boom" in line


# --- the FIFO -------------------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A bundle with a ``log`` FIFO held open for reading, as containerd does."""
    os.mkfifo(tmp_path / "log", 0o700)
    reader = os.open(tmp_path / "log", os.O_RDONLY | os.O_NONBLOCK)
    yield tmp_path, reader
    os.close(reader)


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_fifo_round_trip(fifo: tuple[Path, int]) -> None:
    bundle, reader = fifo
    fd = open_log_fifo(bundle)
    assert fd is not None
    handler = LogrusHandler(fd, close_fd=True)
    try:
        handler.handle(record("hello", id="c1"))
        handler.handle(record("second"))
    finally:
        handler.close()
    lines = read_all(reader).decode().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("level=info msg=hello id=c1")
    assert lines[1].endswith("msg=second")


def test_fifo_without_reader_is_not_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    assert open_log_fifo(tmp_path) is None  # ENXIO, no hang


def test_missing_log_is_not_opened(tmp_path: Path) -> None:
    assert open_log_fifo(tmp_path) is None
    assert open_log_fifo(tmp_path / "nope") is None


def test_full_fifo_drops_and_reports(fifo: tuple[Path, int]) -> None:
    bundle, reader = fifo
    fd = open_log_fifo(bundle)
    assert fd is not None
    handler = LogrusHandler(fd, close_fd=True)
    try:
        big = "x" * 8000
        for _ in range(20):  # 160 kB > the 64 kB pipe buffer; nobody reads meanwhile
            handler.handle(record(big))
        assert handler.dropped > 0
        read_all(reader)
        handler.handle(record("after"))
        assert handler.dropped == 0
        tail = read_all(reader).decode().splitlines()
    finally:
        handler.close()
    assert "log lines dropped" in tail[0]
    assert tail[-1].endswith("msg=after")
    # every line that got through is whole
    assert all(LINE.match(line) for line in tail)


def test_reader_gone_does_not_raise(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "log")
    reader = os.open(tmp_path / "log", os.O_RDONLY | os.O_NONBLOCK)
    fd = open_log_fifo(tmp_path)
    os.close(reader)
    assert fd is not None
    handler = LogrusHandler(fd, close_fd=True)
    try:
        handler.handle(record("into the void"))  # EPIPE: counted, not raised
        assert handler.dropped == 1
    finally:
        handler.close()


def test_setup_logging_to_regular_file(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("")
    logger = logging.getLogger("runwasi_py.test_setup")
    logger.propagate = False
    handler = setup_logging(tmp_path, debug=True, redirect_stderr=False, logger=logger)
    try:
        logger.debug("dbg", extra={"id": "c1"})
        logger.info("two words")
        # a second setup replaces the handler rather than doubling every line
        handler = setup_logging(tmp_path, debug=False, redirect_stderr=False, logger=logger)
        logger.debug("hidden")
        logger.warning("warned")
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.propagate = True
    lines = (tmp_path / "log").read_text().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["debug", "info", "warning"]  # type: ignore[union-attr]
    assert lines[0].endswith("msg=dbg id=c1")
    assert lines[1].endswith('msg="two words"')
