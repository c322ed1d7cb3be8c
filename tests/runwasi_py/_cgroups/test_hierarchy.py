"""Hierarchy discovery from mountinfo and /proc/<pid>/cgroup, for every layout we support."""

from __future__ import annotations

from pathlib import Path

import pytest

from runwasi_py._cgroups import CgroupMode, parse_mountinfo, parse_proc_cgroup

# this machine: v1, cpu and cpuacct separate, plus an empty cgroup2 at unified/ (hybrid)
THIS_MACHINE = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

JOINED = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 / /sys/fs/cgroup/pids rw,nosuid shared:10 - cgroup cgroup rw,pids
"""

UNIFIED = "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_this_machine_is_hybrid_with_separate_cpu_and_cpuacct() -> None:
    layout = parse_mountinfo(THIS_MACHINE)
    assert layout.mode is CgroupMode.HYBRID
    assert not layout.mode.is_v2
    assert layout.v1["cpu"].mountpoint == Path("/sys/fs/cgroup/cpu")
    assert layout.v1["cpuacct"].mountpoint == Path("/sys/fs/cgroup/cpuacct")
    assert len(layout.v1_for(["cpu", "cpuacct"])) == 2
    assert layout.unified is not None
    assert layout.unified.mountpoint == Path("/sys/fs/cgroup/unified")
    assert "name=systemd" in layout.v1


def test_joined_cpu_cpuacct_is_one_hierarchy() -> None:
    layout = parse_mountinfo(JOINED)
    assert layout.mode is CgroupMode.LEGACY
    assert layout.v1["cpu"] is layout.v1["cpuacct"]
    assert layout.v1_for(["cpu", "cpuacct"]) == [layout.v1["cpu"]]
    assert layout.v1["cpu"].controllers == frozenset({"cpu", "cpuacct"})
    assert len(layout.hierarchies()) == 2


def test_unified_only() -> None:
    layout = parse_mountinfo(UNIFIED)
    assert layout.mode is CgroupMode.UNIFIED
    assert layout.v1 == {}
    assert layout.hierarchies() == [layout.unified]


def test_named_hierarchy_alone_with_cgroup2_is_unified() -> None:
    text = UNIFIED + "40 31 0:37 / /run/systemd rw - cgroup cgroup rw,name=systemd\n"
    assert parse_mountinfo(text).mode is CgroupMode.UNIFIED


def test_escaped_mountpoint_and_subtree_root() -> None:
    text = "1 0 0:1 /docker/abc /mnt/my\\040cg rw - cgroup cgroup rw,cpu\n"
    h = parse_mountinfo(text).v1["cpu"]
    assert h.mountpoint == Path("/mnt/my cg")
    assert h.dir_of("/docker/abc/x") == Path("/mnt/my cg/x")
    with pytest.raises(ValueError, match="outside mount root"):
        h.dir_of("/other")


def test_whole_hierarchy_mount_wins_over_a_subtree_bind() -> None:
    text = (
        "1 0 0:1 /sub /a rw - cgroup cgroup rw,cpu\n"
        "2 0 0:1 / /b rw - cgroup cgroup rw,cpu\n"
        "3 0 0:1 / /c rw - cgroup cgroup rw,cpu\n"
    )
    assert parse_mountinfo(text).v1["cpu"].mountpoint == Path("/b")


def test_no_cgroups_is_an_error() -> None:
    with pytest.raises(ValueError, match="no cgroup"):
        parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/sda rw\n")


def test_proc_cgroup() -> None:
    text = "4:cpu,cpuacct:/kubepods/p1\n1:name=systemd:/\n0::/pod/shim\n"
    got = parse_proc_cgroup(text)
    assert got == {
        "cpu": "/kubepods/p1",
        "cpuacct": "/kubepods/p1",
        "name=systemd": "/",
        "": "/pod/shim",
    }


def test_real_machine_discovery_finds_cpu() -> None:
    from runwasi_py._cgroups import discover

    layout = discover()
    if layout.mode.is_v2:
        assert layout.unified is not None
    else:
        assert "cpu" in layout.v1
