"""The class a shim author names their shim with: :class:`Shim`, plus :class:`Config`.

``Shim.run()`` is the console-script entry (containerd's argv, never returns); ``serve()`` is
the same task service as a coroutine for any asyncio program: it serves on a listening
socket and returns once shut down, with no global state and no ``sys.exit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NoReturn

from runwasi_py._bundle.group import GROUP_MODES
from runwasi_py._bundle.memory_limit import DEFAULT_MEMORY_LIMIT
from runwasi_py._launch.address import bound_path, inode
from runwasi_py._proto.wire import field_map
from runwasi_py._sandbox import Sandbox
from ttrpc._raw import RawMessage

if TYPE_CHECKING:
    import ttrpc
    from runwasi_py._events.publisher import EventSink
    from runwasi_py._native._runtime import NativeRuntime
    from runwasi_py._task.service import TaskService

__all__ = ["Config", "Shim", "version"]

log = logging.getLogger("runwasi_py.shim")

_UNKNOWN = "<none>"


def version() -> tuple[str, str]:
    """runwasi-py's own (version, revision); revision is ``<none>`` outside a git build.

    >>> version()[0]
    '0.1.0'
    """
    try:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            ver = dist_version("runwasi-py")
        except PackageNotFoundError:
            ver = _UNKNOWN
    except ImportError:  # pragma: no cover - importlib.metadata is stdlib since 3.8
        ver = _UNKNOWN
    return ver, os.environ.get("RUNWASI_PY_REVISION", _UNKNOWN)


@dataclass(frozen=True, slots=True)
class Config:
    """Knobs of a shim. All have defaults; pass one as ``Shim.config``.

    Example:
        >>> class MyShim(Shim):
        ...     name = "my-shim"
        ...     sandbox = MySandbox
        ...     config = Config(default_log_level="warning")
    """

    default_log_level: str = "info"
    """Log level of the daemon when containerd does not pass ``-debug``."""
    no_setup_logger: bool = False
    """Leave logging alone (the shim author configures it)."""
    kill_timeout: float = 1.0
    """Seconds a SIGKILLed run_wasi may take to end before it is reported as 137 anyway."""
    shutdown_timeout: float = 3.0
    """Seconds in-flight calls get to finish when the shim stops (containerd waits 3 s)."""
    compile_cache_dir: Path | None = None
    """Where compiled modules are cached (default: see ``_compile_cache.default_cache_dir``)."""
    group_by: str = "sandbox"
    """Which containers share one daemon: ``"sandbox"`` (the CRI pod's sandbox id, else each
    container alone, as Go shims do) or ``"namespace"`` (one daemon per containerd namespace;
    one crash then ends all its containers). ``$RUNWASI_PY_SHIM_GROUP`` overrides it. With an
    import-path ``shim_main("pkg.mod:MyShim")``, ``start`` does not import the class: pass
    ``shim_main(..., group_by="namespace")`` as well (or set the variable)."""
    linger: float = 5.0
    """Seconds a namespace-shared daemon stays after its last task, for the next container
    (long enough for a ``ctr run`` loop that does other work between runs; the cost is one
    idle process for that long)."""
    reservation_timeout: float = 20.0
    """Seconds a ``start`` that handed out a live daemon's address holds it without a Create."""
    native_containers: bool = True
    """Run containers whose entrypoint is a Linux executable (ELF or ``#!``) through ``runc``,
    in the pod's shim beside its wasm containers, and a CRI pod's pause container as a real
    process. False refuses native entrypoints (and keeps pause containers idle tasks)."""
    default_memory_limit: int | None = DEFAULT_MEMORY_LIMIT
    """Bytes a container may use when its spec sets no ``linux.resources.memory.limit``
    (1 GiB; None = no ceiling). ``$RUNWASI_PY_DEFAULT_MEMORY_LIMIT`` in containerd's
    environment overrides it (``0`` turns it off). Without a ceiling one guest can grow
    until the kernel kills the shim, and every container it serves with it."""
    max_connections: int = 1024
    """ttrpc connections the daemon holds at once (containerd opens one per task of a shared
    daemon, plus one per restart); more are closed at accept."""
    max_buffered_bytes: int = 16 << 20
    """Request bytes the daemon buffers before it stops reading (containerd's requests are
    a few KiB; a peer that starts 4 MiB frames and never ends them waits)."""

    def __post_init__(self) -> None:
        if self.group_by not in GROUP_MODES:
            raise ValueError(f"Config.group_by must be one of {sorted(GROUP_MODES)}")


class Shim:
    """A containerd shim v2 for WebAssembly: name it, give it a Sandbox, run it.

    Example:
        >>> class MyShim(Shim):
        ...     name = "my-shim"          # runtime io.containerd.my-shim.v1
        ...     sandbox = MySandbox       # binary containerd-shim-my-shim-v1
        >>> if __name__ == "__main__":
        ...     MyShim.run()

    Embedding: ``await MyShim().serve(listener, namespace="default", ttrpc_address=addr)``
    serves the task service on ``listener`` until a Shutdown finds no task left (or
    :meth:`shutdown` is called, or the coroutine is cancelled), then returns.
    """

    name: ClassVar[str] = ""
    """The runtime name: ``io.containerd.<name>.v1``, binary ``containerd-shim-<name>-v1``."""
    sandbox: ClassVar[type[Sandbox]] = Sandbox
    """The Sandbox class; one is made per container with no arguments."""
    config: ClassVar[Config] = Config()

    def __init__(self) -> None:
        self._stop: asyncio.Event | None = None
        self._service: TaskService | None = None
        self.linger = 0.0
        """Seconds :meth:`serve` stays after a Shutdown finds no task (when ``linger`` is not
        passed); the daemon sets ``Config.linger`` here when the shim is namespace-shared."""

    @classmethod
    def version(cls) -> tuple[str, str]:
        """(version, revision) printed by ``-v`` and ``-info``; override for your own."""
        return version()

    @classmethod
    def run(cls) -> NoReturn:
        """Run as containerd runs a shim: parse argv, ``start`` / ``delete`` / serve.

        The same work as ``shim_main(cls)``; but by now the module defining the class (and
        the framework's asyncio side) is imported, ~30 ms more per ``start``. A console
        script that calls ``runwasi_py.shim_main("pkg.module:MyShim")`` skips that.
        """
        from runwasi_py._launch.main import shim_main

        shim_main(cls)

    @property
    def task_service(self) -> TaskService | None:
        """The task service while :meth:`serve` runs (for tests and embedding)."""
        return self._service

    def shutdown(self) -> None:
        """Ask a running :meth:`serve` to stop: running tasks are killed (SIGTERM handling)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(
        self,
        listener: socket.socket,
        *,
        namespace: str,
        ttrpc_address: str,
        publisher: EventSink | None = None,
        linger: float | None = None,
    ) -> None:
        """Serve the Task service (v2 and v3) on ``listener`` until shut down.

        ``linger``: seconds to stay after a Shutdown finds no task (a shared daemon waits
        for the next container); default :attr:`linger`, 0 unless set. The daemon never
        stops while a ``start`` holds a reservation (``runwasi.shim.v1.Shim/Reserve``,
        served here too); when it stops it first refuses reservations and unlinks its
        socket, so a concurrent ``start`` binds a fresh one.

        Events go to ``publisher``, or to a new ``EventPublisher`` for ``ttrpc_address``
        (flushed and closed on return). The listener is closed on return and its socket file
        removed. Only peers running as this user may connect (``SO_PEERCRED``).

        Example:
            >>> listener = socket.socket(socket.AF_UNIX); listener.bind(path); listener.listen()
            >>> await MyShim().serve(listener, namespace="default",
            ...                      ttrpc_address="/run/containerd/containerd.sock.ttrpc")
        """
        import ttrpc
        from runwasi_py._task.service import TASK_V3_SERVICE, TaskService

        if self._stop is not None:
            raise RuntimeError(f"{type(self).__name__}.serve is already running")
        self._stop = stop = asyncio.Event()
        owned_publisher = None
        if publisher is None and ttrpc_address:
            from runwasi_py._events.publisher import EventPublisher

            owned_publisher = publisher = EventPublisher(ttrpc_address, namespace)
        elif publisher is None:
            log.warning("no TTRPC_ADDRESS: task events are not published")
        cfg = self.config
        service = TaskService(
            self.sandbox,
            namespace=namespace,
            events=publisher,
            shim_name=self.name or "runwasi-py",
            kill_timeout=cfg.kill_timeout,
            compile_cache_dir=cfg.compile_cache_dir,
            reservation_timeout=cfg.reservation_timeout,
            native=_native_runtime(cfg, namespace, ttrpc_address),
            default_memory_limit=cfg.default_memory_limit,
        )
        self._service = service
        server = ttrpc.Server(
            require_same_user=True,
            max_connections=cfg.max_connections,
            max_buffered_bytes=cfg.max_buffered_bytes,
        )
        server.register(service)
        server.register(service, name=TASK_V3_SERVICE)
        server.register(_reserve_service(service))
        path = bound_path(listener)
        bound_inode = inode(path)
        try:
            await server.listen_socket(listener)
            log.info("serving %s tasks on %s", namespace, path or "an inherited socket")
            stay = self.linger if linger is None else linger
            await _serve_until_done(service, stop, stay, path, bound_inode)
        finally:
            # Kill first so outstanding Wait calls return, then let in-flight calls (the
            # Shutdown reply) finish, then stop the threads; events are flushed last.
            await service.kill_all(cfg.shutdown_timeout)
            await server.shutdown(cfg.shutdown_timeout)
            await service.aclose(cfg.shutdown_timeout)
            listener.close()
            if path and inode(path) == bound_inode:  # still ours, not a newer shim's
                with contextlib.suppress(OSError):
                    os.unlink(path)
            if owned_publisher is not None:
                await owned_publisher.close(timeout=cfg.shutdown_timeout)
            self._service = None
            self._stop = None
            log.info("shim stopped")


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _serve_until_done(
    service: TaskService, stop: asyncio.Event, linger: float, path: str, bound_inode: int | None
) -> None:
    """Return when asked to stop, or when no task and no reservation is left.

    After a Shutdown that found no task, wait ``linger`` seconds, then as long as a
    reservation is pending; any task created meanwhile keeps the daemon until the next
    Shutdown. The final check, closing the reservation book and unlinking the socket happen
    in one event-loop step: no Reserve can be accepted in between.
    """
    book = service.reservations
    while not stop.is_set():
        await _wait_any(stop, service.shutdown_requested)
        if stop.is_set():
            return
        service.shutdown_requested.clear()
        while linger > 0:  # counted from the latest Shutdown: a newer one starts it again
            log.debug("no task left; lingering %.1f s for the next container", linger)
            try:
                await asyncio.wait_for(_wait_any(stop, service.shutdown_requested), linger)
            except TimeoutError:
                break
            if stop.is_set():
                return
            service.shutdown_requested.clear()
        while not stop.is_set() and not service.task_count:
            if book.try_close():
                if path and inode(path) == bound_inode:  # new starts must not find us any more
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                log.info("no task and no reservation left; stopping")
                return
            with contextlib.suppress(TimeoutError):  # a start reserved: wait for its Create
                await asyncio.wait_for(stop.wait(), min(max(book.seconds_left(), 0.01), 1.0))


def _reserve_service(service: TaskService) -> ttrpc.Service:
    """``runwasi.shim.v1.Shim/Reserve{1: id}``: a ``start`` holds this daemon for a Create.

    (The context parameter is annotated ``object``: ttrpc resolves the hints in this
    module's globals, where ttrpc is imported lazily.)
    """
    import ttrpc
    from runwasi_py._daemon.reservations import RESERVE_METHOD, RESERVE_SERVICE, ShimClosing
    from runwasi_py._errors import FailedPrecondition, InvalidArgument

    class ReserveService(ttrpc.Service):
        service_name = RESERVE_SERVICE

        @ttrpc.rpc(name=RESERVE_METHOD)
        async def reserve(self, request: RawMessage, context: object) -> RawMessage:
            container_id = _decode_reserve_id(request.data)
            if not container_id:
                raise InvalidArgument("reserve: the container id is empty")
            try:
                service.reservations.reserve(container_id)
            except ShimClosing as e:
                raise FailedPrecondition(f"reserve {container_id}: {e}") from None
            log.debug("reserved for %s", container_id)
            return RawMessage()

    return ReserveService()


def _decode_reserve_id(data: bytes) -> str:
    """Field 1 (string) of a ReserveRequest; "" when absent or malformed."""
    try:
        value = field_map(data).get(1, [b""])[-1]
        return value.decode("utf-8") if isinstance(value, bytes) else ""
    except (ValueError, UnicodeDecodeError):
        return ""


def _native_runtime(cfg: Config, namespace: str, ttrpc_address: str) -> NativeRuntime | None:
    """Native containers for this daemon, or None when the shim author turned them off.

    The runc state root is keyed by containerd's address (``TTRPC_ADDRESS`` is containerd's
    socket + ``.ttrpc``; the ``delete`` action gets the same value) and the namespace.
    """
    if not cfg.native_containers:
        return None
    from runwasi_py._native._runtime import NativeRuntime

    return NativeRuntime(namespace=namespace, containerd_address=ttrpc_address)
