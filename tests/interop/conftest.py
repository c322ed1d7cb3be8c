"""Interop fixtures: the Go peer (Debian's ttrpc 1.1.1) built once per session, and servers.

Without Go or the ttrpc sources these tests skip with the reason; under CI=true they fail,
so a CI machine that lost its Go toolchain cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "tests" / "interop" / "go" / "build.sh"
TTRPC_SRC = Path("/usr/share/gocode/src/github.com/containerd/ttrpc")

# Run the Python example server on each loop: `python -m ttrpc.example` picks uvloop when
# installed, this picks the default loop.
_ASYNCIO_SERVE = (
    "import asyncio, sys; from ttrpc.example._cli import serve; asyncio.run(serve(sys.argv[1]))"
)


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Go interop prerequisites missing in CI: {why}")
    pytest.skip(f"Go interop skipped: {why}")


@pytest.fixture(scope="session")
def go_peer() -> Path:
    """The ttrpcpeer binary (tests/interop/go/ttrpcpeer), built into .work/go."""
    if shutil.which("go") is None:
        _missing("no `go` on PATH (apt-get install golang-go)")
    if not TTRPC_SRC.is_dir():
        _missing(f"{TTRPC_SRC} missing (apt-get install golang-github-containerd-ttrpc-dev)")
    result = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode == 3:
        _missing(result.stderr.strip())
    if result.returncode != 0:
        pytest.fail(f"building the Go peer failed:\n{result.stderr}")
    return Path(result.stdout.strip().splitlines()[-1])


def _log_of(path: str) -> Path:
    # Server stderr goes to a file beside the socket: a pipe nobody reads could fill up and
    # stall the server.
    return Path(path).with_suffix(".log")


def wait_for_socket(proc: subprocess.Popen[bytes], path: str, what: str) -> None:
    """Poll until ``path`` exists; fail with the process's stderr if it died first."""
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None:
            err = _log_of(path).read_text(errors="replace")
            pytest.fail(f"{what} exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not create {path}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait (kill after 15 s); returns the exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return proc.returncode


def start_python_server(path: str, loop: str) -> subprocess.Popen[bytes]:
    """``python -m ttrpc.example serve`` (uvloop) or the same serve() on asyncio's loop."""
    args = (
        [sys.executable, "-m", "ttrpc.example", "serve", path]
        if loop == "uvloop"
        else [sys.executable, "-c", _ASYNCIO_SERVE, path]
    )
    with _log_of(path).open("wb") as log:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
    wait_for_socket(proc, path, f"python example server ({loop})")
    return proc


def start_go_server(peer: Path, path: str) -> subprocess.Popen[bytes]:
    with _log_of(path).open("wb") as log:
        proc = subprocess.Popen([str(peer), "server", path], stdout=subprocess.DEVNULL, stderr=log)
    wait_for_socket(proc, path, "go server")
    return proc


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def python_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Python Example server process; yields its socket path. Must still be alive after."""
    loop: str = request.param
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    path = str(tmp_path_factory.mktemp("py") / "example.sock")
    proc = start_python_server(path, loop)
    yield path
    alive = proc.poll() is None
    code = stop(proc)
    assert alive, f"the Python server died during the tests: {_log_of(path).read_text()}"
    assert code == 0
    assert not os.path.exists(path)


@pytest.fixture(scope="module")
def go_server(go_peer: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Go Example server process (ttrpc 1.1.1); yields its socket path."""
    path = str(tmp_path_factory.mktemp("go") / "example.sock")
    proc = start_go_server(go_peer, path)
    yield path
    alive = proc.poll() is None
    stop(proc)
    assert alive, f"the Go server died during the tests: {_log_of(path).read_text()}"
