"""containerd's API messages as betterproto2 classes, for the rest of the framework.

The ``.proto`` files in ``protos/`` were written for this project from the published field
numbers; ``gen/`` is generated from them by ``scripts/gen_protos.sh`` (betterproto2-compiler
0.10.1, ``client_generation=none,server_generation=none``). This module re-exports what the
framework uses and adds the two containerd-specific helpers betterproto2 lacks:

* :func:`pack_any` sets the **bare** type url (``containerd.events.TaskExit``): containerd 1.6
  resolves only exact names, and ``Any.pack`` would add ``type.googleapis.com/``.
* :data:`GO_ZERO_TIME` is Go's ``time.Time{}``: what the runc shim sends as ``exited_at`` for a
  process that has not exited yet.

Example:
    >>> from runwasi_py._proto.messages import TaskExit, pack_any
    >>> pack_any(TaskExit(container_id="c1")).type_url
    'containerd.events.TaskExit'
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import betterproto2

from runwasi_py._proto.gen.containerd import events as events
from runwasi_py._proto.gen.containerd.events import (
    TaskCheckpointed,
    TaskCreate,
    TaskDelete,
    TaskExecAdded,
    TaskExecStarted,
    TaskExit,
    TaskIo,
    TaskOom,
    TaskPaused,
    TaskResumed,
    TaskStart,
)
from runwasi_py._proto.gen.containerd.runc.v1 import (
    CheckpointOptions as RuncCheckpointOptions,
)
from runwasi_py._proto.gen.containerd.runc.v1 import Options as RuncOptions
from runwasi_py._proto.gen.containerd.runc.v1 import ProcessDetails
from runwasi_py._proto.gen.containerd.runtime.bootstrap.v1 import (
    BootstrapParams,
    BootstrapResult,
    Extension,
    LogLevel,
)
from runwasi_py._proto.gen.containerd.services.events.ttrpc.v1 import Envelope, ForwardRequest
from runwasi_py._proto.gen.containerd.task import v2 as task_v2
from runwasi_py._proto.gen.containerd.task import v3 as task_v3
from runwasi_py._proto.gen.containerd.task.v2 import (
    CheckpointTaskRequest,
    CloseIoRequest,
    ConnectRequest,
    ConnectResponse,
    CreateTaskRequest,
    CreateTaskResponse,
    DeleteRequest,
    DeleteResponse,
    ExecProcessRequest,
    ExecProcessResponse,
    KillRequest,
    PauseRequest,
    PidsRequest,
    PidsResponse,
    ResizePtyRequest,
    ResumeRequest,
    ShutdownRequest,
    StartRequest,
    StartResponse,
    StateRequest,
    StateResponse,
    StatsRequest,
    StatsResponse,
    UpdateTaskRequest,
    WaitRequest,
    WaitResponse,
)
from runwasi_py._proto.gen.containerd.types import Mount, RuntimeInfo, RuntimeVersion
from runwasi_py._proto.gen.containerd.v1.types import Process, ProcessInfo, Status
from runwasi_py._proto.gen.google.protobuf import Any, Empty, Timestamp
from runwasi_py._proto.gen.message_pool import default_message_pool
from runwasi_py._proto.gen.runtimeoptions.v1 import Options as RuntimeOptions

if TYPE_CHECKING:
    from runwasi_py._proto.gen.io.containerd.cgroups import v1 as cgroups_v1
    from runwasi_py._proto.gen.io.containerd.cgroups import v2 as cgroups_v2

# Loaded on first use (Stats): ~10 ms of the daemon's boot otherwise.
_LAZY_MODULES = {
    "cgroups_v1": "runwasi_py._proto.gen.io.containerd.cgroups.v1",
    "cgroups_v2": "runwasi_py._proto.gen.io.containerd.cgroups.v2",
}


def __getattr__(name: str) -> object:
    target = _LAZY_MODULES.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module = importlib.import_module(target)
    globals()[name] = module
    return module


__all__ = [
    "GO_ZERO_TIME",
    "TYPE_URL_PREFIX",
    "Any",
    "BootstrapParams",
    "BootstrapResult",
    "CheckpointTaskRequest",
    "CloseIoRequest",
    "ConnectRequest",
    "ConnectResponse",
    "CreateTaskRequest",
    "CreateTaskResponse",
    "DeleteRequest",
    "DeleteResponse",
    "Empty",
    "Envelope",
    "ExecProcessRequest",
    "ExecProcessResponse",
    "Extension",
    "ForwardRequest",
    "KillRequest",
    "LogLevel",
    "Mount",
    "PauseRequest",
    "PidsRequest",
    "PidsResponse",
    "Process",
    "ProcessDetails",
    "ProcessInfo",
    "ResizePtyRequest",
    "ResumeRequest",
    "RuncCheckpointOptions",
    "RuncOptions",
    "RuntimeInfo",
    "RuntimeOptions",
    "RuntimeVersion",
    "ShutdownRequest",
    "StartRequest",
    "StartResponse",
    "StateRequest",
    "StateResponse",
    "StatsRequest",
    "StatsResponse",
    "Status",
    "TaskCheckpointed",
    "TaskCreate",
    "TaskDelete",
    "TaskExecAdded",
    "TaskExecStarted",
    "TaskExit",
    "TaskIo",
    "TaskOom",
    "TaskPaused",
    "TaskResumed",
    "TaskStart",
    "Timestamp",
    "UpdateTaskRequest",
    "WaitRequest",
    "WaitResponse",
    "cgroups_v1",
    "cgroups_v2",
    "events",
    "full_name",
    "pack_any",
    "task_v2",
    "task_v3",
    "unpack_any",
]

TYPE_URL_PREFIX = "type.googleapis.com/"
"""What betterproto2's message pool (and protobuf's ``Any.Pack``) puts before a type name."""

GO_ZERO_TIME = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
"""Go's zero ``time.Time``; encodes as ``Timestamp{seconds: -62135596800}``.

The runc shim sends it as ``exited_at`` while a process runs (gogo non-nullable in 1.6,
``timestamppb.New(time.Time{})`` in 2.x); omitting the field would decode as 1970 in 2.x.
betterproto2 Timestamp fields are ``datetime``, so this is a ``datetime``.
"""


def full_name(message_type: type[betterproto2.Message]) -> str:
    """The proto full name of a generated message class (``containerd.events.TaskExit``)."""
    try:
        url = default_message_pool.type_to_url[message_type]
    except KeyError:
        raise TypeError(f"{message_type.__qualname__} is not a registered message") from None
    return url.removeprefix(TYPE_URL_PREFIX)


def pack_any(message: betterproto2.Message) -> Any:
    """Wrap ``message`` in an ``Any`` whose type url is the bare full name.

    >>> pack_any(ConnectResponse(shim_pid=1)).type_url
    'containerd.task.v2.ConnectResponse'
    """
    return Any(type_url=full_name(type(message)), value=bytes(message))


def unpack_any(value: Any) -> betterproto2.Message:
    """Decode an ``Any`` with a bare or prefixed type url into its generated class.

    Raises ``TypeError`` for an unknown type url and ``ValueError`` for an empty one.
    """
    if not value.type_url:
        raise ValueError("Any has no type_url")
    name = value.type_url.rpartition("/")[2]
    if name.startswith("io.containerd.cgroups."):  # registered when first imported
        __getattr__("cgroups_v1" if ".v1." in name else "cgroups_v2")
    try:
        message_type = default_message_pool.url_to_type[TYPE_URL_PREFIX + name]
    except KeyError:
        raise TypeError(f"unknown message type {value.type_url!r}") from None
    return message_type.FromString(value.value)


def _install_fast_encoders() -> None:
    """Planned ``__bytes__`` for the messages sent on every task (see ``_proto._fast``)."""
    from runwasi_py._proto import _fast
    from runwasi_py._proto.gen.containerd.types import Mount as TypesMount

    _fast.install(
        [
            TypesMount,
            TaskIo,
            TaskCreate,
            TaskStart,
            TaskExit,
            TaskDelete,
            CreateTaskResponse,
            StartResponse,
            WaitResponse,
            DeleteResponse,
            StateResponse,
            ConnectResponse,
            Empty,
            Any,
            Envelope,
        ]
    )


_install_fast_encoders()
