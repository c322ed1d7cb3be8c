"""The lean entry script: start and delete without ``site``, the daemon and ``-v`` with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from runwasi_py._launch.address import socket_address
from runwasi_py._launch.delete import encode_delete_response
from runwasi_py._launch.entry import entry_script, import_roots, write_entry_script

from .test_main import START, _wait_gone, ask, daemons, make_bundle, shim_env

__all__ = ["daemons"]  # the fixture, imported for its name

# A shim package of its own (not in site-packages): its daemon records what it could import.
FAKE_PACKAGE = """
import asyncio, importlib.util, json, os, sys
from runwasi_py import Shim


class LeanShim(Shim):
    name = "lean"

    @classmethod
    def version(cls):
        # site ran, and sys.path is in pip's script's order: site-packages before the
        # editable checkout (a .pth entry) and this package's folder (put back at the end)
        import sysconfig, runwasi_py
        site_packages = sysconfig.get_path("purelib")
        roots = [os.path.dirname(os.path.dirname(f)) for f in (runwasi_py.__file__, __file__)]
        ordered = all(sys.path.index(site_packages) <= sys.path.index(r) for r in roots)
        unique = len(sys.path) == len(set(sys.path))
        return "9.9", f"{'site' in sys.modules} {ordered} {unique}"

    async def serve(self, listener, *, namespace, ttrpc_address, publisher=None):
        stop = asyncio.Event()

        async def handle(reader, writer):
            if await reader.readline() == b"quit\\n":
                stop.set()
            writer.write(b"%d\\n" % os.getpid())
            await writer.drain()
            writer.close()

        with open("daemon.json", "w") as f:
            json.dump({
                "site": "site" in sys.modules,
                "anyio": importlib.util.find_spec("anyio") is not None,
                "path": sys.path,
                "cmdline": open("/proc/self/cmdline", "rb").read().decode().split("\\0"),
            }, f)
        server = await asyncio.start_unix_server(handle, sock=listener)
        async with server:
            await stop.wait()
"""


@pytest.fixture
def sockdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="rwp-", dir="/tmp") as d:  # sun_path is short
        yield Path(d)


@pytest.fixture
def lean_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "pkgs" / "leanshim"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(FAKE_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))  # where import_roots finds it
    (tmp_path / "bin").mkdir()
    path = tmp_path / "bin" / "containerd-shim-lean-v1"
    write_entry_script(str(path), "leanshim:LeanShim")
    return path


def _imported_site(stderr: bytes) -> bool:
    """From ``PYTHONPROFILEIMPORTTIME`` output: did the process import ``site``?"""
    names = [line.rsplit("|", 1)[-1].strip() for line in stderr.decode().splitlines()]
    assert "runwasi_py._launch.main" in names, stderr  # the output is the import report
    return "site" in names


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, timeout=60, check=False)


def test_script_text(lean_script: Path) -> None:
    text = lean_script.read_text()
    assert text.splitlines()[0] == f"#!{sys.executable} -S"
    assert os.stat(lean_script).st_mode & 0o777 == 0o755
    roots = import_roots("runwasi_py", "leanshim:LeanShim")
    assert f"added = tuple(p for p in {roots!r} if p not in sys.path)" in text
    assert "lean_main('leanshim:LeanShim', added)" in text
    assert roots[1] == str(lean_script.parent.parent / "pkgs")


def test_start_without_site_daemon_with_it(
    lean_script: Path, tmp_path: Path, sockdir: Path, daemons: list[int]
) -> None:
    bundle = make_bundle(tmp_path, "c1")
    env = shim_env(sockdir, PYTHONPROFILEIMPORTTIME="1")
    result = _run([str(lean_script), *START, "-id", "c1", "start"], bundle, env)
    assert result.returncode == 0, result
    address = socket_address("/run/test/containerd.sock", "ns1", "c1", directory=str(sockdir))
    assert result.stdout == address.encode()
    pid = ask(address, b"pid\n")
    daemons.append(pid)  # first: a failing assertion below leaves no daemon running
    assert not _imported_site(result.stderr)

    info = json.loads((bundle / "daemon.json").read_text())
    # without the script's -S: site-packages and .pth files are there, as with pip's script
    assert info["cmdline"][:3] == [sys.executable, str(lean_script), *START[:1]]
    assert info["site"]
    assert info["anyio"]
    site_packages = sysconfig.get_path("purelib")
    assert site_packages in info["path"]
    assert str(tmp_path / "pkgs") in info["path"]
    ask(address, b"quit\n")
    _wait_gone(pid)

    # delete after the shim is gone: no site either, the answer unchanged
    result = _run([str(lean_script), *START, "-id", "c1", "delete"], bundle, env)
    assert result.returncode == 0, result
    assert result.stdout.startswith(encode_delete_response(0, 137, 1, 0)[:4])  # up to exited_at
    assert not _imported_site(result.stderr)


def test_version_runs_site(lean_script: Path, tmp_path: Path) -> None:
    result = _run([str(lean_script), "-v"], tmp_path, dict(os.environ))
    assert result.returncode == 0, result
    # Revision: site imported, sys.path in pip's order, no duplicates
    assert result.stdout.decode().endswith("Version: 9.9\n  Revision: True True True\n")


def test_usage_error_without_site(lean_script: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1")
    result = _run([str(lean_script), "-bogus", "start"], tmp_path, env)
    assert result.returncode == 2
    assert b"flag provided but not defined: -bogus" in result.stderr
    assert not _imported_site(result.stderr)


def test_long_interpreter_path_goes_through_sh(tmp_path: Path) -> None:
    # A #! line over 127 bytes: sh runs the interpreter, which still gets -S and the file.
    deep = tmp_path / ("d" * 100) / ("e" * 40)
    deep.mkdir(parents=True)
    python = deep / "python3"
    python.symlink_to(sys.executable)
    text = entry_script("shim", "runwasi_py.wasmtime._shim:PyWasmtimeShim", str(python), ())
    assert text.startswith("#!/bin/sh\n'''exec' \"")
    script = tmp_path / "shim"
    roots = import_roots("runwasi_py")
    script.write_text(
        entry_script("shim", "runwasi_py.wasmtime._shim:PyWasmtimeShim", str(python), roots)
    )
    script.chmod(0o755)
    bundle = make_bundle(tmp_path, "c2")
    probe = "import sys; print(sys.orig_argv[:3], 'site' in sys.modules)"
    (tmp_path / "probe.py").write_text(probe)
    # the same trick with a probe instead of lean_main: what the interpreter is given
    probe_script = tmp_path / "probe"
    probe_script.write_text(text.split("\n# ")[0] + "\n" + probe + "\n")
    probe_script.chmod(0o755)
    out = _run([str(probe_script)], tmp_path, dict(os.environ))
    assert out.stdout.decode().split("]")[0] == f"[{str(python)!r}, '-S', {str(probe_script)!r}"
    assert out.stdout.decode().split()[-1] == "False"
    command = [str(script), *START, "-id", "c2", "-bundle", str(bundle), "delete"]
    result = _run(command, bundle, dict(os.environ))
    assert result.returncode == 0, result
    assert result.stderr == b""


@pytest.mark.parametrize("shim", ["leanshim", "", "no_such_package_here:Shim"])
def test_bad_shim_refs_are_refused(shim: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"want 'package\.module:ShimClass'|not installed"):
        write_entry_script(str(tmp_path / "x"), shim)
    assert not (tmp_path / "x").exists()


def test_cli_writes_the_bundled_shim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runwasi_py.cli import main

    assert main(["shim-entry", "--bin-dir", str(tmp_path)]) == 0
    path = tmp_path / "containerd-shim-pywasmtime-v1"
    assert capsys.readouterr().out == f"{path}\n"
    text = path.read_text()
    assert text.startswith(f"#!{sys.executable} -S\n")
    assert "lean_main('runwasi_py.wasmtime._shim:PyWasmtimeShim', added)" in text
    result = _run([str(path), "-v"], tmp_path, dict(os.environ))
    assert result.returncode == 0, result
    assert b"Runtime: pywasmtime" in result.stdout
    assert main(["shim-entry", "--bin-dir", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
