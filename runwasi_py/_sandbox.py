"""The class a shim author subclasses: :class:`Sandbox`, one instance per container."""

from __future__ import annotations

from typing import ClassVar

from runwasi_py._context import WASM_MAGIC, RuntimeContext
from runwasi_py._errors import InvalidArgument

__all__ = ["Sandbox"]


class Sandbox:
    """Runs one container's workload. Subclass it and write :meth:`run_wasi`.

    One Sandbox is made (with no arguments) per container at Create. ``run_wasi`` runs on
    the instance's own worker thread with its own event loop, so it may block.

    Example:
        >>> class MySandbox(Sandbox):
        ...     async def run_wasi(self, ctx: RuntimeContext) -> int:
        ...         return 0   # the exit code
    """

    supported_layer_types: ClassVar[tuple[str, ...]] = (
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        "application/wasm",
    )

    template_modules: ClassVar[tuple[str, ...]] = ()
    """Modules the pod daemon template imports before it forks pods' daemons: what this
    sandbox imports lazily (an engine, its optional parts) that every daemon would
    otherwise import after the fork, paying the time and private pages per pod."""

    drain_timeout: ClassVar[float] = 10.0
    """Seconds to wait after ``run_wasi`` returns for the output FIFOs to be read before the
    exit is reported (see ``runwasi_py._stdio``); the wait ends as soon as the pipes
    are empty or their readers are gone, so it costs nothing when the client keeps up."""

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        """Run the workload and return its exit code. Required."""
        raise NotImplementedError(f"{type(self).__name__}.run_wasi")

    async def can_handle(self, ctx: RuntimeContext) -> None:
        """Refuse a container this sandbox cannot run by raising :class:`InvalidArgument`.

        Called at Create. The default accepts an entrypoint whose file starts with the wasm
        magic ``\\0asm``.
        """
        src = ctx.entrypoint.source
        if src is None or not src.is_file():
            raise InvalidArgument(f"entrypoint {ctx.entrypoint.path!r} not found in the rootfs")
        with src.open("rb") as f:
            if f.read(4) != WASM_MAGIC:
                raise InvalidArgument(f"entrypoint {ctx.entrypoint.path!r} is not a wasm module")

    def interrupt(self, signal: int) -> None:
        """Stop the running workload because the task was killed with ``signal``.

        Called on the control-plane thread (must be quick and thread-safe) after the kill
        was recorded in the context; the framework also cancels the ``run_wasi`` coroutine.
        """

    def notify_signal(self, signal: int) -> None:
        """A signal arrived that does not end a process by default (SIGCHLD, SIGURG, SIGWINCH,
        SIGCONT, SIGSTOP and the terminal stops; see ``runwasi_py._task.signals``).

        The task keeps running either way; a sandbox whose guest asked for such a signal
        passes it on here. Control-plane thread: quick and thread-safe. Default: nothing.
        """

    def cache_key(self) -> str | None:
        """Identify the compiler (engine version and settings) for the compile cache.

        None (the default) turns precompiling off.
        """
        return None

    def compile(self, wasm: bytes) -> bytes:
        """Compile a module into an artifact this sandbox can load (worker thread).

        Called at Create when :meth:`cache_key` is not None and the cache has no artifact for
        (sha256 of the module, cache_key); the result reaches ``run_wasi`` as
        ``ctx.precompiled``.
        """
        raise NotImplementedError(f"{type(self).__name__}.compile")
