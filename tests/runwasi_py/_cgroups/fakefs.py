"""Fake cgroupfs trees in a tmp dir: v1 (separate or joined cpu/cpuacct) and v2 layouts.

A fake is plain directories and files, so it checks what the drivers create and write, not
the kernel's rules (those are the real tests' job, tests/integration/test_cgroups_host.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runwasi_py._cgroups import CgroupDriver, CgroupLayout, driver_for, parse_mountinfo


@dataclass
class FakeHost:
    root: Path
    proc: Path
    layout: CgroupLayout

    @property
    def driver(self) -> CgroupDriver:
        driver = driver_for(self.layout, self.proc)
        driver.rmdir = _fake_rmdir  # type: ignore[method-assign]
        return driver

    def set_own_cgroups(self, text: str) -> None:
        for who in ("self", str(os.getpid()), "4242"):  # 4242: a fake daemon pid
            d = self.proc / who
            d.mkdir(parents=True, exist_ok=True)
            (d / "cgroup").write_text(text)


def _fake_rmdir(directory: Path) -> None:
    # cgroupfs removes a cgroup's control files with it; a tmp dir needs them unlinked
    for f in directory.iterdir():
        if f.is_file():
            f.unlink()
    directory.rmdir()


def v1_host(tmp: Path, *, joined: bool = False, cpuset_with_memory: bool = False) -> FakeHost:
    root, proc = tmp / "cg", tmp / "proc"
    groups = (
        [("cpu,cpuacct", "cpu,cpuacct")] if joined else [("cpu", "cpu"), ("cpuacct", "cpuacct")]
    )
    if cpuset_with_memory:
        groups += [("memory,cpuset", "memory,cpuset")]
    else:
        groups += [("memory", "memory"), ("cpuset", "cpuset")]
    lines = []
    for i, (dirname, opts) in enumerate(groups):
        (root / dirname).mkdir(parents=True)
        lines.append(f"{30 + i} 1 0:{30 + i} / {root / dirname} rw - cgroup cgroup rw,{opts}")
    cpuset = root / ("memory,cpuset" if cpuset_with_memory else "cpuset")
    (cpuset / "cpuset.cpus").write_text("0-1\n")
    (cpuset / "cpuset.mems").write_text("0\n")
    host = FakeHost(root, proc, parse_mountinfo("\n".join(lines) + "\n"))
    own = "1:cpu,cpuacct:/\n" if joined else "4:memory:/\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n"
    host.set_own_cgroups(own)
    return host


def v2_host(tmp: Path, own: str = "/") -> FakeHost:
    root, proc = tmp / "cg", tmp / "proc"
    root.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    host = FakeHost(root, proc, parse_mountinfo(f"29 1 0:26 / {root} rw - cgroup2 cgroup2 rw\n"))
    host.set_own_cgroups(f"0::{own}\n")
    return host
