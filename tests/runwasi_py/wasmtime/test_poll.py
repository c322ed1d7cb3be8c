"""The interruptible ``poll_oneoff``: its codec, and guests calling it through wasmtime-py."""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from runwasi_py.wasmtime._poll import (
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    ERRNO_FAULT,
    ERRNO_INTR,
    ERRNO_INVAL,
    ERRNO_SUCCESS,
    EVENT_SIZE,
    EVENTTYPE_CLOCK,
    EVENTTYPE_FD_READ,
    EVENTTYPE_FD_WRITE,
    SUBSCRIPTION_SIZE,
    define_poll_oneoff,
    parse,
    poll,
)

_SECOND = 1_000_000_000


def clock_sub(userdata: int, clock_id: int, timeout: int, flags: int = 0) -> bytes:
    head = struct.pack("<QB7x", userdata, EVENTTYPE_CLOCK)
    return head + struct.pack("<I4xQQH6x", clock_id, timeout, 0, flags)


def fd_sub(userdata: int, kind: int, fd: int) -> bytes:
    return struct.pack("<QB7x", userdata, kind) + struct.pack("<I28x", fd)


def events(data: bytes, n: int) -> list[tuple[int, int, int]]:
    """(userdata, error, type) of n events."""
    return [struct.unpack_from("<QHB", data, i * EVENT_SIZE) for i in range(n)]


# --- the codec ------------------------------------------------------------------------


def test_subscription_layout_is_48_bytes() -> None:
    assert len(clock_sub(1, 1, 5)) == SUBSCRIPTION_SIZE
    assert len(fd_sub(1, EVENTTYPE_FD_READ, 0)) == SUBSCRIPTION_SIZE


def test_parse_reads_clocks_and_fds() -> None:
    data = clock_sub(7, CLOCK_MONOTONIC, 5 * _SECOND, 1) + fd_sub(9, EVENTTYPE_FD_WRITE, 2)
    clock, fd = parse(data, 2)
    assert clock.userdata == 7
    assert clock.clock is not None
    assert (clock.clock.clock_id, clock.clock.timeout, clock.clock.absolute) == (
        CLOCK_MONOTONIC,
        5 * _SECOND,
        True,
    )
    assert (fd.userdata, fd.kind, fd.fd) == (9, EVENTTYPE_FD_WRITE, 2)


@given(st.binary(min_size=SUBSCRIPTION_SIZE * 4, max_size=SUBSCRIPTION_SIZE * 4))
def test_parse_of_any_bytes_gives_subscriptions_or_value_error(data: bytes) -> None:
    tags = [data[i * SUBSCRIPTION_SIZE + 8] for i in range(4)]
    if any(t > EVENTTYPE_FD_WRITE for t in tags):
        with pytest.raises(ValueError, match="unknown event type"):
            parse(data, 4)
    else:
        subs = parse(data, 4)
        assert len(subs) == 4
        assert all(s.kind in (EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE) for s in subs)


def test_no_subscriptions_is_einval() -> None:
    assert poll([], threading.Event(), 0) == (ERRNO_INVAL, [])


def test_fd_subscriptions_are_ready_at_once_even_beside_a_long_clock() -> None:
    subs = parse(clock_sub(1, CLOCK_MONOTONIC, 3600 * _SECOND) + fd_sub(2, 1, 0), 2)
    errno, out = poll(subs, threading.Event(), 0)
    assert errno == ERRNO_SUCCESS
    assert events(b"".join(out), 1) == [(2, 0, EVENTTYPE_FD_READ)]


def test_cpu_time_clocks_are_refused_on_their_event() -> None:
    subs = parse(clock_sub(5, 2, _SECOND), 1)
    errno, out = poll(subs, threading.Event(), 0)
    assert errno == ERRNO_SUCCESS
    assert events(b"".join(out), 1) == [(5, ERRNO_INVAL, EVENTTYPE_CLOCK)]


def test_only_expired_clocks_are_reported() -> None:
    now = [1000]

    def mono() -> int:
        return now[0]

    wake = threading.Event()
    subs = parse(clock_sub(1, CLOCK_MONOTONIC, 10) + clock_sub(2, CLOCK_MONOTONIC, 10**12), 2)
    # A clock that jumps past the first deadline on its second reading: no real wait.
    readings = iter([1000, 1011, 1011, 1011])
    errno, out = poll(subs, wake, 0, monotonic_ns=lambda: next(readings), time_ns=mono)
    assert errno == ERRNO_SUCCESS
    assert events(b"".join(out), len(out)) == [(1, 0, EVENTTYPE_CLOCK)]


def test_absolute_deadlines_in_the_past_fire_at_once() -> None:
    subs = parse(
        clock_sub(1, CLOCK_REALTIME, time.time_ns() - _SECOND, 1)
        + clock_sub(2, CLOCK_MONOTONIC, 0, 1),
        2,
    )
    errno, out = poll(subs, threading.Event(), time.monotonic_ns())
    assert errno == ERRNO_SUCCESS
    assert sorted(e[0] for e in events(b"".join(out), len(out))) == [1, 2]


def test_a_set_wake_interrupts_at_once() -> None:
    wake = threading.Event()
    wake.set()
    subs = parse(clock_sub(1, CLOCK_MONOTONIC, 3600 * _SECOND), 1)
    assert poll(subs, wake, 0) == (ERRNO_INTR, [])


# --- through wasmtime -----------------------------------------------------------------

# The guest copies the subscriptions it is given (global $n of them, at 0) and polls.
GUEST = r"""
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $r (export "r") (mut i32) (i32.const -1))
  (func (export "poll") (param $in i32) (param $out i32) (param $n i32) (param $nev i32)
    (global.set $r (call $poll (local.get $in) (local.get $out) (local.get $n) (local.get $nev)))
  )
  (func (export "spin") (loop $l (br $l)))
)
"""


class Guest:
    """An instance of GUEST with the shadowed poll_oneoff, in an epoch-interruptible store."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.epoch_interruption = True
        self.engine = wasmtime.Engine(config)
        self.store = wasmtime.Store(self.engine)
        self.store.set_epoch_deadline(1)
        self.store.set_wasi(wasmtime.WasiConfig())
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        self.wake = threading.Event()
        define_poll_oneoff(linker, self.wake)
        self.instance = linker.instantiate(self.store, wasmtime.Module(self.engine, GUEST))
        self.exports = self.instance.exports(self.store)
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

    def call(self, name: str, *args: Any) -> Any:
        func = self.exports[name]
        assert isinstance(func, wasmtime.Func)
        return func(self.store, *args)

    def poll(self, subs: bytes, n: int, out: int = 4096, nev: int = 8192) -> int:
        self.memory.write(self.store, subs, 0)
        self.call("poll", 0, out, n, nev)
        r = self.exports["r"]
        assert isinstance(r, wasmtime.Global)
        return int(r.value(self.store))

    def read(self, start: int, n: int) -> bytes:
        return bytes(self.memory.read(self.store, start, start + n))

    def kill(self) -> None:
        self.wake.set()
        self.engine.increment_epoch()


def test_guest_sleep_returns_its_clock_event() -> None:
    guest = Guest()
    assert guest.poll(clock_sub(42, CLOCK_MONOTONIC, 1000), 1) == ERRNO_SUCCESS
    assert struct.unpack("<I", guest.read(8192, 4)) == (1,)
    assert events(guest.read(4096, EVENT_SIZE), 1) == [(42, 0, EVENTTYPE_CLOCK)]


def test_kill_ends_a_guest_sleeping_for_an_hour() -> None:
    guest = Guest()
    threading.Timer(0.2, guest.kill).start()
    # Without the shadow this call would sleep an hour (the test's timeout would fail it).
    assert guest.poll(clock_sub(1, CLOCK_MONOTONIC, 3600 * _SECOND), 1) == ERRNO_INTR
    with pytest.raises(wasmtime.Trap):
        guest.call("spin")  # the bumped epoch stops the guest at its next loop header


@pytest.mark.parametrize(
    ("in_ptr", "n", "out"),
    [(65536 - 10, 1, 4096), (0, 1, 65536 - 8), (0, 0x7FFFFFFF, 4096)],
)
def test_pointers_outside_memory_are_efault(in_ptr: int, n: int, out: int) -> None:
    guest = Guest()
    guest.call("poll", in_ptr, out, n, 8192)
    r = guest.exports["r"]
    assert isinstance(r, wasmtime.Global)
    assert r.value(guest.store) == ERRNO_FAULT


def test_an_unknown_subscription_type_is_einval() -> None:
    guest = Guest()
    bad = struct.pack("<QB7x", 1, 9) + bytes(32)
    assert guest.poll(bad, 1) == ERRNO_INVAL


def test_the_original_poll_oneoff_is_replaced() -> None:
    """wasmtime's own poll would report the fd subscription as EBADF (fd 77 is not open)."""
    guest = Guest()
    assert guest.poll(fd_sub(3, EVENTTYPE_FD_READ, 77), 1) == ERRNO_SUCCESS
    assert events(guest.read(4096, EVENT_SIZE), 1) == [(3, 0, EVENTTYPE_FD_READ)]
