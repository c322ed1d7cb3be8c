"""runwasi-py: write a containerd shim for WebAssembly with one ``async def run_wasi``."""

from runwasi_py._context import Entrypoint, Mount, RuntimeContext, Stdio
from runwasi_py._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ShimError,
    Unimplemented,
)
from runwasi_py._sandbox import Sandbox
from runwasi_py._shim import Config, Shim, version

__all__ = [
    "AlreadyExists",
    "Config",
    "Entrypoint",
    "FailedPrecondition",
    "InvalidArgument",
    "Mount",
    "NotFound",
    "RuntimeContext",
    "Sandbox",
    "Shim",
    "ShimError",
    "Stdio",
    "Unimplemented",
    "version",
]
