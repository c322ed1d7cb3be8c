"""``containerd-shim-pywasmtime-v1``: the shim class, built as any shim author would."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from runwasi_py import Sandbox, Shim
from runwasi_py.wasmtime._sandbox import WasmtimeSandbox, preload

if TYPE_CHECKING:
    import socket

    from runwasi_py import EventSink

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

    async def serve(
        self,
        listener: socket.socket,
        *,
        namespace: str,
        ttrpc_address: str,
        publisher: EventSink | None = None,
        linger: float | None = None,
    ) -> None:
        """As :meth:`Shim.serve`; wasmtime is imported in the background meanwhile."""
        # containerd sends Create right after start: overlap the engine's import with it.
        preload()
        await super().serve(
            listener,
            namespace=namespace,
            ttrpc_address=ttrpc_address,
            publisher=publisher,
            linger=linger,
        )
