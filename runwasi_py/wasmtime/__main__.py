"""``containerd-shim-pywasmtime-v1`` and ``python -m runwasi_py.wasmtime``.

containerd runs it as ``containerd-shim-pywasmtime-v1 -namespace NS -address A
-publish-binary B -id ID start``; ``-v`` prints the version. The shim is named by its
import path, so ``start`` and ``delete`` never import the engine (nor ``wasmtime``): only
the daemon runs wasm.
"""

from __future__ import annotations

from typing import NoReturn

from runwasi_py import shim_main

__all__ = ["main"]

SHIM = "runwasi_py.wasmtime._shim:PyWasmtimeShim"


def main() -> NoReturn:
    """The console-script entry point: run the pywasmtime shim with containerd's argv."""
    shim_main(SHIM)


if __name__ == "__main__":
    main()
