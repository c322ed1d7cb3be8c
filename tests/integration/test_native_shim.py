"""Native containers through the shim's Task API (in-process driver, the real runc).

The bundled wasmtime shim serves a wasm container and native ones side by side; each native
container is classified at Create, run by runc, reaped by the shim, and reported with the
same Kill/Wait/State/Pids/Stats/Update/Delete answers and events as a wasm one. Needs root
and runc (skipped without them, required under CI=true).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import ttrpc
from runwasi_py import Config
from runwasi_py._native import state_root
from runwasi_py._proto.messages import (
    Any as AnyMessage,
)
from runwasi_py._proto.messages import (
    Empty,
    StatsRequest,
    StatsResponse,
    Status,
    TaskExit,
    UpdateTaskRequest,
)
from runwasi_py.testing import Bundle, ShimUnderTest, TaskDriver, make_bundle, serve_shim
from runwasi_py.testing.events_server import RecordingEventsServer
from runwasi_py.wasmtime import PyWasmtimeShim
from tests.integration._native import (
    container_cgroups,
    oci_spec,
    probe_binary,
    remove_cgroup_parent,
    require_runc,
)
from tests.integration._require import require_shim

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

Code = ttrpc.Code
HELLO_WAT = Path(__file__).parents[1] / "runwasi_py" / "wasmtime" / "fixtures" / "hello.wat"
SANDBOX_ANNOTATIONS = {
    "io.kubernetes.cri.container-type": "sandbox",
    "io.kubernetes.cri.sandbox-id": "pod1",
}


class NoNativeShim(PyWasmtimeShim):
    config = Config(native_containers=False)


@pytest.fixture(scope="session")
def probe(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    require_runc()
    return probe_binary(tmp_path_factory.mktemp("probe")).read_bytes()


@pytest.fixture
async def sut() -> AsyncIterator[ShimUnderTest]:
    try:
        async with serve_shim(PyWasmtimeShim) as s:
            yield s
    finally:
        remove_cgroup_parent()


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def native_bundle(
    tmp: Path,
    probe: bytes,
    cid: str,
    *args: str,
    mode: int = 0o755,
    annotations: dict[str, str] | None = None,
) -> Bundle:
    spec: dict[str, Any] = oci_spec(["/probe", *args], container_id=cid)
    spec["annotations"] = annotations or {}
    b = make_bundle(
        tmp, args=["/probe", *args], container_id=cid, files={"probe": probe}, config=spec
    )
    (b.rootfs / "probe").chmod(mode)
    return b


async def test_native_beside_wasm_in_one_shim(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes
) -> None:
    wasm = make_bundle(
        tmp_path,
        args=["/hello.wat"],
        container_id="wasm",
        files={"hello.wat": HELLO_WAT.read_text()},
    )
    native = native_bundle(tmp_path, probe, "native", "out", "native says hi", "native err")
    for b in (wasm, native):
        b.open_outputs()
    assert (await sut.driver.run(native))[0] == 0
    code, _, _ = await sut.driver.run(wasm)
    assert code == 0
    assert await native.read_outputs() == ("native says hi\n", "native err\n")
    topics = [
        e.topic for e in sut.events.events if getattr(e.event, "container_id", "") == "native"
    ]
    assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_event = next(
        e.event
        for e in sut.events.events
        if isinstance(e.event, TaskExit) and e.event.container_id == "native"
    )
    assert exit_event.exit_status == 0
    assert exit_event.pid != os.getpid()  # the init: a process of its own
    assert container_cgroups("native") == []


async def test_kill_state_pids_stats_and_update(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes
) -> None:
    b = native_bundle(tmp_path, probe, "sleeper", "sleep")
    pid = await sut.driver.create(b)
    assert (await sut.driver.state("sleeper")).status == Status.CREATED
    assert await sut.driver.start("sleeper") == pid
    state = await sut.driver.state("sleeper")
    assert (state.status, state.pid) == (Status.RUNNING, pid)
    assert await sut.driver.pids("sleeper") == [pid]
    reply = await sut.driver._call("Stats", StatsRequest(id="sleeper"), StatsResponse)
    assert reply.stats is not None
    assert reply.stats.type_url in (
        "io.containerd.cgroups.v1.Metrics",
        "io.containerd.cgroups.v2.Metrics",
    )
    resources = AnyMessage(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
        value=json.dumps({"cpu": {"quota": 30000, "period": 100000}}).encode(),
    )
    await sut.driver._call("Update", UpdateTaskRequest(id="sleeper", resources=resources), Empty)
    quota = [p / "cpu.cfs_quota_us" for p in container_cgroups("sleeper")]
    quota += [p / "cpu.max" for p in container_cgroups("sleeper")]
    assert any(q.exists() and q.read_text().split()[0] == "30000" for q in quota)
    bad = AnyMessage(type_url=resources.type_url, value=b'{"cpu": {"quota": 10, "period": 100000}}')
    with pytest.raises(ttrpc.TtrpcError) as refused:
        await sut.driver._call("Update", UpdateTaskRequest(id="sleeper", resources=bad), Empty)
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert "runc update sleeper" in refused.value.message
    assert (await sut.driver.state("sleeper")).status == Status.RUNNING  # unaffected
    await sut.driver.kill("sleeper", signal.SIGKILL)
    status = await sut.driver.wait("sleeper")
    assert status.exit_status == 137
    state = await sut.driver.state("sleeper")
    assert (state.status, state.exit_status) == (Status.STOPPED, 137)
    with pytest.raises(ttrpc.TtrpcError) as info:
        await sut.driver.kill("sleeper", signal.SIGKILL)
    assert info.value.code == Code.NOT_FOUND
    await sut.driver.delete("sleeper")
    assert gone(pid)
    assert container_cgroups("sleeper") == []


# -- bad input ---------------------------------------------------------------------------------


async def expect_create_fails(sut: ShimUnderTest, b: Bundle, code: Code, match: str) -> None:
    with pytest.raises(ttrpc.TtrpcError) as info:
        await sut.driver.create(b)
    assert info.value.code == code, info.value
    assert match in info.value.message, info.value.message
    with pytest.raises(ttrpc.TtrpcError) as gone:
        await sut.driver.state(b.id)
    assert gone.value.code == Code.NOT_FOUND  # nothing half-created
    assert container_cgroups(b.id) == []
    sut.driver.created.discard(b.id)


async def still_serves(sut: ShimUnderTest, tmp_path: Path, probe: bytes, cid: str) -> None:
    after = native_bundle(tmp_path, probe, cid, "exit", "4")
    assert (await sut.driver.run(after))[0] == 4


async def test_a_non_executable_entrypoint_is_refused_by_name(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes
) -> None:
    b = native_bundle(tmp_path, probe, "noexec", "exit", "0", mode=0o644)
    await expect_create_fails(
        sut, b, Code.INVALID_ARGUMENT, "it has no execute permission (mode 0644)"
    )
    await still_serves(sut, tmp_path, probe, "after-noexec")


async def test_runc_failing_at_create_leaves_nothing(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes
) -> None:
    b = native_bundle(tmp_path, probe, "badspec", "exit", "0")
    spec = json.loads(b.config.read_text())
    spec["linux"]["namespaces"].append({"type": "bogus"})
    b.config.write_text(json.dumps(spec))
    await expect_create_fails(sut, b, Code.INVALID_ARGUMENT, "runc create badspec")
    await still_serves(sut, tmp_path, probe, "after-badspec")


async def test_without_runc_a_native_container_is_a_clear_error(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    b = native_bundle(tmp_path, probe, "norunc", "exit", "0")
    await expect_create_fails(sut, b, Code.FAILED_PRECONDITION, "needs runc, which is not on PATH")
    # the pod's sandbox container falls back to the idle task
    pause = native_bundle(tmp_path, probe, "pause-idle", "sleep", annotations=SANDBOX_ANNOTATIONS)
    pid = await sut.driver.create(pause)
    assert pid > 0
    await sut.driver.start("pause-idle")
    await sut.driver.kill("pause-idle", signal.SIGKILL)
    assert (await sut.driver.wait("pause-idle")).exit_status == 137
    await sut.driver.delete("pause-idle")


async def test_the_sandbox_container_runs_as_a_real_process(
    sut: ShimUnderTest, tmp_path: Path, probe: bytes
) -> None:
    pause = native_bundle(tmp_path, probe, "pause", "sleep", annotations=SANDBOX_ANNOTATIONS)
    pid = await sut.driver.create(pause)
    await sut.driver.start("pause")
    assert pid != os.getpid()
    # it holds namespaces of its own (the pod's), not the shim's
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    await sut.driver.kill("pause", signal.SIGKILL)
    assert (await sut.driver.wait("pause")).exit_status == 137
    await sut.driver.delete("pause")


async def test_native_support_off_refuses_an_executable(tmp_path: Path, probe: bytes) -> None:
    async with serve_shim(NoNativeShim) as s:
        b = native_bundle(tmp_path, probe, "off", "exit", "0")
        with pytest.raises(ttrpc.TtrpcError) as info:
            await s.driver.create(b)
        assert info.value.code == Code.INVALID_ARGUMENT
        assert "is a native ELF executable" in info.value.message  # the engine's refusal
        s.driver.created.discard("off")


def test_delete_action_cleans_what_a_killed_daemon_left(
    tmp_path: Path, probe: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon SIGKILLed with a running native container leaves the container and its runc
    # state; containerd then runs the shim's `delete`, which must remove both.
    shim = require_shim()
    base = tmp_path / "runc-state"
    ttrpc_address = "/run/test-containerd.sock.ttrpc"
    env = dict(os.environ, RUNWASI_PY_RUNC_STATE=str(base), TTRPC_ADDRESS=ttrpc_address)
    monkeypatch.setenv("RUNWASI_PY_RUNC_STATE", str(base))
    root = state_root("leftover-ns", ttrpc_address)
    b = native_bundle(tmp_path, probe, "leftover", "sleep")
    runc = [require_runc(), "--root", str(root)]
    pid_file = tmp_path / "leftover.pid"
    for args in (
        ["create", "--bundle", str(b.path), "--pid-file", str(pid_file), "leftover"],
        ["start", "leftover"],
    ):
        # the init inherits runc's stdio: no pipes, or run() would wait for the init's end
        subprocess.run(
            [*runc, *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
    pid = int(pid_file.read_text())
    try:
        res = subprocess.run(
            [
                shim,
                "-namespace",
                "leftover-ns",
                "-address",
                "/run/test-containerd.sock",
                "-id",
                "leftover",
                "-bundle",
                str(b.path),
                "delete",
            ],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert res.stderr == b""
        state = subprocess.run([*runc, "state", "leftover"], capture_output=True, timeout=30)
        assert state.returncode != 0  # runc knows it no more
        assert not (root / "leftover").exists()
        assert container_cgroups("leftover") == []
        assert zombie_or_gone(pid)
    finally:
        subprocess.run([*runc, "delete", "--force", "leftover"], capture_output=True, timeout=30)
        remove_cgroup_parent()


def zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_a_stopping_shim_leaves_no_native_container(tmp_path: Path, probe: bytes) -> None:
    sockdir = Path(tempfile.mkdtemp(prefix="native", dir="/tmp"))  # short: sun_path is 108
    events = RecordingEventsServer(sockdir / "events.sock")
    await events.start()
    path = sockdir / "shim.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    shim = PyWasmtimeShim()
    serving = asyncio.ensure_future(
        shim.serve(listener, namespace="stopping", ttrpc_address=events.address)
    )
    client = await ttrpc.Client.connect(str(path))
    try:
        driver = TaskDriver(client)
        pid = await driver.create(native_bundle(tmp_path, probe, "left-running", "sleep"))
        await driver.start("left-running")
        shim.shutdown()  # what the daemon does on SIGTERM
        await asyncio.wait_for(serving, 30)
        assert zombie_or_gone(pid)
        assert container_cgroups("left-running") == []
        exits = [e.event for e in events.events if e.topic == "/tasks/exit"]
        assert [getattr(e, "exit_status", None) for e in exits] == [137]
    finally:
        await client.close()
        await events.stop()
        remove_cgroup_parent()
