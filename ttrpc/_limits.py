"""The server's resource caps: how many connections it holds, how many request bytes it buffers.

Theory of operation. Each accepted connection costs its read buffer (256 KiB) and whatever
request bytes it holds: the unfinished frame the core is assembling (up to 4 MiB each), the
payloads of its requests whose handlers are still running, and streamed messages its
handlers have not taken yet. Without caps a peer that opens connections, or starts frames
and never finishes them, grows the process without end.

:class:`ServerLimits` keeps the server-wide count. A connection over ``max_connections`` is
closed at accept. While the buffered total is over ``max_buffered_bytes``, every connection
that holds request bytes stops reading (back-pressure, as a full socket buffer gives its
peer), except one, the *finisher*: it may read until the unfinished frame it holds is
complete, so that peers paused in the middle of frames never wait on each other. When the
finisher is done another paused connection takes its turn; when the total is back under the
cap (handlers finished, frames completed, connections gone) all resume. Connections holding
at most a small request's worth (64 KiB, or a sixteenth of a smaller cap: a request that
arrived split across reads, a few running calls) are never paused: otherwise a well-behaved
peer such as containerd, whose frame happened to straddle two reads, would wait behind a
stalled finisher.

Bound: the cap, plus one frame (4 MiB) being finished, plus one read (256 KiB) and one small
hold (64 KiB) per connection, so about ``max_buffered_bytes + 4 MiB + max_connections *
576 KiB`` counting the read buffers. A finisher whose peer stalls mid-frame holds up the
others' large frames (it cannot grow memory); only peers allowed onto the socket can do
this, and the socket's mode
and peer check decide who they are.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Protocol

__all__ = ["DEFAULT_MAX_BUFFERED_BYTES", "DEFAULT_MAX_CONNECTIONS", "ServerLimits"]

DEFAULT_MAX_CONNECTIONS = 1024
"""Connections a :class:`ttrpc.Server` holds at once unless told otherwise."""
DEFAULT_MAX_BUFFERED_BYTES = 64 << 20
"""Request bytes (unfinished frames + payloads of running handlers) buffered server-wide."""

_PAUSE = "buffered"
_SMALL_RUNNING = 64 << 10  # running-handler bytes that still allow a finisher's turn
_SMALL_HOLD = 64 << 10  # what a connection may hold and never be paused for
_LOG_EVERY = 1.0  # seconds between two "rejected" log lines (a flood must not flood the log)


class _Pausable(Protocol):
    def pause_reading(self, reason: Hashable) -> None: ...

    def resume_reading(self, reason: Hashable) -> None: ...


class ServerLimits:
    """Counts connections and buffered request bytes against the server's caps.

    ``None`` for a cap means unlimited. Loop-thread only (no locking).
    """

    __slots__ = (
        "_finisher",
        "_finisher_running",
        "_held",
        "_last_log",
        "_paused",
        "_rejected",
        "_small_hold",
        "buffered",
        "max_buffered_bytes",
        "max_connections",
    )

    def __init__(self, max_connections: int | None, max_buffered_bytes: int | None) -> None:
        for name, value in (
            ("max_connections", max_connections),
            ("max_buffered_bytes", max_buffered_bytes),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, not {value!r}")
        self.max_connections = max_connections
        self.max_buffered_bytes = max_buffered_bytes
        self.buffered = 0
        self._held: dict[_Pausable, tuple[int, int]] = {}  # (partial, running) per conn
        self._paused: set[_Pausable] = set()
        self._finisher: _Pausable | None = None
        self._finisher_running = 0
        self._rejected = 0
        self._last_log = -_LOG_EVERY
        # never more than a sixteenth of the cap, so small caps still pause small holders
        cap = max_buffered_bytes
        self._small_hold = 0 if cap is None else min(_SMALL_HOLD, cap // 16)

    def admits(self, open_connections: int) -> bool:
        """Whether one more connection may join ``open_connections``."""
        cap = self.max_connections
        return cap is None or open_connections < cap

    def rejected(self) -> str | None:
        """Count one refused connection; a log line to write, or None (rate-limited)."""
        self._rejected += 1
        now = time.monotonic()
        if now - self._last_log < _LOG_EVERY:
            return None
        self._last_log = now
        n, self._rejected = self._rejected, 0
        return (
            f"ttrpc: connection refused: {self.max_connections} connections open "
            f"(max_connections); {n} refused since the last report"
        )

    def hold(self, conn: _Pausable, partial: int, running: int = 0) -> None:
        """``conn`` now holds ``partial`` bytes of an unfinished frame and ``running`` bytes
        of requests whose handlers run: pause or resume reading to match."""
        nbytes = partial + running
        before = self._held.get(conn, (0, 0))
        if nbytes:
            self._held[conn] = (partial, running)
        else:
            self._held.pop(conn, None)
        self.buffered += nbytes - sum(before)
        if not self._over():
            self._finisher = None
            if self._paused:
                self._resume_all()
            return
        if conn is self._finisher:
            if partial and running <= self._finisher_running:
                return  # it may complete the frame it holds, and nothing more
            self._finisher = None
            self._pause(conn)
        elif nbytes > self._small_hold:
            if self._finisher is None and partial and running <= before[1]:
                self._finisher, self._finisher_running = conn, running
                if conn in self._paused:  # paused earlier: it must read to finish the frame
                    self._paused.discard(conn)
                    conn.resume_reading(_PAUSE)
            else:
                self._pause(conn)
        if self._finisher is None:
            self._promote()

    def forget(self, conn: _Pausable) -> None:
        """``conn`` is gone: its bytes no longer count."""
        self._paused.discard(conn)
        if self._finisher is conn:
            self._finisher = None
        self.hold(conn, 0)

    def _over(self) -> bool:
        cap = self.max_buffered_bytes
        return cap is not None and self.buffered > cap

    def _pause(self, conn: _Pausable) -> None:
        if conn not in self._paused:
            self._paused.add(conn)
            conn.pause_reading(_PAUSE)

    def _promote(self) -> None:
        """Over the cap with nobody finishing a frame: let the paused connection that holds
        the largest unfinished frame read again, so paused peers cannot wait on each other.

        Connections whose running handlers hold more than a few small requests' worth wait
        for those handlers instead: finishing frames, turn after turn, must not let one peer
        pile up running work without bound."""
        best: _Pausable | None = None
        best_partial = 0
        for conn in self._paused:
            partial, running = self._held.get(conn, (0, 0))
            # Not one whose handlers hold much already: a turn would let it pile up more.
            if partial > best_partial and running < _SMALL_RUNNING:
                best, best_partial = conn, partial
        if best is not None:
            self._paused.discard(best)
            self._finisher, self._finisher_running = best, self._held[best][1]
            best.resume_reading(_PAUSE)

    def _resume_all(self) -> None:
        paused, self._paused = self._paused, set()
        for conn in paused:
            conn.resume_reading(_PAUSE)
