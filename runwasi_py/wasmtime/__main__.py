"""``containerd-shim-pywasmtime-v1`` and ``python -m runwasi_py.wasmtime``.

containerd runs it as ``containerd-shim-pywasmtime-v1 -namespace NS -address A
-publish-binary B -id ID start``; ``-v`` prints the version. The shim is named by its
import path, so ``start`` and ``delete`` never import the engine (nor ``wasmtime``): only
the daemon runs wasm.
"""

from __future__ import annotations

from runwasi_py import shim_main

TYPE_CHECKING = False  # not typing's: start must not import typing
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["main"]

SHIM = "runwasi_py.wasmtime._shim:PyWasmtimeShim"


def main() -> NoReturn:
    """The console-script entry point: run the pywasmtime shim with containerd's argv."""
    shim_main(SHIM)


if __name__ == "__main__":
    main()
