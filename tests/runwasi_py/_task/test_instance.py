"""Instances: run_wasi on a worker thread, exit statuses, kill, abandonment, CPU time."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runwasi_py import Entrypoint, RuntimeContext, Stdio
from runwasi_py._task.instance import EXIT_ON_ERROR, Instance, WorkerPool
from tests.runwasi_py.sandboxes import INTERRUPTS, RELEASE, ScriptSandbox, entered, reset

pytestmark = pytest.mark.anyio


def make_ctx(tmp_path: Path, *script: str, cid: str = "c1") -> RuntimeContext:
    return RuntimeContext(
        container_id=cid,
        namespace="default",
        bundle=tmp_path,
        rootfs=tmp_path,
        args=["/app.wasm", *script],
        envs=["GREETING=hi"],
        cwd="/",
        entrypoint=Entrypoint.parse("/app.wasm"),
        stdio=Stdio(stdout=str(tmp_path / "out"), stderr=str(tmp_path / "err")),
    )


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    reset()
    p = WorkerPool()
    yield p
    RELEASE.set()
    p.close()
    assert p.join_all(10)


@pytest.fixture
def exits() -> list[Instance]:
    return []


async def until_entered(cid: str) -> None:
    """Wait until the script of ``cid`` is inside its blocking word."""
    assert await asyncio.to_thread(entered(cid).wait, 30)


def make(
    pool: WorkerPool,
    ctx: RuntimeContext,
    exits: list[Instance] | None = None,
    kill_timeout: float = 1.0,
) -> Instance:
    return Instance(
        ctx.container_id,
        ScriptSandbox(),
        ctx,
        pool=pool,
        on_exit=None if exits is None else exits.append,
        kill_timeout=kill_timeout,
    )


async def test_pid_is_the_worker_thread_native_id(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "arg"))
    seen: list[int] = []

    class Probe(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            seen.append(threading.get_native_id())
            return 0

    inst.sandbox = Probe()
    assert inst.pid not in (0, threading.get_native_id())
    assert inst.start() == inst.pid
    assert (await inst.wait()).code == 0
    assert seen == [inst.pid]


async def test_exit_code_output_and_exit_callback(
    tmp_path: Path, pool: WorkerPool, exits: list[Instance]
) -> None:
    inst = make(
        pool,
        make_ctx(tmp_path, "out", "hello", "err", "oops", "env", "GREETING", "exit", "3"),
        exits,
    )
    inst.start()
    status = await inst.wait()
    assert status.code == 3
    assert status.exited_at_ns > 0
    assert inst.exit_status == status
    assert exits == [inst]
    assert (tmp_path / "out").read_text() == "hello\nhi\n"
    assert (tmp_path / "err").read_text() == "oops\n"


async def test_exit_code_is_a_byte(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "exit", "257"))
    inst.start()
    assert (await inst.wait()).code == 1


async def test_run_wasi_that_raises_exits_137_and_logs_traceback(
    tmp_path: Path, pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "runwasi_py.instance")
    inst = make(pool, make_ctx(tmp_path, "raise", "boom"))
    inst.start()
    assert (await inst.wait()).code == EXIT_ON_ERROR
    record = next(r for r in caplog.records if "run_wasi raised" in r.getMessage())
    assert record.exc_info is not None
    assert "boom" in str(record.exc_info[1])


async def test_run_wasi_returning_a_non_int_exits_137(tmp_path: Path, pool: WorkerPool) -> None:
    class Bad(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            return "zero"  # type: ignore[return-value]

    inst = make(pool, make_ctx(tmp_path))
    inst.sandbox = Bad()
    inst.start()
    assert (await inst.wait()).code == EXIT_ON_ERROR


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGKILL, 137)])
async def test_kill_cancels_and_exits_128_plus_signal(
    tmp_path: Path, pool: WorkerPool, sig: int, code: int
) -> None:
    inst = make(pool, make_ctx(tmp_path, "sleep"))
    inst.start()
    inst.kill(sig)
    assert (await inst.wait()).code == code
    assert inst.ctx.kill_signal == sig


async def test_kill_reaches_engine_through_on_kill_and_interrupt(
    tmp_path: Path, pool: WorkerPool
) -> None:
    inst = make(pool, make_ctx(tmp_path, "idle", cid="idle1"))
    inst.start()
    await until_entered("idle1")
    inst.kill(signal.SIGINT)
    assert (await inst.wait()).code == 128 + signal.SIGINT
    assert inst.ctx.kill_signal == signal.SIGINT


async def test_interrupt_is_called_with_the_signal(tmp_path: Path, pool: WorkerPool) -> None:
    started = threading.Event()

    class Flag(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            self._ctx = ctx
            started.set()
            await asyncio.Event().wait()
            return 0

    inst = make(pool, make_ctx(tmp_path, cid="int1"))
    inst.sandbox = Flag()
    inst.start()
    await asyncio.to_thread(started.wait, 10)
    inst.kill(signal.SIGTERM)
    assert (await inst.wait()).code == 143
    assert INTERRUPTS == [("int1", signal.SIGTERM)]


async def test_signal_zero_does_nothing(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "sleep"))
    inst.start()
    inst.kill(0)
    assert inst.exit_status is None
    inst.kill(signal.SIGKILL)
    assert (await inst.wait()).code == 137


async def test_kill_before_start_ends_it_without_running(
    tmp_path: Path, pool: WorkerPool, exits: list[Instance]
) -> None:
    inst = make(pool, make_ctx(tmp_path, "out", "never"), exits)
    inst.kill(signal.SIGKILL)
    assert (await inst.wait()).code == 137
    assert exits == [inst]
    assert not (tmp_path / "out").exists()
    with pytest.raises(RuntimeError, match="already ended"):
        inst.start()


async def test_discard_before_start_releases_waiters(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "out", "never"))
    waiter = asyncio.ensure_future(inst.wait())
    inst.discard()
    assert (await waiter).code == EXIT_ON_ERROR
    assert not (tmp_path / "out").exists()


async def test_blocking_run_wasi_does_not_block_the_control_loop(
    tmp_path: Path, pool: WorkerPool
) -> None:
    blocked = make(pool, make_ctx(tmp_path, "block"))
    other = make(pool, make_ctx(tmp_path, "exit", "5", cid="c2"))
    blocked.start()
    other.start()
    assert (await other.wait()).code == 5
    assert blocked.exit_status is None
    RELEASE.set()
    assert (await blocked.wait()).code == 0


async def test_sigkill_abandons_a_run_wasi_that_ignores_cancellation(
    tmp_path: Path, pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "runwasi_py.instance")
    inst = make(pool, make_ctx(tmp_path, "block", cid="blk1"), kill_timeout=0.05)
    inst.start()
    await until_entered("blk1")
    inst.kill(signal.SIGTERM)  # ignored: the thread is blocked
    inst.kill(signal.SIGKILL)
    assert (await inst.wait()).code == 137
    assert any("abandoning" in r.getMessage() for r in caplog.records)
    RELEASE.set()  # let the abandoned thread end so the test leaks nothing


async def test_sigterm_does_not_abandon(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "block", cid="blk2"), kill_timeout=0.01)
    inst.start()
    await until_entered("blk2")
    inst.kill(signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert inst.exit_status is None  # like a process that ignores SIGTERM
    RELEASE.set()
    assert (await inst.wait()).code == 143


async def test_oom_keeps_the_engine_status(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "oom"))
    inst.start()
    assert (await inst.wait()).code == 137
    assert inst.oom


async def test_cpu_time_is_counted_on_the_worker_thread(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "burn", "60"))
    assert inst.cpu_usage().total_ns == 0
    inst.start()
    await inst.wait()
    usage = inst.cpu_usage()
    assert usage.total_ns >= 60_000_000
    assert usage.user_ns + usage.system_ns > 0
    assert usage.user_ns <= usage.total_ns


async def test_cpu_time_while_running(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, make_ctx(tmp_path, "burn", "50", "sleep", cid="burn1"))
    inst.start()
    await until_entered("burn1")
    assert inst.cpu_usage().total_ns >= 50_000_000
    inst.kill(signal.SIGKILL)
    await inst.wait()
    assert inst.cpu_usage().total_ns >= 50_000_000


async def test_workers_are_reused_one_instance_at_a_time(tmp_path: Path, pool: WorkerPool) -> None:
    first = make(pool, make_ctx(tmp_path, "exit", "0"))
    first.start()
    await first.wait()
    live = make(pool, make_ctx(tmp_path, "sleep", cid="c2"))
    other = make(pool, make_ctx(tmp_path, "sleep", cid="c3"))
    assert live.pid != other.pid  # two live instances never share a thread
    for inst in (live, other):
        inst.start()
        inst.kill(signal.SIGKILL)
        await inst.wait()


def test_pool_close_joins_idle_workers() -> None:
    pool = WorkerPool()
    workers = [pool.acquire() for _ in range(3)]
    for w in workers:
        pool.release(w)
    pool.close()
    assert not any(w.is_alive() for w in workers)
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire()


async def test_next_instance_on_a_worker_never_sees_leftovers(
    tmp_path: Path, pool: WorkerPool
) -> None:
    fired = threading.Event()
    leftover_cancelled = threading.Event()

    class Messy(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, fired.set)  # a timer left behind

            async def forever() -> None:
                try:
                    await asyncio.Event().wait()
                finally:
                    leftover_cancelled.set()

            loop.create_task(forever())  # noqa: RUF006 - left behind on purpose
            await asyncio.sleep(0)

            async def agen() -> AsyncIterator[int]:
                yield 1
                yield 2

            async for _ in agen():
                break  # an async generator left unfinished
            return 0

    first = make(pool, make_ctx(tmp_path, cid="messy"))
    first.sandbox = Messy()
    first.start()
    assert (await first.wait()).code == 0
    assert leftover_cancelled.is_set()

    class Patient(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            await asyncio.sleep(0.2)  # long enough for a stale 50 ms timer to fire
            return 0

    second = make(pool, make_ctx(tmp_path, cid="next"))
    second.sandbox = Patient()
    assert second.pid == first.pid  # the same worker thread
    second.start()
    assert (await second.wait()).code == 0
    assert not fired.is_set()


async def test_clean_loop_is_reused_and_works(tmp_path: Path, pool: WorkerPool) -> None:
    loops: list[int] = []

    class Probe(ScriptSandbox):
        async def run_wasi(self, ctx: RuntimeContext) -> int:
            loops.append(id(asyncio.get_running_loop()))
            await asyncio.sleep(0.001)
            return len(loops)

    for n in (1, 2, 3):
        inst = make(pool, make_ctx(tmp_path, cid=f"r{n}"))
        inst.sandbox = Probe()
        inst.start()
        assert (await inst.wait()).code == n
    assert len(set(loops)) == 1


async def test_exit_waits_until_the_output_fifo_is_read(tmp_path: Path, pool: WorkerPool) -> None:
    """Any Sandbox, not only wasmtime: containerd's client drops output it has not read
    when the exit arrives, so the exit is held until the reader has taken the bytes."""
    import os

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # there, but not reading yet
    try:
        ctx = make_ctx(tmp_path, "out", "late reader", "exit", "0")
        ctx.stdio = Stdio(stdout=str(fifo))
        inst = make(pool, ctx)
        inst.start()
        waiting = asyncio.ensure_future(inst.wait())
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done  # the bytes are still in the pipe: no exit yet
        assert os.read(reader, 100) == b"late reader\n"
        assert (await waiting).code == 0
    finally:
        os.close(reader)


async def test_killed_task_does_not_wait_for_its_output(tmp_path: Path, pool: WorkerPool) -> None:
    import os

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ctx = make_ctx(tmp_path, "out", "never read", "sleep")
        ctx.stdio = Stdio(stdout=str(fifo))
        inst = make(pool, ctx)
        inst.start()
        await until_entered("c1")
        inst.kill(signal.SIGTERM)
        assert (await inst.wait()).code == 128 + signal.SIGTERM
    finally:
        os.close(reader)
