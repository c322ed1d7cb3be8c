"""Helpers of the template tests: a fake containerd host that runs the real ``start``."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import wasmtime

import ttrpc
from runwasi_py._template import client, find
from runwasi_py.examples import example_path
from runwasi_py.testing import Bundle, TaskDriver, make_bundle
from runwasi_py.testing.serve import write_shim_program

SHIM = "runwasi_py.wasmtime._shim:PyWasmtimeShim"
HELLO = bytes(wasmtime.wat2wasm(example_path("hello").read_text()))


@dataclass
class Host:
    """One fake containerd: a shim program, an address, a socket dir, an environment."""

    work: Path
    program: Path
    env: dict[str, str]
    address: str

    def start(
        self,
        cid: str,
        *,
        env: dict[str, str] | None = None,
        linux: Mapping[str, object] | None = None,
        program: Path | None = None,
        prepare: Callable[[Path], object] | None = None,
    ) -> tuple[str, Path]:
        """``start`` for a new pod ``cid``; its (address, bundle). ``prepare(bundle)`` runs
        before ``start``."""
        bundle = make_bundle(self.work, args=["/hello.wasm"], container_id=cid, stdio="file",
                             files={"hello.wasm": HELLO}, linux=linux)  # fmt: skip
        if prepare is not None:
            prepare(bundle.path)
        flags = ["-namespace", "tpl", "-address", self.address, "-id", cid]
        proc = subprocess.run(
            [str(program or self.program), *flags, "start"],
            cwd=bundle.path,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith(b"unix://")
        assert not proc.stderr
        return proc.stdout.decode(), bundle.path

    def template_pids(self) -> list[int]:
        """Live templates of this host (by the pid in their lock files: a forked daemon
        shares a template's exec-time environment and command line)."""
        return [p for p in find.template_pids(self.env["sock"]) if alive(p)]

    def processes(self) -> list[int]:
        """Live processes of this host: daemons, templates, forks (our marker in environ)."""
        sock = self.env["sock"]
        return [
            p.pid
            for p in psutil.process_iter(["pid", "environ"])
            if (p.info.get("environ") or {}).get("sock") == sock and alive(p.pid)
        ]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture
def host() -> Iterator[Host]:
    work = Path(tempfile.mkdtemp(prefix="rwtpl-", dir="/tmp"))  # short: sun_path is 108
    program = write_shim_program(SHIM, work)
    env = dict(os.environ)
    sock = str(work / "s")
    env.update(
        RUNWASI_PY_SOCKET_DIR=sock,
        RUNWASI_PY_TEMPLATE_IDLE="3",
        TTRPC_ADDRESS="/nonexistent",
        sock=sock,  # only to find this test's templates
    )
    env.pop("RUNWASI_PY_SHIM_GROUP", None)
    env.pop(client.ENABLE_ENV, None)  # the default: on
    h = Host(work, program, env, str(work / "containerd.sock"))
    yield h
    for p in psutil.process_iter(["pid", "cwd", "environ"]):
        with_us = (p.info.get("cwd") or "").startswith(str(work)) or (
            (p.info.get("environ") or {}).get("sock") == sock
        )
        if with_us and p.info["pid"] != os.getpid():
            p.kill()


async def run_hello(address: str, bundle: Path, cid: str) -> tuple[int, int]:
    """Create+start+wait the pod's hello over ``address``; (exit status, shim pid)."""
    c = await ttrpc.Client.connect(address)
    try:
        d = TaskDriver(c)
        shim_pid = (await d.connect(cid)).shim_pid
        # the daemon on this pod's socket is this pod's: started (cwd) for its bundle
        assert psutil.Process(shim_pid).cwd() == str(bundle)
        b = Bundle(path=bundle, id=cid, rootfs=bundle / "rootfs")
        b.stdout, b.stderr = str(bundle / "io" / "stdout"), str(bundle / "io" / "stderr")
        code, out, _ = await d.run(b)
        assert "Hello from WebAssembly" in out
        await d.shutdown(cid)
        return code, shim_pid
    finally:
        await c.close()


def wait_until(cond: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def template_sockets(host: Host) -> list[str]:
    d = host.env["sock"]
    return [os.path.join(d, n) for n in os.listdir(d) if n.startswith("t-") and n.endswith(".sock")]


def wait_template(host: Host) -> list[int]:
    """The pids of the host's templates, once one listens."""
    wait_until(lambda: host.template_pids() and template_sockets(host), "no template came up")
    return host.template_pids()
