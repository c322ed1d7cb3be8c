"""What a Sandbox is told about the container it runs: :class:`RuntimeContext`.

The context is built by the framework at Create from the bundle's ``config.json`` and the
CreateTaskRequest, and handed to ``Sandbox.run_wasi`` on the instance's worker thread.
It also carries the kill signal from the control plane to the engine (:meth:`on_kill`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runwasi_py._stdio import Stdio

__all__ = ["Entrypoint", "Mount", "RuntimeContext", "Stdio"]  # Stdio lives in _stdio

WASM_MAGIC = b"\0asm"


@dataclass(frozen=True, slots=True)
class Entrypoint:
    """``process.args[0]`` split on ``#``: ``/app/app.wasm#init`` -> path + func.

    ``source`` is the resolved host path of the module inside the rootfs (None when the
    path is empty, as in ``#init``); it never points outside the rootfs.
    """

    path: str
    func: str = "_start"
    source: Path | None = None

    @property
    def name(self) -> str:
        """The module's file stem (``app`` for ``/app/app.wasm``)."""
        return Path(self.path).stem

    def read_bytes(self) -> bytes:
        """The module's bytes (read on the calling thread)."""
        if self.source is None:
            raise FileNotFoundError(f"entrypoint {self.path!r} has no source")
        return self.source.read_bytes()

    @classmethod
    def parse(cls, arg0: str, source: Path | None = None) -> Entrypoint:
        """Split ``path#func``; func defaults to ``_start``.

        >>> Entrypoint.parse("/app.wasm#init")
        Entrypoint(path='/app.wasm', func='init', source=None)
        """
        path, sep, func = arg0.partition("#")
        return cls(path=path, func=func if sep and func else "_start", source=source)


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount from the OCI spec that the instance should see: host source -> guest path."""

    destination: str
    source: str
    type: str = "bind"
    options: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class RuntimeContext:
    """Everything ``run_wasi`` needs about one container.

    Example:
        >>> class Hello(Sandbox):
        ...     async def run_wasi(self, ctx: RuntimeContext) -> int:
        ...         out = ctx.stdio.open_stdout()
        ...         out.write(f"hello {ctx.args[1:]}\\n".encode())
        ...         return 0
    """

    container_id: str
    namespace: str
    bundle: Path
    rootfs: Path
    args: list[str]
    envs: list[str]
    cwd: str
    entrypoint: Entrypoint
    stdio: Stdio = field(default_factory=Stdio)
    mounts: list[Mount] = field(default_factory=list)
    memory_limit: int | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    precompiled: Path | None = None
    """A compiled artifact for the entrypoint from the compile cache (see Sandbox.compile)."""

    _kill_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _kill_signal: int | None = field(default=None, repr=False)
    _kill_callbacks: list[Callable[[int], None]] = field(default_factory=list, repr=False)
    _oom: bool = field(default=False, repr=False)

    @property
    def kill_signal(self) -> int | None:
        """The signal the task was killed with, or None while it was not killed."""
        return self._kill_signal

    def on_kill(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(signal)`` when the task is killed (at once if it already was).

        The callback runs on the control-plane thread: it must be quick and thread-safe
        (wasmtime's ``engine.increment_epoch()`` is).
        """
        with self._kill_lock:
            sig = self._kill_signal
            if sig is None:
                self._kill_callbacks.append(callback)
                return
        callback(sig)

    def deliver_kill(self, signal: int) -> None:
        """Record the kill and run the callbacks (framework side; any thread)."""
        with self._kill_lock:
            if self._kill_signal is None:
                self._kill_signal = signal
            callbacks, self._kill_callbacks = self._kill_callbacks, []
        for cb in callbacks:
            cb(signal)

    def report_oom(self) -> None:
        """The engine says the memory limit ended the instance: a TaskOOM event follows."""
        self._oom = True

    @property
    def oom(self) -> bool:
        """True once :meth:`report_oom` was called."""
        return self._oom
