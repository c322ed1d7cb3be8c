"""The shim daemon process: logging, fd 3, subreaper, ``Shim.serve`` until Shutdown."""

from __future__ import annotations

import contextlib
import os

from runwasi_py._bundle.group import GROUP_ENV
from runwasi_py._daemon.reaper import set_child_subreaper
from runwasi_py._launch.address import bound_path, inode
from runwasi_py._launch.pod_cgroup import NOTE_ENV, leave_at_exit
from runwasi_py._launch.start import LISTENER_FD

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from runwasi_py._launch.flags import Flags
    from runwasi_py._shim import Shim


def run_daemon(shim: type[Shim], flags: Flags) -> int:
    import logging
    import signal
    import socket as socket_mod

    # What serve() needs, imported before serve() runs: a shim's serve() may start a
    # background import (pywasmtime imports wasmtime on a thread), which would otherwise
    # share the GIL with these imports and delay the first accepted connection.
    import runwasi_py._events.publisher
    import runwasi_py._task.service  # noqa: F401
    import ttrpc
    from runwasi_py._daemon.log import setup_logging

    bundle = os.path.abspath(flags.bundle or os.getcwd())
    log = logging.getLogger("runwasi_py.daemon")
    if not shim.config.no_setup_logger:
        level = logging.getLevelName(shim.config.default_log_level.upper())
        setup_logging(
            bundle,
            debug=flags.debug,
            default_level=level if isinstance(level, int) else logging.INFO,
        )
    try:
        listener = socket_mod.socket(fileno=LISTENER_FD)
    except OSError as e:
        log.error("no listening socket on fd %d: %s", LISTENER_FD, e)
        return 1
    # start passed it inheritable; no child (runc, a Sandbox's subprocess) may hold it
    listener.set_inheritable(False)
    path = bound_path(listener)
    bound_inode = inode(path)
    set_child_subreaper()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS", "")
    log.info("shim %s starting", shim.name, extra={"namespace": flags.namespace, "id": flags.id})
    placed = os.environ.pop(NOTE_ENV, "")
    if placed:
        log.info("%s", placed)
    try:
        shared = os.environ.get(GROUP_ENV) == "namespace"
        linger = shim.config.linger if shared else 0.0
        ttrpc.run(_serve(shim(), listener, flags.namespace, ttrpc_address, linger))
    except Exception:
        log.exception("shim failed")
        return 1
    finally:
        if path and inode(path) == bound_inode:  # still ours: not replaced by a newer shim
            with contextlib.suppress(OSError):
                os.unlink(path)
        leave_at_exit(bundle)
    return 0


async def _serve(
    shim: Shim, listener: socket.socket, namespace: str, ttrpc_address: str, linger: float = 0.0
) -> None:
    import asyncio
    import logging
    import signal

    from runwasi_py._events.publisher import EventPublisher, NullEventSink

    log = logging.getLogger("runwasi_py.daemon")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shim.shutdown)
    from runwasi_py._native._reaper import process_reaper

    # One reaper for the daemon: it waits for runc's commands and containers' inits by pid
    # and sweeps the orphans nobody waits for (see runwasi_py._native._reaper).
    reaper = asyncio.ensure_future(process_reaper().sweep_forever())
    publisher = EventPublisher(ttrpc_address, namespace) if ttrpc_address else None
    if publisher is None:
        log.warning("TTRPC_ADDRESS is not set: task events are not published")
    # An attribute, not a serve() keyword: a Shim subclass may override serve() with the
    # older signature and call super().serve() without it.
    shim.linger = linger
    try:
        await shim.serve(
            listener,
            namespace=namespace,
            ttrpc_address=ttrpc_address,
            publisher=publisher if publisher is not None else NullEventSink(),
        )
    finally:
        reaper.cancel()
        if publisher is not None:
            await publisher.close(timeout=shim.config.shutdown_timeout)
