"""Real cgroups and namespaces on this machine (root): create, place a thread, limit, stats,
update, remove; the daemon's cgroup; cleanup after a SIGKILL; a thread in a netns.

Every test works below a parent of its own (``/runwasi-py-test-<uuid>``) and removes it.
Only one figure is a time ratio, and it tests a limit: a thread held to 0.2 CPU must stay
well under 0.6 of a core, whatever else the machine does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runwasi_py._cgroups import (
    RECORD_NAME,
    CgroupDriver,
    CgroupPath,
    CgroupRequest,
    ContainerCgroup,
    CpuLimits,
    CreationRecord,
    DaemonCgroup,
    EngineMemory,
    cleanup_bundle,
    daemon_cgroup_path,
    discover,
    driver_for,
)
from runwasi_py._cgroups._hierarchy import read_proc_cgroup
from runwasi_py._errors import InvalidArgument
from runwasi_py._namespaces import NamespacePlan
from runwasi_py._proto.messages import cgroups_v1
from tests.integration._require import require_root


@pytest.fixture
def driver() -> CgroupDriver:
    require_root()
    return driver_for(discover())


@pytest.fixture
def parent(driver: CgroupDriver) -> Iterator[CgroupPath]:
    """A unique test parent; whatever is left below it is removed afterwards."""
    path = CgroupPath(f"/runwasi-py-test-{uuid.uuid4().hex[:10]}")
    yield path
    for h in driver.layout.hierarchies():
        top = h.dir_of(path.path)
        if top.exists():
            for d in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if d.is_dir():
                    d.rmdir()
            top.rmdir()


def _in_thread(fn: Callable[[threading.Event], None]) -> tuple[threading.Thread, threading.Event]:
    done = threading.Event()
    t = threading.Thread(target=fn, args=(done,), daemon=True)
    t.start()
    return t, done


def _cpu_cgroup_of(tid: int) -> str:
    got = read_proc_cgroup(f"self/task/{tid}")
    return got.get("cpu", got.get("", ""))


def test_a_thread_held_to_a_fifth_of_a_cpu(driver: CgroupDriver, parent: CgroupPath) -> None:
    req = CgroupRequest.from_spec(
        {
            "linux": {
                "cgroupsPath": f"{parent}/c1",
                "resources": {"cpu": {"quota": 20000, "period": 100000, "shares": 512}},
            }
        }
    )
    assert req.path is not None
    if driver.version == 2:
        pytest.skip("this machine is v1; v2 needs a daemon cgroup (covered by the fakes)")
    cg = ContainerCgroup.create(driver, req.path, req.cpu, CreationRecord())
    result: dict[str, float] = {}
    home = _cpu_cgroup_of(threading.get_native_id())

    def busy(release: threading.Event) -> None:
        tid = cg.place_current_thread()
        result["tid"] = tid
        wall0, cpu0 = time.monotonic(), time.thread_time()
        while time.monotonic() - wall0 < 2.0:
            pass
        result["ratio"] = (time.thread_time() - cpu0) / (time.monotonic() - wall0)
        release.wait(30)

    release = threading.Event()
    t = threading.Thread(target=busy, args=(release,), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while "ratio" not in result and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert result["ratio"] < 0.6, result
        assert _cpu_cgroup_of(int(result["tid"])) == req.path.path
        m = cg.metrics(EngineMemory(usage=1 << 20, limit=0))
        assert isinstance(m, cgroups_v1.Metrics)
        assert m.cpu is not None
        assert m.cpu.usage is not None
        assert m.cpu.throttling is not None
        assert m.cpu.usage.total > 100_000_000  # it ran: at least 0.1 s of CPU
        assert m.cpu.throttling.throttled_periods > 0
        assert m.pids is not None
        assert m.pids.current == 1
        cpu_dir = driver.layout.v1["cpu"].dir_of(req.path.path)
        assert (cpu_dir / "cpu.shares").read_text().strip() == "512"
        # Update on the running thread
        cg.update(CpuLimits(quota=50000))
        assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
        # removal moves the live thread home first
        assert cg.remove() == []
        assert not cpu_dir.exists()
        assert _cpu_cgroup_of(int(result["tid"])) == home
    finally:
        release.set()
        t.join(10)


def test_bad_input_creates_nothing(driver: CgroupDriver, parent: CgroupPath) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.cpu\.quota"):
        CgroupRequest.from_spec(
            {"linux": {"cgroupsPath": f"{parent}/c1", "resources": {"cpu": {"quota": 500}}}}
        )
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath"):
        CgroupRequest.from_spec({"linux": {"cgroupsPath": f"{parent}/../../../x"}})
    for h in driver.layout.hierarchies():
        assert not h.dir_of(parent.path).exists()
    if driver.version == 1:
        cg = ContainerCgroup.create(driver, parent.child("c1"), CpuLimits(), CreationRecord())
        # the minimum CpuLimits checks is the kernel's: past the check, the kernel refuses
        with pytest.raises(InvalidArgument, match=r"resources\.cpu\.quota: the kernel refused"):
            driver.apply_cpu(cg.path, CpuLimits(quota=999), "resources")
        assert cg.remove() == []


def test_daemon_cgroup_holds_a_whole_process(driver: CgroupDriver, parent: CgroupPath) -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        home = read_proc_cgroup(child.pid)
        path = daemon_cgroup_path(parent.child("pod"), "sb1")
        daemon = DaemonCgroup.join(driver, path, CreationRecord(), pid=child.pid)
        now = read_proc_cgroup(child.pid)
        wanted = ("cpu", "cpuacct", "memory") if driver.version == 1 else ("",)
        for name in wanted:
            assert now[name] == path.path, name
        assert daemon.leave() == []
        assert read_proc_cgroup(child.pid) == home
        for h in driver.layout.hierarchies():
            assert not h.dir_of(parent.path).exists() or not any(h.dir_of(parent.path).iterdir())
    finally:
        child.kill()
        child.wait()


def test_delete_action_cleans_up_after_a_sigkilled_shim(
    driver: CgroupDriver, parent: CgroupPath, tmp_path: Path
) -> None:
    sandbox_bundle, container_bundle = tmp_path / "sb", tmp_path / "c1"
    sandbox_bundle.mkdir()
    container_bundle.mkdir()
    pod = parent.child("pod")
    script = textwrap.dedent(
        f"""
        import threading, time
        from pathlib import Path
        from runwasi_py._cgroups import *
        d = driver_for(discover())
        DaemonCgroup.join(d, daemon_cgroup_path(CgroupPath({pod.path!r}), "sb"),
                          CreationRecord(Path({str(sandbox_bundle)!r}) / RECORD_NAME))
        cg = ContainerCgroup.create(d, CgroupPath({pod.path!r} + "/c1"), CpuLimits(quota=50000),
                                    CreationRecord(Path({str(container_bundle)!r}) / RECORD_NAME))
        def work():
            cg.place_current_thread()
            print("ready", flush=True)
            time.sleep(60)
        threading.Thread(target=work).start()
        """
    )
    shim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert shim.stdout is not None
        assert shim.stdout.readline().strip() == "ready"
    finally:
        shim.send_signal(signal.SIGKILL)
        shim.wait()
        if shim.stdout is not None:
            shim.stdout.close()
    assert (container_bundle / RECORD_NAME).exists()
    # containerd runs `delete` in each bundle, in no promised order
    assert cleanup_bundle(sandbox_bundle) == [] or driver.version == 1
    assert cleanup_bundle(container_bundle) == []
    assert cleanup_bundle(sandbox_bundle) == []
    for h in driver.layout.hierarchies():
        assert not h.dir_of(parent.path).exists()  # the test parent was made by the shim too
    assert not (container_bundle / RECORD_NAME).exists()


@pytest.fixture
def netns() -> Iterator[str]:
    require_root()
    name = f"runwasi-py-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


def test_a_thread_joins_a_network_namespace_and_comes_back(netns: str) -> None:
    plan = NamespacePlan.from_spec(
        {"linux": {"namespaces": [{"type": "network", "path": netns}, {"type": "uts"}]}}
    )
    seen: dict[str, int] = {}

    def work(done: threading.Event) -> None:
        tid = threading.get_native_id()
        task = f"/proc/self/task/{tid}/ns"
        with plan.entered():
            seen["net_in"] = os.stat(f"{task}/net").st_ino
            seen["uts_in"] = os.stat(f"{task}/uts").st_ino
            seen["tid_net"] = os.stat(f"/proc/{tid}/ns/net").st_ino
        seen["net_after"] = os.stat(f"{task}/net").st_ino
        seen["uts_after"] = os.stat(f"{task}/uts").st_ino
        done.set()

    t, done = _in_thread(work)
    t.join(10)
    plan.close()
    assert done.is_set()
    own_net = os.stat("/proc/thread-self/ns/net").st_ino
    own_uts = os.stat("/proc/thread-self/ns/uts").st_ino
    assert seen["net_in"] == os.stat(netns).st_ino != own_net
    assert seen["tid_net"] == seen["net_in"]  # what containerd reads for the task's pid
    assert seen["uts_in"] != own_uts  # a new UTS namespace for that thread alone
    assert (seen["net_after"], seen["uts_after"]) == (own_net, own_uts)
    assert os.stat("/proc/self/ns/net").st_ino == own_net  # the rest of the process stayed


def test_v2_threaded_subtree_on_the_real_kernel() -> None:
    """The v2 driver against a real cgroup2 hierarchy (a hybrid host's controller-less
    ``unified`` mount is enough for threaded subtrees): this process plays the daemon."""
    require_root()
    from runwasi_py._cgroups import CgroupLayout, CgroupMode
    from runwasi_py._cgroups._v2 import CgroupV2

    host = discover()
    if host.unified is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    if host.mode.is_v2:
        pytest.skip("a v2 host: the pod tests run the v2 driver for real")
    driver = CgroupV2(CgroupLayout(mode=CgroupMode.UNIFIED, unified=host.unified))
    parent = CgroupPath(f"/runwasi-py-test-{uuid.uuid4().hex[:10]}")
    daemon = DaemonCgroup.join(driver, daemon_cgroup_path(parent, "sb"), CreationRecord())
    root = host.unified.mountpoint
    try:
        assert read_proc_cgroup(os.getpid())[""] == daemon.path.path
        cg = ContainerCgroup.create(driver, parent.child("c1"), CpuLimits(), CreationRecord())
        assert cg.path == daemon.path.child("c1")  # below the daemon's, not beside it
        seen: dict[str, str] = {}

        def work(done: threading.Event) -> None:
            tid = cg.place_current_thread()
            seen["in"] = read_proc_cgroup(f"self/task/{tid}")[""]
            cg.release_current_thread()
            seen["after"] = read_proc_cgroup(f"self/task/{tid}")[""]
            done.set()

        t, done = _in_thread(work)
        t.join(10)
        assert done.is_set()
        assert seen == {"in": cg.path.path, "after": daemon.path.path}
        assert (root / cg.path.path.lstrip("/") / "cgroup.type").read_text().strip() == "threaded"
        domain = (root / daemon.path.path.lstrip("/") / "cgroup.type").read_text().strip()
        assert domain == "domain threaded"
        assert cg.remove() == []
        assert not (root / cg.path.path.lstrip("/")).exists()
    finally:
        assert daemon.leave() == []
    assert read_proc_cgroup(os.getpid())[""] == "/"
    assert not (root / parent.path.lstrip("/")).exists()
