"""OCI bundles for tests: config.json, a rootfs with your files, stdout/stderr FIFOs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runwasi_py._proto.messages import (
    CreateTaskRequest,
    Mount,
)

if TYPE_CHECKING:
    pass


WASM_HEADER = b"\0asm\x01\0\0\0"
"""The 8 bytes of an empty wasm module: enough for the default ``Sandbox.can_handle``."""


# -- stdio ------------------------------------------------------------------------------


class Output:
    """Collects what a task writes to one of its stdio FIFOs, without blocking anybody.

    The FIFO is opened for reading (non-blocking) before the task starts, like containerd
    does, and a spare write end is held open so the reader sees no end-of-file before the
    task wrote anything; :meth:`read` drops it and returns everything once the task's
    writers are gone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buf = bytearray()
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._eof: asyncio.Event | None = None

    def open(self) -> None:
        """Start collecting (on the running loop)."""
        if self._rfd is not None:
            return
        loop = asyncio.get_running_loop()
        self._eof = asyncio.Event()
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        loop.add_reader(self._rfd, self._readable)

    def _readable(self) -> None:
        assert self._rfd is not None
        assert self._eof is not None
        while True:
            try:
                chunk = os.read(self._rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._close_reader()
                self._eof.set()
                return
            self._buf += chunk

    def _close_reader(self) -> None:
        if self._rfd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._rfd)
            os.close(self._rfd)
            self._rfd = None

    @property
    def data(self) -> bytes:
        """What arrived so far."""
        return bytes(self._buf)

    async def read(self, timeout: float = 10.0) -> bytes:  # noqa: ASYNC109 - a plain bound
        """Everything the task wrote, once its write ends are closed (or ``timeout`` passed)."""
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        if self._eof is not None and self._rfd is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._eof.wait()
        return self.data

    def close(self) -> None:
        """Stop collecting and close the FIFO ends (idempotent)."""
        if self._wfd is not None:
            os.close(self._wfd)
            self._wfd = None
        if self._rfd is not None:
            self._close_reader()


# -- bundles ----------------------------------------------------------------------------


@dataclass
class Bundle:
    """An OCI bundle on disk, as containerd prepares it for a shim."""

    path: Path
    id: str
    rootfs: Path
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, Output] = field(default_factory=dict)
    """``"stdout"`` / ``"stderr"`` readers when the bundle uses FIFOs."""

    @property
    def config(self) -> Path:
        """The bundle's ``config.json``."""
        return self.path / "config.json"

    def create_request(
        self, *, rootfs: Sequence[Mount] = (), terminal: bool = False
    ) -> CreateTaskRequest:
        """The CreateTaskRequest containerd would send for this bundle."""
        return CreateTaskRequest(
            id=self.id,
            bundle=str(self.path),
            rootfs=list(rootfs),
            terminal=terminal,
            stdin=self.stdin,
            stdout=self.stdout,
            stderr=self.stderr,
        )

    def open_outputs(self) -> None:
        """Start reading the stdout/stderr FIFOs (call before Start)."""
        for out in self.outputs.values():
            out.open()

    async def read_outputs(self, timeout: float = 10.0) -> tuple[str, str]:  # noqa: ASYNC109
        """(stdout, stderr) as text once the task's write ends are closed."""
        texts = []
        for name in ("stdout", "stderr"):
            out = self.outputs.get(name)
            if out is not None:
                texts.append((await out.read(timeout)).decode(errors="replace"))
            else:
                texts.append(_read_text_file(getattr(self, name)))
        return texts[0], texts[1]

    def close(self) -> None:
        """Close the FIFO readers (the files stay for inspection)."""
        for out in self.outputs.values():
            out.close()


def _read_text_file(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return ""


def make_bundle(
    directory: str | os.PathLike[str],
    *,
    args: Sequence[str],
    container_id: str = "c1",
    env: Sequence[str] = ("PATH=/",),
    cwd: str = "/",
    annotations: Mapping[str, str] | None = None,
    memory_limit: int | None = None,
    files: Mapping[str, bytes | str] | None = None,
    stdio: Literal["fifo", "file", "none"] = "fifo",
    stdin: bytes | None = None,
    config: Mapping[str, object] | None = None,
    linux: Mapping[str, object] | None = None,
) -> Bundle:
    """Write a bundle under ``directory/<container_id>`` and return it.

    ``files`` are written into the rootfs (relative paths). When ``files`` is not given and
    ``args[0]`` names a ``.wasm`` file, an empty wasm module is put there so the default
    ``Sandbox.can_handle`` accepts it. ``stdio="fifo"`` makes stdout/stderr FIFOs read by
    :class:`Output`; ``"file"`` uses plain files; ``"none"`` leaves them unconnected.
    ``config`` replaces the generated ``config.json`` object entirely (for bad-input tests).
    ``linux`` adds to the spec's ``linux`` object (``cgroupsPath``, ``namespaces``,
    ``resources``: a ``memory_limit`` is kept unless ``resources`` replaces it).

    Example:
        >>> b = make_bundle(tmp_path, args=["/app.wasm", "hi"], files={"app.wasm": wasm})
        >>> b.create_request().bundle == str(b.path)
        True
    """
    path = Path(directory) / container_id
    rootfs = path / "rootfs"
    rootfs.mkdir(parents=True, exist_ok=False)
    if files is None:
        files = {}
        if args and args[0].partition("#")[0].endswith(".wasm"):
            files = {args[0].partition("#")[0].lstrip("/"): WASM_HEADER}
    for name, content in files.items():
        target = rootfs / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    spec: dict[str, object]
    if config is not None:
        spec = dict(config)
    else:
        linux_obj: dict[str, object] = {}
        if memory_limit is not None:
            linux_obj["resources"] = {"memory": {"limit": memory_limit}}
        linux_obj.update(linux or {})
        spec = {
            "ociVersion": "1.0.2",
            "process": {"args": list(args), "env": list(env), "cwd": cwd},
            "root": {"path": "rootfs"},
            "annotations": dict(annotations or {}),
            "linux": linux_obj,
        }
    (path / "config.json").write_text(json.dumps(spec))
    bundle = Bundle(path=path, id=container_id, rootfs=rootfs)
    io_dir = path / "io"
    io_dir.mkdir()
    if stdin is not None:
        (io_dir / "stdin").write_bytes(stdin)
        bundle.stdin = str(io_dir / "stdin")
    if stdio != "none":
        for name in ("stdout", "stderr"):
            p = io_dir / name
            if stdio == "fifo":
                os.mkfifo(p, 0o600)
                bundle.outputs[name] = Output(p)
            setattr(bundle, name, str(p))
    return bundle
