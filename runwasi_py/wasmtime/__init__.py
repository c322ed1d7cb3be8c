"""The bundled wasmtime engine: :class:`WasmtimeSandbox` and the ``pywasmtime`` shim.

The names are loaded on first use (PEP 562), so ``containerd-shim-pywasmtime-v1 start``,
which runs ``runwasi_py.wasmtime.__main__``, pays for neither the engine module nor
``wasmtime`` itself (~28 ms): ``start`` must stay under 60 ms.

Example:
    >>> from runwasi_py.wasmtime import PyWasmtimeShim
    >>> PyWasmtimeShim.run()      # what containerd-shim-pywasmtime-v1 does
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: the console script imports this package on every start, and
# importing typing alone costs ~20 ms there.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runwasi_py.wasmtime._sandbox import WasmtimeSandbox
    from runwasi_py.wasmtime._shim import PyWasmtimeShim

__all__ = ["PyWasmtimeShim", "WasmtimeSandbox"]

_WHERE = {
    "PyWasmtimeShim": "runwasi_py.wasmtime._shim",
    "WasmtimeSandbox": "runwasi_py.wasmtime._sandbox",
}


def __getattr__(name: str) -> Any:
    import importlib  # here: importlib loads warnings, and start needs neither

    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
