"""Reservations: how ``start`` keeps a live shim daemon from exiting under containerd's feet.

The race (it matters most for a shim shared by a whole namespace): ``start`` finds a daemon
listening on the group's socket and prints its address; containerd then connects and sends
Create. If that daemon's last task was just deleted, a Shutdown (or the end of its linger
period) may make it exit in between, and containerd fails on a dead socket.

So ``start`` first makes one small ttrpc call, ``runwasi.shim.v1.Shim/Reserve{id}``
(hand-encoded by ``_launch.reserve``, so ``start`` stays light). The daemon records a
reservation for
that container id, dropped when the Create for the id arrives or after ``timeout`` seconds.
The daemon exits only with no task and no reservation; once it decides to exit it
:meth:`Reservations.close` s the book (every later Reserve is refused) and unlinks its socket
in the same step, so a ``start`` that is refused, or that connects a moment later, binds a
fresh socket and spawns a new daemon.

This module is imported by the daemon only; it has no I/O and takes the clock as a callable
so that tests drive it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Defined beside their client, which start imports (this module loads collections.abc).
from runwasi_py._launch.reserve import RESERVE_METHOD, RESERVE_SERVICE

__all__ = [
    "DEFAULT_RESERVATION_TIMEOUT",
    "RESERVE_METHOD",
    "RESERVE_SERVICE",
    "Reservations",
    "ShimClosing",
]

DEFAULT_RESERVATION_TIMEOUT = 20.0
"""Seconds a reservation lasts without a Create (containerd creates within milliseconds)."""


class ShimClosing(Exception):
    """The daemon is exiting: no new reservation (``start`` then spawns a new daemon)."""


class Reservations:
    """Container ids that a ``start`` promised to this daemon, each with an expiry.

    Example:
        >>> book = Reservations(timeout=20.0)
        >>> book.reserve("c1"); book.pending
        1
        >>> book.release("c1"); book.try_close()
        True
        >>> book.reserve("c2")
        Traceback (most recent call last):
        ...
        runwasi_py._daemon.reservations.ShimClosing: shim is exiting
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_RESERVATION_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"reservation timeout must be positive, not {timeout!r}")
        self._timeout = timeout
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`try_close` succeeded: every Reserve is refused."""
        return self._closed

    @property
    def pending(self) -> int:
        """Reservations not yet used by a Create and not expired."""
        self._expire()
        return len(self._expiry)

    def reserve(self, container_id: str) -> None:
        """Hold the daemon for ``container_id``; raises ShimClosing once closed.

        Reserving an id again extends its reservation.
        """
        if self._closed:
            raise ShimClosing("shim is exiting")
        self._expiry[container_id] = self._clock() + self._timeout

    def release(self, container_id: str) -> None:
        """The Create for ``container_id`` arrived (or failed): its reservation is used up."""
        self._expiry.pop(container_id, None)

    def seconds_left(self) -> float:
        """Seconds until the last pending reservation expires (0.0 when none is pending)."""
        self._expire()
        if not self._expiry:
            return 0.0
        return max(self._expiry.values()) - self._clock()

    def try_close(self) -> bool:
        """Close the book if nothing is pending: True when the daemon may exit now.

        The caller must act on True in the same event-loop step (unlink the socket before
        awaiting anything), so no Reserve can be accepted between the check and the exit.
        """
        if self.pending:
            return False
        self._closed = True
        return True

    def _expire(self) -> None:
        now = self._clock()
        for cid in [c for c, t in self._expiry.items() if t <= now]:
            del self._expiry[cid]
