"""Native containers through runc: classification, the runc driver, the reaper, the task.

A container whose entrypoint is an executable (ELF or ``#!``) runs as a real Linux container
through the ``runc`` binary, beside the pod's wasm containers in the same shim daemon.
"""

from __future__ import annotations

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
