"""The pod daemon template through the real ``start``: forks, falls back, and loses no pod."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from runwasi_py._template import client
from tests.runwasi_py._template.conftest import (
    Host,
    run_hello,
    template_sockets,
    wait_template,
    wait_until,
)


def test_second_pod_is_forked_by_the_template_with_its_own_env(host: Host) -> None:
    first, b1 = host.start("p1")
    assert asyncio.run(run_hello(first, b1, "p1"))[0] == 0
    (template,) = wait_template(host)
    # start's environment, not the template's: the daemon's compile cache is where it says
    cache = host.work / "cache-of-p2"
    second, b2 = host.start("p2", env=dict(host.env, RUNWASI_PY_CACHE_DIR=str(cache)))
    code, pid = asyncio.run(run_hello(second, b2, "p2"))
    assert code == 0
    daemon = psutil.Process(pid)
    assert daemon.ppid() == template  # forked, not spawned
    assert cache.is_dir()
    assert any(cache.rglob("*"))
    assert daemon.cwd() == str(b2)


def test_other_version_is_never_used(host: Host) -> None:
    host.start("p1")
    (old,) = wait_template(host)
    host.program.write_text(host.program.read_text() + "\n# a new build\n")  # size changes
    address, bundle = host.start("p2")
    code, pid = asyncio.run(run_hello(address, bundle, "p2"))
    assert code == 0
    assert psutil.Process(pid).ppid() != old


def test_stale_socket_and_dead_template_fall_back_to_spawning(host: Host) -> None:
    host.start("p1")
    (tpl,) = wait_template(host)
    os.kill(tpl, signal.SIGKILL)  # its socket file stays behind: stale
    wait_until(lambda: not psutil.pid_exists(tpl) or psutil.Process(tpl).status() == "zombie",
               "template did not die")  # fmt: skip
    address, bundle = host.start("p2")
    code, pid = asyncio.run(run_hello(address, bundle, "p2"))
    assert code == 0
    assert psutil.Process(pid).ppid() != tpl
    wait_until(lambda: host.template_pids(), "no new template after the stale one")


def test_a_hung_template_means_spawning_within_the_timeout(host: Host) -> None:
    host.start("p1")
    (tpl,) = wait_template(host)
    os.kill(tpl, signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        t0 = time.monotonic()
        address, bundle = host.start("p2")
        elapsed = time.monotonic() - t0
        assert elapsed < 20  # a bound on a hang, not a timing assertion
        code, pid = asyncio.run(run_hello(address, bundle, "p2"))
        assert code == 0
        assert psutil.Process(pid).ppid() != tpl
    finally:
        os.kill(tpl, signal.SIGCONT)


def test_template_killed_while_pods_run_loses_no_pod(host: Host) -> None:
    host.start("p0")
    (tpl,) = wait_template(host)
    pods = [host.start(f"p{i}") for i in range(1, 9)]  # concurrent-ish: one after another
    os.kill(tpl, signal.SIGKILL)
    results = [asyncio.run(run_hello(a, b, f"p{i}")) for i, (a, b) in enumerate(pods, 1)]
    assert [code for code, _ in results] == [0] * 8
    assert len({pid for _, pid in results}) == 8  # eight daemons, none shared or mixed up


def test_many_concurrent_starts_each_get_their_own_daemon(host: Host) -> None:
    host.start("p0")
    wait_template(host)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:  # all 16 at once
        pods = list(pool.map(host.start, [f"c{i}" for i in range(16)]))
    results = [asyncio.run(run_hello(a, b, f"c{i}")) for i, (a, b) in enumerate(pods)]
    assert [code for code, _ in results] == [0] * 16
    assert len({pid for _, pid in results}) == 16


def test_nothing_is_left_running_after_the_last_pod(host: Host) -> None:
    address, bundle = host.start("p1")
    (tpl,) = wait_template(host)
    address2, bundle2 = host.start("p2")
    _, pid = asyncio.run(run_hello(address2, bundle2, "p2"))
    _, pid1 = asyncio.run(run_hello(address, bundle, "p1"))
    for p in (pid, pid1, tpl):  # daemons exit after Shutdown; the template when idle (3 s)
        wait_until(lambda p=p: not psutil.pid_exists(p) or psutil.Process(p).status() == "zombie",
                   f"{p} still running")  # fmt: skip
    assert not template_sockets(host)


def test_a_request_from_the_wrong_key_gets_no_fork(host: Host) -> None:
    host.start("p1")
    wait_template(host)
    (sock,) = template_sockets(host)
    r, w = os.pipe()
    pid = client.fork_daemon(sock, "not-the-key", [], {}, "/", r)
    assert pid is None
    os.close(r)
    os.close(w)


def test_the_client_imports_nothing_heavy() -> None:
    code = (
        "import sys, json; import runwasi_py._template.client; "
        "print(json.dumps([m for m in ('asyncio', 'typing', 'subprocess', 'wasmtime', "
        "'betterproto2', 'runwasi_py._task.service') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    assert json.loads(out.stdout) == []


@pytest.mark.parametrize("setting", ["0", "false", "no", "OFF"])
def test_off_means_no_template_at_all(host: Host, setting: str) -> None:
    env = dict(host.env, **{client.ENABLE_ENV: setting})
    address, bundle = host.start("p1", env=env)
    code, _ = asyncio.run(run_hello(address, bundle, "p1"))
    assert code == 0
    time.sleep(0.5)  # not a timing assertion: room for a wrongly spawned template to appear
    assert host.template_pids() == []
    assert template_sockets(host) == []


@pytest.mark.parametrize("setting", [None, "1", ""])
def test_on_by_default(host: Host, setting: str | None) -> None:
    env = dict(host.env)
    if setting is not None:
        env[client.ENABLE_ENV] = setting
    host.start("p1", env=env)  # no template yet: spawned, and it launches one
    wait_until(lambda: template_sockets(host), "a template")
    address, bundle = host.start("p2", env=env)
    code, shim_pid = asyncio.run(run_hello(address, bundle, "p2"))
    assert code == 0
    assert psutil.Process(shim_pid).ppid() in host.template_pids()  # forked by it


_WARM_THEN_SERVE = """
import asyncio, json, sys, tempfile
import wasmtime
from runwasi_py._template.serve import _warm
from runwasi_py.examples import example_path
from runwasi_py.testing import make_bundle, serve_shim
from runwasi_py.wasmtime import PyWasmtimeShim

hello = bytes(wasmtime.wat2wasm(example_path("hello").read_text()))
work = tempfile.mkdtemp()
_warm("runwasi_py.wasmtime:PyWasmtimeShim")
before = set(sys.modules)

async def main():
    b = make_bundle(work, args=["/hello.wasm"], files={"hello.wasm": hello}, stdio=STDIO)
    async with serve_shim(PyWasmtimeShim) as s:
        code, out, _ = await s.driver.run(b)
        assert code == 0 and "Hello from WebAssembly" in out, (code, out)

asyncio.run(main())
print(json.dumps(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize("stdio", ["fifo", "file"])
def test_a_forked_daemon_imports_nothing_to_serve_a_task(stdio: str) -> None:
    # What the template imported is shared by every pod; a module imported after the fork
    # costs each pod its import time and private pages. Serving a hello (the Task service,
    # the engine, the instance's worker) must find everything already imported.
    code = _WARM_THEN_SERVE.replace("STDIO", repr(stdio))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    new = json.loads(out.stdout.strip().splitlines()[-1])
    assert new == []
