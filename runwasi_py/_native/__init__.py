"""Native containers through runc: classification, the runc driver, the reaper, the task.

A container whose entrypoint is an executable (ELF or ``#!``) runs as a real Linux container
through the ``runc`` binary, beside the pod's wasm containers in the same shim daemon.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._native._classify import NativeEntrypoint, classify_native, describe_file
    from runwasi_py._native._metrics import cgroup_v2_host, metrics_any, metrics_v1, metrics_v2
    from runwasi_py._native._reaper import (
        ProcessExit,
        Reaper,
        become_subreaper,
        exit_code,
        is_subreaper,
    )
    from runwasi_py._native._runc import (
        DEFAULT_STATE_BASE,
        Runc,
        RuncError,
        RuncUnavailable,
        find_runc,
        runc_message,
        state_root,
    )
    from runwasi_py._native._stdio import NativeStdio
    from runwasi_py._native._task import NativeTask

# Loaded on first use (PEP 562): ``delete`` imports the light ``_state`` module of this
# package and must not pay for asyncio, the reaper or the runc driver.
_WHERE = {
    "NativeEntrypoint": "_classify",
    "classify_native": "_classify",
    "describe_file": "_classify",
    "cgroup_v2_host": "_metrics",
    "metrics_any": "_metrics",
    "metrics_v1": "_metrics",
    "metrics_v2": "_metrics",
    "ProcessExit": "_reaper",
    "Reaper": "_reaper",
    "become_subreaper": "_reaper",
    "exit_code": "_reaper",
    "is_subreaper": "_reaper",
    "DEFAULT_STATE_BASE": "_runc",
    "Runc": "_runc",
    "RuncError": "_runc",
    "RuncUnavailable": "_runc",
    "find_runc": "_runc",
    "runc_message": "_runc",
    "state_root": "_runc",
    "NativeStdio": "_stdio",
    "NativeTask": "_task",
}


def __getattr__(name: str) -> object:
    import importlib  # here: importlib loads warnings, and delete needs neither

    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_STATE_BASE",
    "NativeEntrypoint",
    "NativeStdio",
    "NativeTask",
    "ProcessExit",
    "Reaper",
    "Runc",
    "RuncError",
    "RuncUnavailable",
    "become_subreaper",
    "cgroup_v2_host",
    "classify_native",
    "describe_file",
    "exit_code",
    "find_runc",
    "is_subreaper",
    "metrics_any",
    "metrics_v1",
    "metrics_v2",
    "runc_message",
    "state_root",
]
