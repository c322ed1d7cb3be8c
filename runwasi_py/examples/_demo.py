"""``runwasi-py demo``: the bundled hello, built into an image and run as a container.

Two paths, chosen once and announced on stderr: through a private real containerd and
``ctr run`` when this machine can (root, containerd, the shim installed), else through the
in-process driver of :mod:`runwasi_py.testing`, which does what containerd does (mount,
Create/Start/Wait/Delete over ttrpc) without containerd.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from runwasi_py.containerd import ContainerdUnavailable, PrivateContainerd, check_available
from runwasi_py.examples import example_path
from runwasi_py.image import build_image, read_image

__all__ = ["IMAGE_REF", "RUNTIME", "SHIM_BINARY", "DemoError", "run_demo", "scripts_dir"]

SHIM_BINARY = "containerd-shim-pywasmtime-v1"
RUNTIME = "io.containerd.pywasmtime.v1"
IMAGE_REF = "docker.io/library/runwasi-py-hello:latest"


class DemoError(Exception):
    """The demo could not run its container (the message says where it failed)."""


def scripts_dir() -> Path:
    """The directory holding this installation's console scripts (the shim among them)."""
    return Path(sysconfig.get_path("scripts"))


def _say(msg: str) -> None:
    print(f"runwasi-py demo: {msg}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _containerd_blocker() -> str | None:
    """Why the real-containerd path cannot run here, or None when it can."""
    try:
        check_available()
    except ContainerdUnavailable as e:
        return str(e)
    shim = shutil.which(SHIM_BINARY, path=str(scripts_dir()))
    if shim is None:
        return f"{SHIM_BINARY} is not installed in {scripts_dir()} (run `pip install -e .`)"
    try:
        res = subprocess.run(
            [shim, "-v"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{shim} -v failed: {e}"
    if res.returncode != 0:
        last = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        return f"{shim} -v exited {res.returncode}: {last[0]}"
    return None


def run_demo(args: Sequence[str] = (), *, mode: str = "auto") -> int:
    """Build the bundled hello into an image and run it; return the container's exit status.

    ``mode`` is ``auto``, ``containerd`` or ``in-process``.

    Example:
        >>> run_demo(["world"])   # prints the greeting; path taken goes to stderr
        0
    """
    # SIGTERM ends the demo through its cleanup (containerd stopped, shims killed, dirs
    # removed) instead of leaving a private containerd running.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return _demo(args, mode)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _demo(args: Sequence[str], mode: str) -> int:
    blocker = _containerd_blocker() if mode != "in-process" else "in-process was asked for"
    if mode == "containerd" and blocker:
        raise ContainerdUnavailable(blocker)
    # A short directory: containerd's sockets live under it (107-byte limit).
    workdir = Path(tempfile.mkdtemp(prefix="runwasi-py-demo-"))
    keep = False
    try:
        tarball = workdir / "hello.tar"
        img = build_image(example_path("hello"), IMAGE_REF, tarball)
        _say(f"built image {img.ref} ({img.manifest_digest[:19]}) from the bundled hello.wat")
        if blocker is None:
            _say(f"path: real containerd (private, in {workdir}) + ctr run --runtime {RUNTIME}")
            rc, keep = _run_containerd(workdir, img.path, args)
        else:
            _say(f"path: in-process driver (runwasi_py.testing), because {blocker}")
            rc = _run_in_process(workdir, img.path, args)
        _say(f"container exited with status {rc}")
        return rc
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _run_containerd(workdir: Path, tarball: Path, args: Sequence[str]) -> tuple[int, bool]:
    c8d = PrivateContainerd(workdir / "c8d", shim_dirs=[scripts_dir()])
    with c8d:
        c8d.import_image(tarball)
        res = c8d.run(
            IMAGE_REF,
            f"demo-{os.getpid()}",
            *(["/hello.wasm", *args] if args else []),
            runtime=RUNTIME,
            timeout=30,
        )
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        if res.returncode != 0 and res.stderr:
            _say(f"containerd log kept at {c8d.log_path}:\n{c8d.log_tail(15)}")
    return res.returncode, res.returncode != 0 and bool(res.stderr)


def _run_in_process(workdir: Path, tarball: Path, args: Sequence[str]) -> int:
    import asyncio

    from runwasi_py.testing import run
    from runwasi_py.wasmtime import PyWasmtimeShim

    # The driver does what containerd would: the image's files become the bundle's rootfs,
    # its entrypoint and env the process's.
    image = read_image(tarball)
    argv = [image.entrypoint[0], *args] if args else image.args
    files = {path.lstrip("/"): data for path, data in image.files.items()}
    try:
        result = asyncio.run(
            run(
                PyWasmtimeShim,
                args=argv,
                files=files,
                env=image.env or ["PATH=/"],
                directory=workdir / "bundles",
                container_id="demo",
            )
        )
    except Exception as e:
        raise DemoError(f"the in-process driver failed: {type(e).__name__}: {e}") from e
    sys.stdout.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.write(result.stderr)
    return result.exit_code
