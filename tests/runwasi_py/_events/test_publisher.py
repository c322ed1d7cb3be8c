"""EventPublisher against a recording events server over real ttrpc unix sockets."""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import ttrpc
from runwasi_py._events.publisher import (
    EVENTS_SERVICE,
    EventPublisher,
    EventSink,
    NullEventSink,
    topic_for,
)
from runwasi_py._events.wire import decode_forward, encode_forward
from runwasi_py._proto.messages import (
    GO_ZERO_TIME,
    Any,
    Empty,
    Envelope,
    ForwardRequest,
    TaskCreate,
    TaskDelete,
    TaskExit,
    TaskOom,
    TaskStart,
    full_name,
    pack_any,
    unpack_any,
)
from runwasi_py.testing.events_server import RecordingEventsServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def events(tmp_path: Path) -> AsyncIterator[RecordingEventsServer]:
    async with RecordingEventsServer(tmp_path / "events.sock") as server:
        yield server


def fast(address: str, namespace: str = "default", **kw: object) -> EventPublisher:
    return EventPublisher(address, namespace, backoff_initial=0.01, backoff_max=0.05, **kw)  # type: ignore[arg-type]


def lifecycle(cid: str) -> list[tuple[str, TaskCreate | TaskStart | TaskExit | TaskDelete]]:
    return [
        ("/tasks/create", TaskCreate(container_id=cid, bundle="/b")),
        ("/tasks/start", TaskStart(container_id=cid, pid=7)),
        ("/tasks/exit", TaskExit(container_id=cid, id=cid, pid=7, exit_status=3)),
        ("/tasks/delete", TaskDelete(container_id=cid, pid=7, exit_status=3)),
    ]


def test_topic_for() -> None:
    assert topic_for(TaskCreate()) == "/tasks/create"
    assert topic_for(TaskStart()) == "/tasks/start"
    assert topic_for(TaskExit()) == "/tasks/exit"
    assert topic_for(TaskDelete()) == "/tasks/delete"
    assert topic_for(TaskOom()) == "/tasks/oom"
    with pytest.raises(ValueError, match="no topic"):
        topic_for(Empty())  # a message, but not a task event


async def test_publisher_is_an_event_sink(events: RecordingEventsServer) -> None:
    publisher = fast(events.address)
    assert isinstance(publisher, EventSink)
    await publisher.close()


async def test_events_arrive_in_order_with_bare_type_urls(events: RecordingEventsServer) -> None:
    publisher = fast(events.address, "ns1")
    before = datetime.datetime.now(datetime.UTC)
    for topic, event in lifecycle("c1"):
        publisher.publish(topic, event)
    got = await events.wait_for(4)
    await publisher.close()
    assert [e.topic for e in got] == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ]
    assert [e.type_url for e in got] == [
        "containerd.events.TaskCreate",
        "containerd.events.TaskStart",
        "containerd.events.TaskExit",
        "containerd.events.TaskDelete",
    ]
    assert got[2].event == TaskExit(container_id="c1", id="c1", pid=7, exit_status=3)
    assert all(e.namespace == "ns1" and e.metadata_namespace == "ns1" for e in got)
    for e in got:
        assert e.timestamp is not None
        assert e.timestamp >= before - datetime.timedelta(seconds=1)
        assert e.timestamp != GO_ZERO_TIME
    assert publisher.forwarded == 4
    assert publisher.pending == 0


async def test_many_events_keep_order(events: RecordingEventsServer) -> None:
    publisher = fast(events.address)
    for i in range(300):
        publisher.publish("/tasks/start", TaskStart(container_id=f"c{i}", pid=i))
    got = await events.wait_for(300)
    await publisher.close()
    assert [e.event.pid for e in got if isinstance(e.event, TaskStart)] == list(range(300))


async def test_timestamp_taken_at_publish_time(events: RecordingEventsServer) -> None:
    stamp = datetime.datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=datetime.UTC)
    publisher = fast(events.address, clock=lambda: stamp)
    publisher.publish("/tasks/oom", TaskOom(container_id="c"))
    (got,) = await events.wait_for(1)
    await publisher.close()
    assert got.timestamp == stamp


async def test_server_down_then_up_loses_nothing(tmp_path: Path) -> None:
    events = RecordingEventsServer(tmp_path / "events.sock")
    publisher = fast(events.address)  # containerd not there yet
    for topic, event in lifecycle("a"):
        publisher.publish(topic, event)
    await asyncio.sleep(0.1)  # several failed attempts
    assert publisher.pending == 4
    await events.start()
    await events.wait_for(4)
    # containerd restarts: the connection breaks, events published meanwhile must survive
    await events.stop()
    for topic, event in lifecycle("b"):
        publisher.publish(topic, event)
    await asyncio.sleep(0.1)
    assert publisher.pending == 4
    await events.start()
    try:
        got = await events.wait_for(8)
    finally:
        await publisher.close()
        await events.stop()
    assert [(e.topic, getattr(e.event, "container_id", None)) for e in got] == [
        (t, cid) for cid in "ab" for t, _ in lifecycle(cid)
    ]
    assert publisher.dropped == 0


async def test_refused_event_is_retried_then_dropped(
    events: RecordingEventsServer, caplog: pytest.LogCaptureFixture
) -> None:
    events.refuse_next(2)
    publisher = fast(events.address)
    publisher.publish("/tasks/start", TaskStart(container_id="kept"))
    await events.wait_for(1)
    assert publisher.dropped == 0

    events.refuse_next(100)
    caplog.set_level(logging.ERROR, "runwasi_py.events")
    publisher.publish("/tasks/start", TaskStart(container_id="rejected"))
    publisher.publish("/tasks/exit", TaskExit(container_id="after"))
    assert await publisher.flush(timeout=10)
    events._refuse.clear()
    publisher.publish("/tasks/delete", TaskDelete(container_id="last"))
    got = await events.wait_for(2)
    await publisher.close()
    assert [getattr(e.event, "container_id", None) for e in got] == ["kept", "last"]
    assert publisher.dropped == 2
    assert "refused /tasks/start event 5 times, dropping it" in caplog.text


async def test_unavailable_is_retried_without_limit(events: RecordingEventsServer) -> None:
    events.refuse_next(8, ttrpc.Code.UNAVAILABLE)
    publisher = fast(events.address)
    publisher.publish("/tasks/exit", TaskExit(container_id="c"))
    (got,) = await events.wait_for(1)
    await publisher.close()
    assert got.topic == "/tasks/exit"
    assert publisher.dropped == 0


async def test_queue_overflow_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publisher = fast(str(tmp_path / "nobody.sock"), max_queue=3)
    with caplog.at_level(logging.ERROR, "runwasi_py.events"):
        for i in range(5):
            publisher.publish("/tasks/start", TaskStart(container_id=str(i)))
    assert publisher.pending == 3
    assert publisher.dropped == 2
    assert "event queue full" in caplog.text
    await publisher.close(timeout=0.05)
    assert publisher.dropped == 5
    assert "closed with 3 events not delivered" in caplog.text


async def test_publish_from_another_thread(events: RecordingEventsServer) -> None:
    publisher = fast(events.address)

    def worker() -> None:
        for i in range(20):
            publisher.publish("/tasks/start", TaskStart(container_id="t", pid=i))

    thread = threading.Thread(target=worker)
    thread.start()
    await asyncio.to_thread(thread.join)
    got = await events.wait_for(20)
    await publisher.close()
    assert [e.event.pid for e in got if isinstance(e.event, TaskStart)] == list(range(20))


async def test_close_flushes_then_refuses(
    events: RecordingEventsServer, caplog: pytest.LogCaptureFixture
) -> None:
    events.delay_replies(0.01)
    publisher = fast(events.address)
    for i in range(5):
        publisher.publish("/tasks/start", TaskStart(container_id=str(i)))
    await publisher.close(timeout=10)
    assert len(events.events) == 5
    with caplog.at_level(logging.ERROR, "runwasi_py.events"):
        publisher.publish("/tasks/start", TaskStart(container_id="late"))
    assert "publisher closed" in caplog.text
    assert len(events.events) == 5


async def test_slow_containerd_times_out_and_retries(
    events: RecordingEventsServer, caplog: pytest.LogCaptureFixture
) -> None:
    events.delay_replies(0.3)
    publisher = EventPublisher(
        events.address, "default", call_timeout=0.05, backoff_initial=0.01, backoff_max=0.02
    )
    with caplog.at_level(logging.WARNING, "runwasi_py.events"):
        publisher.publish("/tasks/start", TaskStart(container_id="slow"))
        await asyncio.sleep(0.2)
        events.delay_replies(0)
        await events.wait_for(lambda evs: any(e.topic == "/tasks/start" for e in evs))
        publisher.publish("/tasks/exit", TaskExit(container_id="slow"))
        await events.wait_for(lambda evs: any(e.topic == "/tasks/exit" for e in evs))
    await publisher.close()
    # the watchdog abandoned the wedged connection (no per-call ttrpc deadline is used)
    assert "did not answer a Forward within 0.05 s: reconnecting" in caplog.text
    assert publisher.dropped == 0
    assert publisher.pending == 0
    # at least once: the slow replies may also have been recorded, but never out of order
    topics = events.topics
    assert topics[-1] == "/tasks/exit"
    assert set(topics[:-1]) == {"/tasks/start"}


def test_null_sink_discards() -> None:
    sink = NullEventSink()
    assert isinstance(sink, EventSink)
    sink.publish("/tasks/start", TaskStart(container_id="c"))  # no loop, no error


async def test_burst_arrives_complete_and_in_order(events: RecordingEventsServer) -> None:
    # 1,250 tasks' lifecycles published at once: more than the old 4,096 bound
    publisher = fast(events.address)
    expected = [(t, cid) for i in range(1250) for cid in [f"t{i}"] for t, _ in lifecycle(cid)]
    for i in range(1250):
        for topic, event in lifecycle(f"t{i}"):
            publisher.publish(topic, event)
    assert publisher.pending > 0  # publish returned before anything could be forwarded
    got = await events.wait_for(5000, timeout=50)
    await publisher.close()
    assert [(e.topic, getattr(e.event, "container_id", None)) for e in got] == expected
    assert publisher.forwarded == 5000
    assert publisher.dropped == 0


async def test_burst_from_several_threads_keeps_each_threads_order(
    events: RecordingEventsServer,
) -> None:
    publisher = fast(events.address)

    def worker(name: str) -> None:
        for i in range(500):
            publisher.publish("/tasks/start", TaskStart(container_id=name, pid=i))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join)
    got = await events.wait_for(2000, timeout=50)
    await publisher.close()
    for n in range(4):
        pids = [
            e.event.pid
            for e in got
            if isinstance(e.event, TaskStart) and e.event.container_id == f"w{n}"
        ]
        assert pids == list(range(500))
    assert publisher.dropped == 0


async def test_backlog_warns_then_rearms_after_draining(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = RecordingEventsServer(tmp_path / "events.sock")  # containerd away for now
    publisher = fast(events.address, backlog_warning=10)
    with caplog.at_level(logging.WARNING, "runwasi_py.events"):
        for i in range(120):
            publisher.publish("/tasks/start", TaskStart(container_id=str(i)))
    backlog = [r.getMessage() for r in caplog.records if "event backlog" in r.getMessage()]
    assert len(backlog) == 2  # at 10 and at 100
    assert backlog[0].startswith("event backlog: 10 events waiting")
    assert publisher.dropped == 0
    await events.start()
    try:
        await events.wait_for(120)
        assert await publisher.flush(timeout=10)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "runwasi_py.events"):
            await events.stop()
            for i in range(10):
                publisher.publish("/tasks/exit", TaskExit(container_id=str(i)))
        assert "event backlog: 10 events waiting" in caplog.text
    finally:
        await publisher.close(timeout=0.05)
        await events.stop()


async def test_naive_clock_is_a_clear_error(events: RecordingEventsServer) -> None:
    publisher = fast(events.address, clock=lambda: datetime.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone aware"):
        publisher.publish("/tasks/start", TaskStart(container_id="c"))
    await publisher.close()
    assert publisher.pending == 0


@pytest.mark.parametrize(
    "stamp",
    [
        datetime.datetime(2026, 11, 28, 23, 59, 59, 123456, tzinfo=datetime.UTC),
        datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),  # all-zero Timestamp
        datetime.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=datetime.UTC),  # negative
        GO_ZERO_TIME,
        datetime.datetime(2026, 1, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
    ],
)
@pytest.mark.parametrize(
    ("namespace", "event"),
    [
        (
            "default",
            TaskExit(container_id="c1", id="c1", pid=7, exit_status=3, exited_at=GO_ZERO_TIME),
        ),
        ("", TaskOom()),  # empty strings and an empty event are omitted, as proto3 does
        ("k8s.io", TaskCreate(container_id="x" * 300, bundle="/b")),  # multi-byte lengths
    ],
)
def test_wire_encoding_is_byte_identical_to_betterproto(
    stamp: datetime.datetime, namespace: str, event: TaskExit | TaskOom | TaskCreate
) -> None:
    topic = topic_for(event)
    reference = ForwardRequest(
        envelope=Envelope(timestamp=stamp, namespace=namespace, topic=topic, event=pack_any(event))
    )
    data = encode_forward(stamp, namespace, topic, full_name(type(event)), bytes(event))
    assert data == bytes(reference)
    fields = decode_forward(data)
    assert fields.timestamp == stamp
    assert (fields.namespace, fields.topic) == (namespace, topic)
    assert fields.type_url == full_name(type(event))
    assert unpack_any(Any(type_url=fields.type_url, value=fields.value)) == event
    # and what betterproto2 encodes, the hand decoder reads
    assert decode_forward(bytes(reference)) == fields


def test_wire_decoder_skips_unknown_fields_and_reports_absent_ones() -> None:
    # field 9 (varint), field 10 (fixed64), field 11 (fixed32) around an envelope
    data = b"\x48\x01" + b"\x51" + bytes(8) + b"\x5d" + bytes(4) + bytes(ForwardRequest())
    fields = decode_forward(data)
    assert fields.timestamp is None
    assert fields.type_url is None
    assert (fields.namespace, fields.topic, fields.value) == ("", "", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x0a\x05ab", "runs past the end"),
        (b"\x0a", "truncated varint"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x0a\x03\x12\x01\xff", "decode"),  # namespace not UTF-8
        (b"\x0a\x0c\x0a\x0a\x08" + b"\xff" * 8 + b"\x7f", "out of range"),
    ],
)
def test_wire_decoder_rejects_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_forward(data)


async def test_fake_answers_malformed_request_with_invalid_argument(
    events: RecordingEventsServer,
) -> None:
    async with await ttrpc.Client.connect(events.address) as client:
        with pytest.raises(ttrpc.TtrpcError, match="malformed ForwardRequest") as info:
            await client.call(
                EVENTS_SERVICE, "Forward", ttrpc.RawMessage(b"\x0a\x05ab"), ttrpc.RawMessage
            )
        assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
        with pytest.raises(ttrpc.TtrpcError, match="envelope and event required"):
            await client.call(EVENTS_SERVICE, "Forward", ttrpc.RawMessage(b""), ttrpc.RawMessage)
    assert events.events == []


@pytest.mark.parametrize("ns", [0, 1, 999_999_999, 1_764_880_000_123_456_789])
def test_a_nanosecond_timestamp_encodes_as_the_same_instant(ns: int) -> None:
    """The default clock is time.time_ns: its envelope says what a datetime would."""
    args = ("default", "/tasks/start", "containerd.events.TaskStart", b"\x0a\x02c1")
    decoded = decode_forward(encode_forward(ns, *args))
    assert decoded.timestamp is not None
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    seconds, nanos = divmod(ns, 1_000_000_000)
    assert decoded.timestamp == epoch + datetime.timedelta(
        seconds=seconds, microseconds=nanos // 1000
    )
    if nanos % 1000 == 0:  # a datetime holds microseconds: then the bytes are the same
        when = epoch + datetime.timedelta(seconds=seconds, microseconds=nanos // 1000)
        assert encode_forward(ns, *args) == encode_forward(when, *args)
