"""The bundled wasmtime engine: :class:`WasmtimeSandbox` (and the ``pywasmtime`` shim).

Importing this package does not import ``wasmtime`` (that costs ~28 ms of a shim's
``start``); the engine loads it on first use.
"""

from runwasi_py.wasmtime._sandbox import WasmtimeSandbox

__all__ = ["WasmtimeSandbox"]
