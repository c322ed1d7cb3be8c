"""How a wasmtime run ends: exit statuses, kills, traps, out-of-memory, the message on stderr."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import wasmtime

    from runwasi_py import RuntimeContext

log = logging.getLogger("runwasi_py.wasmtime")

EXIT_TRAP = 137
"""A trap or an out-of-memory end (128 + SIGKILL, as a cgroup OOM kill would give)."""


EXIT_CANNOT_RUN = 1
"""The program could not be started (bad module, missing export, unlinkable import)."""


_PAGE = 65536


class _Killed(Exception):
    """A kill arrived between two steps of a run; carries no state (control flow only)."""


def _memory_at_limit(instance: Any, store: wasmtime.Store, cap: int) -> bool:
    """Whether the guest trapped with a memory (nearly) at its cap (bytes per memory).

    wasmtime-py's store limits make ``memory.grow`` return -1 instead of trapping and
    offer no callback, so a refusal is invisible; the guest's allocator then traps or
    aborts. A trap with an exported memory within a quarter of the cap (at least two
    pages) of it is taken as out of memory: allocators grow in steps, and a refused step
    leaves the memory short of the cap by up to that step. (A component's memories are
    not visible from here: for components only a refused instantiation counts.)
    """
    import wasmtime

    if instance is None:
        return False
    try:
        exports = instance.exports(store)
        sizes = [e.data_len(store) for e in exports.by_index if isinstance(e, wasmtime.Memory)]
    except Exception:  # a store that cannot be inspected: not our verdict
        return False
    return any(used > 0 and used + max(2 * _PAGE, cap // 4) > cap for used in sizes)


def _check_kill(ctx: RuntimeContext) -> None:
    if ctx.kill_signal is not None:
        raise _Killed


def _killed_status(ctx: RuntimeContext) -> int:
    sig = ctx.kill_signal
    return 128 + (sig if sig is not None else 9)


def _message(exc: BaseException) -> str:
    import wasmtime

    if isinstance(exc, wasmtime.Trap):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _cannot_run(ctx: RuntimeContext, message: str) -> int:
    log.error("container %s: %s", ctx.container_id, message)
    _write_stderr(ctx, message + "\n")
    return EXIT_CANNOT_RUN


def _write_stderr(ctx: RuntimeContext, text: str) -> None:
    """Best effort: the container's stderr after the guest let go of it.

    Non-blocking, so a FIFO nobody reads any more (ENXIO) or a full pipe is skipped
    rather than hanging the worker.
    """
    path = ctx.stdio.stderr
    if not path:
        return
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600
        )
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)
