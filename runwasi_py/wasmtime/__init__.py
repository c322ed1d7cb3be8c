"""The bundled wasmtime engine: :class:`WasmtimeSandbox` and the ``pywasmtime`` shim.

Importing this package does not import ``wasmtime`` (that costs ~28 ms of a shim's
``start``); the engine loads it on first use.

Example:
    >>> from runwasi_py.wasmtime import PyWasmtimeShim
    >>> PyWasmtimeShim.run()      # what containerd-shim-pywasmtime-v1 does
"""

from runwasi_py.wasmtime._sandbox import WasmtimeSandbox
from runwasi_py.wasmtime._shim import PyWasmtimeShim

__all__ = ["PyWasmtimeShim", "WasmtimeSandbox"]
