"""End to end through a real containerd and ``ctr``, with the wasmtime shim.

Images are built by ``runwasi_py.image`` from ``fixtures/probe.wat``; every ``ctr run`` has
``--fifo-dir`` under the private containerd's directory and stdin from /dev/null.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py.containerd import ContainerdError, PrivateContainerd
from runwasi_py.containerd._cleanup import process_alive
from tests.integration._ctr import (
    RUNTIME,
    attached_run,
    mounts_of,
    new_id,
    remove_container,
    shim_pids,
    status,
    tasks,
    wait_for,
)
from tests.integration._images import (
    FILE_CONTENT,
    IMAGE_ENV,
    MISSING_ENTRYPOINT,
    NOT_WASM,
    PROBE,
)
from tests.integration._require import require_shim

pytestmark = pytest.mark.containerd


@pytest.fixture
def c8d(imported: PrivateContainerd) -> PrivateContainerd:
    """The session containerd, for tests that need our shim installed."""
    require_shim()
    return imported


@pytest.fixture
def cid(imported: PrivateContainerd) -> Iterator[str]:
    """A fresh container id, removed after the test whatever happened."""
    ident = new_id()
    yield ident
    remove_container(imported, ident)


# A container that should finish by itself but whose ctr run hung: later runs fail at once
# instead of each waiting out its timeout (the cause is the same; the first failure says it).
_HUNG: list[str] = []


def run(
    c8d: PrivateContainerd, cid: str, *args: str, **kw: object
) -> subprocess.CompletedProcess[str]:
    if _HUNG:
        pytest.fail(f"not run: an earlier ctr run hung ({_HUNG[0]})", pytrace=False)
    try:
        return c8d.run(PROBE, cid, *args, runtime=RUNTIME, timeout=30, **kw)  # type: ignore[arg-type]
    except ContainerdError as e:
        if "did not finish" in str(e):
            _HUNG.append(f"{cid} {' '.join(args)}".strip())
        raise


def start_spinning(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "spin", rm=False, detach=True)
    assert res.returncode == 0, res.stderr + c8d.log_tail()
    wait_for(lambda: status(c8d, cid) == "RUNNING", f"{cid} RUNNING")


# -- attached runs ----------------------------------------------------------------------------


def test_hello_world(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid)
    assert (res.returncode, res.stdout, res.stderr) == (0, "hello from wasm\n", "")


def test_args_reach_the_module(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "args", "a", "b c", "--flag=1", "")
    assert (res.returncode, res.stdout) == (0, "a\nb c\n--flag=1\n\n"), res.stderr


def test_env_from_image_and_from_ctr(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "env", env=["GREETING=hi there", "EMPTY="])
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "GREETING=hi there" in lines
    assert "EMPTY=" in lines
    assert IMAGE_ENV in lines


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_codes_pass_through(c8d: PrivateContainerd, cid: str, code: int) -> None:
    res = run(c8d, cid, "/probe.wasm", "exit", str(code))
    assert res.returncode == code, res.stderr


def test_stdout_and_stderr_are_separate(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "stdio")
    assert (res.returncode, res.stdout, res.stderr) == (0, "to stdout\n", "to stderr\n")


def test_unknown_command_exits_2_with_stderr(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "bogus")
    assert (res.returncode, res.stdout, res.stderr) == (2, "", "unknown command\n")


def test_file_from_the_image(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "cat", "/etc/probe/data.txt")
    assert (res.returncode, res.stdout) == (0, FILE_CONTENT), res.stderr


def test_missing_file_in_the_image(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid, "/probe.wasm", "cat", "/etc/probe/nope.txt")
    assert (res.returncode, res.stdout, res.stderr) == (1, "", "cat: cannot open\n")


def test_two_attached_containers_at_once(c8d: PrivateContainerd) -> None:
    ids = [new_id(), new_id()]
    try:
        with (
            attached_run(c8d, PROBE, ids[0], "/probe.wasm", "args", ids[0]) as first,
            attached_run(c8d, PROBE, ids[1], "/probe.wasm", "args", ids[1]) as second,
        ):
            outs = [p.communicate(timeout=45) for p in (first, second)]
    finally:
        for i in ids:
            remove_container(c8d, i)
    assert [(p.returncode, o[0]) for p, o in zip((first, second), outs, strict=True)] == [
        (0, f"{i}\n") for i in ids
    ]


# -- detached tasks: ls, ps, kill, rm, metrics ----------------------------------------------


@pytest.mark.parametrize(("signal", "code"), [("SIGKILL", 137), ("SIGTERM", 143)])
def test_detached_task_ls_ps_kill_rm(
    c8d: PrivateContainerd, cid: str, signal: str, code: int
) -> None:
    start_spinning(c8d, cid)
    pid, state = tasks(c8d)[cid]
    assert state == "RUNNING"
    assert pid > 0
    ps = c8d.ctr("task", "ps", cid).stdout.splitlines()
    assert ps[0].split()[0] == "PID"
    assert len(ps) >= 2
    c8d.ctr("task", "kill", "-s", signal, cid)
    wait_for(lambda: status(c8d, cid) == "STOPPED", f"{cid} STOPPED")
    rm = c8d.ctr("task", "rm", cid)
    assert f"exit code {code}" in rm.stderr
    assert status(c8d, cid) is None
    c8d.ctr("containers", "rm", cid)


def test_attached_run_exits_137_after_sigkill(c8d: PrivateContainerd, cid: str) -> None:
    with attached_run(c8d, PROBE, cid, "/probe.wasm", "spin") as proc:
        wait_for(lambda: status(c8d, cid) == "RUNNING", f"{cid} RUNNING")
        c8d.ctr("task", "kill", "-s", "SIGKILL", cid)
        proc.communicate(timeout=30)
    assert proc.returncode == 137
    assert cid not in c8d.ctr("containers", "ls", "-q").stdout.split()  # --rm


def test_task_metrics(c8d: PrivateContainerd, cid: str) -> None:
    start_spinning(c8d, cid)
    res = c8d.ctr("task", "metrics", cid, check=False)
    assert res.returncode == 0, res.stderr
    assert "METRIC" in res.stdout or "{" in res.stdout


def test_two_detached_containers_at_once(c8d: PrivateContainerd) -> None:
    ids = [new_id(), new_id()]
    try:
        for i in ids:
            start_spinning(c8d, i)
        table = tasks(c8d)
        assert [table[i][1] for i in ids] == ["RUNNING", "RUNNING"]
        c8d.ctr("task", "kill", "-s", "SIGKILL", ids[0])
        wait_for(lambda: status(c8d, ids[0]) == "STOPPED", "first STOPPED")
        # Killing one leaves the other running.
        assert status(c8d, ids[1]) == "RUNNING"
    finally:
        for i in ids:
            remove_container(c8d, i)


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "words"),
    [
        (NOT_WASM, ["wasm", "interpreter '/bin/sh' is not in the rootfs"]),
        (MISSING_ENTRYPOINT, ["not-there.wasm"]),
    ],
    ids=["script-without-its-interpreter", "missing-entrypoint"],
)
def test_non_wasm_images_are_refused_clearly(
    c8d: PrivateContainerd, cid: str, image: str, words: list[str]
) -> None:
    res = c8d.run(image, cid, runtime=RUNTIME, timeout=45)
    assert res.returncode != 0
    assert res.stderr.startswith("ctr: ")
    for w in words:
        assert w in res.stderr
    assert cid not in c8d.ctr("containers", "ls", "-q").stdout.split()
    wait_for(lambda: not shim_pids(c8d, cid), "the refused shim to exit")
    assert mounts_of(c8d, cid) == []
    # ... and the next container runs normally.
    ok = run(c8d, new_id())
    assert (ok.returncode, ok.stdout) == (0, "hello from wasm\n")


def test_runtime_that_does_not_resolve(imported: PrivateContainerd, cid: str) -> None:
    res = imported.run(PROBE, cid, runtime="io.containerd.nosuch.v1", timeout=45)
    assert res.returncode != 0
    assert 'binary not installed "containerd-shim-nosuch-v1"' in res.stderr
    res = imported.run(PROBE, cid, runtime="nosuch", timeout=45)
    assert res.returncode != 0
    assert "invalid runtime name nosuch" in res.stderr


# -- lifecycle across containerd and cleanup ------------------------------------------------


def test_containerd_restart_while_a_task_runs(c8d: PrivateContainerd, cid: str) -> None:
    start_spinning(c8d, cid)
    address_file = c8d.bundle(cid) / "address"
    assert address_file.read_text().startswith("unix://")
    shims = shim_pids(c8d, cid)
    assert shims
    c8d.restart()
    # The shim survived, and the new containerd found it through the bundle's address file.
    assert all(process_alive(p) for p in shims)
    wait_for(lambda: status(c8d, cid) == "RUNNING", f"{cid} RUNNING after restart")
    c8d.ctr("task", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: status(c8d, cid) == "STOPPED", f"{cid} STOPPED after restart")
    rm = c8d.ctr("task", "rm", cid)
    assert "exit code 137" in rm.stderr
    c8d.ctr("containers", "rm", cid)
    wait_for(lambda: not shim_pids(c8d, cid), "the shim to exit")


def test_run_rm_leaves_no_process_mount_or_socket(c8d: PrivateContainerd, cid: str) -> None:
    with attached_run(c8d, PROBE, cid, "/probe.wasm", "spin") as proc:
        wait_for(lambda: status(c8d, cid) == "RUNNING", f"{cid} RUNNING")
        socket = Path(c8d.bundle(cid).joinpath("address").read_text().strip()[len("unix://") :])
        shims = shim_pids(c8d, cid)
        assert shims
        assert socket.is_socket()
        assert mounts_of(c8d, cid)  # the rootfs is mounted while it runs
        c8d.ctr("task", "kill", "-s", "SIGKILL", cid)
        proc.communicate(timeout=30)
    assert proc.returncode == 137
    wait_for(lambda: not any(process_alive(p) for p in shims), "the shim daemon to exit")
    assert not socket.exists()
    assert mounts_of(c8d, cid) == []
    assert not c8d.bundle(cid).exists()


def test_hello_run_rm_leaves_nothing(c8d: PrivateContainerd, cid: str) -> None:
    res = run(c8d, cid)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not shim_pids(c8d, cid), "the shim daemon to exit")
    assert mounts_of(c8d, cid) == []
    assert not c8d.bundle(cid).exists()
    assert cid not in c8d.ctr("containers", "ls", "-q").stdout.split()
