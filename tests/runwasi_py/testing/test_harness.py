"""The private containerd harness: config, refusal messages, start/stop, cleanup, CLI."""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py.cli import main
from runwasi_py.containerd import (
    ContainerdError,
    ContainerdPaths,
    ContainerdUnavailable,
    CtrError,
    PrivateContainerd,
    check_available,
    default_workdir,
    render_config,
)
from runwasi_py.containerd._cleanup import _unescape, mounts_under, process_alive
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
    fake.write_text("#!/bin/sh\necho 'fatal: cannot boot' >&2\nexit 3\n")
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
