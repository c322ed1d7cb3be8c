"""The template under bad conditions, with real processes: a template that dies mid-fork, a
fork that cannot join its pod's cgroup, and a CRI pod forked into its pod's cgroup."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import ttrpc
from runwasi_py._cgroups import discover, driver_for
from runwasi_py._cgroups._hierarchy import read_proc_cgroup
from runwasi_py.testing import TaskDriver
from tests.integration._require import require_root
from tests.runwasi_py._template.conftest import Host, alive, run_hello, wait_template, wait_until

# The shim program with the real template code, which SIGKILLs itself right after a fork,
# before its answer reaches start (what a template OOM-killed mid-fork does).
DIES_MID_FORK = """\
import os, signal
import runwasi_py._template.serve as _serve
_reply = _serve._reply
def _dying_reply(conn, answer):
    if "pid" in answer:
        os.kill(os.getpid(), signal.SIGKILL)
    _reply(conn, answer)
_serve._reply = _dying_reply
"""


def faulty_program(host: Host, preamble: str) -> Path:
    """A copy of the host's shim program with ``preamble`` run first (its own key)."""
    path = host.work / "faulty" / host.program.name
    path.parent.mkdir(exist_ok=True)
    lines = host.program.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("from runwasi_py"))
    path.write_text("".join([*lines[:at], preamble, *lines[at:]]))
    path.chmod(0o755)
    return path


async def shutdown(address: str, cid: str) -> None:
    c = await ttrpc.Client.connect(address)
    try:
        d = TaskDriver(c)
        await d.connect(cid)
        await d.shutdown(cid)
    finally:
        await c.close()


def only_templates_left(host: Host) -> bool:
    return set(host.processes()) <= set(host.template_pids())


def test_a_template_that_dies_mid_fork_loses_no_pod(host: Host) -> None:
    program = faulty_program(host, DIES_MID_FORK)
    a1, b1 = host.start("p1", program=program)
    (tpl,) = wait_template(host)
    a2, b2 = host.start("p2", program=program)  # forked, then the template dies: spawned
    assert not alive(tpl)
    code1, pid1 = asyncio.run(run_hello(a1, b1, "p1"))
    code2, pid2 = asyncio.run(run_hello(a2, b2, "p2"))
    assert (code1, code2) == (0, 0)
    assert pid1 != pid2
    # the fork that never got its "go" exited; the daemons ended at Shutdown
    wait_until(lambda: only_templates_left(host), f"left running: {host.processes()}")


@pytest.fixture
def pod_parent() -> Iterator[str]:
    """A fresh cgroup parent for test pods (every hierarchy), removed afterwards."""
    require_root()
    parent = f"/runwasi-py-test-{uuid.uuid4().hex[:10]}"
    yield parent
    driver = driver_for(discover())
    for h in driver.layout.hierarchies():
        top = h.dir_of(parent)
        if top.exists():
            # a failed test's daemons are still in there (the host fixture ends them later)
            for procs in top.rglob("cgroup.procs"):
                for pid in procs.read_text().split():
                    with contextlib.suppress(psutil.Error):
                        psutil.Process(int(pid)).kill()
            wait_until(
                lambda top=top: not any(p.read_text().strip() for p in top.rglob("cgroup.procs")),
                "processes in the test's cgroups",
            )
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        assert not top.exists(), f"cgroup {top} left behind"


def daemon_cgroups(pid: int) -> set[str]:
    return set(read_proc_cgroup(pid).values())


def pod_hierarchies(pid: int, group: str) -> set[str]:
    """The hierarchies (v1 controllers; "" on v2) where ``pid`` is in ``group``'s daemon cgroup."""
    return {k for k, v in read_proc_cgroup(pid).items() if v.endswith(f"/runwasi-py-shim-{group}")}


async def shim_pid(address: str, cid: str) -> int:
    c = await ttrpc.Client.connect(address)
    try:
        return (await TaskDriver(c).connect(cid)).shim_pid
    finally:
        await c.close()


def test_a_cri_pod_forked_by_the_template_is_in_its_pod_cgroup(host: Host, pod_parent: str) -> None:
    a1, b1 = host.start("p1", linux={"cgroupsPath": f"{pod_parent}/p1"})  # spawned
    (tpl,) = wait_template(host)
    template_cgroups = daemon_cgroups(tpl)
    assert not any("runwasi-py-shim-" in c for c in template_cgroups)  # never a pod's
    a2, b2 = host.start("p2", linux={"cgroupsPath": f"{pod_parent}/p2"})
    spawned, forked = asyncio.run(shim_pid(a1, "p1")), asyncio.run(shim_pid(a2, "p2"))
    assert psutil.Process(spawned).ppid() != tpl
    assert psutil.Process(forked).ppid() == tpl
    # exactly where a spawned daemon is placed: the same hierarchies, its own pod's cgroup
    joined = pod_hierarchies(spawned, "p1")
    assert joined
    assert pod_hierarchies(forked, "p2") == joined
    own = read_proc_cgroup(forked)
    assert all(own[k] == f"{pod_parent}/runwasi-py-shim-p2" for k in joined)
    assert daemon_cgroups(tpl) == template_cgroups  # the template stayed where it was
    for args in ((a1, b1, "p1"), (a2, b2, "p2")):
        assert asyncio.run(run_hello(*args))[0] == 0
    wait_until(lambda: only_templates_left(host), f"left running: {host.processes()}")
    # the daemons left and removed their cgroups at exit
    for h in driver_for(discover()).layout.hierarchies():
        assert not h.dir_of(f"{pod_parent}/runwasi-py-shim-p2").exists()


def test_a_fork_that_cannot_join_its_pod_cgroup_is_not_used(host: Host, pod_parent: str) -> None:
    address1, _ = host.start("p1")
    (tpl,) = wait_template(host)
    # The join's record cannot be written (a directory where the file goes), so moving the
    # fork into its pod's cgroup fails and it gets no "go"; start spawns the daemon (whose
    # own join fails the same way: it stays where start was, and says so in its log).
    record = "runwasi-py-daemon-cgroups.json"
    address, _ = host.start(
        "p2", linux={"cgroupsPath": f"{pod_parent}/p2"}, prepare=lambda b: (b / record).mkdir()
    )
    pid = asyncio.run(shim_pid(address, "p2"))
    assert psutil.Process(pid).ppid() != tpl  # spawned, not the fork
    asyncio.run(shutdown(address, "p2"))
    asyncio.run(shutdown(address1, "p1"))
    wait_until(lambda: only_templates_left(host), f"left running: {host.processes()}")
