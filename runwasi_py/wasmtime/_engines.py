"""One wasmtime Engine per worker thread, with its deserialised modules and its WASI linker.

Why: creating an Engine, deserialising the artifact into it and defining WASI in a fresh
Linker cost about 1.4 ms per task on this project's 2-core machine (``benchmarks/
shim_stress.py``), more than the run of a small program itself. A worker thread runs one
instance at a time, so the thread's Engine serves one Store at a time and stays what the
kill design needs: bumping *this* engine's epoch stops exactly the instance running on it.
A Store's epoch deadline is relative ("one tick after now"), so a bump left over from an
earlier instance (a kill, or our ``proc_exit``) does not reach the next one.

A thread has one slot per ``max_memories`` (the engine's configuration depends on it, see
``_budget``): a module deserialised for one configuration never runs in another.

The thread's Linker holds WASI, our ``proc_exit`` and our interruptible ``poll_oneoff``
(``_poll``). Both host functions read the run they serve from the slot when called:
:meth:`EngineSlot.module_linker` installs each run's own exit record, kill wake event and
monotonic clock start, so nothing of one task (its exit status, a kill's set event) reaches
the next task on the same linker. Modules are cached by the artifact file's identity (device,
inode, size, mtime), a few per thread; a changed or replaced artifact is a new key. Only
compile-cache entries that passed the trust check go through this cache (``_sandbox``): an
image's own artifact is deserialised afresh each run and never lands here.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import wasmtime

__all__ = ["EngineSlot", "slot_for_this_thread"]

_MODULES_PER_THREAD = 8


class EngineSlot:
    """A worker thread's Engine, its module cache and its WASI linker (that thread only)."""

    def __init__(self, max_memories: int = 1) -> None:
        from runwasi_py.wasmtime._sandbox import new_engine

        self.max_memories = max_memories
        self.engine = new_engine(max_memories)
        self._modules: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._linker: wasmtime.Linker | None = None
        self._exited: list[int] = []
        self._wake = threading.Event()  # the running task's; replaced per run
        self._mono_base = time.monotonic_ns()

    def module(self, path: os.PathLike[str] | str, st: os.stat_result | None = None) -> Any:
        """The artifact at ``path`` deserialised as a core module (cached); WasmtimeError.

        The caller has checked that ``path`` may run (a trusted compile-cache entry) on this
        call: a cache hit is no proof of trust. ``st``: the file's stat from that check.
        """
        import wasmtime

        if st is None:
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

    def module_linker(self, wake: threading.Event) -> tuple[wasmtime.Linker, list[int]]:
        """The WASI linker and a fresh ``proc_exit`` record for the run about to start.

        ``wake`` is that run's kill event (its ``poll_oneoff`` returns when it is set). Call
        after the store's WASI context is made: now is the start of the guest's monotonic
        clock (as for :func:`~runwasi_py.wasmtime._poll.define_poll_oneoff`).
        """
        self._exited = []
        self._wake = wake
        self._mono_base = time.monotonic_ns()
        if self._linker is None:
            self._linker = self._new_linker()
        return self._linker, self._exited

    def end_run(self) -> None:
        """Forget the finished run's kill event (a later set of it wakes nothing here)."""
        self._wake = threading.Event()

    def _new_linker(self) -> wasmtime.Linker:
        import wasmtime

        from runwasi_py.wasmtime._poll import define_poll_oneoff_per_run

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
        define_poll_oneoff_per_run(linker, self._current_run)
        return linker

    def _current_run(self) -> tuple[threading.Event, int]:
        return self._wake, self._mono_base


_local = threading.local()


def slot_for_this_thread(max_memories: int = 1) -> EngineSlot:
    """This thread's :class:`EngineSlot` for ``max_memories`` memories, made on first use."""
    slots: dict[int, EngineSlot] | None = getattr(_local, "slots", None)
    if slots is None:
        slots = _local.slots = {}
    slot = slots.get(max_memories)
    if slot is None:
        slot = slots[max_memories] = EngineSlot(max_memories)
    return slot
