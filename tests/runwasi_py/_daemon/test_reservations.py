"""Reservations: the book a shim daemon keeps of ``start`` calls that handed out its address."""

from __future__ import annotations

import pytest

from runwasi_py._daemon.reservations import Reservations, ShimClosing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reserve_release_and_close() -> None:
    book = Reservations(timeout=10.0, clock=Clock())
    assert book.pending == 0
    book.reserve("c1")
    book.reserve("c2")
    assert book.pending == 2
    assert not book.try_close()  # a start is waiting for its Create
    assert not book.closed
    book.release("c1")
    book.release("c1")  # a second release (or one for an unknown id) is harmless
    book.release("nobody")
    assert book.pending == 1
    book.release("c2")
    assert book.try_close()
    assert book.closed
    with pytest.raises(ShimClosing):
        book.reserve("c3")
    assert book.pending == 0


def test_reservations_expire() -> None:
    clock = Clock()
    book = Reservations(timeout=10.0, clock=clock)
    book.reserve("c1")
    clock.now += 4
    book.reserve("c2")
    assert book.seconds_left() == pytest.approx(10.0)  # the last one to expire counts
    clock.now += 6.5
    assert book.pending == 1  # c1 expired
    assert book.seconds_left() == pytest.approx(3.5)
    clock.now += 3.5
    assert book.pending == 0
    assert book.seconds_left() == 0.0
    assert book.try_close()


def test_reserving_again_extends() -> None:
    clock = Clock()
    book = Reservations(timeout=10.0, clock=clock)
    book.reserve("c1")
    clock.now += 8
    book.reserve("c1")
    clock.now += 8
    assert book.pending == 1


def test_bad_timeout() -> None:
    with pytest.raises(ValueError, match="positive"):
        Reservations(timeout=0)
