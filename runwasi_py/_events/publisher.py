"""Task events to containerd: one ordered queue, ``Events/Forward``, retry without loss.

Theory of operation: :meth:`EventPublisher.publish` never blocks and never does IO. It
stamps the event with the current time, encodes the whole ``ForwardRequest`` at once (an
``Any`` with the bare type url containerd 1.6 needs; see :mod:`runwasi_py._events.wire`) and
appends the bytes to one FIFO queue (callable from any thread). A single background task owns
one ttrpc connection to containerd's ``TTRPC_ADDRESS`` and forwards the head of the queue,
one event at a time, so the order containerd sees is the publish order.
An event leaves the queue only once containerd acknowledged it. If the connection cannot be
made or breaks (containerd restarting), the same event is retried after a capped exponential
backoff on a fresh connection, forever: losing a TaskExit would leave a task hanging in
containerd. An event that containerd *answers* with an error (for instance InvalidArgument for
a bad namespace) is retried a few times and then dropped with an error log, because it would
otherwise block every later event.

Why strictly one call in flight: containerd's ttrpc server runs each request in its own
goroutine, so two pipelined Forward calls may be published in either order (a TaskExit before
its TaskStart). Throughput comes from making each round trip cheap instead: the request is
pre-encoded bytes, the reply (``Empty``) is not decoded, and the metadata is built once.
A call gets no per-call ttrpc deadline either: arming and cancelling ``asyncio.timeout`` in
the client (and the server's matching one) roughly doubled the CPU of a round trip. A
watchdog timer that ticks every ``call_timeout / 2`` while a call is in flight abandons a
connection whose call is older than ``call_timeout`` (so a wedged containerd is noticed
within 1.5 x ``call_timeout``) and the event is retried on a fresh connection.

The queue absorbs bursts: it holds encoded bytes (a few hundred bytes per event), warns
loudly as the backlog grows past each power of ten from 10,000, and only past a safety cap
(default 1,000,000 events, a few hundred MB) does it drop, with an error log.

The Go shim re-queues a failed event at most 5 times and then drops it; runwasi sends once
and drops on any error.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import threading
import time
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import betterproto2

import ttrpc
from runwasi_py._events.topics import topic_for
from runwasi_py._events.wire import encode_forward
from runwasi_py._proto.messages import full_name
from ttrpc import RawMessage

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EVENTS_SERVICE",
    "NAMESPACE_METADATA_KEY",
    "EventPublisher",
    "EventSink",
    "NullEventSink",
    "topic_for",
]

logger = logging.getLogger("runwasi_py.events")

EVENTS_SERVICE: Final = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_METADATA_KEY: Final = "containerd-namespace-ttrpc"


# Errors that say "containerd is not there right now": retried without limit.
_TRANSPORT_CODES = frozenset({ttrpc.Code.UNAVAILABLE, ttrpc.Code.DEADLINE_EXCEEDED})
_ANSWERED_RETRIES = 5
DEFAULT_MAX_QUEUE: Final = 1_000_000
_BACKLOG_WARN_FROM = 10_000


@runtime_checkable
class EventSink(Protocol):
    """Where the task service sends events. ``publish`` is non-blocking and keeps order."""

    def publish(self, topic: str, event: betterproto2.Message) -> None: ...


class NullEventSink(EventSink):
    """Discards events (logged at debug): for a shim run without ``TTRPC_ADDRESS``."""

    def publish(self, topic: str, event: betterproto2.Message) -> None:
        logger.debug("no TTRPC_ADDRESS: %s event not published", topic)


class _Item:
    __slots__ = ("attempts", "request", "topic")

    def __init__(self, topic: str, request: bytes) -> None:
        self.topic = topic
        self.request = RawMessage(request)
        self.attempts = 0


class EventPublisher(EventSink):
    """Forward task events to containerd over ttrpc, in order, surviving restarts.

    Create it inside the event loop that will run the forwarding task (the daemon's loop);
    ``publish`` may then be called from any thread.

    ``max_queue`` is a safety cap on events waiting for containerd (beyond it they are
    dropped with an error log); a warning is logged when the backlog first reaches
    ``backlog_warning`` and again at each tenfold, re-armed once the queue drains.

    Example:
        >>> publisher = EventPublisher(os.environ["TTRPC_ADDRESS"], "default")
        >>> publisher.publish("/tasks/start", TaskStart(container_id="c1", pid=42))
        >>> await publisher.close(timeout=5)
    """

    def __init__(
        self,
        ttrpc_address: str,
        namespace: str,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        call_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 2.0,
        clock: Callable[[], datetime.datetime] | None = None,
        backlog_warning: int = _BACKLOG_WARN_FROM,
    ) -> None:
        self.address = ttrpc_address
        self.namespace = namespace
        self._max_queue = max_queue
        self._call_timeout = call_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        # the default clock is time.time_ns: the timestamp's encoding needs no datetime
        self._clock: Callable[[], datetime.datetime | int] = clock or time.time_ns
        self._queue: collections.deque[_Item] = collections.deque()
        self._lock = threading.Lock()  # publish may run on instance threads
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._client: ttrpc.Client | None = None
        self._closing = False
        self._dropped = 0
        self._forwarded = 0
        self._task: asyncio.Task[None] | None = None
        self._metadata = [(NAMESPACE_METADATA_KEY, namespace)]
        self._call_started: float | None = None  # loop time of the Forward in flight
        self._watchdog: asyncio.TimerHandle | None = None
        self._abandoned: set[asyncio.Task[None]] = set()  # connections being closed
        self._backlog_warning = backlog_warning
        self._warn_at = backlog_warning

    # --- producer side -------------------------------------------------------------

    def publish(self, topic: str, event: betterproto2.Message) -> None:
        """Queue ``event`` under ``topic``; returns at once. Thread-safe.

        The envelope's timestamp is taken now, so it reflects when the event happened
        rather than when containerd finally received it; the event is encoded now, so later
        changes to the message object do not leak into what containerd sees.
        """
        data = encode_forward(
            self._clock(), self.namespace, topic, full_name(type(event)), bytes(event)
        )
        item = _Item(topic, data)
        with self._lock:
            if self._closing:
                logger.error("event publisher closed: dropping %s event", topic)
                self._dropped += 1
                return
            if len(self._queue) >= self._max_queue:
                self._dropped += 1
                logger.error(
                    "event queue full (%d events waiting for containerd at %s): dropping %s "
                    "event; %d dropped so far",
                    len(self._queue),
                    self.address,
                    topic,
                    self._dropped,
                )
                return
            self._queue.append(item)
            backlog = len(self._queue)
            if backlog >= self._warn_at:
                self._warn_at *= 10
                logger.warning(
                    "event backlog: %d events waiting for containerd at %s (%d forwarded "
                    "so far); containerd is slow or away",
                    backlog,
                    self.address,
                    self._forwarded,
                )
        if threading.get_ident() == self._loop_thread:
            self._kick()
        else:
            # the loop may already be closed at interpreter exit; nothing left to wake then
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        self._idle.clear()
        self._wakeup.set()
        if self._task is None and not self._closing:
            self._task = self._loop.create_task(self._run(), name="runwasi-events")

    @property
    def pending(self) -> int:
        """Events queued and not yet acknowledged by containerd."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Events given up on (queue overflow, closed publisher, or rejected by containerd)."""
        return self._dropped

    @property
    def forwarded(self) -> int:
        """Events containerd acknowledged."""
        return self._forwarded

    # --- consumer side -------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._backoff_initial
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                if self._closing:
                    return
                await self._wakeup.wait()
                continue
            item = self._queue[0]
            try:
                await self._forward(item.request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._retry_after(item, exc):
                    self._pop(item)
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)
                continue
            backoff = self._backoff_initial
            self._forwarded += 1
            self._pop(item)

    def _pop(self, item: _Item) -> None:
        with self._lock:
            if self._queue and self._queue[0] is item:
                self._queue.popleft()
            if not self._queue:
                self._warn_at = self._backlog_warning  # drained: warn again on the next backlog

    def _retry_after(self, item: _Item, exc: Exception) -> bool:
        """Log the failure; True to retry ``item``, False to drop it."""
        answered = (
            isinstance(exc, ttrpc.TtrpcError)
            and not isinstance(exc, ttrpc.ClosedError)
            and exc.code not in _TRANSPORT_CODES
        )
        if not answered:
            # containerd away or restarting: reconnect and retry, however long it takes
            item.attempts += 1
            log = (
                logger.warning
                if item.attempts in (1, 10) or item.attempts % 100 == 0
                else logger.debug
            )
            log(
                "forwarding %s event to %s failed (attempt %d, %d queued): %s; retrying",
                item.topic,
                self.address,
                item.attempts,
                len(self._queue),
                exc,
            )
            return True
        item.attempts += 1
        if item.attempts < _ANSWERED_RETRIES:
            logger.warning(
                "containerd refused %s event (attempt %d): %s", item.topic, item.attempts, exc
            )
            return True
        self._dropped += 1
        logger.error(
            "containerd refused %s event %d times, dropping it: %s", item.topic, item.attempts, exc
        )
        return False

    async def _forward(self, request: RawMessage) -> None:
        client = self._client
        if client is None or client.closed:
            if client is not None:
                await client.close()
            self._client = None
            async with asyncio.timeout(self._call_timeout):
                client = await ttrpc.Client.connect(self.address)
            self._client = client
        self._call_started = self._loop.time()
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._call_timeout / 2, self._check_call)
        try:
            await client.call(
                EVENTS_SERVICE,
                "Forward",
                request,
                RawMessage,
                metadata=self._metadata,  # pairs go out verbatim: no per-call Metadata
            )
        except (ttrpc.ClosedError, TimeoutError, OSError):
            self._client = None
            await client.close()
            raise
        except ttrpc.TtrpcError as e:
            if e.code in _TRANSPORT_CODES:
                # a deadline on a live connection: containerd may be wedged; start afresh
                self._client = None
                await client.close()
            raise
        finally:
            self._call_started = None

    def _check_call(self) -> None:
        """The watchdog: abandon the connection if its Forward is older than call_timeout."""
        self._watchdog = None
        started = self._call_started
        if started is None:
            return  # idle: the next call re-arms
        if self._loop.time() - started < self._call_timeout:
            self._watchdog = self._loop.call_later(self._call_timeout / 2, self._check_call)
            return
        client, self._client = self._client, None
        if client is None:
            return
        logger.warning(
            "containerd at %s did not answer a Forward within %g s: reconnecting",
            self.address,
            self._call_timeout,
        )
        # closing fails the pending call with ClosedError: the event is retried afresh
        task = self._loop.create_task(client.close())
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - a bounded drain, see close()
        """Wait until every queued event was forwarded (or dropped); False on timeout."""
        if not self._queue:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = 5.0) -> None:  # noqa: ASYNC109 - the internals.md contract
        """Forward what can be forwarded within ``timeout`` seconds, then stop.

        Events still queued afterwards are logged as lost. Later ``publish`` calls are
        dropped with an error log.
        """
        flushed = await self.flush(timeout)
        with self._lock:
            self._closing = True
            lost = len(self._queue)
        self._wakeup.set()
        task, self._task = self._task, None
        if task is not None:
            if not flushed:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if lost:
            self._dropped += lost
            logger.error(
                "event publisher closed with %d events not delivered to %s", lost, self.address
            )
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        for abandoned in list(self._abandoned):
            await abandoned

    async def __aenter__(self) -> EventPublisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
