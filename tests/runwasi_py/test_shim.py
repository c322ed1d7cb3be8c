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
from runwasi_py._proto.messages import TaskExit
from runwasi_py.testing import TaskDriver, make_bundle
from runwasi_py.testing.events_server import RecordingEventsServer
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
    import runwasi_py._launch.main as cli

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
    for name in ("Entrypoint", "errors", "shim_main", "Stdio", "EventSink", "CompileCache"):
        assert name in runwasi_py.__all__
        assert hasattr(runwasi_py, name)
    from runwasi_py._launch.main import shim_main

    assert runwasi_py.shim_main is shim_main
    assert runwasi_py.errors.NotFound is runwasi_py.NotFound


def test_the_bundled_engine_uses_only_public_names() -> None:
    """wasmtime/ is the template for a new engine: nothing of the framework's private rooms."""
    import ast
    from pathlib import Path

    engine = Path(runwasi_py.__file__).parent / "wasmtime"
    private: list[str] = []
    for path in engine.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            private.extend(
                f"{path.name}: {name}"
                for name in names
                if name.startswith(("runwasi_py._", "runwasi_py.testing"))
            )
    assert private == []


async def test_linger_and_reservations_hold_a_shared_daemon(
    sockdir: Path, events: RecordingEventsServer, tmp_path: Path
) -> None:
    from runwasi_py._launch.reserve import reserve

    path = sockdir / "shim.sock"
    address = f"unix://{path}"
    shim = ScriptShim()
    serving = asyncio.ensure_future(
        shim.serve(listen(path), namespace="ns1", ttrpc_address=events.address, linger=0.3)
    )
    client = await ttrpc.Client.connect(str(path))
    driver = TaskDriver(client)
    b1 = make_bundle(tmp_path, args=["/app.wasm"], container_id="c1", stdio="none")
    code, _, _ = await driver.run(b1)
    assert code == 0
    # a start for c2 reserves the daemon; then containerd's Shutdown for c1 arrives
    assert await asyncio.to_thread(reserve, address, "c2") == "reserved"
    service = shim.task_service
    assert service is not None
    assert service.reservations.pending == 1
    await driver.shutdown()
    await asyncio.sleep(0.6)  # longer than the linger: the reservation keeps it serving
    assert not serving.done()
    assert path.exists()
    b2 = make_bundle(tmp_path, args=["/app.wasm", "exit", "3"], container_id="c2", stdio="none")
    code, _, _ = await driver.run(b2)
    assert code == 3
    assert service.reservations.pending == 0  # Create used it up
    await driver.shutdown()
    assert not serving.done()  # lingering for the next container
    await asyncio.wait_for(serving, 15)
    await client.close()
    assert not exists(path)
    assert await asyncio.to_thread(reserve, address, "c3") == "dead"


async def test_an_exiting_daemon_refuses_reservations(sockdir: Path) -> None:
    from runwasi_py._launch.reserve import reserve

    path = sockdir / "shim.sock"
    shim = ScriptShim()
    serving = asyncio.ensure_future(shim.serve(listen(path), namespace="ns1", ttrpc_address=""))
    client = await ttrpc.Client.connect(str(path))
    assert (await TaskDriver(client).connect()).shim_pid == os.getpid()
    service = shim.task_service
    assert service is not None
    assert service.reservations.try_close()  # what the exit decision does
    assert await asyncio.to_thread(reserve, f"unix://{path}", "c9") == "refused"
    assert service.reservations.pending == 0
    # an empty id is a bad request, not a reservation
    assert await asyncio.to_thread(reserve, f"unix://{path}", "") == "reserved"
    shim.shutdown()
    await asyncio.wait_for(serving, 15)
    await client.close()


def test_decode_reserve_id() -> None:
    from runwasi_py._shim import _decode_reserve_id

    assert _decode_reserve_id(b"\n\x02c1") == "c1"
    assert _decode_reserve_id(b"\x10\x05\n\x03abc") == "abc"  # unknown fields skipped
    assert _decode_reserve_id(b"") == ""
    assert _decode_reserve_id(b"\n\x05c1") == ""  # truncated
    assert _decode_reserve_id(b"\n\x02\xff\xfe") == ""  # not UTF-8
    assert _decode_reserve_id(b"\x0f") == ""  # wire type 7


def test_config_group_by_is_checked() -> None:
    assert Config().group_by == "sandbox"
    assert Config(group_by="namespace").linger > 0
    with pytest.raises(ValueError, match="group_by"):
        Config(group_by="pod")


async def test_linger_counts_from_the_latest_shutdown(
    sockdir: Path, events: RecordingEventsServer, tmp_path: Path
) -> None:
    path = sockdir / "shim.sock"
    shim = ScriptShim()
    shim.linger = 3.0  # as the daemon sets it for a namespace-shared shim
    serving = asyncio.ensure_future(
        shim.serve(listen(path), namespace="ns1", ttrpc_address=events.address)
    )
    client = await ttrpc.Client.connect(str(path))
    driver = TaskDriver(client)
    loop = asyncio.get_running_loop()
    b1 = make_bundle(tmp_path, args=["/app.wasm"], container_id="c1", stdio="none")
    assert (await driver.run(b1))[0] == 0
    await driver.shutdown()
    first = loop.time()
    await asyncio.sleep(1.5)
    b2 = make_bundle(tmp_path, args=["/app.wasm"], container_id="c2", stdio="none")
    assert (await driver.run(b2))[0] == 0
    await driver.shutdown()
    await asyncio.sleep(max(0.0, first + 3.5 - loop.time()))
    # the window opened by the first Shutdown is over; the second one's is not (it opened
    # at least 1.5 s later, unless the machine stalled for seconds)
    assert not serving.done()
    assert path.exists()
    await asyncio.wait_for(serving, 15)
    await client.close()
    assert not exists(path)
