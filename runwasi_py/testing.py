"""Test your Sandbox the way containerd drives it: bundle, shim, Task API, events.

Three pieces, usable alone or together:

* :func:`make_bundle` writes an OCI bundle (``config.json`` with args, env, cwd,
  annotations and a memory limit; a rootfs with your files; stdout/stderr FIFOs that the
  test reads, as containerd's ``ctr`` does).
* :func:`serve_shim` starts a shim, either in this process (``Shim().serve`` on a unix
  socket) or as a separate process through the real ``start`` action exactly as containerd
  runs it (cwd = bundle, ``-namespace NS -address A -publish-binary B -id ID start``,
  ``TTRPC_ADDRESS`` pointing at a recording fake events server).
* :class:`TaskDriver` calls the Task API over a real ttrpc connection: create, start, wait,
  kill, delete, state, pids, stats, connect, shutdown, and :meth:`TaskDriver.run`.

Or everything in one call with :func:`run`.

Example:
    >>> from runwasi_py.testing import run
    >>> result = await run(MyShim, args=["/app.wasm", "hello"], files={"app.wasm": wasm})
    >>> result.exit_code, result.stdout
    (0, 'hello\\n')
    >>> [e.topic for e in result.events]
    ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shlex
import shutil
import signal as signal_mod
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import ttrpc
from runwasi_py._events_fake import RecordedEvent, RecordingEventsServer
from runwasi_py._proto import (
    Any as AnyMessage,
)
from runwasi_py._proto import (
    ConnectRequest,
    ConnectResponse,
    CreateTaskRequest,
    CreateTaskResponse,
    DeleteRequest,
    DeleteResponse,
    Empty,
    KillRequest,
    Mount,
    PidsRequest,
    PidsResponse,
    ShutdownRequest,
    StartRequest,
    StartResponse,
    StateRequest,
    StateResponse,
    StatsRequest,
    StatsResponse,
    UpdateTaskRequest,
    WaitRequest,
    WaitResponse,
    cgroups_v1,
    cgroups_v2,
)

if TYPE_CHECKING:
    from runwasi_py._shim import Shim

__all__ = [
    "Bundle",
    "Output",
    "RecordedEvent",
    "RecordingEventsServer",
    "RunResult",
    "ShimUnderTest",
    "TaskDriver",
    "make_bundle",
    "run",
    "serve_shim",
]

_T = TypeVar("_T")

TASK_V2 = "containerd.task.v2.Task"
TASK_V3 = "containerd.task.v3.Task"
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


# -- the Task API ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What one task did: its exit code, output and the events the shim published."""

    exit_code: int
    stdout: str
    stderr: str
    events: list[RecordedEvent]

    @property
    def topics(self) -> list[str]:
        """The event topics in order (``/tasks/create`` ...)."""
        return [e.topic for e in self.events]


class TaskDriver:
    """Calls ``containerd.task.v2.Task`` (or v3) over a ttrpc connection, as containerd does.

    Example:
        >>> driver = TaskDriver(await ttrpc.Client.connect(address))
        >>> pid = await driver.create(bundle)
        >>> await driver.start(bundle.id)
        >>> (await driver.wait(bundle.id)).exit_status
        0
    """

    def __init__(
        self, client: ttrpc.Client, *, service: str = TASK_V2, timeout: float | None = 30.0
    ) -> None:
        self.client = client
        self.service = service
        self.timeout = timeout
        self.created: set[str] = set()
        """Ids created through this driver and not deleted yet."""

    async def _call(
        self,
        method: str,
        request: object,
        reply: type[_T],
        timeout: float | None = None,  # noqa: ASYNC109 - sent to the shim as the deadline
    ) -> _T:
        return await self.client.call(
            self.service, method, request, reply, timeout=timeout if timeout else self.timeout
        )

    async def create(
        self,
        bundle: Bundle | CreateTaskRequest,
        *,
        rootfs: Sequence[Mount] = (),
        terminal: bool = False,
    ) -> int:
        """Create the task; returns its pid. Opens the bundle's output FIFOs first."""
        if isinstance(bundle, Bundle):
            bundle.open_outputs()
            request = bundle.create_request(rootfs=rootfs, terminal=terminal)
        else:
            request = bundle
        reply = await self._call("Create", request, CreateTaskResponse)
        self.created.add(request.id)
        return reply.pid

    async def start(self, task_id: str, exec_id: str = "") -> int:
        """Start the task; returns its pid."""
        reply = await self._call("Start", StartRequest(id=task_id, exec_id=exec_id), StartResponse)
        return reply.pid

    async def wait(self, task_id: str, exec_id: str = "") -> WaitResponse:
        """Wait until the task exited (no deadline, as containerd)."""
        return await self.client.call(
            self.service, "Wait", WaitRequest(id=task_id, exec_id=exec_id), WaitResponse
        )

    async def kill(
        self,
        task_id: str,
        signal: int = signal_mod.SIGKILL,
        *,
        all: bool = False,
        exec_id: str = "",
    ) -> None:
        """Send ``signal`` to the task."""
        await self._call(
            "Kill", KillRequest(id=task_id, exec_id=exec_id, signal=signal, all=all), Empty
        )

    async def delete(self, task_id: str, exec_id: str = "") -> DeleteResponse:
        """Delete the task; returns its pid, exit status and exit time."""
        reply = await self._call(
            "Delete", DeleteRequest(id=task_id, exec_id=exec_id), DeleteResponse
        )
        self.created.discard(task_id)
        return reply

    async def state(self, task_id: str, exec_id: str = "") -> StateResponse:
        """The task's State."""
        return await self._call("State", StateRequest(id=task_id, exec_id=exec_id), StateResponse)

    async def pids(self, task_id: str) -> list[int]:
        """The pids of the task's processes."""
        reply = await self._call("Pids", PidsRequest(id=task_id), PidsResponse)
        return [p.pid for p in reply.processes]

    async def stats(self, task_id: str) -> cgroups_v2.Metrics:
        """The task's cgroup v2 Metrics (decoded from the Any)."""
        reply = await self._call("Stats", StatsRequest(id=task_id), StatsResponse)
        assert reply.stats is not None
        if reply.stats.type_url != "io.containerd.cgroups.v2.Metrics":
            raise AssertionError(f"unexpected stats type {reply.stats.type_url!r}")
        return cgroups_v2.Metrics.FromString(reply.stats.value)

    async def metrics(self, task_id: str) -> cgroups_v1.Metrics | cgroups_v2.Metrics:
        """The task's Stats as whichever Metrics the shim sent (v1 on a v1 host's cgroup)."""
        reply = await self._call("Stats", StatsRequest(id=task_id), StatsResponse)
        assert reply.stats is not None
        if reply.stats.type_url == "io.containerd.cgroups.v1.Metrics":
            return cgroups_v1.Metrics.FromString(reply.stats.value)
        if reply.stats.type_url == "io.containerd.cgroups.v2.Metrics":
            return cgroups_v2.Metrics.FromString(reply.stats.value)
        raise AssertionError(f"unexpected stats type {reply.stats.type_url!r}")

    async def update(self, task_id: str, resources: Mapping[str, object]) -> None:
        """Update with OCI ``LinuxResources`` (sent as containerd does: JSON in an Any)."""
        packed = AnyMessage(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
            value=json.dumps(resources).encode(),
        )
        await self._call("Update", UpdateTaskRequest(id=task_id, resources=packed), Empty)

    async def connect(self, task_id: str = "") -> ConnectResponse:
        """Connect: the shim's pid and the task's pid."""
        return await self._call("Connect", ConnectRequest(id=task_id), ConnectResponse)

    async def shutdown(self, task_id: str = "", *, now: bool = False) -> None:
        """Shutdown: the shim exits if it owns no task any more."""
        await self._call("Shutdown", ShutdownRequest(id=task_id, now=now), Empty, timeout=3.0)

    async def cleanup(self) -> None:
        """Kill and delete every task this driver created and did not delete."""
        for task_id in sorted(self.created):
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.kill(task_id, signal_mod.SIGKILL)
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.wait(task_id)
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.delete(task_id)
        self.created.clear()

    async def run(self, bundle: Bundle, *, rootfs: Sequence[Mount] = ()) -> tuple[int, str, str]:
        """Create, start, wait and delete; returns (exit code, stdout, stderr)."""
        await self.create(bundle, rootfs=rootfs)
        try:
            await self.start(bundle.id)
            status = await self.wait(bundle.id)
        finally:
            try:
                await self.delete(bundle.id)
            except ttrpc.TtrpcError:
                await self.cleanup()
        stdout, stderr = await bundle.read_outputs()
        bundle.close()
        return status.exit_status, stdout, stderr


# -- shims under test -----------------------------------------------------------------


@dataclass
class ShimUnderTest:
    """A running shim: its address, a :class:`TaskDriver` and the recorded events."""

    address: str
    driver: TaskDriver
    events: RecordingEventsServer
    namespace: str
    shim_pid: int
    mode: Literal["in-process", "subprocess"]
    shim: Shim | None = None
    """The Shim object in in-process mode."""
    executable: Path | None = None
    """The shim program in subprocess mode (``containerd-shim-<name>-v1``)."""
    serving: asyncio.Future[None] | None = None
    """The ``serve()`` task in in-process mode."""
    log: Output | None = None
    """The daemon's log FIFO (``<bundle>/log``) in subprocess mode; ``log.data`` so far."""

    async def wait_stopped(self, timeout: float = 15.0) -> bool:  # noqa: ASYNC109
        """Wait until the shim stopped serving (after a Shutdown); False on timeout."""
        if self.serving is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(self.serving)
            except TimeoutError:
                return False
            return True
        return await _wait_pid_gone(self.shim_pid, timeout)


def _short_dir() -> Path:
    # unix socket paths are limited to 107 bytes; pytest's tmp dirs can be longer
    return Path(tempfile.mkdtemp(prefix="rwpy-", dir="/tmp"))


def _resolve_shim(shim: type[Shim] | str) -> tuple[type[Shim] | None, str]:
    """(class if importable here, "module:Class") for a shim given either way."""
    if isinstance(shim, str):
        module, sep, qualname = shim.partition(":")
        if not sep or not module or not qualname:
            raise ValueError(f"shim {shim!r}: expected 'module:Class'")
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, type):
            raise TypeError(f"{shim} is not a class")
        return obj, shim
    return shim, f"{shim.__module__}:{shim.__qualname__}"


def write_shim_program(shim: type[Shim] | str, directory: str | os.PathLike[str]) -> Path:
    """Write an executable ``containerd-shim-<name>-v1`` that runs ``shim`` (``module:Class``).

    It is what a console script is: the current interpreter and ``sys.path``, then
    ``shim_main("module:Class")``, so ``start`` and ``delete`` never import the shim's
    module. containerd (or :func:`serve_shim`) can exec it.
    """
    cls, spec = _resolve_shim(shim)
    name = getattr(cls, "name", "") or "test"
    path = Path(directory) / f"containerd-shim-{name}-v1"
    paths = [p for p in sys.path if p]
    path.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        "from runwasi_py._cli import shim_main\n"
        f"shim_main({spec!r})\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@contextlib.asynccontextmanager
async def serve_shim(
    shim: type[Shim] | str,
    *,
    mode: Literal["in-process", "subprocess"] = "in-process",
    bundle: Bundle | None = None,
    namespace: str = "default",
    service: str = TASK_V2,
    events_server: Callable[[Path], RecordingEventsServer] = RecordingEventsServer,
) -> AsyncIterator[ShimUnderTest]:
    """Run a shim for the duration of the block, with a recording events server.

    ``in-process``: ``Shim().serve`` on a unix socket in this event loop. ``subprocess``:
    the shim program is started with the ``start`` action from ``bundle``'s directory,
    exactly as containerd does, and the daemon it leaves behind is served to the block.
    On exit, tasks the driver created are killed and deleted, Shutdown is sent, and the
    shim (thread or process) is waited for. ``events_server`` makes the fake events server
    from its socket path (a subclass can, say, count instead of record).

    Example:
        >>> async with serve_shim("my_pkg.shim:MyShim", mode="subprocess", bundle=b) as s:
        ...     code, out, err = await s.driver.run(b)
        ...     assert s.events.topics[-1] == "/tasks/delete"
    """
    cls, spec = _resolve_shim(shim)
    workdir = _short_dir()
    events = events_server(workdir / "events.sock")
    await events.start()
    try:
        if mode == "in-process":
            if cls is None:
                raise ValueError("in-process mode needs an importable Shim class")
            async with _in_process(cls, workdir, events, namespace, service) as sut:
                yield sut
        else:
            if bundle is None:
                raise ValueError("subprocess mode needs the bundle to start from")
            async with _subprocess(spec, workdir, events, namespace, service, bundle) as sut:
                yield sut
    finally:
        await events.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def _in_process(
    cls: type[Shim],
    workdir: Path,
    events: RecordingEventsServer,
    namespace: str,
    service: str,
) -> AsyncIterator[ShimUnderTest]:
    import socket

    from runwasi_py._events import EventPublisher

    path = str(workdir / "shim.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(128)
    publisher = EventPublisher(events.address, namespace)
    shim = cls()
    serving = asyncio.ensure_future(
        shim.serve(listener, namespace=namespace, ttrpc_address=events.address, publisher=publisher)
    )
    client: ttrpc.Client | None = None
    try:
        client = await ttrpc.Client.connect(path)
        driver = TaskDriver(client, service=service)
        yield ShimUnderTest(
            path, driver, events, namespace, os.getpid(), "in-process", shim=shim, serving=serving
        )
        await driver.cleanup()
        if not serving.done():
            with contextlib.suppress(ttrpc.TtrpcError):
                await driver.shutdown()
    finally:
        if client is not None:
            await client.close()
        if not serving.done():
            shim.shutdown()
        try:
            async with asyncio.timeout(15):
                await serving
        finally:
            await publisher.close(timeout=5)


async def _run_process(
    argv: list[str], *, cwd: Path, env: Mapping[str, str], stdin: bytes = b""
) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,  # containerd reads them combined
    )
    out, _ = await proc.communicate(stdin)
    return proc.returncode or 0, out


async def _wait_pid_gone(pid: int, timeout: float) -> bool:  # noqa: ASYNC109
    import psutil

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


@contextlib.asynccontextmanager
async def _subprocess(
    spec: str,
    workdir: Path,
    events: RecordingEventsServer,
    namespace: str,
    service: str,
    bundle: Bundle,
) -> AsyncIterator[ShimUnderTest]:
    program = write_shim_program(spec, workdir)
    fake_containerd = str(workdir / "containerd.sock")
    base = [
        str(program),
        "-namespace",
        namespace,
        "-address",
        fake_containerd,
        "-publish-binary",
        sys.executable,
        "-id",
        bundle.id,
    ]
    env = dict(os.environ)
    env["TTRPC_ADDRESS"] = events.address
    env.setdefault("RUNWASI_PY_SOCKET_DIR", str(workdir / "s"))
    # containerd makes the log FIFO before `start` and copies it into its own log
    log_path = bundle.path / "log"
    if not log_path.exists():
        os.mkfifo(log_path, 0o700)
    log = Output(log_path)
    log.open()
    client: ttrpc.Client | None = None
    shim_pid = 0
    try:
        rc, out = await _run_process([*base, "start"], cwd=bundle.path, env=env)
        address = out.decode(errors="replace").strip()
        if rc != 0 or not address:
            raise RuntimeError(
                f"shim start failed (exit {rc}): {address!r}\n"
                f"  argv: {shlex.join([*base, 'start'])}\n"
                f"  log: {log.data.decode(errors='replace')}"
            )
        client = await ttrpc.Client.connect(address)
        driver = TaskDriver(client, service=service)
        try:
            shim_pid = (await driver.connect(bundle.id)).shim_pid
        except ttrpc.TtrpcError as e:
            await asyncio.sleep(0.2)  # let the daemon's last words reach the log
            raise RuntimeError(
                f"shim at {address} did not answer Connect ({e}); its log:\n"
                + log.data.decode(errors="replace")
            ) from e
        yield ShimUnderTest(
            address, driver, events, namespace, shim_pid, "subprocess", executable=program, log=log
        )
        await driver.cleanup()
        with contextlib.suppress(ttrpc.TtrpcError):
            await driver.shutdown(bundle.id)
    finally:
        if client is not None:
            await client.close()
        if shim_pid and not await _wait_pid_gone(shim_pid, 10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(shim_pid, signal_mod.SIGKILL)
            await _wait_pid_gone(shim_pid, 5)
        # what containerd runs after the connection closed
        await _run_process([*base, "-bundle", str(bundle.path), "delete"], cwd=bundle.path, env=env)
        await log.read(timeout=1)
        log.close()


async def run(
    shim: type[Shim] | str,
    *,
    args: Sequence[str],
    mode: Literal["in-process", "subprocess"] = "in-process",
    directory: str | os.PathLike[str] | None = None,
    container_id: str = "c1",
    **bundle_options: object,
) -> RunResult:
    """Run one task to completion in a fresh shim; returns exit code, output and events.

    ``bundle_options`` go to :func:`make_bundle` (env, cwd, annotations, memory_limit,
    files, stdin).

    Example:
        >>> result = await run("my_pkg.shim:MyShim", args=["/app.wasm"], mode="subprocess")
        >>> result.exit_code
        0
    """
    own_dir = directory is None
    base = Path(directory) if directory is not None else _short_dir()
    try:
        bundle = make_bundle(base, args=args, container_id=container_id, **bundle_options)  # type: ignore[arg-type]
        async with serve_shim(shim, mode=mode, bundle=bundle) as sut:
            code, stdout, stderr = await sut.driver.run(bundle)
            # TaskDelete is queued when Delete returns; wait for it to be forwarded.
            await sut.events.wait_for(
                lambda evs: any(
                    e.topic == "/tasks/delete" and getattr(e.event, "container_id", "") == bundle.id
                    for e in evs
                )
            )
            events = list(sut.events.events)
        return RunResult(code, stdout, stderr, events)
    finally:
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
