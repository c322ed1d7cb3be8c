"""The Task service over a real ttrpc connection: every RPC, events, and every bad input."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import ttrpc
from runwasi_py import Config, InvalidArgument, RuntimeContext
from runwasi_py._bundle.mount import is_mountpoint
from runwasi_py._proto.messages import (
    GO_ZERO_TIME,
    CheckpointTaskRequest,
    CloseIoRequest,
    CreateTaskRequest,
    Empty,
    ExecProcessRequest,
    Mount,
    PauseRequest,
    ResizePtyRequest,
    ResumeRequest,
    Status,
    TaskCreate,
    TaskDelete,
    TaskExit,
    TaskStart,
    UpdateTaskRequest,
)
from runwasi_py.testing import ShimUnderTest, TaskDriver, make_bundle, serve_shim
from runwasi_py.testing.events_server import RecordedEvent
from tests.runwasi_py.sandboxes import RELEASE, ScriptSandbox, ScriptShim, entered, reset
from ttrpc import RawMessage

pytestmark = pytest.mark.anyio

Code = ttrpc.Code


class FastKillShim(ScriptShim):
    config = Config(kill_timeout=0.2)


@pytest.fixture(autouse=True)
def _fresh_sandboxes() -> Iterator[None]:
    reset()
    yield
    RELEASE.set()  # never leave a "block" thread behind


@pytest.fixture
async def sut() -> AsyncIterator[ShimUnderTest]:
    async with serve_shim(FastKillShim) as s:
        yield s


def events_of(sut: ShimUnderTest, cid: str) -> list[RecordedEvent]:
    return [e for e in sut.events.events if getattr(e.event, "container_id", None) == cid]


async def wait_topics(sut: ShimUnderTest, cid: str, *topics: str) -> list[RecordedEvent]:
    def have(_: list[RecordedEvent]) -> bool:
        seen = [e.topic for e in events_of(sut, cid)]
        return all(t in seen for t in topics)

    await sut.events.wait_for(have)
    return events_of(sut, cid)


def exists(path: str) -> bool:
    return os.path.exists(path)


async def until_entered(cid: str) -> None:
    assert await asyncio.to_thread(entered(cid).wait, 30)


async def expect(code: Code, call: object, match: str = "") -> ttrpc.TtrpcError:
    assert asyncio.iscoroutine(call)
    with pytest.raises(ttrpc.TtrpcError) as info:
        await call
    assert info.value.code == code, info.value
    assert match in info.value.message
    return info.value


# -- the lifecycle ------------------------------------------------------------------------


async def test_lifecycle_states_pids_and_exit(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "out", "hi", "sleep"], container_id="life")
    pid = await d.create(b)
    assert pid not in (0, os.getpid())
    st = await d.state("life")
    assert (st.status, st.pid, st.bundle, st.stdout) == (Status.CREATED, pid, str(b.path), b.stdout)
    assert st.exited_at == GO_ZERO_TIME
    assert await d.start("life") == pid
    await until_entered("life")
    st = await d.state("life")
    assert st.status == Status.RUNNING
    assert st.exited_at == GO_ZERO_TIME
    assert await d.pids("life") == [pid]
    await d.kill("life", signal.SIGTERM)
    waited = await d.wait("life")
    assert waited.exit_status == 128 + signal.SIGTERM
    assert waited.exited_at is not None
    assert waited.exited_at > datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    st = await d.state("life")
    assert (st.status, st.exit_status, st.exited_at) == (Status.STOPPED, 143, waited.exited_at)
    assert await d.pids("life") == []
    deleted = await d.delete("life")
    assert (deleted.pid, deleted.exit_status, deleted.exited_at) == (pid, 143, waited.exited_at)
    assert (await b.read_outputs())[0] == "hi\n"
    b.close()
    await expect(Code.NOT_FOUND, d.state("life"), "life")


async def test_events_in_order_with_content(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm", "exit", "7"], container_id="ev")
    code, _, _ = await sut.driver.run(b)
    assert code == 7
    evs = await wait_topics(sut, "ev", "/tasks/delete")
    assert [e.topic for e in evs] == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ]
    create, start, exit_, delete = (e.event for e in evs)
    assert isinstance(create, TaskCreate)
    assert isinstance(start, TaskStart)
    assert isinstance(exit_, TaskExit)
    assert isinstance(delete, TaskDelete)
    assert create.bundle == str(b.path)
    assert create.io is not None
    assert (create.io.stdout, create.io.stderr) == (b.stdout, b.stderr)
    assert create.pid == start.pid == exit_.pid == delete.pid != 0
    assert exit_.id == "ev"  # the init process's exec id is the container id
    assert exit_.exit_status == delete.exit_status == 7
    assert exit_.exited_at == delete.exited_at
    assert delete.id == ""
    for e in evs:
        assert e.type_url == f"containerd.events.{type(e.event).__name__}"
        assert e.namespace == "default"
        assert e.metadata_namespace == "default"


async def test_exit_never_before_start_even_when_instant(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    for i in range(20):
        cid = f"fast{i}"
        b = make_bundle(tmp_path, args=["/app.wasm"], container_id=cid, stdio="none")
        await sut.driver.run(b)
    for i in range(20):
        evs = await wait_topics(sut, f"fast{i}", "/tasks/delete")
        assert [e.topic for e in evs] == [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
        ]


async def test_many_tasks_in_one_shim(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    bundles = [
        make_bundle(
            tmp_path, args=["/app.wasm", "out", f"n{i}", "exit", str(i)], container_id=f"m{i}"
        )
        for i in range(8)
    ]
    results = await asyncio.gather(*(d.run(b) for b in bundles))
    assert [r[0] for r in results] == list(range(8))
    assert [r[1] for r in results] == [f"n{i}\n" for i in range(8)]


async def test_task_v3_service_name_serves_the_same_handlers(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    v3 = TaskDriver(sut.driver.client, service="containerd.task.v3.Task")
    b = make_bundle(tmp_path, args=["/app.wasm", "exit", "4"], container_id="v3")
    assert (await v3.run(b))[0] == 4


async def test_output_env_and_args_reach_the_sandbox(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(
        tmp_path,
        args=["/app.wasm", "env", "WHO", "arg", "err", "e"],
        env=["PATH=/", "WHO=world"],
        container_id="io",
    )
    code, out, err = await sut.driver.run(b)
    assert (code, out, err) == (0, "world\n/app.wasm env WHO arg err e\n", "e\n")


# -- kill and exit statuses -----------------------------------------------------------------


async def test_kill_of_exited_task_is_not_found(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="done", stdio="none")
    await d.create(b)
    await d.start("done")
    await d.wait("done")
    await expect(Code.NOT_FOUND, d.kill("done", signal.SIGKILL), "process already finished")
    await d.delete("done")


async def test_kill_before_start(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "out", "never"], container_id="early")
    await d.create(b)
    await expect(Code.FAILED_PRECONDITION, d.kill("early", signal.SIGTERM), "created")
    assert (await d.state("early")).status == Status.CREATED
    await d.kill("early", 0)  # a liveness probe is fine
    # containerd's forced delete of a created task: SIGKILL, then it must be stopped
    await d.kill("early", signal.SIGKILL)
    assert (await d.wait("early")).exit_status == 137
    assert (await d.state("early")).status == Status.STOPPED
    await d.delete("early")
    evs = await wait_topics(sut, "early", "/tasks/delete")
    assert [e.topic for e in evs] == ["/tasks/create", "/tasks/exit", "/tasks/delete"]
    assert (await b.read_outputs(1))[0] == ""
    b.close()


async def test_run_wasi_that_raises_exits_137_and_shim_keeps_serving(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm", "raise", "boom"], container_id="boom")
    assert (await sut.driver.run(b))[0] == 137
    ok = make_bundle(tmp_path, args=["/app.wasm", "exit", "0"], container_id="ok")
    assert (await sut.driver.run(ok))[0] == 0


async def test_run_wasi_that_never_returns_is_killed_with_137(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "block"], container_id="stuck", stdio="none")
    other = make_bundle(tmp_path, args=["/app.wasm", "exit", "2"], container_id="other")
    await d.create(b)
    await d.start("stuck")
    await until_entered("stuck")
    assert (await d.run(other))[0] == 2  # the control plane is not blocked
    await d.kill("stuck", signal.SIGKILL)
    assert (await d.wait("stuck")).exit_status == 137
    await d.delete("stuck")
    RELEASE.set()


async def test_oom_event_before_exit(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm", "oom"], container_id="oom", memory_limit=1 << 20)
    assert (await sut.driver.run(b))[0] == 137
    evs = await wait_topics(sut, "oom", "/tasks/delete")
    assert [e.topic for e in evs] == [
        "/tasks/create",
        "/tasks/start",
        "/tasks/oom",
        "/tasks/exit",
        "/tasks/delete",
    ]


# -- illegal transitions and unknown ids ----------------------------------------------------


async def test_start_twice_and_delete_running_are_failed_precondition(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "sleep"], container_id="twice", stdio="none")
    await d.create(b)
    await d.start("twice")
    await expect(Code.FAILED_PRECONDITION, d.start("twice"), "running => running")
    await expect(Code.FAILED_PRECONDITION, d.delete("twice"), "running => deleted")
    await d.kill("twice", signal.SIGKILL)
    await d.wait("twice")
    await expect(Code.FAILED_PRECONDITION, d.start("twice"), "stopped => running")
    await d.delete("twice")


async def test_delete_of_created_task_releases_waiters(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="unstarted", stdio="none")
    await d.create(b)
    waiter = asyncio.ensure_future(d.wait("unstarted"))
    await asyncio.sleep(0.05)  # let the Wait reach the shim
    deleted = await d.delete("unstarted")
    assert deleted.exit_status == (await waiter).exit_status == 137
    evs = await wait_topics(sut, "unstarted", "/tasks/delete")
    assert [e.topic for e in evs] == ["/tasks/create", "/tasks/delete"]


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.start("nope"),
        lambda d: d.kill("nope"),
        lambda d: d.wait("nope"),
        lambda d: d.delete("nope"),
        lambda d: d.state("nope"),
        lambda d: d.pids("nope"),
        lambda d: d.stats("nope"),
        lambda d: d.client.call(d.service, "CloseIO", CloseIoRequest(id="nope"), Empty),
        lambda d: d.client.call(d.service, "Update", UpdateTaskRequest(id="nope"), Empty),
    ],
    ids=["start", "kill", "wait", "delete", "state", "pids", "stats", "closeio", "update"],
)
async def test_unknown_id_is_not_found(
    sut: ShimUnderTest, call: Callable[[TaskDriver], object]
) -> None:
    await expect(Code.NOT_FOUND, call(sut.driver), "container nope not created")


async def test_exec_ids_are_not_found(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "sleep"], container_id="ex", stdio="none")
    await d.create(b)
    for call in (
        d.start("ex", "e1"),
        d.kill("ex", exec_id="e1"),
        d.state("ex", "e1"),
        d.delete("ex", "e1"),
        d.wait("ex", "e1"),
    ):
        await expect(Code.NOT_FOUND, call, "process does not exist e1")
    await d.delete("ex")


async def test_duplicate_create_is_already_exists(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="dup", stdio="none")
    await d.create(b)
    await expect(Code.ALREADY_EXISTS, d.create(b), "dup")
    await d.delete("dup")


async def test_concurrent_duplicate_creates_one_wins(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="race", stdio="none")
    results = await asyncio.gather(
        sut.driver.create(b), sut.driver.create(b), return_exceptions=True
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], ttrpc.TtrpcError)
    assert errors[0].code == Code.ALREADY_EXISTS
    await sut.driver.delete("race")


# -- bad bundles ------------------------------------------------------------------------------


async def _create_fails(
    sut: ShimUnderTest, request: CreateTaskRequest, code: Code, match: str
) -> None:
    await expect(code, sut.driver.create(request), match)
    assert (await sut.driver.connect(request.id)).task_pid == 0  # nothing was kept
    # the shim keeps serving
    await expect(Code.NOT_FOUND, sut.driver.state(request.id))


async def test_missing_config_json(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="nocfg", stdio="none")
    b.config.unlink()
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "config.json")


async def test_malformed_config_json(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="badcfg", stdio="none")
    b.config.write_text("{not json")
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "not valid JSON")
    b.config.write_text(json.dumps({"process": {"args": "app.wasm"}}))
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "process.args")


async def test_missing_entrypoint(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/gone.wasm"], files={}, container_id="gone", stdio="none")
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "not found")


async def test_empty_args(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=[], container_id="noargs", stdio="none")
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "process.args is empty")


async def test_non_wasm_entrypoint(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(
        tmp_path,
        args=["/app.wasm"],
        files={"app.wasm": b"#!/bin/sh\n"},
        container_id="sh",
        stdio="none",
    )
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "not a wasm module")


async def test_entrypoint_escaping_with_dotdot(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/../../../../etc/hostname"], container_id="esc", stdio="none")
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "escapes the rootfs")


async def test_entrypoint_escaping_with_symlink(sut: ShimUnderTest, tmp_path: Path) -> None:
    outside = tmp_path / "outside.wasm"
    outside.write_bytes(b"\0asm\x01\0\0\0")
    b = make_bundle(tmp_path, args=["/app.wasm"], files={}, container_id="lnk", stdio="none")
    (b.rootfs / "app.wasm").symlink_to("../../outside.wasm")
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "escapes the rootfs")
    (b.rootfs / "app.wasm").unlink()
    (b.rootfs / "app.wasm").symlink_to(outside)  # absolute: resolved inside the rootfs
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "not found")


async def test_terminal_checkpoint_and_bad_stdio(sut: ShimUnderTest, tmp_path: Path) -> None:
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="tty", stdio="none")
    await _create_fails(sut, b.create_request(terminal=True), Code.INVALID_ARGUMENT, "terminal")
    req = b.create_request()
    req.checkpoint = "/tmp/ckpt"
    await _create_fails(sut, req, Code.UNIMPLEMENTED, "checkpoint")
    req = b.create_request()
    req.stdout = "binary:///usr/bin/logger"
    await _create_fails(sut, req, Code.INVALID_ARGUMENT, "stdio")
    await _create_fails(
        sut, CreateTaskRequest(id="", bundle=str(b.path)), Code.INVALID_ARGUMENT, "id"
    )


# -- the other RPCs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "request_", "word"),
    [
        ("Exec", ExecProcessRequest(id="x", exec_id="e"), "exec"),
        ("Pause", PauseRequest(id="x"), "pause"),
        ("Resume", ResumeRequest(id="x"), "resume"),
        ("Checkpoint", CheckpointTaskRequest(id="x"), "checkpoint"),
        ("ResizePty", ResizePtyRequest(id="x", width=80, height=24), "terminals"),
    ],
)
async def test_unsupported_rpcs_are_unimplemented(
    sut: ShimUnderTest, method: str, request_: object, word: str
) -> None:
    await expect(
        Code.UNIMPLEMENTED,
        sut.driver.client.call(sut.driver.service, method, request_, Empty),
        word,
    )


async def test_connect(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    assert (await d.connect("none")).shim_pid == os.getpid()
    assert (await d.connect("none")).task_pid == 0
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="conn", stdio="none")
    pid = await d.create(b)
    reply = await d.connect("conn")
    assert (reply.shim_pid, reply.task_pid) == (os.getpid(), pid)
    await d.delete("conn")


async def test_close_io_and_update_are_accepted(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm", "sleep"], container_id="upd", stdio="none")
    await d.create(b)
    await d.client.call(d.service, "CloseIO", CloseIoRequest(id="upd", stdin=True), Empty)
    await d.client.call(
        d.service, "Update", UpdateTaskRequest(id="upd", annotations={"a": "b"}), Empty
    )
    await d.delete("upd")


async def test_stats_cpu_and_memory(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(
        tmp_path,
        args=["/app.wasm", "burn", "30", "sleep"],
        container_id="st",
        memory_limit=64 << 20,
        stdio="none",
    )
    await d.create(b)
    before = await d.stats("st")
    assert before.cpu is not None
    assert before.cpu.usage_usec == 0
    await d.start("st")
    await until_entered("st")
    m = await d.stats("st")
    assert m.cpu is not None
    assert m.memory is not None
    assert m.cpu.usage_usec >= 30_000
    assert m.cpu.user_usec + m.cpu.system_usec <= m.cpu.usage_usec
    assert m.memory.usage > 0
    assert m.memory.usage_limit == 64 << 20
    await d.kill("st")
    await d.wait("st")
    after = await d.stats("st")
    assert after.cpu is not None
    assert after.cpu.usage_usec >= m.cpu.usage_usec
    await d.delete("st")


async def test_shutdown_with_tasks_is_a_no_op(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="keep", stdio="none")
    await d.create(b)
    await d.shutdown()
    assert (await d.state("keep")).status == Status.CREATED
    await d.delete("keep")


async def test_shutdown_without_tasks_stops_serving_and_removes_the_socket() -> None:
    async with serve_shim(ScriptShim) as s:
        await s.driver.shutdown()
        await s.driver.client.wait_closed()
        assert await s.wait_stopped()
        assert not exists(s.address)


async def test_a_declined_shutdown_stops_the_shim_once_the_last_task_is_deleted(
    tmp_path: Path,
) -> None:
    # Task API v3: containerd sends Shutdown for the pod's sandbox container only; if that
    # one is deleted while others remain, their later Deletes come without a Shutdown.
    async with serve_shim(ScriptShim) as s:
        d = s.driver
        for cid in ("sandbox", "app"):
            await d.create(make_bundle(tmp_path / cid, args=["/app.wasm"], container_id=cid))
        await d.delete("sandbox")
        await d.shutdown()  # declined: "app" is left
        assert (await d.state("app")).status == Status.CREATED
        await d.delete("app")
        await d.client.wait_closed()
        assert await s.wait_stopped()
        assert not exists(s.address)


async def test_without_a_declined_shutdown_the_last_delete_keeps_serving(tmp_path: Path) -> None:
    async with serve_shim(ScriptShim) as s:
        d = s.driver
        await d.create(make_bundle(tmp_path, args=["/app.wasm"], container_id="only"))
        await d.delete("only")
        assert (await d.connect("x")).task_pid == 0  # still answering: Shutdown decides
        assert exists(s.address)


# -- CRI pods, mounts, precompile --------------------------------------------------------------


async def test_cri_sandbox_container_idles_until_killed(sut: ShimUnderTest, tmp_path: Path) -> None:
    d = sut.driver
    b = make_bundle(
        tmp_path,
        args=["/pause"],
        files={"pause": b"\x7fELF"},
        annotations={
            "io.kubernetes.cri.container-type": "sandbox",
            "io.kubernetes.cri.sandbox-id": "pod1",
        },
        container_id="pod1",
        stdio="none",
    )
    await d.create(b)
    await d.start("pod1")
    assert (await d.state("pod1")).status == Status.RUNNING
    app = make_bundle(
        tmp_path,
        args=["/app.wasm", "exit", "0"],
        annotations={
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-id": "pod1",
        },
        container_id="app1",
    )
    assert (await d.run(app))[0] == 0
    await d.kill("pod1", signal.SIGKILL)
    assert (await d.wait("pod1")).exit_status == 137
    await d.delete("pod1")


async def test_non_wasm_app_container_in_a_pod_is_refused(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    b = make_bundle(
        tmp_path,
        args=["/bin/app"],
        files={"bin/app": b"\x7fELF"},
        annotations={"io.kubernetes.cri.container-type": "container"},
        container_id="native",
        stdio="none",
    )
    await _create_fails(sut, b.create_request(), Code.INVALID_ARGUMENT, "not a wasm module")


@pytest.fixture
def bind_source(tmp_path: Path) -> Path:
    src = tmp_path / "layer"
    src.mkdir()
    (src / "app.wasm").write_bytes(b"\0asm\x01\0\0\0")
    return src


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
async def test_rootfs_is_mounted_at_create_and_unmounted_at_delete(
    sut: ShimUnderTest, tmp_path: Path, bind_source: Path
) -> None:
    d = sut.driver
    b = make_bundle(
        tmp_path, args=["/app.wasm", "exit", "0"], files={}, container_id="mnt", stdio="none"
    )
    mounts = [Mount(type="bind", source=str(bind_source), options=["rbind", "rw"])]
    await d.create(b, rootfs=mounts)
    try:
        assert is_mountpoint(b.rootfs)
        assert (b.rootfs / "app.wasm").exists()
    finally:
        await d.start("mnt")
        await d.wait("mnt")
        await d.delete("mnt")
    assert not is_mountpoint(b.rootfs)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
async def test_failed_create_leaves_nothing_mounted(
    sut: ShimUnderTest, tmp_path: Path, bind_source: Path
) -> None:
    (bind_source / "app.wasm").write_bytes(b"not wasm")
    b = make_bundle(tmp_path, args=["/app.wasm"], files={}, container_id="mntbad", stdio="none")
    mounts = [Mount(type="bind", source=str(bind_source), options=["rbind", "rw"])]
    await expect(Code.INVALID_ARGUMENT, d_create(sut.driver, b, mounts), "not a wasm module")
    assert not is_mountpoint(b.rootfs)


def d_create(d: TaskDriver, b: object, mounts: list[Mount]) -> object:
    return d.create(b, rootfs=mounts)  # type: ignore[arg-type]


class CompilingSandbox(ScriptSandbox):
    compiled: list[bytes] = []  # noqa: RUF012 - test bookkeeping across instances
    seen: list[Path | None] = []  # noqa: RUF012

    def cache_key(self) -> str | None:
        return "test-engine-1"

    def compile(self, wasm: bytes) -> bytes:
        self.compiled.append(wasm)
        return b"ARTIFACT" + wasm

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        self.seen.append(ctx.precompiled)
        return 0


class BadCompileSandbox(CompilingSandbox):
    def compile(self, wasm: bytes) -> bytes:
        raise ValueError("invalid module")


async def test_precompile_uses_the_compile_cache(tmp_path: Path) -> None:
    class CompilingShim(ScriptShim):
        sandbox = CompilingSandbox
        config = Config(compile_cache_dir=tmp_path / "cache")

    CompilingSandbox.compiled.clear()
    CompilingSandbox.seen.clear()
    async with serve_shim(CompilingShim) as s:
        for cid in ("p1", "p2"):
            b = make_bundle(tmp_path, args=["/app.wasm"], container_id=cid, stdio="none")
            assert (await s.driver.run(b))[0] == 0
    assert CompilingSandbox.compiled == [b"\0asm\x01\0\0\0"]  # the second run hit the cache
    assert len(CompilingSandbox.seen) == 2
    first, second = CompilingSandbox.seen
    assert first is not None
    assert first == second
    assert first.read_bytes().startswith(b"ARTIFACT\0asm")


async def test_compile_error_fails_create(tmp_path: Path) -> None:
    class BadShim(ScriptShim):
        sandbox = BadCompileSandbox
        config = Config(compile_cache_dir=tmp_path / "cache")

    async with serve_shim(BadShim) as s:
        b = make_bundle(tmp_path, args=["/app.wasm"], container_id="bad", stdio="none")
        await expect(Code.INVALID_ARGUMENT, s.driver.create(b), "invalid module")


async def test_can_handle_error_reaches_the_caller(tmp_path: Path) -> None:
    class Picky(ScriptSandbox):
        async def can_handle(self, ctx: RuntimeContext) -> None:
            raise InvalidArgument("picky: no thanks")

    class PickyShim(ScriptShim):
        sandbox = Picky

    async with serve_shim(PickyShim) as s:
        b = make_bundle(tmp_path, args=["/app.wasm"], container_id="pk", stdio="none")
        await expect(Code.INVALID_ARGUMENT, s.driver.create(b), "picky: no thanks")


async def test_exited_at_before_exit_is_go_zero_time_on_the_wire(
    sut: ShimUnderTest, tmp_path: Path
) -> None:
    from runwasi_py._proto.messages import StateRequest, Timestamp

    b = make_bundle(tmp_path, args=["/app.wasm"], container_id="zero", stdio="none")
    await sut.driver.create(b)
    raw = await sut.driver.client.call(
        sut.driver.service, "State", StateRequest(id="zero"), RawMessage
    )
    # the last field set is 10 (exited_at): tag 0x52, length, Timestamp{seconds: -62135596800}
    go_zero = bytes(Timestamp(seconds=-62135596800))
    assert raw.data.endswith(b"\x52" + bytes([len(go_zero)]) + go_zero)
    assert go_zero == bytes.fromhex("088092b8c398feffffff01")
    await sut.driver.delete("zero")
