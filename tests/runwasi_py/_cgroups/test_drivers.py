"""The v1 and v2 drivers and the placement objects against fake cgroupfs trees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runwasi_py._cgroups import (
    RECORD_NAME,
    CgroupPath,
    CgroupRequest,
    ContainerCgroup,
    CpuLimits,
    CreationRecord,
    DaemonCgroup,
    EngineMemory,
    cleanup_bundle,
    daemon_cgroup_path,
)
from runwasi_py._errors import FailedPrecondition, InvalidArgument
from runwasi_py._proto.messages import cgroups_v1, cgroups_v2, pack_any

from .fakefs import v1_host, v2_host

POD = CgroupPath("/kubepods/pod1")


def test_v1_creates_missing_dirs_below_what_exists_and_records_only_those(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    (host.root / "cpu" / "kubepods").mkdir()  # kubelet made part of the path in one hierarchy
    record = CreationRecord(tmp_path / RECORD_NAME)
    cg = ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(), record)
    assert cg.path == POD.child("c1")
    assert (host.root / "cpu/kubepods/pod1/c1").is_dir()
    assert (host.root / "cpuacct/kubepods/pod1/c1").is_dir()
    assert not (host.root / "memory/kubepods").exists()  # memory cannot hold a thread
    saved = json.loads((tmp_path / RECORD_NAME).read_text())["dirs"]
    assert str(host.root / "cpu/kubepods") not in saved
    assert str(host.root / "cpu/kubepods/pod1") in saved
    assert str(host.root / "cpuacct/kubepods") in saved
    assert cg.remove() == []
    assert (host.root / "cpu/kubepods").is_dir()  # not ours: stays
    assert not (host.root / "cpu/kubepods/pod1").exists()
    assert not (host.root / "cpuacct/kubepods").exists()
    assert not (tmp_path / RECORD_NAME).exists()


def test_v1_limits_placement_and_update(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    cpu = CpuLimits(shares=256, quota=20000, period=100000)
    cg = ContainerCgroup.create(host.driver, POD.child("c1"), cpu, CreationRecord())
    d = host.root / "cpu/kubepods/pod1/c1"
    assert (d / "cpu.shares").read_text() == "256"
    assert (d / "cpu.cfs_period_us").read_text() == "100000"
    assert (d / "cpu.cfs_quota_us").read_text() == "20000"
    tid = cg.place_current_thread()
    assert (d / "tasks").read_text() == str(tid)
    assert (host.root / "cpuacct/kubepods/pod1/c1/tasks").read_text() == str(tid)
    cg.update(CpuLimits(quota=-1))
    assert (d / "cpu.cfs_quota_us").read_text() == "-1"
    assert (d / "cpu.shares").read_text() == "256"


def test_v1_joined_hierarchy_gets_one_directory(tmp_path: Path) -> None:
    host = v1_host(tmp_path, joined=True)
    record = CreationRecord()
    cg = ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(quota=5000), record)
    assert len(record.dirs) == 3  # kubepods, pod1, c1 in the one cpu,cpuacct mount
    assert (host.root / "cpu,cpuacct/kubepods/pod1/c1/cpu.cfs_quota_us").read_text() == "5000"
    cg.place_current_thread()
    assert cg.remove() == []


def test_v1_failed_create_leaves_nothing(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    (host.root / "cpuacct" / "kubepods").write_text("")  # mkdir below it fails
    record = CreationRecord(tmp_path / RECORD_NAME)
    with pytest.raises(FailedPrecondition, match="cannot create cgroup /kubepods/pod1/c1"):
        ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(), record)
    assert not (host.root / "cpu" / "kubepods").exists()  # the cpu half was removed again
    assert record.dirs == []
    assert not (tmp_path / RECORD_NAME).exists()


def test_v1_stats_read_cpuacct_and_throttling(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    cg = ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(), CreationRecord())
    acct = host.root / "cpuacct/kubepods/pod1/c1"
    (acct / "cpuacct.usage").write_text("123456789\n")
    (acct / "cpuacct.usage_percpu").write_text("100000000 23456789 \n")
    (acct / "cpuacct.stat").write_text("user 7\nsystem 3\n")
    (host.root / "cpu/kubepods/pod1/c1/cpu.stat").write_text(
        "nr_periods 50\nnr_throttled 40\nthrottled_time 999\n"
    )
    (host.root / "cpu/kubepods/pod1/c1/tasks").write_text("4242\n")
    m = cg.metrics(EngineMemory(usage=4096, limit=1 << 20))
    assert isinstance(m, cgroups_v1.Metrics)
    assert m.cpu is not None
    assert m.cpu.usage is not None
    assert m.cpu.throttling is not None
    assert m.memory is not None
    assert m.memory.usage is not None
    assert m.pids is not None
    assert pack_any(m).type_url == "io.containerd.cgroups.v1.Metrics"
    assert m.cpu.usage.total == 123456789
    assert m.cpu.usage.per_cpu == [100000000, 23456789]
    assert m.cpu.usage.user > m.cpu.usage.kernel > 0
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_periods) == (50, 40)
    assert m.cpu.throttling.throttled_time == 999
    assert m.memory.usage.usage == 4096
    assert m.memory.usage.limit == 1 << 20
    assert m.pids.current == 1


def test_v1_daemon_joins_the_accounting_hierarchies_only(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    record = CreationRecord()
    path = daemon_cgroup_path(POD, "sb1")
    assert path.path == "/kubepods/pod1/runwasi-py-shim-sb1"
    daemon = DaemonCgroup.join(host.driver, path, record, pid=4242)
    for h in ("cpu", "cpuacct", "memory"):
        procs = host.root / h / "kubepods/pod1/runwasi-py-shim-sb1/cgroup.procs"
        assert procs.read_text() == "4242"
    assert not (host.root / "cpuset" / "kubepods").exists()  # nothing the pod is measured by
    for p in host.root.glob("*/kubepods/pod1/runwasi-py-shim-sb1/cgroup.procs"):
        p.unlink()  # the fake kernel: the process has left once leave() wrote it elsewhere
    assert daemon.leave() == []
    assert (host.root / "cpu" / "cgroup.procs").read_text() == "4242"  # home was the root
    assert not (host.root / "memory" / "kubepods").exists()


def test_v1_a_new_cpuset_gets_its_parents_values(tmp_path: Path) -> None:
    host = v1_host(tmp_path, cpuset_with_memory=True)
    DaemonCgroup.join(host.driver, daemon_cgroup_path(POD, "sb1"), CreationRecord(), pid=4242)
    d = host.root / "memory,cpuset/kubepods/pod1/runwasi-py-shim-sb1"
    assert (d / "cgroup.procs").read_text() == "4242"
    assert (d.parent / "cpuset.cpus").read_text() == "0-1"
    assert (d / "cpuset.mems").read_text() == "0"


def test_cleanup_bundle_removes_what_a_killed_shim_recorded(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ContainerCgroup.create(
        host.driver, POD.child("c1"), CpuLimits(), CreationRecord(bundle / RECORD_NAME)
    )
    # the shim is gone: only the bundle's record is left
    assert cleanup_bundle(bundle, host.driver) == []
    assert not (host.root / "cpu" / "kubepods").exists()
    assert cleanup_bundle(bundle, host.driver) == []  # twice is fine
    assert cleanup_bundle(tmp_path / "no-such-bundle", host.driver) == []


def test_cleanup_refuses_a_record_outside_the_cgroup_mounts(tmp_path: Path) -> None:
    host = v1_host(tmp_path)
    victim = tmp_path / "precious"
    victim.mkdir()
    (tmp_path / RECORD_NAME).write_text(json.dumps({"dirs": [str(victim)]}))
    with pytest.raises(FailedPrecondition, match="outside every cgroup mount"):
        cleanup_bundle(tmp_path, host.driver)
    assert victim.is_dir()


def test_v2_thread_cgroups_sit_below_the_daemons_in_a_threaded_subtree(tmp_path: Path) -> None:
    host = v2_host(tmp_path, own="/kubepods/pod1/runwasi-py-shim-sb1")
    daemon_dir = host.root / "kubepods/pod1/runwasi-py-shim-sb1"
    daemon_dir.mkdir(parents=True)
    (daemon_dir / "cgroup.controllers").write_text("cpu memory pids\n")
    record = CreationRecord()
    cg = ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(), record)
    assert cg.path.path == "/kubepods/pod1/runwasi-py-shim-sb1/c1"
    assert record.dirs == [daemon_dir / "c1"]
    assert (daemon_dir / "c1" / "cgroup.type").read_text() == "threaded"
    assert (daemon_dir / "cgroup.subtree_control").read_text() == "+cpu"
    # without the kernel's cpu files the controller is not there: a clear error
    with pytest.raises(FailedPrecondition, match="cpu controller is not enabled"):
        cg.update(CpuLimits(quota=20000))
    (daemon_dir / "c1" / "cpu.max").write_text("max 100000\n")  # what the kernel shows
    cg.update(CpuLimits(shares=1024, quota=20000))
    assert (daemon_dir / "c1" / "cpu.max").read_text() == "20000 100000"
    assert (daemon_dir / "c1" / "cpu.weight").read_text() == "39"
    tid = cg.place_current_thread()
    assert (daemon_dir / "c1" / "cgroup.threads").read_text() == str(tid)
    (daemon_dir / "c1" / "cpu.stat").write_text(
        "usage_usec 5000\nuser_usec 4000\nsystem_usec 1000\nnr_periods 9\nnr_throttled 8\n"
        "throttled_usec 70\n"
    )
    m = cg.metrics(EngineMemory(usage=10, limit=20))
    assert isinstance(m, cgroups_v2.Metrics)
    assert m.cpu is not None
    assert m.memory is not None
    assert m.pids is not None
    assert (m.cpu.usage_usec, m.cpu.nr_throttled, m.cpu.throttled_usec) == (5000, 8, 70)
    assert (m.memory.usage, m.memory.usage_limit, m.pids.current) == (10, 20, 1)
    assert cg.remove() == []
    assert (daemon_dir / "cgroup.threads").read_text() == str(tid)  # moved to the domain
    assert not (daemon_dir / "c1").exists()


def test_v2_needs_a_daemon_cgroup(tmp_path: Path) -> None:
    host = v2_host(tmp_path, own="/")
    with pytest.raises(FailedPrecondition, match="root cgroup"):
        ContainerCgroup.create(host.driver, POD.child("c1"), CpuLimits(), CreationRecord())


def test_v2_daemon_join_enables_controllers_down_the_path(tmp_path: Path) -> None:
    host = v2_host(tmp_path)
    record = CreationRecord()
    DaemonCgroup.join(host.driver, daemon_cgroup_path(POD, "sb1"), record, pid=4242)
    leaf = host.root / "kubepods/pod1/runwasi-py-shim-sb1"
    assert (leaf / "cgroup.procs").read_text() == "4242"
    assert (
        host.root / "cgroup.subtree_control"
    ).read_text() == "+io"  # the last of cpu memory pids io
    assert len(record.dirs) == 3


def test_request_from_spec_validates_before_anything_is_made() -> None:
    spec = {"linux": {"cgroupsPath": "/../../x", "resources": {"cpu": {"quota": 20000}}}}
    with pytest.raises(InvalidArgument, match=r"linux\.cgroupsPath"):
        CgroupRequest.from_spec(spec)
    spec = {"linux": {"cgroupsPath": "/k/p/c", "resources": {"cpu": {"quota": 10}}}}
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.cpu\.quota"):
        CgroupRequest.from_spec(spec)
    req = CgroupRequest.from_spec({"linux": {"cgroupsPath": "k.slice:cri:c1"}}, systemd=True)
    assert req.path is not None
    assert req.path.path == "/k.slice/cri-c1.scope"
    assert CgroupRequest.from_spec({}).path is None


# -- rmdir: a cgroup whose last task is still exiting --------------------------------------


@pytest.mark.parametrize(
    ("contents", "calls_until_done"),
    [
        ("empty", 3),  # EBUSY twice while a task exits, then gone
        ("task", 1),  # a task listed: busy for real, raised at once
        ("child", 1),  # a child cgroup: busy for real, raised at once
    ],
)
def test_rmdir_retries_only_an_ebusy_of_an_empty_looking_cgroup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contents: str, calls_until_done: int
) -> None:
    import errno
    import os

    from runwasi_py._cgroups import _driver

    cg = tmp_path / "runwasi-py-shim-pod1"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("4242\n" if contents == "task" else "")
    if contents == "child":
        (cg / "c1").mkdir()
    calls: list[Path] = []

    def rmdir(path: Path) -> None:
        calls.append(path)
        if len(calls) < 3:
            raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(os, "rmdir", rmdir)
    monkeypatch.setattr(_driver, "_RMDIR_RETRIES", (0.0,) * 4)
    if calls_until_done == 1:
        with pytest.raises(OSError, match="busy"):
            _driver.CgroupDriver.rmdir(object(), cg)  # type: ignore[arg-type]
    else:
        _driver.CgroupDriver.rmdir(object(), cg)  # type: ignore[arg-type]
    assert len(calls) == calls_until_done
    assert os.path.isdir(cg)  # the fake rmdir removed nothing
