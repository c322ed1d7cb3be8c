"""runwasi_py.testing: bundles, FIFO outputs, the driver, and shims in-process and via `start`."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

import ttrpc
from runwasi_py._proto.messages import TaskCreate, TaskDelete, TaskExit, TaskStart
from runwasi_py.testing import Output, make_bundle, run, serve_shim
from runwasi_py.testing.bundles import WASM_HEADER
from runwasi_py.testing.serve import write_shim_program
from tests.runwasi_py.sandboxes import ScriptShim, reset

SHIM = "tests.runwasi_py.sandboxes:ScriptShim"


@pytest.fixture(autouse=True)
def _fresh() -> None:
    reset()


def test_make_bundle_writes_what_containerd_would(tmp_path: Path) -> None:
    b = make_bundle(
        tmp_path,
        args=["/bin/app.wasm#run", "x"],
        container_id="b1",
        env=["A=1"],
        cwd="/work",
        annotations={"k": "v"},
        memory_limit=1 << 20,
        stdin=b"input",
    )
    spec = json.loads(b.config.read_text())
    assert spec["process"] == {"args": ["/bin/app.wasm#run", "x"], "env": ["A=1"], "cwd": "/work"}
    assert spec["root"] == {"path": "rootfs"}
    assert spec["annotations"] == {"k": "v"}
    assert spec["linux"]["resources"]["memory"]["limit"] == 1 << 20
    assert (b.rootfs / "bin/app.wasm").read_bytes() == WASM_HEADER
    assert stat.S_ISFIFO(os.stat(b.stdout).st_mode)
    assert stat.S_ISFIFO(os.stat(b.stderr).st_mode)
    assert Path(b.stdin).read_bytes() == b"input"
    req = b.create_request()
    assert (req.id, req.bundle, req.stdout, req.terminal) == ("b1", str(b.path), b.stdout, False)


def test_make_bundle_files_plain_stdio_and_raw_config(tmp_path: Path) -> None:
    b = make_bundle(
        tmp_path,
        args=["/m.wasm"],
        files={"m.wasm": b"\0asm", "etc/conf": "text"},
        stdio="file",
        config={"process": 1},
    )
    assert (b.rootfs / "etc/conf").read_text() == "text"
    assert json.loads(b.config.read_text()) == {"process": 1}
    assert b.outputs == {}
    assert b.stdout.endswith("stdout")
    none = make_bundle(tmp_path, args=["/m.wasm"], container_id="c2", stdio="none")
    assert (none.stdout, none.stderr, none.stdin) == ("", "", "")


@pytest.mark.anyio
async def test_output_collects_until_the_writer_closes(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    out = Output(path)
    out.open()

    opened = threading.Event()

    def writer() -> None:
        with open(path, "wb") as f:
            opened.set()
            f.write(b"a" * 100_000)
            f.write(b"end")

    t = threading.Thread(target=writer)
    t.start()
    # read() ends at the first moment no writer holds the FIFO, as containerd's copy does
    # once the task has exited: the writer must have opened it by then.
    assert await asyncio.to_thread(opened.wait, 30)
    data = await out.read()
    t.join()
    assert data == b"a" * 100_000 + b"end"
    out.close()
    out.close()  # idempotent


@pytest.mark.anyio
async def test_run_in_process() -> None:
    result = await run(ScriptShim, args=["/app.wasm", "out", "o", "err", "e", "exit", "5"])
    assert (result.exit_code, result.stdout, result.stderr) == (5, "o\n", "e\n")
    assert result.topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


@pytest.mark.anyio
async def test_done_when_a_shim_runs_through_the_real_start_path(tmp_path: Path) -> None:
    """The issue's "Done when": a shim written as in the issue, started by `start` like
    containerd does, runs a test sandbox's task to completion: exit code, output, events."""
    result = await run(
        SHIM,
        mode="subprocess",
        args=["/app.wasm", "out", "hello from the shim", "err", "to stderr", "exit", "42"],
        directory=tmp_path,
        container_id="done1",
    )
    assert result.exit_code == 42
    assert result.stdout == "hello from the shim\n"
    assert result.stderr == "to stderr\n"
    assert result.topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    create, start, exit_, delete = (e.event for e in result.events)
    assert isinstance(create, TaskCreate)
    assert isinstance(start, TaskStart)
    assert isinstance(exit_, TaskExit)
    assert isinstance(delete, TaskDelete)
    assert create.container_id == start.container_id == exit_.container_id == "done1"
    assert create.pid == start.pid == exit_.pid == delete.pid != 0
    assert exit_.exit_status == delete.exit_status == 42
    assert all(e.namespace == "default" for e in result.events)


@pytest.mark.anyio
async def test_subprocess_shim_is_a_separate_detached_daemon(tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm", "exit", "0"], container_id="d1")
    async with serve_shim(SHIM, mode="subprocess", bundle=b) as sut:
        assert sut.mode == "subprocess"
        assert sut.shim_pid not in (0, os.getpid())
        assert (b.path / "address").read_text() == sut.address
        assert (await sut.driver.run(b))[0] == 0
        # a second connection, as containerd opens for every task of a pod
        async with await ttrpc.Client.connect(sut.address) as other:
            from runwasi_py.testing import TaskDriver

            assert (await TaskDriver(other).connect()).shim_pid == sut.shim_pid
        pid = sut.shim_pid
        log = sut.log
    assert log is not None
    assert b"shim script-test starting" in log.data
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_write_shim_program_is_an_executable_shim(tmp_path: Path) -> None:
    program = write_shim_program(SHIM, tmp_path)
    assert program.name == "containerd-shim-script-test-v1"
    assert os.access(program, os.X_OK)
    out = subprocess.run(
        [str(program), "-v"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "Runtime: script-test" in out.stdout


def test_bad_shim_references_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="module:Class"):
        write_shim_program("no_colon", tmp_path)
    with pytest.raises(TypeError, match="not a class"):
        write_shim_program("os:sep", tmp_path)


@pytest.mark.anyio
async def test_subprocess_mode_needs_a_bundle() -> None:
    with pytest.raises(ValueError, match="bundle"):
        async with serve_shim(SHIM, mode="subprocess"):
            pass


@pytest.mark.anyio
async def test_driver_cleanup_kills_and_deletes_leftovers(tmp_path: Path) -> None:
    async with serve_shim(ScriptShim) as sut:
        b = make_bundle(tmp_path, args=["/app.wasm", "sleep"], container_id="left", stdio="none")
        await sut.driver.create(b)
        await sut.driver.start("left")
        await sut.driver.cleanup()
        assert sut.driver.created == set()
        with pytest.raises(ttrpc.TtrpcError):
            await sut.driver.state("left")
        await asyncio.sleep(0)
