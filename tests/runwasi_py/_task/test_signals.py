"""Signals follow process semantics: those a process ignores (or stops on) do not end a task,
and the first signal that ends it decides its status."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._task.instance import Instance, WorkerPool
from runwasi_py._task.signals import NOT_ENDING, ends_task
from tests.runwasi_py._task.test_instance import make_ctx, until_entered
from tests.runwasi_py.sandboxes import RELEASE, ScriptSandbox, reset

pytestmark = pytest.mark.anyio


class Recording(ScriptSandbox):
    def __init__(self) -> None:
        super().__init__()
        self.notified: list[int] = []

    def notify_signal(self, signal: int) -> None:
        self.notified.append(signal)


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    reset()
    p = WorkerPool()
    yield p
    RELEASE.set()
    p.close()
    assert p.join_all(10)


def make(
    pool: WorkerPool, tmp_path: Path, *script: str, cid: str, kill_timeout: float = 1.0
) -> Instance:
    ctx = make_ctx(tmp_path, *script, cid=cid)
    return Instance(cid, Recording(), ctx, pool=pool, kill_timeout=kill_timeout)


def test_the_table() -> None:
    assert not ends_task(signal.SIGWINCH)
    assert not ends_task(signal.SIGCHLD)
    assert not ends_task(signal.SIGSTOP)
    assert ends_task(signal.SIGTERM)
    assert ends_task(signal.SIGHUP)
    assert ends_task(signal.SIGRTMIN)
    assert signal.SIGKILL not in NOT_ENDING


@pytest.mark.parametrize("sig", sorted(NOT_ENDING))
async def test_signals_a_process_ignores_do_not_end_the_task(
    tmp_path: Path, pool: WorkerPool, sig: int
) -> None:
    inst = make(pool, tmp_path, "idle", cid=f"ign{sig}")
    inst.start()
    await until_entered(f"ign{sig}")
    inst.kill(sig)
    assert inst.exit_status is None
    assert inst.ctx.kill_signal is None
    assert isinstance(inst.sandbox, Recording)
    assert inst.sandbox.notified == [sig]
    inst.kill(signal.SIGTERM)
    assert (await inst.wait()).code == 143


async def test_a_later_signal_does_not_change_the_status(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, tmp_path, "block", cid="first1", kill_timeout=30)
    inst.start()
    await until_entered("first1")
    inst.kill(signal.SIGTERM)  # the blocked script outlives it for now
    inst.kill(signal.SIGHUP)
    inst.kill(signal.SIGCONT)
    RELEASE.set()
    assert (await inst.wait()).code == 128 + signal.SIGTERM
    inst.kill(signal.SIGINT)  # after the end: nothing changes
    assert inst.exit_status is not None
    assert inst.exit_status.code == 143


async def test_sigkill_after_an_outlived_sigterm_decides(tmp_path: Path, pool: WorkerPool) -> None:
    inst = make(pool, tmp_path, "block", cid="first2", kill_timeout=30)
    inst.start()
    await until_entered("first2")
    inst.kill(signal.SIGTERM)
    inst.kill(signal.SIGKILL)
    inst.kill(signal.SIGTERM)
    RELEASE.set()
    assert (await inst.wait()).code == 137
