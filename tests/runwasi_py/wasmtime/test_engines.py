"""Instances one after another on one worker thread share its Engine, and nothing else."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from runwasi_py import RuntimeContext
from runwasi_py._compile_cache import precompile
from runwasi_py.wasmtime import WasmtimeSandbox
from runwasi_py.wasmtime._engines import EngineSlot, slot_for_this_thread
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


def wait_running(d: Path) -> None:
    deadline = time.monotonic() + 20
    while out(d) != "running\n":
        assert time.monotonic() < deadline, "the guest never ran"
        time.sleep(0.005)


def test_the_shared_linkers_poll_serves_each_runs_own_kill(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    """Two sleepers one after another on one thread's linker: each is woken by its own kill
    only (the first's event, set for good, must not end the second's sleep)."""
    first = WasmtimeSandbox()
    asleep = ctx_in(tmp_path, "s1", "sleep")
    fut = submit(worker, first, asleep)
    wait_running(tmp_path / "s1")
    asleep.deliver_kill(signal.SIGTERM)
    first.interrupt(signal.SIGTERM)
    assert fut.result(20) == 143
    second = WasmtimeSandbox()
    again = ctx_in(tmp_path, "s2", "sleep")
    fut = submit(worker, second, again)
    wait_running(tmp_path / "s2")
    first.interrupt(signal.SIGKILL)  # late, and its event is set already
    time.sleep(0.2)  # not a timing assertion: time for a wrong wake to end the sleep
    assert not fut.done()
    again.deliver_kill(signal.SIGINT)
    second.interrupt(signal.SIGINT)
    assert fut.result(20) == 130


class MultiMemorySandbox(WasmtimeSandbox):
    max_memories = 2


TWO_MEMORIES = b'(module (memory 1) (memory 1) (func (export "_start")))'


def test_each_max_memories_has_its_own_engine(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    """A multi-memory engine on a thread does not let a one-memory sandbox run such a module."""
    (tmp_path / "m").mkdir()
    multi = make_ctx(tmp_path / "m", TWO_MEMORIES)
    assert submit(worker, MultiMemorySandbox(), multi).result(20) == 0
    single = ctx_in(tmp_path, "s", "hello")
    (single.rootfs / "app.wasm").write_bytes(bytes(wasmtime.wat2wasm(TWO_MEMORIES.decode())))
    # (no precompile: it refuses the module for this sandbox; run_wasi reports it)
    assert worker.submit(lambda: asyncio.run(WasmtimeSandbox().run_wasi(single))).result(20) == 1
    assert "memor" in out(tmp_path / "s", "stderr")
    engines = worker.submit(
        lambda: (slot_for_this_thread(1).engine, slot_for_this_thread(2).engine)
    ).result()
    assert engines[0] is not engines[1]


def test_a_cached_entry_is_trust_checked_on_every_run(
    tmp_path: Path,
    worker: concurrent.futures.ThreadPoolExecutor,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The slot's module cache is no proof of trust: an entry others can now write is not
    served from it (the run compiles the module instead)."""
    first = ctx_in(tmp_path, "a", "hello")
    assert submit(worker, WasmtimeSandbox(), first).result(20) == 0  # now in the slot
    (entry,) = cache_dir.glob("*.cwasm")
    os.chmod(entry, 0o666)  # same inode, size and mtime: the slot's key is unchanged
    again = ctx_in(tmp_path, "b", "hello")
    again.precompiled = entry
    with caplog.at_level(logging.WARNING, logger="runwasi_py.wasmtime"):
        assert worker.submit(lambda: asyncio.run(WasmtimeSandbox().run_wasi(again))).result(20) == 0
    assert "not trusted" in caplog.text
    assert out(tmp_path / "b") == "hello world\n"


class TrustingSandbox(WasmtimeSandbox):
    accept_precompiled = True


def test_an_image_artifact_never_enters_the_slots_module_cache(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[str] = []
    real = EngineSlot.module

    def module(self: EngineSlot, path: os.PathLike[str] | str) -> Any:
        served.append(os.fspath(path))
        return real(self, path)

    monkeypatch.setattr(EngineSlot, "module", module)
    ctx = ctx_in(tmp_path, "i", "hello")
    (ctx.rootfs / "app.wasm").write_bytes(TrustingSandbox().compile(wasm("hello")))
    fut = worker.submit(lambda: asyncio.run(TrustingSandbox().run_wasi(ctx)))
    assert fut.result(20) == 0
    assert out(tmp_path / "i") == "hello world\n"
    assert served == []  # deserialised afresh, outside the cache of trusted entries


def test_two_modules_with_the_same_entry_name_are_checked_each_on_its_own(
    tmp_path: Path, worker: concurrent.futures.ThreadPoolExecutor
) -> None:
    """What a cached module's entry takes is remembered per module, never per name."""
    with_params = bytes(wasmtime.wat2wasm('(module (func (export "_start") (param i32)))'))
    for round_ in range(2):  # the second round is served from the thread's module cache
        plain_dir, odd_dir = tmp_path / f"plain{round_}", tmp_path / f"odd{round_}"
        plain_dir.mkdir()
        odd_dir.mkdir()
        assert submit(worker, WasmtimeSandbox(), make_ctx(plain_dir, "hello")).result(30) == 0
        assert submit(worker, WasmtimeSandbox(), make_ctx(odd_dir, with_params)).result(30) == 1
        assert "takes parameters" in (odd_dir / "stderr").read_text()
        assert out(plain_dir) == "hello world\n"
