"""RuntimeContext: entrypoint parsing, kill delivery across threads, default can_handle."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from runwasi_py import Entrypoint, InvalidArgument, RuntimeContext, Sandbox, Stdio


def make_ctx(tmp_path: Path, arg0: str = "/app.wasm", source: Path | None = None) -> RuntimeContext:
    return RuntimeContext(
        container_id="c1",
        namespace="default",
        bundle=tmp_path,
        rootfs=tmp_path / "rootfs",
        args=[arg0],
        envs=[],
        cwd="/",
        entrypoint=Entrypoint.parse(arg0, source),
    )


@pytest.mark.parametrize(
    ("arg0", "path", "func", "name"),
    [
        ("/app/app.wasm", "/app/app.wasm", "_start", "app"),
        ("/app/app.wasm#entry", "/app/app.wasm", "entry", "app"),
        ("#init", "", "init", ""),
        ("/x.wasm#", "/x.wasm", "_start", "x"),
    ],
)
def test_entrypoint_parse(arg0: str, path: str, func: str, name: str) -> None:
    ep = Entrypoint.parse(arg0)
    assert (ep.path, ep.func, ep.name) == (path, func, name)


def test_entrypoint_without_source_cannot_be_read() -> None:
    with pytest.raises(FileNotFoundError):
        Entrypoint.parse("#init").read_bytes()


def test_kill_runs_callbacks_once_and_late_callbacks_at_once(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    seen: list[tuple[str, int]] = []
    ctx.on_kill(lambda s: seen.append(("early", s)))
    t = threading.Thread(target=ctx.deliver_kill, args=(9,))
    t.start()
    t.join()
    ctx.deliver_kill(15)  # a second kill does not change the recorded signal
    ctx.on_kill(lambda s: seen.append(("late", s)))
    assert ctx.kill_signal == 9
    assert seen == [("early", 9), ("late", 9)]


def test_oom_flag(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    assert not ctx.oom
    ctx.report_oom()
    assert ctx.oom


def test_stdio_writes_to_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stdio = Stdio(stdout=str(out))
    f = stdio.open_stdout()
    assert f is not None
    with f:
        f.write(b"hi\n")
    assert out.read_bytes() == b"hi\n"
    assert Stdio().open_stderr() is None
    assert Stdio().open_stdin() is None


def test_default_can_handle(tmp_path: Path) -> None:
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(b"\0asm\x01\0\0\0")
    text = tmp_path / "t.sh"
    text.write_bytes(b"#!/bin/sh\n")
    sb = Sandbox()
    asyncio.run(sb.can_handle(make_ctx(tmp_path, "/m.wasm", wasm)))
    with pytest.raises(InvalidArgument, match="not a wasm module"):
        asyncio.run(sb.can_handle(make_ctx(tmp_path, "/t.sh", text)))
    with pytest.raises(InvalidArgument, match="not found"):
        asyncio.run(sb.can_handle(make_ctx(tmp_path, "/nope.wasm", tmp_path / "nope")))


def test_sandbox_defaults() -> None:
    sb = Sandbox()
    assert sb.cache_key() is None
    sb.interrupt(9)  # the default hook does nothing and must not raise
    with pytest.raises(NotImplementedError):
        asyncio.run(sb.run_wasi(make_ctx(Path("/tmp"))))
    with pytest.raises(NotImplementedError):
        sb.compile(b"")
