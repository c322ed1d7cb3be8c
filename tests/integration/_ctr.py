"""Small helpers for driving containers through ``ctr`` in the end-to-end tests."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

from runwasi_py.containerd import PrivateContainerd
from runwasi_py.containerd._cleanup import mounts_under

RUNTIME = "io.containerd.pywasmtime.v1"


def new_id(prefix: str = "e2e") -> str:
    """A fresh container id (containerd ids: letters, digits, single separators)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``cond`` until true; AssertionError naming ``what`` after ``timeout`` (a deadline,
    not a timing assertion: the machine is shared)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tasks(c8d: PrivateContainerd) -> dict[str, tuple[int, str]]:
    """``ctr task ls`` as {id: (pid, status)}."""
    out = c8d.ctr("task", "ls").stdout.splitlines()[1:]
    table = {}
    for line in out:
        fields = line.split()
        if len(fields) >= 3:
            table[fields[0]] = (int(fields[1]), fields[2])
    return table


def status(c8d: PrivateContainerd, cid: str) -> str | None:
    entry = tasks(c8d).get(cid)
    return entry[1] if entry else None


def shim_pids(c8d: PrivateContainerd, cid: str) -> list[int]:
    """Live shim daemons started for ``cid`` (by their cwd, the bundle: a daemon forked by
    the template shows the template's argv, without ``-id``)."""
    return [pid for pid, started_for in c8d.shim_daemons().items() if started_for == cid]


def mounts_of(c8d: PrivateContainerd, cid: str) -> list[str]:
    return [m for m in mounts_under(c8d.workdir) if cid in m]


@contextlib.contextmanager
def attached_run(
    c8d: PrivateContainerd, image: str, cid: str, *args: str, runtime: str = RUNTIME
) -> Iterator[subprocess.Popen[str]]:
    """An attached ``ctr run --rm`` in the background; killed and reaped on exit."""
    argv = c8d.run_argv(image, cid, *args, runtime=runtime)
    with subprocess.Popen(
        argv,
        env=c8d.ctr_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def remove_container(c8d: PrivateContainerd, cid: str) -> None:
    """Best-effort cleanup after a failed test: kill, delete task and container."""
    if status(c8d, cid) is not None:
        c8d.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: status(c8d, cid) in (None, "STOPPED"), "task to stop", 10)
        c8d.ctr("task", "rm", "-f", cid, check=False)
    c8d.ctr("containers", "rm", cid, check=False)
