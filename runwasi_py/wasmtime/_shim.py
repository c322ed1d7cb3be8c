"""``containerd-shim-pywasmtime-v1``: the shim class, built as any shim author would."""

from __future__ import annotations

from typing import ClassVar

from runwasi_py._sandbox import Sandbox
from runwasi_py._shim import Shim
from runwasi_py.wasmtime._sandbox import WasmtimeSandbox

__all__ = ["PyWasmtimeShim"]


class PyWasmtimeShim(Shim):
    """The bundled shim: runtime ``io.containerd.pywasmtime.v1``, one wasmtime Engine per task.

    Example (what the console script does):
        >>> PyWasmtimeShim.run()

    Or serve it inside your own asyncio program:
        >>> await PyWasmtimeShim().serve(listener, namespace="default", ttrpc_address=addr)
    """

    name: ClassVar[str] = "pywasmtime"
    sandbox: ClassVar[type[Sandbox]] = WasmtimeSandbox
