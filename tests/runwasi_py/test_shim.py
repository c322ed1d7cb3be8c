"""Shim: the serve() entry point for embedding, run(), version(), Config."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import runwasi_py
import ttrpc
from runwasi_py import Config, Shim
from runwasi_py._events_fake import RecordingEventsServer
from runwasi_py._proto import TaskExit
from runwasi_py.testing import TaskDriver, make_bundle
from tests.runwasi_py.sandboxes import ScriptShim, entered, reset

pytestmark = pytest.mark.anyio


@pytest.fixture
def sockdir() -> Iterator[Path]:
    reset()
    d = Path(tempfile.mkdtemp(prefix="rwpy-t-", dir="/tmp"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


def listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


@pytest.fixture
async def events(sockdir: Path) -> AsyncIterator[RecordingEventsServer]:
    async with RecordingEventsServer(sockdir / "events.sock") as ev:
        yield ev


def exists(path: Path) -> bool:
    return path.exists()


async def test_serve_until_shutdown_then_socket_is_gone(
    sockdir: Path, events: RecordingEventsServer
) -> None:
    path = sockdir / "shim.sock"
    listener = listen(path)
    shim = ScriptShim()
    serving = asyncio.ensure_future(
        shim.serve(listener, namespace="ns1", ttrpc_address=events.address)
    )
    client = await ttrpc.Client.connect(str(path))
    driver = TaskDriver(client)
    assert shim.task_service is not None
    assert (await driver.connect()).shim_pid == os.getpid()
    await driver.shutdown()
    await asyncio.wait_for(serving, 15)
    await client.close()
    assert serving.result() is None
    assert not exists(path)
    assert listener.fileno() == -1
    assert shim.task_service is None


async def test_shutdown_kills_running_tasks_and_publishes_their_exit(
    sockdir: Path, events: RecordingEventsServer, tmp_path: Path
) -> None:
    path = sockdir / "shim.sock"
    shim = ScriptShim()
    serving = asyncio.ensure_future(
        shim.serve(listen(path), namespace="ns1", ttrpc_address=events.address)
    )
    client = await ttrpc.Client.connect(str(path))
    driver = TaskDriver(client)
    b = make_bundle(tmp_path, args=["/app.wasm", "sleep"], container_id="long", stdio="none")
    await driver.create(b)
    await driver.start("long")
    assert await asyncio.to_thread(entered("long").wait, 30)
    waiting = asyncio.ensure_future(driver.wait("long"))
    shim.shutdown()  # what the daemon does on SIGTERM
    await asyncio.wait_for(serving, 15)
    assert (await waiting).exit_status == 128 + signal.SIGKILL
    await client.close()
    # the shim's own publisher was flushed before serve returned
    exits = [e.event for e in events.events if e.topic == "/tasks/exit"]
    assert len(exits) == 1
    assert isinstance(exits[0], TaskExit)
    assert exits[0].exit_status == 137
    assert [e.namespace for e in events.events] == ["ns1"] * len(events.events)
    assert not exists(path)


async def test_cancelling_serve_cleans_up(sockdir: Path) -> None:
    path = sockdir / "shim.sock"
    shim = ScriptShim()
    serving = asyncio.ensure_future(shim.serve(listen(path), namespace="ns", ttrpc_address=""))
    client = await ttrpc.Client.connect(str(path))
    await TaskDriver(client).connect()
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await client.wait_closed()
    assert not exists(path)


async def test_serve_twice_at_once_is_refused(
    sockdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "runwasi_py.shim")
    shim = ScriptShim()
    first = asyncio.ensure_future(
        shim.serve(listen(sockdir / "a.sock"), namespace="ns", ttrpc_address="")
    )
    await asyncio.sleep(0)
    second = listen(sockdir / "b.sock")
    with pytest.raises(RuntimeError, match="already running"):
        await shim.serve(second, namespace="ns", ttrpc_address="")
    second.close()
    shim.shutdown()
    await asyncio.wait_for(first, 15)
    assert any("not published" in r.getMessage() for r in caplog.records)


async def test_embedding_with_own_publisher(sockdir: Path, tmp_path: Path) -> None:
    published: list[tuple[str, object]] = []

    class Sink:
        def publish(self, topic: str, event: object) -> None:
            published.append((topic, event))

    path = sockdir / "shim.sock"
    shim = ScriptShim()
    serving = asyncio.ensure_future(
        shim.serve(listen(path), namespace="ns", ttrpc_address="", publisher=Sink())
    )
    async with await ttrpc.Client.connect(str(path)) as client:
        driver = TaskDriver(client)
        b = make_bundle(tmp_path, args=["/app.wasm", "exit", "9"], container_id="own", stdio="none")
        assert (await driver.run(b))[0] == 9
        await driver.shutdown()
    await asyncio.wait_for(serving, 15)
    assert [t for t, _ in published] == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ]


def test_version() -> None:
    ver, rev = runwasi_py.version()
    assert isinstance(ver, str)
    assert ver
    assert isinstance(rev, str)
    assert rev
    assert Shim.version() == runwasi_py.version()

    class Mine(Shim):
        name = "mine"

        @classmethod
        def version(cls) -> tuple[str, str]:
            return "9.9.9", "abc"

    assert Mine.version() == ("9.9.9", "abc")


def test_config_defaults_and_frozen() -> None:
    cfg = Config()
    assert cfg.default_log_level == "info"
    assert cfg.kill_timeout > 0
    assert cfg.compile_cache_dir is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kill_timeout = 1  # type: ignore[misc]
    assert ScriptShim.config == Config()


def test_run_hands_the_class_to_shim_main(monkeypatch: pytest.MonkeyPatch) -> None:
    import runwasi_py._cli as cli

    seen: list[object] = []

    def fake_main(shim: object, argv: list[str] | None = None) -> None:
        seen.append(shim)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "shim_main", fake_main)
    with pytest.raises(SystemExit):
        ScriptShim.run()
    assert seen == [ScriptShim]


def test_public_names() -> None:
    for name in ("Shim", "Config", "version", "Sandbox", "RuntimeContext"):
        assert name in runwasi_py.__all__
        assert hasattr(runwasi_py, name)
