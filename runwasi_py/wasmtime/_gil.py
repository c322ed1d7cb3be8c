"""wasmtime-py's calls that cannot block keep the GIL: :func:`keep_gil_in_short_calls`.

Why: wasmtime-py calls its C library through ctypes, which lets go of the GIL around every
call. Where other threads want the GIL (a loaded shim: its control loop and 8 workers
starting tasks), each release is a hand-off: a futex wake, a context switch, and the caller
queueing to get the GIL back. Of the ~20 C calls a hello task makes, 13 only touch memory
(a store, its WASI context, export lookups, function types), each a microsecond of work.
Made through ``ctypes.PYFUNCTYPE`` prototypes of the same functions (which keep the GIL), the
shim's CPU per task in ``benchmarks/shim_stress.py`` (FIFO row, tmpfs, 2 interleaved pairs)
went from 2.61-2.88 to 1.97-1.98 ms, the control loop's share from 0.93-1.09 to 0.76-0.77
ms, Create's median latency from 12.5-13.3 to 9.1-9.5 ms, and throughput from 391-442 to
560-563 tasks/s.

What keeps letting go of the GIL: everything that runs guest code (instantiation runs a
start function, calls), compiles or deserialises, opens or closes files (stdio, preopens,
dropping a store closes the guest's files), or is not in :data:`SHORT_CALLS`. Only the
module-level function pointers of ``wasmtime._bindings`` are replaced (wasmtime-py's public
wrappers look them up at each call); a name this wasmtime-py does not have is skipped, so an
upgrade can only make the list shorter, never break a call.
"""

from __future__ import annotations

import ctypes
import logging
import threading

__all__ = ["SHORT_CALLS", "keep_gil_in_short_calls"]

log = logging.getLogger("runwasi_py.wasmtime")

SHORT_CALLS = (
    "wasi_config_set_argv",
    "wasi_config_set_env",
    "wasmtime_store_new",
    "wasmtime_store_context",
    "wasmtime_store_limiter",
    "wasmtime_context_set_epoch_deadline",
    "wasmtime_context_set_wasi",
    "wasmtime_engine_increment_epoch",
    "wasmtime_instance_export_nth",
    "wasmtime_func_type",
    "wasm_functype_params",
    "wasm_functype_results",
    "wasm_functype_delete",
)
"""C functions that only touch memory: no guest code, no file, no lock held for long.

Checked with strace on wasmtime-py 50.0.1: none of them makes a system call. Not here:
``wasi_config_new`` (it seeds randomness with a ``getrandom`` that blocks until the
kernel's pool is ready, early at boot on old kernels)."""

_lock = threading.Lock()
_done = False


def keep_gil_in_short_calls() -> int:
    """Make wasmtime-py's :data:`SHORT_CALLS` keep the GIL (once per process; any thread).

    Returns how many were switched this call (0 when already done or not possible).
    """
    global _done
    if _done:
        return 0
    with _lock:
        if _done:
            return 0
        _done = True
        try:
            import wasmtime._bindings as bindings
            import wasmtime._ffi as ffi

            library = ffi.dll
        except (ImportError, AttributeError) as exc:  # another wasmtime-py layout
            log.debug("wasmtime calls keep releasing the GIL: %s", exc)
            return 0
        switched = 0
        for name in SHORT_CALLS:
            releasing = getattr(bindings, f"_{name}", None)
            if not isinstance(releasing, ctypes._CFuncPtr):  # type: ignore[attr-defined]
                continue
            # The same C function and signature, as a prototype that keeps the GIL.
            restype = releasing.restype  # a ctypes type in wasmtime-py, never a callable
            prototype = ctypes.PYFUNCTYPE(restype, *(releasing.argtypes or ()))  # type: ignore[arg-type]
            try:
                keeping = prototype((name, library))
            except AttributeError:
                continue
            setattr(bindings, f"_{name}", keeping)
            switched += 1
        return switched
