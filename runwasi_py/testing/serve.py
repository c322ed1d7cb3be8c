"""Shims under test (in this process or through the real ``start``), and :func:`run`.

Test your Sandbox the way containerd drives it: bundle, shim, Task API, events.

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
import os
import shlex
import shutil
import signal as signal_mod
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import ttrpc
from runwasi_py.testing.bundles import Bundle, Output, make_bundle
from runwasi_py.testing.driver import TASK_V2, RunResult, TaskDriver
from runwasi_py.testing.events_server import RecordingEventsServer

if TYPE_CHECKING:
    from runwasi_py._shim import Shim


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
        "from runwasi_py._launch.main import shim_main\n"
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

    from runwasi_py._events.publisher import EventPublisher

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
