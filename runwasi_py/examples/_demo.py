"""``runwasi-py demo``: the bundled hello, built into an image and run as a container.

Two paths, chosen once and announced on stderr: through a private real containerd and
``ctr run`` when this machine can (root, containerd, the shim installed), else through the
in-process driver of :mod:`runwasi_py.testing`, which does what containerd does (mount,
Create/Start/Wait/Delete over ttrpc) without containerd.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

from runwasi_py.containerd import ContainerdUnavailable, PrivateContainerd, check_available
from runwasi_py.examples import example_path
from runwasi_py.image import build_image

__all__ = ["IMAGE_REF", "RUNTIME", "SHIM_BINARY", "run_demo", "scripts_dir"]

SHIM_BINARY = "containerd-shim-pywasmtime-v1"
RUNTIME = "io.containerd.pywasmtime.v1"
IMAGE_REF = "docker.io/library/runwasi-py-hello:latest"


def scripts_dir() -> Path:
    """The directory holding this installation's console scripts (the shim among them)."""
    return Path(sysconfig.get_path("scripts"))


def _say(msg: str) -> None:
    print(f"runwasi-py demo: {msg}", file=sys.stderr, flush=True)


def _containerd_blocker() -> str | None:
    """Why the real-containerd path cannot run here, or None when it can."""
    try:
        check_available()
    except ContainerdUnavailable as e:
        return str(e)
    if shutil.which(SHIM_BINARY, path=str(scripts_dir())) is None:
        return f"{SHIM_BINARY} is not installed in {scripts_dir()} (run `pip install -e .`)"
    return None


def run_demo(args: Sequence[str] = (), *, mode: str = "auto") -> int:
    """Build the bundled hello into an image and run it; return the container's exit status.

    ``mode`` is ``auto``, ``containerd`` or ``in-process``.

    Example:
        >>> run_demo(["world"])   # prints the greeting; path taken goes to stderr
        0
    """
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
            timeout=60,
        )
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        if res.returncode != 0 and res.stderr:
            _say(f"containerd log kept at {c8d.log_path}:\n{c8d.log_tail(15)}")
    return res.returncode, res.returncode != 0 and bool(res.stderr)


def _run_in_process(workdir: Path, tarball: Path, args: Sequence[str]) -> int:
    raise NotImplementedError("in-process path: waiting for runwasi_py.testing")
