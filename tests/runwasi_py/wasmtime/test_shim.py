"""The pywasmtime shim end to end: Task API over ttrpc, FIFOs, events.

Every fixture runs through ``runwasi_py.testing`` twice: in-process (``Shim().serve``) and
through the real ``start`` path (the shim program started as containerd starts it).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Literal

import pytest

import ttrpc
from runwasi_py import testing
from runwasi_py.wasmtime import PyWasmtimeShim
from tests.runwasi_py.wasmtime.helpers import FIXTURES, wasm

SHIM = "runwasi_py.wasmtime:PyWasmtimeShim"
LIFECYCLE = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]

Mode = Literal["in-process", "subprocess"]
MODES = ["in-process", "subprocess"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A compile cache per test (the shim subprocess inherits the variable)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("RUNWASI_PY_CACHE_DIR", str(d))
    return d


async def running(output: testing.Output) -> None:
    """Until the loop fixture said "running" (polling: Output offers no notification)."""
    async with asyncio.timeout(20):
        while output.data != b"running\n":  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def run(
    mode: Mode,
    fixture: str,
    args: tuple[str, ...] = (),
    *,
    func: str = "",
    env: list[str] | None = None,
    memory_limit: int | None = None,
    files: dict[str, bytes | str] | None = None,
) -> testing.RunResult:
    """One task from a fixture (as /app.wasm) through a fresh shim."""
    arg0 = "/app.wasm" + (f"#{func}" if func else "")
    return await testing.run(
        SHIM,
        mode=mode,
        args=[arg0, *args],
        files={"app.wasm": wasm(fixture), **(files or {})},
        env=env or ["PATH=/"],
        memory_limit=memory_limit,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_hello(mode: Mode) -> None:
    r = await run(mode, "hello")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "hello world\n", "")
    assert r.topics == LIFECYCLE
    exit_event = r.events[2].event
    assert getattr(exit_event, "exit_status", None) == 0


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_args_and_env(mode: Mode) -> None:
    r = await run(mode, "echo", ("a", "b c"), env=["K=v", "PATH=/bin"])
    assert (r.exit_code, r.stdout, r.stderr) == (0, "/app.wasm\na\nb c\nK=v\nPATH=/bin\n", "")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("code", [0, 3, 42])
async def test_exit_codes(mode: Mode, code: int) -> None:
    r = await run(mode, "exit", (str(code),))
    assert (r.exit_code, r.stdout, r.stderr) == (code, "", "")
    assert r.topics == LIFECYCLE
    assert getattr(r.events[2].event, "exit_status", None) == code


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_stderr(mode: Mode) -> None:
    r = await run(mode, "stderr")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "to stdout\n", "to stderr\n")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_reads_a_file_from_the_rootfs(mode: Mode) -> None:
    r = await run(mode, "cat", ("/etc/motd",), files={"etc/motd": "from the image\n"})
    assert (r.exit_code, r.stdout, r.stderr) == (0, "from the image\n", "")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("path", "errno"), [("/../../../../etc/passwd", 63), ("/etc/passwd", 44)])
async def test_a_file_outside_the_rootfs_is_unreachable(mode: Mode, path: str, errno: int) -> None:
    r = await run(mode, "cat", (path,))
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", f"errno={errno}\n")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_trap(mode: Mode) -> None:
    r = await run(mode, "trap")
    assert r.exit_code == 137
    assert r.stdout == "before\n"
    assert "integer divide by zero" in r.stderr
    assert r.topics == LIFECYCLE


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_memory_limit_is_an_oom(mode: Mode) -> None:
    r = await run(mode, "grow", memory_limit=8 << 20)
    assert r.exit_code == 137
    assert r.stdout == "growing\n"
    assert "out of memory" in r.stderr
    assert r.topics == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ]


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_custom_entrypoint(mode: Mode) -> None:
    r = await run(mode, "entry", func="greet")
    assert (r.exit_code, r.stdout, r.stderr) == (7, "greet\n", "")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_component(mode: Mode) -> None:
    r = await run(mode, "component")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "hello from a component\n", "")
    assert r.topics == LIFECYCLE


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_component_err(mode: Mode) -> None:
    r = await run(mode, "component_err")
    assert (r.exit_code, r.stdout, r.stderr) == (1, "", "")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_wat_text(mode: Mode) -> None:
    r = await testing.run(
        SHIM,
        mode=mode,
        args=["/hello.wat"],
        files={"hello.wat": (FIXTURES / "hello.wat").read_text()},
    )
    assert (r.exit_code, r.stdout, r.stderr) == (0, "hello world\n", "")


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
async def test_non_wasm_is_refused_at_create(mode: Mode, tmp_path: Path) -> None:
    bundle = testing.make_bundle(
        tmp_path, args=["/app.sh"], files={"app.sh": "#!/bin/sh\necho hi\n"}
    )
    async with testing.serve_shim(SHIM, mode=mode, bundle=bundle) as sut:
        with pytest.raises(ttrpc.TtrpcError) as info:
            await sut.driver.create(bundle)
        assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
        assert "/app.sh" in info.value.message
        assert "a script" in info.value.message
        assert sut.events.topics == []
    bundle.close()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
async def test_kill_ends_a_busy_loop(mode: Mode, sig: int, tmp_path: Path) -> None:
    bundle = testing.make_bundle(tmp_path, args=["/app.wasm"], files={"app.wasm": wasm("loop")})
    async with testing.serve_shim(SHIM, mode=mode, bundle=bundle) as sut:
        d = sut.driver
        await d.create(bundle)
        await d.start(bundle.id)
        await running(bundle.outputs["stdout"])
        assert (await d.state(bundle.id)).status == 2  # RUNNING
        await d.kill(bundle.id, sig)
        status = await d.wait(bundle.id)
        assert status.exit_status == 128 + sig
        assert (await d.delete(bundle.id)).exit_status == 128 + sig
        out, err = await bundle.read_outputs()
        assert (out, err) == ("running\n", "")
        await sut.events.wait_for(4)
        assert sut.events.topics == LIFECYCLE
    bundle.close()


@pytest.mark.anyio
async def test_many_busy_instances_stay_responsive(tmp_path: Path) -> None:
    """Eight spinning instances in one shim: State answers, each Kill ends only its task."""
    bundles = [
        testing.make_bundle(
            tmp_path, args=["/app.wasm"], container_id=f"c{i}", files={"app.wasm": wasm("loop")}
        )
        for i in range(8)
    ]
    async with testing.serve_shim(PyWasmtimeShim) as sut:
        d = sut.driver
        for b in bundles:
            await d.create(b)
            await d.start(b.id)
        for b in bundles:
            await running(b.outputs["stdout"])
        for i, b in enumerate(bundles):
            await d.kill(b.id, signal.SIGTERM)
            assert (await d.wait(b.id)).exit_status == 143
            for other in bundles[i + 1 :]:
                assert (await d.state(other.id)).status == 2  # still RUNNING
            await d.delete(b.id)
    for b in bundles:
        b.close()
