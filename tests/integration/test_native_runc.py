"""Native containers through the real runc: lifecycle, exit codes, stdio, queries, cleanup.

Each test builds a bundle around a static probe program, drives it through
:class:`NativeTask` (runc create/start/kill/delete, reaped by this process as a subreaper),
and ends by checking that nothing is left: no runc state, no process, no cgroup, no pid the
reaper still waits for. Needs root and runc (skipped without them, required under CI=true).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runwasi_py._errors import InvalidArgument, NotFound
from runwasi_py._native import (
    NativeTask,
    Reaper,
    Runc,
    RuncError,
    RuncUnavailable,
    become_subreaper,
    cgroup_v2_host,
    classify_native,
)
from runwasi_py._proto.messages import cgroups_v1, cgroups_v2
from runwasi_py._stdio import Stdio
from tests.integration._native import (
    container_cgroups,
    make_bundle,
    probe_binary,
    remove_cgroup_parent,
    require_runc,
)
from ttrpc import Code

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_runc()
    return probe_binary(tmp_path_factory.mktemp("probe"))


@dataclass
class Native:
    """What one test needs: a runc root, the reaper, and a bundle/FIFO factory."""

    tmp: Path
    probe: Path
    reaper: Reaper
    runc: Runc
    tasks: list[NativeTask] = field(default_factory=list)

    def bundle(self, container_id: str, *args: str, **kw: Any) -> Path:
        return make_bundle(
            self.tmp / container_id, self.probe, list(args), container_id=container_id, **kw
        )

    def fifo(self, name: str) -> str:
        path = self.tmp / name
        os.mkfifo(path)
        return str(path)

    async def create(
        self, container_id: str, *args: str, stdio: Stdio | None = None, **kw: Any
    ) -> NativeTask:
        bundle = self.bundle(container_id, *args, **kw)
        task = await NativeTask.create(
            self.runc, self.reaper, container_id, bundle, stdio or Stdio(), drain_timeout=2
        )
        self.tasks.append(task)
        return task

    async def assert_nothing_left(self, container_id: str, pid: int | None = None) -> None:
        assert await self.runc.list_ids() == []
        assert not (self.runc.root / container_id).exists()
        assert container_cgroups(container_id) == []
        if pid is not None:
            assert not _alive(pid)
        assert self.reaper.pids == frozenset()


@pytest.fixture
async def native(tmp_path: Path, probe: Path) -> AsyncIterator[Native]:
    assert become_subreaper(), "cannot become a child subreaper"
    reaper = Reaper()
    h = Native(tmp_path, probe, reaper, Runc(tmp_path / "runc-root", reaper))
    try:
        yield h
    finally:
        for task in h.tasks:
            await task.aclose()
        reaper.close()
        remove_cgroup_parent()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_fifo(path: str) -> bytes:
    """Read a FIFO as containerd's client does: open (blocks for the writer), read to EOF."""
    with open(path, "rb") as f:
        return f.read()


def open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


# -- lifecycle and exit codes ---------------------------------------------------------------


@pytest.mark.parametrize(("args", "code"), [(("exit", "0"), 0), (("exit", "7"), 7)])
async def test_exit_code_of_the_init(native: Native, args: tuple[str, ...], code: int) -> None:
    task = await native.create("exit-code", *args)
    before = time.time_ns()
    assert await task.start() == task.pid
    status = await task.wait()
    assert status.code == code
    assert before <= status.exited_at_ns <= time.time_ns()
    assert task.exit_status == status
    assert await task.delete() == status
    await native.assert_nothing_left("exit-code", task.pid)


async def test_sigkill_gives_128_plus_signal(native: Native) -> None:
    task = await native.create("killed", "sleep")
    await task.start()
    await task.kill(signal.SIGKILL)
    assert (await task.wait()).code == 128 + signal.SIGKILL
    with pytest.raises(NotFound, match="process already finished"):
        await task.kill(signal.SIGKILL)
    assert (await task.stats()).type_url.startswith("io.containerd.cgroups.v")  # no error
    await task.delete()
    await native.assert_nothing_left("killed", task.pid)


async def test_sigterm_ends_an_init_without_its_own_pid_namespace(native: Native) -> None:
    # In a pid namespace of its own the init ignores SIGTERM without a handler (the kernel
    # protects a namespace's init), so this exit code is seen only with the host's pid ns.
    task = await native.create("termed", "sleep", pid_namespace=False)
    await task.start()
    await task.kill(signal.SIGTERM)
    assert (await task.wait()).code == 128 + signal.SIGTERM
    await task.delete()
    await native.assert_nothing_left("termed", task.pid)


async def test_delete_of_a_created_task_kills_its_waiting_init(native: Native) -> None:
    task = await native.create("never-started", "exit", "0")
    assert _alive(task.pid)
    assert (await task.runc_state())["status"] == "created"
    status = await task.delete()
    assert status.code == 128 + signal.SIGKILL
    await native.assert_nothing_left("never-started", task.pid)


# -- stdio ------------------------------------------------------------------------------------


async def test_stdout_and_stderr_reach_containerds_fifos(native: Native) -> None:
    out, err = native.fifo("stdout"), native.fifo("stderr")
    readers = [asyncio.ensure_future(asyncio.to_thread(read_fifo, p)) for p in (out, err)]
    task = await native.create(
        "stdio", "out", "to stdout", "to stderr", stdio=Stdio(stdout=out, stderr=err)
    )
    await task.start()
    assert (await task.wait()).code == 0
    # the readers reach EOF: the shim closed its copies once the output was read
    assert await asyncio.gather(*readers) == [b"to stdout\n", b"to stderr\n"]
    await task.delete()


async def test_output_waits_for_a_reader_that_opens_after_the_exit(native: Native) -> None:
    out = native.fifo("late-stdout")
    task = await native.create(
        "late-reader", "out", "kept for a late reader", stdio=Stdio(stdout=out)
    )
    await task.start()
    # The init has exited, its output is still held in the pipe by the shim; a reader that
    # opens now (as a slow containerd client does) still gets it.
    await asyncio.sleep(0.2)
    reader = asyncio.ensure_future(asyncio.to_thread(read_fifo, out))
    assert (await task.wait()).code == 0
    assert await reader == b"kept for a late reader\n"
    await task.delete()


async def test_stdin_fifo_reaches_the_init_and_its_close_is_eof(native: Native) -> None:
    stdin, out = native.fifo("stdin"), native.fifo("cat-stdout")
    reader = asyncio.ensure_future(asyncio.to_thread(read_fifo, out))
    task = await native.create("cat", "cat", stdio=Stdio(stdin=stdin, stdout=out))

    def feed() -> None:
        with open(stdin, "wb") as f:  # opens at once: the init holds the read end
            f.write(b"line one\nline two\n")

    await task.start()
    await asyncio.to_thread(feed)  # containerd's client writes, then closes its writer
    task.close_stdin()  # and sends CloseIO
    assert (await task.wait()).code == 0  # cat ended: it read end-of-file
    assert await reader == b"line one\nline two\n"
    await task.delete()


async def test_absent_output_reader_never_blocks_the_container(native: Native) -> None:
    out = native.fifo("unread-stdout")
    task = await native.create("unread", "out", "nobody reads this", stdio=Stdio(stdout=out))
    await task.start()
    assert (await task.wait()).code == 0
    await task.delete()
    await native.assert_nothing_left("unread", task.pid)


# -- queries ------------------------------------------------------------------------------------


async def test_state_pids_and_stats_of_a_running_container(native: Native) -> None:
    task = await native.create("busy", "kids", "2")
    assert (await task.runc_state())["status"] == "created"
    await task.start()
    assert (await task.runc_state())["status"] == "running"
    pids: list[int] = []
    for _ in range(200):  # the children appear once the init has forked them
        pids = await task.pids()
        if len(pids) == 3:
            break
        await asyncio.sleep(0.02)
    assert task.pid in pids
    assert len(pids) == 3
    stats = await task.stats()
    if cgroup_v2_host():
        assert stats.type_url == "io.containerd.cgroups.v2.Metrics"
        m2 = cgroups_v2.Metrics.parse(stats.value)
        assert m2.pids is not None
        assert m2.pids.current == 3
        assert m2.memory is not None
        assert m2.memory.usage > 0
        assert m2.cpu is not None
        assert m2.cpu.usage_usec > 0
    else:
        assert stats.type_url == "io.containerd.cgroups.v1.Metrics"
        m1 = cgroups_v1.Metrics.parse(stats.value)
        assert m1.pids is not None
        assert m1.pids.current == 3
        assert m1.memory is not None
        assert m1.memory.usage is not None
        assert m1.memory.usage.usage > 0
        assert m1.cpu is not None
        assert m1.cpu.usage is not None
        assert m1.cpu.usage.total > 0
    await task.kill(signal.SIGKILL, all_processes=True)
    await task.wait()
    assert await task.pids() == []
    await task.delete()
    await native.assert_nothing_left("busy", task.pid)


def cpu_quota(container_id: str) -> str:
    for path in container_cgroups(container_id):
        for name in ("cpu.max", "cpu.cfs_quota_us"):
            if (path / name).exists():
                return (path / name).read_text().strip()
    raise AssertionError(f"no cpu cgroup for {container_id}")


async def test_update_changes_the_cpu_quota_of_a_running_container(native: Native) -> None:
    task = await native.create("limited", "sleep")
    await task.start()
    await task.update({"cpu": {"quota": 50000, "period": 100000}})
    assert cpu_quota("limited") in ("50000", "50000 100000")
    await task.kill(signal.SIGKILL)
    await task.wait()
    await task.delete()


async def test_update_below_the_kernels_minimum_quota_is_refused(native: Native) -> None:
    task = await native.create("bad-quota", "sleep")
    await task.start()
    with pytest.raises(RuncError) as info:
        await task.update({"cpu": {"quota": 100, "period": 100000}})
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "runc update bad-quota" in str(info.value)
    assert "invalid argument" in info.value.runc_message
    assert (await task.runc_state())["status"] == "running"  # the container lives on
    await task.kill(signal.SIGKILL)
    assert (await task.wait()).code == 137
    await task.delete()


# -- bad input -----------------------------------------------------------------------------------


async def test_a_bad_spec_is_runcs_error_and_leaves_nothing(native: Native) -> None:
    fds = open_fds()
    bundle = native.bundle("bad-spec", "exit", "0")
    spec = (bundle / "config.json").read_text().replace('"type": "uts"', '"type": "bogus"')
    (bundle / "config.json").write_text(spec)
    out = native.fifo("bad-spec-out")
    with pytest.raises(RuncError) as info:
        await NativeTask.create(native.runc, native.reaper, "bad-spec", bundle, Stdio(stdout=out))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.command == "create"
    assert "bogus" in info.value.runc_message
    await native.assert_nothing_left("bad-spec")
    assert open_fds() == fds


async def test_an_executable_gone_at_start_is_an_exit_with_runcs_message(native: Native) -> None:
    # runc 1.1 resolves the program only when the init execs it, after `runc start` has
    # returned: the failure is the init's exit status 1 and runc's line on its stderr.
    err = native.fifo("gone-stderr")
    reader = asyncio.ensure_future(asyncio.to_thread(read_fifo, err))
    task = await native.create("gone", "exit", "0", stdio=Stdio(stderr=err))
    (native.tmp / "gone" / "rootfs" / "probe").unlink()
    with contextlib.suppress(RuncError):  # a runc that checks before start fails here
        await task.start()
    assert (await task.wait()).code != 0
    assert b"/probe" in await reader
    await task.delete()
    await native.assert_nothing_left("gone", task.pid)


def test_a_non_executable_entrypoint_is_named_at_classification(
    tmp_path: Path, probe: Path
) -> None:
    target = tmp_path / "probe"
    target.write_bytes(probe.read_bytes())
    target.chmod(0o644)
    with pytest.raises(
        InvalidArgument,
        match=r"'/probe' is an ELF executable: it has no execute permission \(mode 0644\)",
    ):
        classify_native("/probe", target)
    target.chmod(0o755)
    assert classify_native("/probe", target).kind == "ELF executable"


def test_runc_missing_from_path_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuncUnavailable, match="runc is not on PATH"):
        Runc(tmp_path / "root", Reaper())


async def test_runc_commands_and_inits_have_one_waiter_each(native: Native) -> None:
    # The reaper waits per pid: a child that someone else started and waits for (here
    # asyncio's own subprocess machinery) is never reaped by it.
    proc = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 5")
    task = await native.create("one-waiter", "exit", "3")
    await task.start()
    assert (await task.wait()).code == 3
    assert await proc.wait() == 5
    assert native.reaper.sweep_orphans() == []
    await task.delete()
