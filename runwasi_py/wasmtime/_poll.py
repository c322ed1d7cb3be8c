"""A ``poll_oneoff`` for WASI preview 1 that a kill interrupts.

Theory of operation. Epoch interruption stops wasm code only: a guest inside wasmtime's own
``poll_oneoff`` (every ``sleep``, ``nanosleep``, ``clock_nanosleep``) stays there until its
timeout, so a SIGTERM waited for the SIGKILL escalation. :func:`define_poll_oneoff` shadows
the import with ours: it decodes the subscriptions from guest memory (:func:`parse`), waits on
a ``threading.Event`` that the engine's kill path sets, for at most the time to the earliest
clock deadline, and writes the events (:func:`encode_event`). Woken by a kill, it returns
``EINTR`` with no events; the bumped epoch then traps the guest at its next function entry
or loop header.

Clocks: ``realtime`` and ``monotonic`` (relative or ``ABSTIME``); an absolute monotonic
deadline is measured from the moment the store's WASI context was made, which is where
wasmtime's guest-visible monotonic clock starts. The CPU-time clocks are reported with
``EINVAL`` on their event, as wasmtime does not support them either.

File descriptor subscriptions (``fd_read``/``fd_write``) are reported ready at once, with
``nbytes`` 0: host descriptors behind guest fds are wasmtime's and not visible from Python.
That is what ``poll(2)`` says of regular files, and for the stdio FIFOs the read or write that
follows blocks in wasmtime, where the stdio unblocker ends it on a kill (see ``_stdio``). A
guest that polls stdin *and* a timer therefore sees stdin ready early and blocks in its
read: an event loop's timers do not fire while it waits for input.

The host function never raises (wasmtime-py carries host exceptions through a process-wide
variable that concurrent instances could pick up): bad pointers give ``EFAULT``.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import wasmtime

__all__ = [
    "Clock",
    "Subscription",
    "define_poll_oneoff",
    "define_poll_oneoff_per_run",
    "encode_event",
    "next_deadline",
    "parse",
    "poll",
]

SUBSCRIPTION_SIZE = 48
EVENT_SIZE = 32

ERRNO_SUCCESS = 0
ERRNO_FAULT = 21
ERRNO_INTR = 27
ERRNO_INVAL = 28

EVENTTYPE_CLOCK = 0
EVENTTYPE_FD_READ = 1
EVENTTYPE_FD_WRITE = 2

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
SUBCLOCKFLAGS_ABSTIME = 1

# subscription: userdata u64, tag u8 (+7 pad), then the union at 16
#   clock: id u32 (+4 pad), timeout u64, precision u64, flags u16
#   fd_readwrite: file_descriptor u32
_SUB_HEAD = struct.Struct("<QB")
_SUB_CLOCK = struct.Struct("<I4xQQH")
_SUB_FD = struct.Struct("<I")
# event: userdata u64, error u16, type u8 (+5 pad), fd_readwrite: nbytes u64, flags u16 (+6 pad)
_EVENT = struct.Struct("<QHB5xQH6x")
_NEVENTS = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Clock:
    """A clock subscription: which clock, its timeout in ns, and whether it is absolute."""

    clock_id: int
    timeout: int
    absolute: bool


@dataclass(frozen=True, slots=True)
class Subscription:
    """One decoded subscription: its userdata and event type, and the clock or the fd."""

    userdata: int
    kind: int  # EVENTTYPE_*; any other value is refused as EINVAL by parse
    clock: Clock | None = None
    fd: int | None = None


def parse(data: bytes | bytearray | memoryview, count: int) -> list[Subscription]:
    """Decode ``count`` subscriptions; ``ValueError`` for a tag WASI does not define."""
    subs: list[Subscription] = []
    for i in range(count):
        base = i * SUBSCRIPTION_SIZE
        userdata, tag = _SUB_HEAD.unpack_from(data, base)
        if tag == EVENTTYPE_CLOCK:
            clock_id, timeout, _precision, flags = _SUB_CLOCK.unpack_from(data, base + 16)
            clock = Clock(clock_id, timeout, bool(flags & SUBCLOCKFLAGS_ABSTIME))
            subs.append(Subscription(userdata, tag, clock=clock))
        elif tag in (EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE):
            (fd,) = _SUB_FD.unpack_from(data, base + 16)
            subs.append(Subscription(userdata, tag, fd=fd))
        else:
            raise ValueError(f"subscription {i}: unknown event type {tag}")
    return subs


def encode_event(userdata: int, error: int, kind: int) -> bytes:
    """One 32-byte WASI event (``nbytes``/``flags`` 0)."""
    return _EVENT.pack(userdata, error, kind, 0, 0)


def _deadline(clock: Clock, now_mono: int, now_real: int, mono_base: int) -> int | None:
    """The host-monotonic ns at which ``clock`` fires, or None for a clock we cannot wait on."""
    if clock.clock_id == CLOCK_MONOTONIC:
        return mono_base + clock.timeout if clock.absolute else now_mono + clock.timeout
    if clock.clock_id == CLOCK_REALTIME:
        return now_mono + (clock.timeout - now_real if clock.absolute else clock.timeout)
    return None


def next_deadline(
    subs: list[Subscription], now_mono: int, now_real: int, mono_base: int
) -> tuple[list[tuple[Subscription, int | None]], int | None]:
    """Each clock subscription with its host deadline, and the earliest of them (ns)."""
    timed: list[tuple[Subscription, int | None]] = []
    earliest: int | None = None
    for sub in subs:
        if sub.clock is None:
            continue
        at = _deadline(sub.clock, now_mono, now_real, mono_base)
        timed.append((sub, at))
        if at is not None and (earliest is None or at < earliest):
            earliest = at
    return timed, earliest


def poll(
    subs: list[Subscription],
    wake: threading.Event,
    mono_base: int,
    *,
    monotonic_ns: Callable[[], int] = time.monotonic_ns,
    time_ns: Callable[[], int] = time.time_ns,
) -> tuple[int, list[bytes]]:
    """Wait as ``poll_oneoff`` does, or until ``wake`` is set: ``(errno, events)``."""
    if not subs:
        return ERRNO_INVAL, []
    events = [encode_event(s.userdata, ERRNO_SUCCESS, s.kind) for s in subs if s.fd is not None]
    timed, earliest = next_deadline(subs, monotonic_ns(), time_ns(), mono_base)
    for sub, at in timed:
        if at is None:
            events.append(encode_event(sub.userdata, ERRNO_INVAL, EVENTTYPE_CLOCK))
    if events:
        return ERRNO_SUCCESS, events  # something is ready now: no waiting
    assert earliest is not None  # every subscription is a clock we can wait on
    while True:
        remaining = earliest - monotonic_ns()
        if remaining <= 0:
            break
        if wake.wait(remaining / 1e9):
            return ERRNO_INTR, []
    now = monotonic_ns()
    for sub, at in timed:
        if at is not None and at <= now:
            events.append(encode_event(sub.userdata, ERRNO_SUCCESS, EVENTTYPE_CLOCK))
    return ERRNO_SUCCESS, events


def define_poll_oneoff(linker: wasmtime.Linker, wake: threading.Event) -> None:
    """Shadow WASI's ``poll_oneoff`` in ``linker`` with one that ``wake.set()`` interrupts.

    Call right before the store's WASI context is made (``store.set_wasi``) or after it:
    the moment of this call is taken as the start of the guest's monotonic clock.
    """
    mono_base = time.monotonic_ns()
    define_poll_oneoff_per_run(linker, lambda: (wake, mono_base))


def define_poll_oneoff_per_run(
    linker: wasmtime.Linker, current: Callable[[], tuple[threading.Event, int]]
) -> None:
    """As :func:`define_poll_oneoff`, for a linker that serves one run after another.

    ``current()`` gives the running task's wake event and monotonic clock start at each
    call, so a linker kept across runs (``_engines``) never waits on, or is woken by, an
    earlier task's event.
    """
    import wasmtime

    def poll_oneoff(caller: Any, in_ptr: int, out_ptr: int, nsubs: int, nevents_ptr: int) -> int:
        try:
            memory = caller.get("memory")
            if not isinstance(memory, wasmtime.Memory):
                return ERRNO_FAULT
            size = memory.data_len(caller)
            in_ptr &= 0xFFFFFFFF  # i32s arrive signed
            out_ptr &= 0xFFFFFFFF
            nsubs &= 0xFFFFFFFF
            nevents_ptr &= 0xFFFFFFFF
            in_end = in_ptr + nsubs * SUBSCRIPTION_SIZE
            if in_end > size or out_ptr + nsubs * EVENT_SIZE > size or nevents_ptr + 4 > size:
                return ERRNO_FAULT
            try:
                subs = parse(memory.read(caller, in_ptr, in_end), nsubs)
            except ValueError:
                return ERRNO_INVAL
            wake, mono_base = current()
            errno, events = poll(subs, wake, mono_base)
            if errno:
                return errno
            if events:
                memory.write(caller, b"".join(events), out_ptr)
            memory.write(caller, _NEVENTS.pack(len(events)), nevents_ptr)
            return ERRNO_SUCCESS
        except Exception:  # never raise into wasmtime-py (see the module docstring)
            return ERRNO_FAULT

    i32 = wasmtime.ValType.i32()
    linker.allow_shadowing = True
    linker.define_func(
        "wasi_snapshot_preview1",
        "poll_oneoff",
        wasmtime.FuncType([i32, i32, i32, i32], [i32]),
        poll_oneoff,
        access_caller=True,
    )
