"""The private containerd harness: config, refusal messages, start/stop, cleanup, CLI."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._mountinfo import unescape as _unescape
from runwasi_py.cli import main
from runwasi_py.containerd import (
    BIN_ENV,
    ContainerdError,
    ContainerdPaths,
    ContainerdUnavailable,
    CriSettings,
    CtrError,
    PrivateContainerd,
    check_available,
    default_workdir,
    find_build,
    render_config,
)
from runwasi_py.containerd._cleanup import mounts_under, process_alive
from runwasi_py.containerd._cri_setup import lacks_cap_sys_resource
from runwasi_py.containerd._network import bridge_name, choose_subnet
from runwasi_py.containerd._podcgroup import (
    CgroupMount,
    cgroup_mounts,
    create_pod_cgroup,
    remove_cgroup_tree,
)
from runwasi_py.containerd._version import parse_version
from tests.integration._require import require_containerd, unavailable


def test_config_puts_everything_under_workdir_and_disables_cri() -> None:
    paths = ContainerdPaths(Path("/w/c8d"))
    cfg = tomllib.loads(render_config(paths))
    assert cfg["version"] == 2
    assert cfg["disabled_plugins"] == ["io.containerd.grpc.v1.cri"]
    assert cfg["root"] == "/w/c8d/root"
    assert cfg["state"] == "/w/c8d/state"
    assert cfg["grpc"]["address"] == "/w/c8d/containerd.sock"
    assert cfg["ttrpc"]["address"] == "/w/c8d/containerd.sock.ttrpc"
    assert cfg["debug"] == {"address": "/w/c8d/debug.sock", "level": "debug"}
    assert cfg["plugins"]["io.containerd.internal.v1.opt"]["path"] == "/w/c8d/opt"


CRI = CriSettings("localhost/pause:x", Path("/usr/lib/cni"), restrict_oom_score_adj=True)


def test_config_v2_with_cri_names_the_1x_plugin() -> None:
    cfg = tomllib.loads(render_config(ContainerdPaths(Path("/w")), config_version=2, cri=CRI))
    assert cfg["version"] == 2
    assert cfg["disabled_plugins"] == []
    plugin = cfg["plugins"]["io.containerd.grpc.v1.cri"]
    assert plugin["sandbox_image"] == "localhost/pause:x"
    assert plugin["restrict_oom_score_adj"] is True
    runtimes = plugin["containerd"]["runtimes"]
    assert runtimes["pywasmtime"]["runtime_type"] == "io.containerd.pywasmtime.v1"
    assert runtimes["runc"]["runtime_type"] == "io.containerd.runc.v2"
    assert plugin["cni"] == {"bin_dir": "/usr/lib/cni", "conf_dir": "/w/cni/net.d"}


def test_config_v3_splits_cri_and_unpacks_wasm() -> None:
    cfg = tomllib.loads(render_config(ContainerdPaths(Path("/w")), config_version=3, cri=CRI))
    assert cfg["version"] == 3
    runtime = cfg["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["pywasmtime"]["runtime_type"] == (
        "io.containerd.pywasmtime.v1"
    )
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]
    images = cfg["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "localhost/pause:x"
    unpack = cfg["plugins"]["io.containerd.transfer.v1.local"]["unpack_config"]
    assert {u["platform"] for u in unpack} >= {"wasip1/wasm"}
    assert next(u for u in unpack if u["platform"] == "wasip1/wasm")["differ"] == "walking"


def test_config_v3_without_cri_disables_every_cri_plugin() -> None:
    cfg = tomllib.loads(render_config(ContainerdPaths(Path("/w")), config_version=3))
    assert {"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"} <= set(
        cfg["disabled_plugins"]
    )


def test_unknown_config_version_is_refused() -> None:
    with pytest.raises(ValueError, match="config_version 4"):
        render_config(ContainerdPaths(Path("/w")), config_version=4)


def test_versions_are_read_from_both_lines() -> None:
    v16 = parse_version("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1")
    v23 = parse_version("containerd github.com/containerd/containerd/v2 v2.3.4 ")
    assert (v16.config_version, v23.config_version) == (2, 3)
    assert str(v23) == "2.3.4"
    with pytest.raises(ContainerdUnavailable, match="cannot read a version"):
        parse_version("containerd dev")


def test_a_bin_folder_that_is_missing_or_empty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerdUnavailable, match="does not exist"):
        find_build(tmp_path / "nope")
    with pytest.raises(ContainerdUnavailable, match="holds no executable containerd"):
        find_build(tmp_path)


def test_bin_folder_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(BIN_ENV, str(tmp_path / "gone"))
    with pytest.raises(ContainerdUnavailable, match="gone does not exist"):
        find_build()


def test_cli_up_with_a_bad_bin_folder_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root check comes first")
    assert main(["containerd", "up", "--dir", str(tmp_path), "--containerd-bin", "/nope"]) == 1
    assert "containerd bin folder /nope does not exist" in capsys.readouterr().err


def test_oom_rule_follows_cap_sys_resource() -> None:
    assert lacks_cap_sys_resource("CapEff:\t000001fffeffffff\n")  # bit 24 clear
    assert not lacks_cap_sys_resource("CapEff:\t000001ffffffffff\n")


def test_network_names_are_per_harness_and_fit_linux() -> None:
    a, b = ContainerdPaths(Path("/w/a")), ContainerdPaths(Path("/w/b"))
    assert bridge_name(a) != bridge_name(b)
    assert len(bridge_name(a)) <= 15
    assert choose_subnet(a).prefixlen == 24
    assert str(choose_subnet(a)).startswith("10.")


def test_cgroup_mounts_v1_and_v2() -> None:
    v1 = (
        "30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "31 25 0:27 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
        "32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "33 25 0:29 /sub /mnt/again rw - cgroup cgroup rw,cpu\n"
    )
    mounts = cgroup_mounts(v1)
    assert [(str(m.path), m.controllers) for m in mounts] == [
        ("/sys/fs/cgroup/cpu", ("cpu",)),
        ("/sys/fs/cgroup/cpuacct", ("cpuacct",)),
        ("/sys/fs/cgroup/systemd", ("name=systemd",)),
    ]
    v2 = "40 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    assert [(str(m.path), m.version) for m in cgroup_mounts(v2)] == [("/sys/fs/cgroup", 2)]


def test_pod_cgroup_on_v2_enables_controllers_on_the_way_down(tmp_path: Path) -> None:
    # A stand-in unified hierarchy: plain files where the kernel has control files.
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    v2 = [CgroupMount(tmp_path, 2, ())]
    pod = create_pod_cgroup("/harness/pod1", mounts=v2)
    assert pod.path == "/harness/pod1"
    assert pod.dirs == (tmp_path / "harness" / "pod1",)
    for node in (tmp_path, tmp_path / "harness", tmp_path / "harness" / "pod1"):
        assert (node / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    for f in [*(tmp_path / "harness").rglob("cgroup.*")]:
        f.unlink()  # a real cgroupfs has no files to delete: rmdir takes them along
    assert remove_cgroup_tree("/harness", mounts=v2) == []
    assert not (tmp_path / "harness").exists()


def test_pod_cgroup_on_v1_is_made_in_every_hierarchy(tmp_path: Path) -> None:
    mounts = [CgroupMount(tmp_path / c, 1, (c,)) for c in ("cpu", "cpuacct", "memory")]
    for m in mounts:
        m.path.mkdir()
    pod = create_pod_cgroup("/harness/pod2", mounts=mounts)
    assert [d.relative_to(tmp_path).as_posix() for d in pod.dirs] == [
        "cpu/harness/pod2",
        "cpuacct/harness/pod2",
        "memory/harness/pod2",
    ]
    assert all(d.is_dir() for d in pod.dirs)


@pytest.mark.parametrize("bad", ["", "/", "/a/../../etc", "../x"])
def test_pod_cgroup_paths_that_escape_are_refused(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="below the root"):
        create_pod_cgroup(bad, mounts=[CgroupMount(tmp_path, 1, ("cpu",))])


def test_config_escapes_odd_paths() -> None:
    cfg = tomllib.loads(render_config(ContainerdPaths(Path('/w/a "q" \\b'))))
    assert cfg["root"] == '/w/a "q" \\b/root'


def test_not_root_is_refused_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ContainerdUnavailable, match="needs root"):
        check_available()
    with pytest.raises(ContainerdUnavailable, match="needs root"):
        PrivateContainerd("/tmp/x").start()


def test_missing_containerd_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ContainerdUnavailable, match="apt-get install containerd"):
        check_available(containerd="no-such-containerd-binary")
    with pytest.raises(ContainerdUnavailable, match="apt-get install containerd"):
        PrivateContainerd("/tmp/x", containerd="no-such-containerd-binary").start()


def test_cli_up_refuses_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["containerd", "up", "--dir", str(tmp_path)]) == 1
    assert "needs root" in capsys.readouterr().err


def test_default_workdir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert default_workdir() == Path("/run/user/7/runwasi-py/containerd")
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_workdir() == Path("/run/runwasi-py/containerd")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_workdir() == Path.cwd() / ".work" / "containerd"


def test_mountinfo_unescape() -> None:
    assert _unescape(r"/a\040b\011c\134d") == "/a b\tc\\d"
    assert _unescape("/plain") == "/plain"


def test_process_alive_treats_zombies_as_dead() -> None:
    assert process_alive(os.getpid())
    proc = subprocess.Popen(["true"])
    # Not yet reaped: a zombie once it exits.
    for _ in range(500):
        if not process_alive(proc.pid):
            break
        os.sched_yield()
        subprocess.run(["true"], check=True)
    assert not process_alive(proc.pid)
    proc.wait()


# -- with a real containerd -------------------------------------------------------------------


@pytest.fixture
def c8d(tmp_path: Path) -> Iterator[PrivateContainerd]:
    require_containerd()
    c = PrivateContainerd(tmp_path / "c8d")
    yield c
    c.stop()


@pytest.mark.containerd
def test_start_answers_and_stop_removes_everything_but_the_log(c8d: PrivateContainerd) -> None:
    c8d.start()
    pid = c8d.pid
    assert pid is not None
    assert process_alive(pid)
    assert "Server:" in c8d.ctr("version").stdout
    c8d.stop()
    assert not process_alive(pid)
    assert not c8d.is_running()
    left = sorted(p.name for p in c8d.workdir.iterdir())
    assert left == ["config.toml", "containerd.log"]
    assert "containerd successfully booted" in c8d.log_path.read_text()


@pytest.mark.containerd
def test_ctr_failure_carries_output(c8d: PrivateContainerd) -> None:
    c8d.start()
    with pytest.raises(CtrError, match="not found") as e:
        c8d.ctr("containers", "info", "no-such-container")
    assert e.value.returncode != 0
    assert c8d.ctr("containers", "info", "nope", check=False).returncode != 0


@pytest.mark.containerd
def test_a_containerd_that_dies_at_start_reports_the_log(tmp_path: Path) -> None:
    require_containerd()
    fake = tmp_path / "fake-containerd"
    fake.write_text(
        '#!/bin/sh\n[ "$1" = --version ] && echo "containerd fake 1.6.0" && exit 0\n'
        "echo 'fatal: cannot boot' >&2\nexit 3\n"
    )
    fake.chmod(0o755)
    c = PrivateContainerd(tmp_path / "c8d", containerd=str(fake))
    with pytest.raises(ContainerdError, match="exited with 3") as e:
        c.start()
    assert "fatal: cannot boot" in str(e.value)
    assert not c.is_running()


@pytest.mark.containerd
def test_starting_twice_is_refused(c8d: PrivateContainerd) -> None:
    c8d.start()
    with pytest.raises(ContainerdError, match="already runs"):
        PrivateContainerd(c8d.workdir).start()


@pytest.mark.containerd
def test_too_long_workdir_is_refused(tmp_path: Path) -> None:
    require_containerd()
    with pytest.raises(ContainerdError, match="too long for a unix socket"):
        PrivateContainerd(tmp_path / ("x" * 100)).start()


@pytest.mark.containerd
def test_restart_keeps_state(c8d: PrivateContainerd) -> None:
    c8d.start()
    c8d.ctr("namespaces", "create", "kept")
    first = c8d.pid
    c8d.restart()
    assert c8d.pid != first
    assert "kept" in c8d.ctr("namespaces", "ls", "-q").stdout.split()


@pytest.mark.containerd
def test_stop_kills_leftover_shims_and_unmounts(c8d: PrivateContainerd) -> None:
    c8d.start()
    bundle = c8d.bundle("leftover")
    bundle.mkdir(parents=True)
    # Stand-ins for what a crashed run leaves: a daemon whose cwd is its bundle, one that
    # names our socket in its argv, and a mount under the state dir.
    by_cwd = subprocess.Popen(["sleep", "600"], cwd=bundle)
    by_argv = subprocess.Popen(["sh", "-c", "sleep 600", "shim", "-address", c8d.address])
    (bundle / "rootfs").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(bundle / "rootfs")], check=True)
    try:
        assert set(c8d.leftover_processes()) >= {by_cwd.pid, by_argv.pid}
        assert mounts_under(c8d.workdir) == [str(bundle / "rootfs")]
        c8d.stop()
        assert by_cwd.wait(5) == -9
        assert by_argv.wait(5) == -9
        assert mounts_under(c8d.workdir) == []
        assert not bundle.exists()
    finally:
        for p in (by_cwd, by_argv):
            if p.poll() is None:
                p.kill()
                p.wait()
        if mounts_under(c8d.workdir):
            subprocess.run(["umount", "-l", str(bundle / "rootfs")], check=False)


@pytest.mark.containerd
@pytest.mark.anyio
async def test_async_context_manager(tmp_path: Path) -> None:
    require_containerd()
    async with PrivateContainerd(tmp_path / "c8d") as c:
        assert c.is_running()
        pid = c.pid
    assert pid is not None
    assert not process_alive(pid)


@pytest.mark.containerd
def test_cli_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_containerd()
    d = str(tmp_path / "cli")
    assert main(["containerd", "status", "--dir", d]) == 3
    assert "not running" in capsys.readouterr().out
    try:
        assert main(["containerd", "up", "--dir", d]) == 0
        assert capsys.readouterr().out.strip() == f"{d}/containerd.sock"
        assert main(["containerd", "status", "--dir", d]) == 0
        assert "running pid" in capsys.readouterr().out
        pid = PrivateContainerd(d).pid
        assert pid is not None
    finally:
        assert main(["containerd", "down", "--dir", d]) == 0
    assert "stopped containerd" in capsys.readouterr().out
    assert not process_alive(pid)
    assert main(["containerd", "status", "--dir", d]) == 3


def test_unavailable_skips_outside_ci_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no containerd here"):
        unavailable("no containerd here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no containerd here"):
        unavailable("no containerd here")


def test_require_containerd_reports_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        require_containerd()
