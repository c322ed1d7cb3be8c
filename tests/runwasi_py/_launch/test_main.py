"""``shim_main`` end to end: -v, -info, start (real daemon), delete, groups."""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runwasi_py._bundle.group import group_mode
from runwasi_py._launch import delete as _delete_mod
from runwasi_py._launch import start as _start_mod
from runwasi_py._launch.address import socket_address
from runwasi_py._launch.info import FEATURES_TYPE_URL
from runwasi_py._launch.main import shim_main
from runwasi_py._mountinfo import is_mountpoint
from runwasi_py._proto.messages import (
    BootstrapParams,
    BootstrapResult,
    DeleteResponse,
    LogLevel,
    RuntimeInfo,
    RuntimeOptions,
    pack_any,
)
from runwasi_py._shim import Shim

# --- in-process actions ------------------------------------------------------------------


class TinyShim(Shim):
    name = "tiny"

    @classmethod
    def version(cls) -> tuple[str, str]:
        return "1.2.3", "abcdef"


def run_main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        shim_main(TinyShim, argv)
    assert isinstance(info.value.code, int)
    return info.value.code


def test_version_flag(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["containerd-shim-tiny-v1"])
    assert run_main(["-v"]) == 0
    out = capsys.readouterr()
    assert out.out == (
        "containerd-shim-tiny-v1:\n  Runtime: tiny\n  Version: 1.2.3\n  Revision: abcdef\n"
    )
    assert out.err == ""


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["-bogus", "start"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flag provided but not defined: -bogus\nUsage of ")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["-h"]) == 0
    assert "-namespace string" in capsys.readouterr().err


def test_missing_namespace(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMESPACE", raising=False)
    assert run_main(["-id", "c1", "start"]) == 1
    assert capsys.readouterr().err == "shim namespace cannot be empty\n"


def test_unknown_action(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["-namespace", "n", "frobnicate"]) == 1
    assert "unknown action 'frobnicate'" in capsys.readouterr().err


# --- subprocess: start / delete / -info like containerd -----------------------------------

FAKE_SHIM = '''
import asyncio, json, os, sys
from runwasi_py._launch.main import shim_main
from runwasi_py._shim import Shim


class FakeShim(Shim):
    """serve() answers "pid" with its pid and stops on "quit"; records how it was run."""

    name = "fake"

    async def serve(self, listener, *, namespace, ttrpc_address, publisher=None):
        stop = asyncio.Event()

        async def handle(reader, writer):
            line = await reader.readline()
            if line == b"quit\\n":
                stop.set()
            writer.write(b"%d\\n" % os.getpid())
            await writer.drain()
            writer.close()

        def target(fd):
            try:
                return os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                return None

        with open("daemon.json", "w") as f:
            json.dump({
                "pid": os.getpid(),
                "sid": os.getsid(0),
                "cwd": os.getcwd(),
                "argv": sys.argv,
                "namespace": namespace,
                "ttrpc_address": ttrpc_address,
                "publisher": type(publisher).__name__,
                "stdio": [target(0), target(1), target(2)],
            }, f)
        server = await asyncio.start_unix_server(handle, sock=listener)
        async with server:
            await stop.wait()


if __name__ == "__main__":
    shim_main(FakeShim)
'''


@pytest.fixture
def shim_script(tmp_path: Path) -> Path:
    path = tmp_path / "fakeshim.py"
    path.write_text(textwrap.dedent(FAKE_SHIM))
    return path


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # short, so that dir + 64 hex digits fits in a unix socket address
    with tempfile.TemporaryDirectory(prefix="rwp-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of daemons a test started; any still alive at the end is killed (and fails it)."""
    pids: list[int] = []
    yield pids
    alive = [pid for pid in pids if _alive(pid)]
    for pid in alive:
        os.kill(pid, 9)
    assert not alive, f"daemons left running: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"daemon {pid} did not exit")
        time.sleep(0.01)


def make_bundle(root: Path, name: str, annotations: dict[str, str] | None = None) -> Path:
    bundle = root / name
    (bundle / "rootfs").mkdir(parents=True)
    spec: dict[str, Any] = {"process": {"args": ["/x.wasm"]}, "root": {"path": "rootfs"}}
    if annotations:
        spec["annotations"] = annotations
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def shim_env(sockdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RUNWASI_PY_SOCKET_DIR=str(sockdir), TTRPC_ADDRESS="/nonexistent.ttrpc")
    env.pop("NAMESPACE", None)
    # start's own protocol, with the daemon spawned: the template (on by default) has its
    # tests in tests/runwasi_py/_template
    env["RUNWASI_PY_TEMPLATE"] = "0"
    env.update(extra)
    return env


def run_shim(
    command: list[str], bundle: Path, env: dict[str, str], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        command, cwd=bundle, env=env, input=stdin, capture_output=True, timeout=30, check=False
    )


def ask(address: str, line: bytes) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address.removeprefix("unix://"))
        sock.sendall(line)
        return int(sock.makefile("rb").readline())


START = ["-namespace", "ns1", "-address", "/run/test/containerd.sock"]
START += ["-publish-binary", "/usr/bin/containerd"]


def test_start_spawns_detached_daemon(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    bundle = make_bundle(tmp_path, "c1")
    env = shim_env(sockdir)
    result = run_shim([sys.executable, str(shim_script), *START, "-id", "c1", "start"], bundle, env)
    expected = socket_address("/run/test/containerd.sock", "ns1", "c1", directory=str(sockdir))
    assert result.stderr == b""
    assert result.stdout == expected.encode()  # exactly the address: no newline, nothing else
    assert result.returncode == 0
    assert (bundle / "address").read_text() == expected
    sock_path = Path(expected.removeprefix("unix://"))
    assert oct(sock_path.stat().st_mode & 0o777) == oct(0o600)
    assert oct(sockdir.stat().st_mode & 0o777) == oct(0o700)

    pid = ask(expected, b"pid\n")
    daemons.append(pid)
    info = json.loads((bundle / "daemon.json").read_text())
    assert info["pid"] == pid
    assert info["stdio"] == ["/dev/null"] * 3  # containerd's pipes are not inherited
    assert info["sid"] == pid  # its own session
    assert info["cwd"] == str(bundle)
    assert info["namespace"] == "ns1"
    assert info["ttrpc_address"] == "/nonexistent.ttrpc"
    assert info["publisher"] == "EventPublisher"
    assert info["argv"][0] == str(shim_script)  # the same program, re-executed
    assert "start" not in info["argv"]

    ask(expected, b"quit\n")
    _wait_gone(pid)
    assert not sock_path.exists()  # the daemon removed its socket


def test_start_reuses_live_shim_for_same_sandbox(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    pod = {"io.kubernetes.cri.sandbox-id": "pod1"}
    first = make_bundle(tmp_path, "sandbox", pod)
    second = make_bundle(tmp_path, "app", pod)
    env = shim_env(sockdir)
    r1 = run_shim([sys.executable, str(shim_script), *START, "-id", "sandbox", "start"], first, env)
    assert r1.returncode == 0, r1.stderr
    pid = ask(r1.stdout.decode(), b"pid\n")
    daemons.append(pid)
    r2 = run_shim([sys.executable, str(shim_script), *START, "-id", "app", "start"], second, env)
    assert r2.returncode == 0, r2.stderr
    assert r2.stderr == b""
    assert r2.stdout == r1.stdout
    assert r1.stdout.decode() == socket_address(
        "/run/test/containerd.sock", "ns1", "pod1", directory=str(sockdir)
    )
    assert (second / "address").read_text() == r1.stdout.decode()
    assert ask(r2.stdout.decode(), b"pid\n") == pid  # the same daemon serves both
    assert not (second / "daemon.json").exists()
    ask(r1.stdout.decode(), b"quit\n")
    _wait_gone(pid)


def test_concurrent_starts_for_one_pod_make_one_daemon(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    pod = {"io.kubernetes.cri.sandbox-id": "pod2"}
    bundles = [make_bundle(tmp_path, f"p{i}", pod) for i in range(6)]
    env = shim_env(sockdir)
    procs = [
        subprocess.Popen(
            [sys.executable, str(shim_script), *START, "-id", b.name, "start"],
            cwd=b,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for b in bundles
    ]
    outputs = [p.communicate(timeout=30) for p in procs]
    expected = socket_address("/run/test/containerd.sock", "ns1", "pod2", directory=str(sockdir))
    pid = ask(expected, b"pid\n")
    daemons.append(pid)
    assert [p.returncode for p in procs] == [0] * 6
    assert outputs == [(expected.encode(), b"")] * 6
    spawned = [b for b in bundles if (b / "daemon.json").exists()]
    assert len(spawned) == 1  # one shim for the pod, whichever start won
    assert json.loads((spawned[0] / "daemon.json").read_text())["pid"] == pid
    ask(expected, b"quit\n")
    _wait_gone(pid)


def test_start_replaces_stale_socket_and_reads_bootstrap(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    bundle = make_bundle(tmp_path, "c2")
    boot_dir = sockdir / "boot"
    params = BootstrapParams(
        instance_id="c2",
        namespace="ns1",
        log_level=LogLevel.DEBUG,
        containerd_ttrpc_address="/from/bootstrap.ttrpc",
        socket_dir=str(boot_dir),
    )
    expected = socket_address("/run/test/containerd.sock", "ns1", "c2", directory=str(boot_dir))
    boot_dir.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(expected.removeprefix("unix://"))  # a dead shim's socket file
    env = shim_env(sockdir)
    del env["TTRPC_ADDRESS"]
    command = [sys.executable, str(shim_script), *START, "-id", "c2", "start"]
    result = run_shim(command, bundle, env, stdin=bytes(params))
    assert (result.returncode, result.stderr) == (0, b"")
    # containerd sent BootstrapParams: a protobuf BootstrapResult announcing task API v3
    answer = BootstrapResult.FromString(result.stdout)
    assert answer == BootstrapResult(version=3, address=expected, protocol="ttrpc")
    pid = ask(expected, b"pid\n")
    daemons.append(pid)
    info = json.loads((bundle / "daemon.json").read_text())
    assert info["ttrpc_address"] == "/from/bootstrap.ttrpc"
    assert info["publisher"] == "EventPublisher"
    assert "-debug" in info["argv"]  # DEBUG log level from BootstrapParams
    ask(expected, b"quit\n")
    _wait_gone(pid)


@pytest.mark.parametrize("ref", ["class", "string"])
def test_start_through_importable_class(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int], ref: str
) -> None:
    # shim_main(cls_or_path, argv) with an explicit argv: the daemon is started by importing
    # the class (python -c), not by re-running this command line
    (tmp_path / "fakeshim_mod.py").write_text(shim_script.read_text())
    bundle = make_bundle(tmp_path, f"c3{ref}")
    target = "FakeShim" if ref == "class" else "'fakeshim_mod:FakeShim'"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from fakeshim_mod import FakeShim; "
        f"from runwasi_py._launch.main import shim_main; shim_main({target}, sys.argv[2:])"
    )
    env = shim_env(sockdir, PYTHONPATH=str(tmp_path))
    command = [sys.executable, "-c", code, str(tmp_path), *START, "-id", f"c3{ref}", "start"]
    result = run_shim(command, bundle, env)
    assert (result.returncode, result.stderr) == (0, b"")
    address = result.stdout.decode()
    pid = ask(address, b"pid\n")
    daemons.append(pid)
    info = json.loads((bundle / "daemon.json").read_text())
    assert info["argv"][0] == "-c"  # python -c <import fakeshim_mod:FakeShim> <flags>
    assert "start" not in info["argv"]
    ask(address, b"quit\n")
    _wait_gone(pid)


def test_version_with_import_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        shim_main(f"{__name__}:TinyShim", ["-v"])
    assert info.value.code == 0
    assert "  Runtime: tiny\n  Version: 1.2.3\n" in capsys.readouterr().out


def test_daemon_without_ttrpc_address_discards_events(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    bundle = make_bundle(tmp_path, "c8")
    env = shim_env(sockdir)
    del env["TTRPC_ADDRESS"]
    result = run_shim([sys.executable, str(shim_script), *START, "-id", "c8", "start"], bundle, env)
    assert (result.returncode, result.stderr) == (0, b"")
    pid = ask(result.stdout.decode(), b"pid\n")
    daemons.append(pid)
    info = json.loads((bundle / "daemon.json").read_text())
    assert (info["ttrpc_address"], info["publisher"]) == ("", "NullEventSink")
    ask(result.stdout.decode(), b"quit\n")
    _wait_gone(pid)


def test_start_failure_is_one_line_on_stderr(
    tmp_path: Path, shim_script: Path, sockdir: Path
) -> None:
    bundle = make_bundle(tmp_path, "c4")
    long_dir = sockdir / ("d" * 80)
    env = shim_env(sockdir, RUNWASI_PY_SOCKET_DIR=str(long_dir))
    result = run_shim([sys.executable, str(shim_script), *START, "-id", "c4", "start"], bundle, env)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.decode().count("\n") == 1
    assert "longer than 107 bytes" in result.stderr.decode()


def test_delete_prints_delete_response(tmp_path: Path, shim_script: Path, sockdir: Path) -> None:
    bundle = make_bundle(tmp_path, "c5")
    dead = sockdir / "dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(dead))
    (bundle / "address").write_text(f"unix://{dead}")
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    command = [sys.executable, str(shim_script), *START, "-id", "c5", "-bundle", str(bundle)]
    result = run_shim([*command, "delete"], tmp_path, shim_env(sockdir))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    response = DeleteResponse.FromString(result.stdout)
    assert response.pid == 0
    assert response.exit_status == 137
    assert response.exited_at is not None
    assert response.exited_at >= before
    assert not dead.exists()  # nobody listened: removed


def test_delete_keeps_a_live_shims_socket(tmp_path: Path, shim_script: Path, sockdir: Path) -> None:
    bundle = make_bundle(tmp_path, "c6")
    live = sockdir / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(live))
        sock.listen(1)
        (bundle / "address").write_text(f"unix://{live}")
        command = [sys.executable, str(shim_script), *START, "-id", "c6", "delete"]
        result = run_shim(command, bundle, shim_env(sockdir))
        assert result.returncode == 0, result.stderr
        assert live.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_delete_unmounts_rootfs(tmp_path: Path, shim_script: Path, sockdir: Path) -> None:
    from runwasi_py._bundle.mount import is_mountpoint, mount, unmount_all
    from runwasi_py._proto.messages import Mount

    bundle = make_bundle(tmp_path, "c7")
    src = tmp_path / "src"
    src.mkdir()
    mount(Mount(type="bind", source=str(src), options=["rbind"]), bundle / "rootfs")
    try:
        command = [sys.executable, str(shim_script), *START, "-id", "c7", "delete"]
        result = run_shim(command, bundle, shim_env(sockdir))
        assert result.returncode == 0, result.stderr
        assert not is_mountpoint(bundle / "rootfs")
    finally:
        unmount_all(bundle / "rootfs")


def test_info_prints_runtime_info(tmp_path: Path, shim_script: Path, sockdir: Path) -> None:
    options = pack_any(RuntimeOptions(config_path="/etc/x.toml"))
    command = [sys.executable, str(shim_script), "-info"]
    result = run_shim(command, tmp_path, shim_env(sockdir), stdin=bytes(options))
    assert result.returncode == 0, result.stderr
    info = RuntimeInfo.FromString(result.stdout)
    assert info.name == "io.containerd.fake.v1"
    assert info.version is not None
    assert info.version.version
    assert info.options == options
    assert info.features is not None
    assert info.features.type_url == FEATURES_TYPE_URL
    features = json.loads(info.features.value)
    assert features["mountOptions"] == ["bind", "rbind", "ro", "rw"]
    assert "linux" not in features  # no namespaces of its own: CRI must not offer userns
    assert info.annotations == {"io.github.runwasi-py.task-api-versions": "2,3"}


def test_info_without_options(tmp_path: Path, shim_script: Path, sockdir: Path) -> None:
    command = [sys.executable, str(shim_script), "-info"]
    result = run_shim(command, tmp_path, shim_env(sockdir), stdin=b"")
    assert result.returncode == 0, result.stderr
    info = RuntimeInfo.FromString(result.stdout)
    assert info.options is None
    assert info.features is not None


@pytest.mark.parametrize("stdin", [b"\xff\xff", b"\x08\x01"], ids=["not-protobuf", "not-any"])
def test_info_refuses_stdin_that_is_not_options(
    tmp_path: Path, shim_script: Path, sockdir: Path, stdin: bytes
) -> None:
    command = [sys.executable, str(shim_script), "-info"]
    result = run_shim(command, tmp_path, shim_env(sockdir), stdin=stdin)
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"-info: stdin is not a runtime options Any (")
    assert result.stderr.count(b"\n") == 1


@pytest.mark.parametrize(
    ("stdin", "env", "message"),
    [
        (
            b"\x0a\x02c9\x12\x03ns1\x18",
            {},
            b"start: stdin holds neither BootstrapParams nor runtime options (not protobuf: "
            b"truncated varint)\n",
        ),
        (
            b"\x0a\x02c9\x12\x03ns1\x2a\x01\xff",
            {},
            b"start: malformed BootstrapParams: containerd_ttrpc_address is not UTF-8\n",
        ),
        (
            b"",
            {"RUNWASI_PY_TASK_API": "7"},
            b"start: RUNWASI_PY_TASK_API=7: this shim speaks task API versions 2 and 3 (or auto)\n",
        ),
    ],
    ids=["truncated", "bad-field", "unknown-version"],
)
def test_start_refuses_bad_bootstrap_with_one_line(
    tmp_path: Path,
    shim_script: Path,
    sockdir: Path,
    stdin: bytes,
    env: dict[str, str],
    message: bytes,
) -> None:
    bundle = make_bundle(tmp_path, "c9")
    command = [sys.executable, str(shim_script), *START, "-id", "c9", "start"]
    result = run_shim(command, bundle, {**shim_env(sockdir), **env}, stdin=stdin)
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", message)
    assert not (bundle / "daemon.json").exists()  # no daemon was started
    assert list(sockdir.iterdir()) == []


def test_leaked_inheritable_fds_are_listed_for_closing() -> None:
    r, w = os.pipe()  # close-on-exec, as Python makes every fd
    os.set_inheritable(w, True)  # as libuv's spawn leaves one in a uvloop parent's child
    try:
        leaked = _start_mod._leaked_fds()
        assert w in leaked
        assert r not in leaked
        assert all(fd > 3 for fd in leaked)
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    ("pid", "status", "seconds", "micros"),
    [
        (0, 137, 1764377000, 123456),
        (5, 0, 1, 0),
        (0, 0, -62135596800, 0),  # Go's zero time: a negative int64 seconds
        (2**32 - 1, 255, 4102444800, 999999),
        (1, 1, 0, 1),
    ],
)
def test_delete_response_hand_encoder_matches_betterproto(
    pid: int, status: int, seconds: int, micros: int
) -> None:
    from runwasi_py._proto.messages import DeleteResponse

    exited_at = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=seconds, microseconds=micros
    )
    expected = DeleteResponse(pid=pid, exit_status=status, exited_at=exited_at)
    data = _delete_mod.encode_delete_response(pid, status, seconds, micros * 1000)
    assert data == bytes(expected)
    assert DeleteResponse.FromString(data) == expected


def test_is_mountpoint_reads_mountinfo(tmp_path: Path) -> None:
    assert is_mountpoint("/proc")
    assert not is_mountpoint(str(tmp_path))
    assert not is_mountpoint(str(tmp_path / "missing dir\\x"))


def test_is_mountpoint_escapes_and_near_misses(tmp_path: Path) -> None:
    # Paths below this test's own directory: is_mountpoint resolves symlinks on the real
    # file system, so host paths (a /b that links elsewhere) would change the answer.
    r = os.path.realpath(tmp_path)
    table = tmp_path / "mountinfo"
    table.write_text(
        "1 0 0:1 / / rw - ext4 /dev/sda rw\n"
        f"2 1 0:2 / {r}/b/rootfs2 rw - tmpfs t rw\n"
        f"3 1 0:3 / {r}/a\\040b\\134c rw shared:1 - tmpfs t rw\n"
    )
    want = ["/", f"{r}/b/rootfs2", f"{r}/a b\\c"]
    assert [p for p in want if is_mountpoint(p, str(table))] == want
    # in the text as a prefix or escaped, but not a mount point of its own
    for path in ("/b/rootfs", "/b", "/a b", "/a\\040b\\134c", "/c"):
        assert not is_mountpoint(f"{r}{path}", str(table)), path
    assert is_mountpoint("/proc", str(tmp_path / "missing"))  # unreadable: os.path.ismount


def test_namespace_group_shares_one_daemon_across_containers(
    tmp_path: Path, shim_script: Path, sockdir: Path, daemons: list[int]
) -> None:
    first = make_bundle(tmp_path, "a1")
    second = make_bundle(tmp_path, "b2", {"io.kubernetes.cri.sandbox-id": "other-pod"})
    env = shim_env(sockdir, RUNWASI_PY_SHIM_GROUP="namespace")
    r1 = run_shim([sys.executable, str(shim_script), *START, "-id", "a1", "start"], first, env)
    assert r1.returncode == 0, r1.stderr
    pid = ask(r1.stdout.decode(), b"pid\n")
    daemons.append(pid)
    r2 = run_shim([sys.executable, str(shim_script), *START, "-id", "b2", "start"], second, env)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r1.stdout  # one daemon for the namespace, whatever the pod
    assert r1.stdout.decode() == socket_address(
        "/run/test/containerd.sock", "ns1", "@__main__:FakeShim", directory=str(sockdir)
    )
    assert r1.stdout.decode() not in (
        socket_address("/run/test/containerd.sock", "ns1", c, directory=str(sockdir))
        for c in ("a1", "b2", "other-pod")
    )
    assert ask(r2.stdout.decode(), b"pid\n") == pid
    assert not (second / "daemon.json").exists()
    # another namespace gets its own daemon
    other = make_bundle(tmp_path, "c3")
    argv = [sys.executable, str(shim_script), "-namespace", "ns2", *START[2:], "-id", "c3"]
    r3 = run_shim([*argv, "start"], other, env)
    assert r3.returncode == 0, r3.stderr
    assert r3.stdout != r1.stdout
    daemons.append(ask(r3.stdout.decode(), b"pid\n"))
    for out in (r1.stdout, r3.stdout):
        ask(out.decode(), b"quit\n")
    for p in daemons:
        _wait_gone(p)


def test_bad_group_env_is_a_clear_start_error(
    tmp_path: Path, shim_script: Path, sockdir: Path
) -> None:
    bundle = make_bundle(tmp_path, "c1")
    env = shim_env(sockdir, RUNWASI_PY_SHIM_GROUP="pod")
    r = run_shim([sys.executable, str(shim_script), *START, "-id", "c1", "start"], bundle, env)
    assert r.returncode == 1
    assert b"RUNWASI_PY_SHIM_GROUP='pod'" in r.stderr
    assert r.stdout == b""
    assert not (bundle / "address").exists()


def test_group_mode_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    from runwasi_py._shim import Config

    class Shared(Shim):
        config = Config(group_by="namespace")

    monkeypatch.delenv("RUNWASI_PY_SHIM_GROUP", raising=False)
    assert group_mode("pkg.mod:S", None) == "sandbox"
    assert group_mode("pkg.mod:S", "namespace") == "namespace"
    assert group_mode(Shared, None) == "namespace"
    assert group_mode(Shim, None) == "sandbox"
    monkeypatch.setenv("RUNWASI_PY_SHIM_GROUP", "sandbox")  # the operator wins
    assert group_mode(Shared, "namespace") == "sandbox"
