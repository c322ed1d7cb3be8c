"""``containerd-shim-pywasmtime-v1`` and ``python -m runwasi_py.wasmtime``.

containerd runs it as ``containerd-shim-pywasmtime-v1 -namespace NS -address A
-publish-binary B -id ID start``; ``-v`` prints the version. Nothing here imports
``wasmtime``: ``start`` must stay fast, and only the daemon runs wasm.
"""

from __future__ import annotations

from typing import NoReturn

from runwasi_py.wasmtime._shim import PyWasmtimeShim

__all__ = ["main"]


def main() -> NoReturn:
    """The console-script entry point: run the pywasmtime shim with containerd's argv."""
    PyWasmtimeShim.run()


if __name__ == "__main__":
    main()
