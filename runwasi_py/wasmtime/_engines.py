"""One wasmtime Engine per worker thread, with its deserialised modules and its WASI linker.

Why: creating an Engine, deserialising the artifact into it and defining WASI in a fresh
Linker cost about 1.4 ms per task on this project's 2-core machine (``benchmarks/
shim_stress.py``), more than the run of a small program itself. A worker thread runs one
instance at a time, so the thread's Engine serves one Store at a time and stays what the
kill design needs: bumping *this* engine's epoch stops exactly the instance running on it.
A Store's epoch deadline is relative ("one tick after now"), so a bump left over from an
earlier instance (a kill, or our ``proc_exit``) does not reach the next one.

The thread's Linker holds WASI and our ``proc_exit`` (which records the status of whatever
instance runs on this thread: :meth:`EngineSlot.module_linker` hands out a fresh record per
run). Modules are cached by the artifact file's identity (device, inode, size, mtime), a few
per thread; a changed or replaced artifact is a new key.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import wasmtime

__all__ = ["EngineSlot", "slot_for_this_thread"]

_MODULES_PER_THREAD = 8


class EngineSlot:
    """A worker thread's Engine, its module cache and its WASI linker (that thread only)."""

    def __init__(self) -> None:
        from runwasi_py.wasmtime._sandbox import new_engine

        self.engine = new_engine()
        self._modules: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._linker: wasmtime.Linker | None = None
        self._exited: list[int] = []

    def module(self, path: os.PathLike[str] | str) -> Any:
        """The artifact at ``path`` deserialised as a core module (cached); WasmtimeError."""
        import wasmtime

        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        module = self._modules.get(key)
        if module is not None:
            self._modules.move_to_end(key)
            return module
        module = wasmtime.Module.deserialize_file(self.engine, os.fspath(path))
        self._modules[key] = module
        if len(self._modules) > _MODULES_PER_THREAD:
            self._modules.popitem(last=False)
        return module

    def module_linker(self) -> tuple[wasmtime.Linker, list[int]]:
        """The WASI linker and a fresh ``proc_exit`` record for the run about to start."""
        self._exited = []
        if self._linker is None:
            self._linker = self._new_linker()
        return self._linker, self._exited

    def _new_linker(self) -> wasmtime.Linker:
        import wasmtime

        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        # wasmtime's own proc_exit refuses statuses of 126 and above (a trap: "exit with
        # invalid exit status outside of [0..126)"), but a container may exit 255. Ours
        # records the status and bumps the epoch: the guest stops at its next function
        # entry or loop header (wasi-libc executes `unreachable` right after the call), and
        # the record, not the trap, gives the exit status. It does not raise: wasmtime-py
        # passes an exception out of a host function through one process-wide variable,
        # which concurrent instances on other threads could pick up.
        engine = self.engine

        def proc_exit(status: int) -> None:
            exited = self._exited
            if not exited:
                exited.append(status & 0xFFFFFFFF)  # the i32 arrives signed
            engine.increment_epoch()

        linker.allow_shadowing = True
        i32 = wasmtime.ValType.i32()
        linker.define_func(
            "wasi_snapshot_preview1", "proc_exit", wasmtime.FuncType([i32], []), proc_exit
        )
        return linker


_local = threading.local()


def slot_for_this_thread() -> EngineSlot:
    """This thread's :class:`EngineSlot`, made on first use."""
    slot: EngineSlot | None = getattr(_local, "slot", None)
    if slot is None:
        slot = EngineSlot()
        _local.slot = slot
    return slot
