"""Instances one after another on one worker thread share its Engine, and nothing else."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py import RuntimeContext
from runwasi_py._compile_cache import precompile
from runwasi_py.wasmtime import WasmtimeSandbox
from runwasi_py.wasmtime._engines import slot_for_this_thread
from tests.runwasi_py.wasmtime.helpers import make_ctx, out, wasm


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("RUNWASI_PY_CACHE_DIR", str(d))
    return d


@pytest.fixture
def worker() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """One thread for every run of a test, as a pooled worker is."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def submit(
    pool: concurrent.futures.ThreadPoolExecutor, sandbox: WasmtimeSandbox, ctx: RuntimeContext
) -> concurrent.futures.Future[int]:
    ctx.precompiled = precompile(sandbox, ctx)
    return pool.submit(lambda: asyncio.run(sandbox.run_wasi(ctx)))


def ctx_in(
    tmp_path: Path, name: str, fixture: str, args: list[str] | None = None
) -> RuntimeContext:
    d = tmp_path / name
    d.mkdir()
    return make_ctx(d, fixture, args=args)


def test_runs_on_one_thread_share_its_engine(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    engines = [worker.submit(lambda: id(slot_for_this_thread().engine)).result() for _ in "ab"]
    assert engines[0] == engines[1]


def test_a_kill_and_a_proc_exit_do_not_reach_the_next_instance(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    sandbox = WasmtimeSandbox()
    looping = ctx_in(tmp_path, "loop", "loop")
    fut = submit(worker, sandbox, looping)
    deadline = time.monotonic() + 20
    while out(tmp_path / "loop") != "running\n":
        assert time.monotonic() < deadline, "the loop never ran"
        time.sleep(0.005)
    looping.deliver_kill(signal.SIGKILL)
    sandbox.interrupt(signal.SIGKILL)
    assert fut.result(20) == 137
    # the same engine, bumped by the kill: the next guest runs to its end
    assert submit(worker, WasmtimeSandbox(), ctx_in(tmp_path, "h1", "hello")).result(20) == 0
    assert out(tmp_path / "h1") == "hello world\n"
    # our proc_exit bumps the epoch too, and its status is per run
    exiting = ctx_in(tmp_path, "exit", "exit", args=["255"])
    assert submit(worker, WasmtimeSandbox(), exiting).result(20) == 255
    assert submit(worker, WasmtimeSandbox(), ctx_in(tmp_path, "e0", "exit")).result(20) == 0


def test_a_late_interrupt_of_a_finished_run_spares_the_next(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    first = WasmtimeSandbox()
    assert submit(worker, first, ctx_in(tmp_path, "h1", "hello")).result(20) == 0
    second = WasmtimeSandbox()
    looping = ctx_in(tmp_path, "loop", "loop")
    fut = submit(worker, second, looping)
    deadline = time.monotonic() + 20
    while out(tmp_path / "loop") != "running\n":
        assert time.monotonic() < deadline, "the loop never ran"
        time.sleep(0.005)
    first.interrupt(signal.SIGKILL)  # a kill that arrives after its task ended
    time.sleep(0.2)  # not a timing assertion: time for a wrong trap to happen
    assert not fut.done()
    looping.deliver_kill(signal.SIGTERM)
    second.interrupt(signal.SIGTERM)
    assert fut.result(20) == 143


def test_a_replaced_artifact_is_not_served_from_the_cache(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    ctx = ctx_in(tmp_path, "c", "hello")
    assert submit(worker, WasmtimeSandbox(), ctx).result(20) == 0
    (ctx.rootfs / "app.wasm").write_bytes(wasm("stderr"))
    (tmp_path / "c" / "stdout").unlink()
    ctx2 = make_ctx(tmp_path / "c", "stderr")
    assert submit(worker, WasmtimeSandbox(), ctx2).result(20) == 0
    assert out(tmp_path / "c") == "to stdout\n"
