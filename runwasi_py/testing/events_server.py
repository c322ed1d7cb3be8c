"""A recording stand-in for containerd's events service, for tests.

It serves ``containerd.services.events.ttrpc.v1.Events/Forward`` on a unix socket with the
real ttrpc :class:`ttrpc.Server`, checks what containerd checks (non-zero timestamp, topic
shape, namespace metadata) and records every event. Tests can stop and restart it on the
same path to play a containerd restart, and make it refuse the next calls.

The request is decoded by hand (:func:`runwasi_py._events.wire.decode_forward`) rather than
by betterproto2, whose ~200 us per ``ForwardRequest`` made this fake, not the publisher, the
limit of any benchmark run against it (containerd decodes in Go, far faster).
"""

from __future__ import annotations

import asyncio
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import betterproto2

import ttrpc
from runwasi_py._events.publisher import EVENTS_SERVICE, NAMESPACE_METADATA_KEY
from runwasi_py._events.wire import decode_forward
from runwasi_py._proto.messages import GO_ZERO_TIME, unpack_any
from runwasi_py._proto.messages import Any as AnyMessage
from ttrpc import CallContext, RawMessage

__all__ = ["RecordedEvent", "RecordingEventsServer"]


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One forwarded event as containerd would have seen it."""

    topic: str
    namespace: str
    type_url: str
    event: betterproto2.Message | None
    """The decoded event (None when its type url is not a known message)."""
    timestamp: datetime.datetime | None
    metadata_namespace: str | None
    """The ``containerd-namespace-ttrpc`` metadata value sent with the call."""


class _EventsService(ttrpc.Service):
    service_name = EVENTS_SERVICE

    def __init__(self, owner: RecordingEventsServer) -> None:
        self._owner = owner

    @ttrpc.rpc(name="Forward")
    async def forward(self, request: RawMessage, context: CallContext) -> RawMessage:
        return await self._owner._on_forward(request, context)


class RecordingEventsServer:
    """Records the events a shim publishes; stands in for containerd's ``TTRPC_ADDRESS``.

    Example:
        >>> async with RecordingEventsServer(tmp_path / "events.sock") as events:
        ...     publisher = EventPublisher(events.address, "default")
        ...     publisher.publish("/tasks/start", TaskStart(container_id="c1"))
        ...     await events.wait_for(1)
        ...     assert events.topics == ["/tasks/start"]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.events: list[RecordedEvent] = []
        self._server: ttrpc.Server | None = None
        self._changed = asyncio.Condition()
        self._refuse: list[ttrpc.TtrpcError] = []
        self._delay = 0.0

    @property
    def address(self) -> str:
        """What to put in ``TTRPC_ADDRESS`` (a plain path, as containerd sets it)."""
        return self.path

    @property
    def topics(self) -> list[str]:
        """The topics received so far, in order."""
        return [e.topic for e in self.events]

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen on :attr:`path` (again, after :meth:`stop`)."""
        if self._server is not None:
            return
        server = ttrpc.Server()
        server.register(_EventsService(self))
        await server.listen(self.path)
        self._server = server

    async def stop(self) -> None:
        """Close the socket and every connection, as a dying containerd would."""
        server, self._server = self._server, None
        if server is not None:
            await server.close()

    async def __aenter__(self) -> RecordingEventsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def refuse_next(self, count: int, code: ttrpc.Code = ttrpc.Code.INVALID_ARGUMENT) -> None:
        """Answer the next ``count`` Forward calls with ``code`` (nothing is recorded)."""
        self._refuse.extend(ttrpc.TtrpcError(code, "refused by test") for _ in range(count))

    def delay_replies(self, seconds: float) -> None:
        """Make each Forward take ``seconds`` before it is recorded (0 = none)."""
        self._delay = seconds

    async def _on_forward(self, request: RawMessage, context: CallContext) -> RawMessage:
        if self._refuse:
            raise self._refuse.pop(0)
        try:
            env = decode_forward(request.data)
        except ValueError as e:
            raise ttrpc.TtrpcError(
                ttrpc.Code.INVALID_ARGUMENT, f"malformed ForwardRequest: {e}"
            ) from None
        # containerd's own checks (events exchange validation)
        if env.type_url is None:
            raise ttrpc.TtrpcError(ttrpc.Code.INVALID_ARGUMENT, "envelope and event required")
        if env.timestamp is None or env.timestamp == GO_ZERO_TIME:
            raise ttrpc.TtrpcError(ttrpc.Code.INVALID_ARGUMENT, "timestamp must be set")
        if not env.topic.startswith("/") or "" in env.topic[1:].split("/"):
            raise ttrpc.TtrpcError(ttrpc.Code.INVALID_ARGUMENT, f"invalid topic {env.topic!r}")
        if not env.namespace:
            raise ttrpc.TtrpcError(ttrpc.Code.INVALID_ARGUMENT, "namespace required")
        if self._delay:
            await asyncio.sleep(self._delay)
        try:
            event: Any = unpack_any(AnyMessage(type_url=env.type_url, value=env.value))
        except (TypeError, ValueError):
            event = None
        recorded = RecordedEvent(
            topic=env.topic,
            namespace=env.namespace,
            type_url=env.type_url,
            event=event,
            timestamp=env.timestamp,
            metadata_namespace=context.metadata.first(NAMESPACE_METADATA_KEY),
        )
        async with self._changed:
            self.events.append(recorded)
            self._changed.notify_all()
        return RawMessage()

    async def wait_for(
        self,
        count_or_predicate: int | Callable[[list[RecordedEvent]], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test helper: one argument reads better
    ) -> list[RecordedEvent]:
        """Wait until ``count`` events arrived (or the predicate holds); TimeoutError if not."""
        predicate: Callable[[list[RecordedEvent]], bool]
        if isinstance(count_or_predicate, int):
            n = count_or_predicate
            predicate = lambda events: len(events) >= n  # noqa: E731
        else:
            predicate = count_or_predicate
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self.events))
        return list(self.events)
