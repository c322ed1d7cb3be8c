"""The pod boundary through the task service (in-process shim, real cgroups and netns, root).

Each container's worker thread is in its cgroup (v1: cpu and cpuacct) and in the spec's
network/UTS/IPC namespaces; Stats are the cgroup's; Update changes a running task's CPU
limit; bad input is refused at Create or Update with the field named, nothing half-created,
and the shim's other containers unaffected.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import ttrpc
from runwasi_py._cgroups import CgroupDriver, CgroupPath, discover, driver_for
from runwasi_py._cgroups._hierarchy import read_proc_cgroup
from runwasi_py._namespaces import NamespacePlan
from runwasi_py._proto.messages import cgroups_v1, cgroups_v2
from runwasi_py.testing import ShimUnderTest, make_bundle, serve_shim
from tests.integration._require import require_root
from tests.runwasi_py.sandboxes import RELEASE, ScriptShim, entered, reset

pytestmark = pytest.mark.anyio

SANDBOX = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "sb"}


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset()
    yield
    RELEASE.set()


@pytest.fixture
def driver() -> CgroupDriver:
    require_root()
    d = driver_for(discover())
    if d.version == 2:
        pytest.skip("v2 thread cgroups need the daemon in a pod cgroup (a subprocess shim)")
    return d


@pytest.fixture
def pod(driver: CgroupDriver) -> Iterator[CgroupPath]:
    """A pod cgroup_parent made as kubelet would (so the test owns it and removes it)."""
    path = CgroupPath(f"/runwasi-py-test-{uuid.uuid4().hex[:10]}")
    for h in driver.layout.hierarchies():
        top = h.dir_of(path.path)
        top.mkdir()
        if "cpuset" in h.controllers:  # kubelet (libcontainer) fills a new cpuset's values
            for name in ("cpuset.cpus", "cpuset.mems"):
                (top / name).write_text((top.parent / name).read_text())
    yield path
    for h in driver.layout.hierarchies():
        top = h.dir_of(path.path)
        for d in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if d.is_dir():
                d.rmdir()
        top.rmdir()


@pytest.fixture
def netns() -> Iterator[str]:
    require_root()
    name = f"runwasi-py-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def _cpu_cgroup(tid: int) -> str:
    return read_proc_cgroup(f"self/task/{tid}")["cpu"]


def _children(driver: CgroupDriver, pod: CgroupPath) -> list[str]:
    return sorted(
        f"{h.mountpoint.name}/{p.relative_to(h.mountpoint)}"
        for h in driver.layout.hierarchies()
        for p in h.dir_of(pod.path).iterdir()
        if p.is_dir()
    )


async def _running(s: ShimUnderTest, tmp: Path, cid: str, **linux: object) -> int:
    b = make_bundle(tmp, container_id=cid, args=["/x.wasm", "sleep"], linux=linux)
    pid = await s.driver.create(b)
    await s.driver.start(cid)
    assert entered(cid).wait(10)
    return pid


async def test_a_container_thread_lives_in_its_cgroup(
    driver: CgroupDriver, pod: CgroupPath, tmp_path: Path
) -> None:
    cpu_dir = driver.layout.v1["cpu"].dir_of(f"{pod}/c1")
    async with serve_shim(ScriptShim) as s:
        pid = await _running(
            s,
            tmp_path,
            "c1",
            cgroupsPath=f"{pod}/c1",
            resources={"cpu": {"shares": 256, "quota": 20000, "period": 100000}},
        )
        assert _cpu_cgroup(pid) == f"{pod}/c1"  # the reported pid is the thread in the cgroup
        assert read_proc_cgroup(f"self/task/{pid}")["cpuacct"] == f"{pod}/c1"
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "20000"
        assert (cpu_dir / "cpu.shares").read_text().strip() == "256"
        m = await s.driver.metrics("c1")
        assert isinstance(m, cgroups_v1.Metrics)
        assert m.pids is not None
        assert m.pids.current == 1

        await s.driver.update("c1", {"cpu": {"quota": 50000}})
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
        with pytest.raises(ttrpc.TtrpcError, match=r"resources\.cpu\.quota: 10 us is below"):
            await s.driver.update("c1", {"cpu": {"quota": 10}})
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (await s.driver.state("c1")).pid == pid  # still running, same thread

        await s.driver.kill("c1", 9)
        await s.driver.wait("c1")
        assert _cpu_cgroup(pid) != f"{pod}/c1"  # the thread went home when its job ended
        await s.driver.delete("c1")
        assert not cpu_dir.exists()
        assert _children(driver, pod) == []


async def test_cpu_figures_come_from_the_cgroup(
    driver: CgroupDriver, pod: CgroupPath, tmp_path: Path
) -> None:
    async with serve_shim(ScriptShim) as s:
        b = make_bundle(
            tmp_path,
            args=["/x.wasm", "burn", "300", "sleep"],
            linux={
                "cgroupsPath": f"{pod}/c1",
                "resources": {"cpu": {"quota": 20000, "period": 100000}},
            },
        )
        await s.driver.create(b)
        await s.driver.start("c1")
        assert entered("c1").wait(30)
        m = await s.driver.metrics("c1")
        assert isinstance(m, cgroups_v1.Metrics)
        assert m.cpu is not None
        assert m.cpu.usage is not None
        assert m.cpu.throttling is not None
        assert m.cpu.usage.total >= 250_000_000  # the 300 ms burned, in ns
        assert m.cpu.throttling.throttled_periods > 0  # held to 20 ms per 100 ms
        await s.driver.cleanup()


@pytest.mark.parametrize(
    ("linux", "match"),
    [
        ({"cgroupsPath": "/../../etc"}, r"linux\.cgroupsPath: .* escapes the cgroup root"),
        (
            {"cgroupsPath": "{pod}/bad", "resources": {"cpu": {"quota": 500}}},
            r"linux\.resources\.cpu\.quota: 500 us is below",
        ),
        (
            {"cgroupsPath": "{pod}/bad", "namespaces": [{"type": "network", "path": "/nope"}]},
            r"linux\.namespaces\[0\]\.path: network namespace '/nope' does not exist",
        ),
        (
            {"cgroupsPath": "{pod}/bad", "namespaces": [{"type": "uts", "path": "/etc/hostname"}]},
            r"linux\.namespaces\[0\]\.path: '/etc/hostname' is not a namespace",
        ),
    ],
)
async def test_bad_input_is_refused_at_create_and_nothing_is_left(
    driver: CgroupDriver,
    pod: CgroupPath,
    tmp_path: Path,
    linux: dict[str, object],
    match: str,
) -> None:
    linux = {k: v.replace("{pod}", pod.path) if isinstance(v, str) else v for k, v in linux.items()}
    async with serve_shim(ScriptShim) as s:
        neighbour = await _running(s, tmp_path, "ok", cgroupsPath=f"{pod}/ok")
        b = make_bundle(tmp_path, container_id="bad", args=["/x.wasm", "exit", "0"], linux=linux)
        with pytest.raises(ttrpc.TtrpcError, match=match) as info:
            await s.driver.create(b)
        assert info.value.code == ttrpc.Code.INVALID_ARGUMENT
        assert _children(driver, pod) == [f"cpu{pod}/ok", f"cpuacct{pod}/ok"]
        assert not (tmp_path / "bad" / "runwasi-py-cgroups.json").exists()
        state = await s.driver.state("ok")
        assert state.pid == neighbour
        assert _cpu_cgroup(neighbour) == f"{pod}/ok"
        await s.driver.cleanup()
    assert _children(driver, pod) == []


async def test_pod_namespaces_through_the_sandbox_tasks_pid(
    driver: CgroupDriver, pod: CgroupPath, netns: str, tmp_path: Path
) -> None:
    own = {n: os.stat(f"/proc/thread-self/ns/{n}").st_ino for n in ("net", "uts", "ipc")}
    async with serve_shim(ScriptShim) as s:
        sb = make_bundle(
            tmp_path,
            container_id="sb",
            args=["/pause"],
            files={"pause": b"\x7fELF"},
            annotations=SANDBOX,
            linux={
                "cgroupsPath": f"{pod}/sb",
                "namespaces": [
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    {"type": "network", "path": netns},
                ],
            },
        )
        config = json.loads(sb.config.read_text())
        sb.config.write_text(json.dumps({**config, "hostname": "pod-x"}))  # CRI sets it
        sb_pid = await s.driver.create(sb)
        await s.driver.start("sb")
        proc_ns = f"/proc/{sb_pid}/ns"
        for _ in range(200):  # the idle sandbox thread joins as its job starts
            if os.stat(f"{proc_ns}/net").st_ino != own["net"]:
                break
            await _sleep(0.02)
        sb_ns = {n: os.stat(f"{proc_ns}/{n}").st_ino for n in ("net", "uts", "ipc")}
        assert sb_ns["net"] == os.stat(netns).st_ino
        assert sb_ns["uts"] != own["uts"]
        assert sb_ns["ipc"] != own["ipc"]
        # an app container, with the paths containerd writes from the sandbox task's pid
        app_pid = await _running(
            s,
            tmp_path,
            "app",
            cgroupsPath=f"{pod}/app",
            namespaces=[
                {"type": t, "path": f"{proc_ns}/{n}"}
                for t, n in (("network", "net"), ("uts", "uts"), ("ipc", "ipc"), ("pid", "pid"))
            ],
        )
        app_ns = {n: os.stat(f"/proc/{app_pid}/ns/{n}").st_ino for n in ("net", "uts", "ipc")}
        assert app_ns == sb_ns
        assert _hostname_in(f"/proc/{app_pid}/ns/uts") == "pod-x"  # the pod's, not the host's
        assert socket.gethostname() != "pod-x"
        assert {n: os.stat(f"/proc/thread-self/ns/{n}").st_ino for n in own} == own
        await s.driver.cleanup()
    assert _children(driver, pod) == []


def _hostname_in(uts: str) -> str:
    """The hostname a thread sees in the UTS namespace ``uts`` (a thread of ours joins it)."""
    plan = NamespacePlan.from_spec({"linux": {"namespaces": [{"type": "uts", "path": uts}]}})
    seen: list[str] = []

    def look() -> None:
        with plan.entered():
            seen.append(socket.gethostname())

    t = threading.Thread(target=look)
    t.start()
    t.join(10)
    plan.close()
    return seen[0]


async def _sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


async def test_a_cri_container_is_refused_by_a_namespace_shared_shim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWASI_PY_SHIM_GROUP", "namespace")
    async with serve_shim(ScriptShim) as s:
        b = make_bundle(tmp_path, args=["/x.wasm", "exit", "0"], annotations=SANDBOX)
        with pytest.raises(ttrpc.TtrpcError, match="RUNWASI_PY_SHIM_GROUP=namespace") as info:
            await s.driver.create(b)
        assert info.value.code == ttrpc.Code.FAILED_PRECONDITION
        plain = make_bundle(tmp_path, container_id="c2", args=["/x.wasm", "exit", "3"])
        code, _, _ = await s.driver.run(plain)
        assert code == 3


_ = cgroups_v2  # v2 hosts answer with v2 Metrics (covered by the fake-tree tests)


def _rss_anon_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon"))


def _cgroup_file(driver: CgroupDriver, controller: str, path: str, name: str) -> str:
    return (driver.layout.v1[controller].dir_of(path) / name).read_text().strip()


async def test_the_pod_daemon_lives_below_the_pod_cgroup(
    driver: CgroupDriver, pod: CgroupPath, tmp_path: Path
) -> None:
    sb = make_bundle(
        tmp_path,
        container_id="sb",
        args=["/pause"],
        files={"pause": b"\x7fELF"},
        annotations=SANDBOX,
        linux={"cgroupsPath": f"{pod}/sb"},
    )
    daemon_cgroup = f"{pod}/runwasi-py-shim-sb"
    async with serve_shim(ScriptShim, mode="subprocess", bundle=sb) as s:
        own = read_proc_cgroup(s.shim_pid)
        for controller in ("cpu", "cpuacct", "memory", "pids"):
            assert own[controller] == daemon_cgroup, controller
        # the daemon was born in there (start joined before spawning it): all of its
        # anonymous memory is charged to the pod, none stayed with containerd's cgroup
        anon_kb = _rss_anon_kb(s.shim_pid)
        usage = int(_cgroup_file(driver, "memory", pod.path, "memory.usage_in_bytes"))
        assert usage >= anon_kb * 1024 > 1 << 20
        await s.driver.create(sb)
        await s.driver.start("sb")
        app = make_bundle(
            tmp_path,
            container_id="app",
            args=["/x.wasm", "burn", "200"],
            annotations={**SANDBOX, "io.kubernetes.cri.container-type": "container"},
            linux={"cgroupsPath": f"{pod}/app"},
        )
        code, _, _ = await s.driver.run(app)
        assert code == 0
        app_ns = (
            int(_cgroup_file(driver, "cpuacct", f"{pod}/app", "cpuacct.usage"))
            if (driver.layout.v1["cpuacct"].dir_of(f"{pod}/app").exists())
            else 0
        )
        assert app_ns == 0  # deleted with its task
        # the pod's CPU includes the container's burn (charged to the pod's cgroup)
        assert int(_cgroup_file(driver, "cpuacct", pod.path, "cpuacct.usage")) >= 150_000_000
    assert _children(driver, pod) == []  # the daemon left and removed its cgroup


async def test_delete_action_cleans_up_after_a_sigkilled_pod_shim(
    driver: CgroupDriver, pod: CgroupPath, tmp_path: Path
) -> None:
    import signal

    sb = make_bundle(
        tmp_path,
        container_id="sb",
        args=["/pause"],
        files={"pause": b"\x7fELF"},
        annotations=SANDBOX,
        linux={"cgroupsPath": f"{pod}/sb"},
    )
    async with serve_shim(ScriptShim, mode="subprocess", bundle=sb) as s:
        await s.driver.create(sb)
        await s.driver.start("sb")
        app = make_bundle(
            tmp_path,
            container_id="app",
            args=["/x.wasm", "sleep"],
            annotations={**SANDBOX, "io.kubernetes.cri.container-type": "container"},
            linux={"cgroupsPath": f"{pod}/app", "resources": {"cpu": {"quota": 50000}}},
        )
        await s.driver.create(app)
        await s.driver.start("app")
        assert f"cpu{pod}/app" in _children(driver, pod)
        os.kill(s.shim_pid, signal.SIGKILL)
        assert s.executable is not None
        # what containerd runs in each bundle of a dead shim (the harness does the sandbox's)
        res = await anyio.run_process(
            [
                str(s.executable),
                "-namespace",
                s.namespace,
                "-id",
                "app",
                "-bundle",
                str(app.path),
                "delete",
            ],
            cwd=app.path,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        s.driver.created.clear()  # nothing to kill or delete: the shim is gone
    assert _children(driver, pod) == []
