"""runwasi-py: write a containerd shim for WebAssembly with one ``async def run_wasi``.

The public names a shim author needs are here: :class:`Shim`, :class:`Sandbox`,
:class:`RuntimeContext`, :class:`Entrypoint`, :class:`Config`, :func:`version`,
:mod:`errors` (and its error classes) and :func:`shim_main`. They load on first use
(PEP 562): containerd runs the shim binary for ``start`` and ``delete`` on every container,
and those paths must not pay for asyncio, the task service or an engine.

Example:
    >>> from runwasi_py import RuntimeContext, Sandbox, Shim
    >>> class MySandbox(Sandbox):
    ...     async def run_wasi(self, ctx: RuntimeContext) -> int:
    ...         return 0
    >>> class MyShim(Shim):
    ...     name = "my-shim"
    ...     sandbox = MySandbox
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing alone costs ~20 ms on the start path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from runwasi_py import _errors as errors
    from runwasi_py._compile_cache import CompileCache
    from runwasi_py._context import Entrypoint, Mount, RuntimeContext
    from runwasi_py._errors import (
        AlreadyExists,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        ShimError,
        Unimplemented,
    )
    from runwasi_py._events.publisher import EventSink
    from runwasi_py._launch.main import shim_main
    from runwasi_py._output_pump import AppendingPipe, hand_appending_file, pipe_paths_work
    from runwasi_py._sandbox import Sandbox
    from runwasi_py._shim import Config, Shim, version
    from runwasi_py._stdio import (
        AppendingOutput,
        FifoUnblocker,
        OutputHold,
        Stdio,
        stdin_opens_at_once,
    )

_EXPORTS = {
    "AlreadyExists": "runwasi_py._errors",
    "Config": "runwasi_py._shim",
    "Entrypoint": "runwasi_py._context",
    "EventSink": "runwasi_py._events.publisher",
    "FailedPrecondition": "runwasi_py._errors",
    "InvalidArgument": "runwasi_py._errors",
    "Mount": "runwasi_py._context",
    "NotFound": "runwasi_py._errors",
    "RuntimeContext": "runwasi_py._context",
    "Sandbox": "runwasi_py._sandbox",
    "Shim": "runwasi_py._shim",
    "ShimError": "runwasi_py._errors",
    "Stdio": "runwasi_py._stdio",
    "AppendingOutput": "runwasi_py._stdio",
    "AppendingPipe": "runwasi_py._output_pump",
    "pipe_paths_work": "runwasi_py._output_pump",
    "hand_appending_file": "runwasi_py._output_pump",
    "FifoUnblocker": "runwasi_py._stdio",
    "OutputHold": "runwasi_py._stdio",
    "stdin_opens_at_once": "runwasi_py._stdio",
    "CompileCache": "runwasi_py._compile_cache",
    "Unimplemented": "runwasi_py._errors",
    "version": "runwasi_py._shim",
    "shim_main": "runwasi_py._launch.main",
}

__all__ = [
    "AlreadyExists",
    "AppendingOutput",
    "AppendingPipe",
    "CompileCache",
    "Config",
    "Entrypoint",
    "EventSink",
    "FailedPrecondition",
    "FifoUnblocker",
    "InvalidArgument",
    "Mount",
    "NotFound",
    "OutputHold",
    "RuntimeContext",
    "Sandbox",
    "Shim",
    "ShimError",
    "Stdio",
    "Unimplemented",
    "errors",
    "hand_appending_file",
    "pipe_paths_work",
    "shim_main",
    "stdin_opens_at_once",
    "version",
]


def __getattr__(name: str) -> Any:
    if name == "errors":
        value: Any = _module("runwasi_py._errors")
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runwasi_py' has no attribute {name!r}")
    value = getattr(_module(module), name)
    globals()[name] = value
    return value


def _module(name: str) -> Any:
    """``importlib.import_module(name)`` without importlib, which loads ``warnings``: the
    console script's ``from runwasi_py import shim_main`` comes here on every ``start``."""
    import sys

    __import__(name)
    return sys.modules[name]


def __dir__() -> list[str]:
    return sorted(__all__)
