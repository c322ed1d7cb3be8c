"""A Task API client for tests: create, start, wait, kill, delete, state, stats over ttrpc."""

from __future__ import annotations

import contextlib
import json
import signal as signal_mod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import ttrpc
from runwasi_py._proto.messages import (
    Any as AnyMessage,
)
from runwasi_py._proto.messages import (
    ConnectRequest,
    ConnectResponse,
    CreateTaskRequest,
    CreateTaskResponse,
    DeleteRequest,
    DeleteResponse,
    Empty,
    KillRequest,
    Mount,
    PidsRequest,
    PidsResponse,
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
    cgroups_v1,
    cgroups_v2,
)
from runwasi_py.testing.bundles import Bundle
from runwasi_py.testing.events_server import RecordedEvent

if TYPE_CHECKING:
    pass

_T = TypeVar("_T")

TASK_V2 = "containerd.task.v2.Task"
TASK_V3 = "containerd.task.v3.Task"


# -- the Task API ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What one task did: its exit code, output and the events the shim published."""

    exit_code: int
    stdout: str
    stderr: str
    events: list[RecordedEvent]

    @property
    def topics(self) -> list[str]:
        """The event topics in order (``/tasks/create`` ...)."""
        return [e.topic for e in self.events]


class TaskDriver:
    """Calls ``containerd.task.v2.Task`` (or v3) over a ttrpc connection, as containerd does.

    Example:
        >>> driver = TaskDriver(await ttrpc.Client.connect(address))
        >>> pid = await driver.create(bundle)
        >>> await driver.start(bundle.id)
        >>> (await driver.wait(bundle.id)).exit_status
        0
    """

    def __init__(
        self, client: ttrpc.Client, *, service: str = TASK_V2, timeout: float | None = 30.0
    ) -> None:
        self.client = client
        self.service = service
        self.timeout = timeout
        self.created: set[str] = set()
        """Ids created through this driver and not deleted yet."""

    async def _call(
        self,
        method: str,
        request: object,
        reply: type[_T],
        timeout: float | None = None,  # noqa: ASYNC109 - sent to the shim as the deadline
    ) -> _T:
        return await self.client.call(
            self.service, method, request, reply, timeout=timeout if timeout else self.timeout
        )

    async def create(
        self,
        bundle: Bundle | CreateTaskRequest,
        *,
        rootfs: Sequence[Mount] = (),
        terminal: bool = False,
    ) -> int:
        """Create the task; returns its pid. Opens the bundle's output FIFOs first."""
        if isinstance(bundle, Bundle):
            bundle.open_outputs()
            request = bundle.create_request(rootfs=rootfs, terminal=terminal)
        else:
            request = bundle
        reply = await self._call("Create", request, CreateTaskResponse)
        self.created.add(request.id)
        return reply.pid

    async def start(self, task_id: str, exec_id: str = "") -> int:
        """Start the task; returns its pid."""
        reply = await self._call("Start", StartRequest(id=task_id, exec_id=exec_id), StartResponse)
        return reply.pid

    async def wait(self, task_id: str, exec_id: str = "") -> WaitResponse:
        """Wait until the task exited (no deadline, as containerd)."""
        return await self.client.call(
            self.service, "Wait", WaitRequest(id=task_id, exec_id=exec_id), WaitResponse
        )

    async def kill(
        self,
        task_id: str,
        signal: int = signal_mod.SIGKILL,
        *,
        all: bool = False,
        exec_id: str = "",
    ) -> None:
        """Send ``signal`` to the task."""
        await self._call(
            "Kill", KillRequest(id=task_id, exec_id=exec_id, signal=signal, all=all), Empty
        )

    async def delete(self, task_id: str, exec_id: str = "") -> DeleteResponse:
        """Delete the task; returns its pid, exit status and exit time."""
        reply = await self._call(
            "Delete", DeleteRequest(id=task_id, exec_id=exec_id), DeleteResponse
        )
        self.created.discard(task_id)
        return reply

    async def state(self, task_id: str, exec_id: str = "") -> StateResponse:
        """The task's State."""
        return await self._call("State", StateRequest(id=task_id, exec_id=exec_id), StateResponse)

    async def pids(self, task_id: str) -> list[int]:
        """The pids of the task's processes."""
        reply = await self._call("Pids", PidsRequest(id=task_id), PidsResponse)
        return [p.pid for p in reply.processes]

    async def stats(self, task_id: str) -> cgroups_v2.Metrics:
        """The task's cgroup v2 Metrics (decoded from the Any)."""
        reply = await self._call("Stats", StatsRequest(id=task_id), StatsResponse)
        assert reply.stats is not None
        if reply.stats.type_url != "io.containerd.cgroups.v2.Metrics":
            raise AssertionError(f"unexpected stats type {reply.stats.type_url!r}")
        return cgroups_v2.Metrics.FromString(reply.stats.value)

    async def metrics(self, task_id: str) -> cgroups_v1.Metrics | cgroups_v2.Metrics:
        """The task's Stats as whichever Metrics the shim sent (v1 on a v1 host's cgroup)."""
        reply = await self._call("Stats", StatsRequest(id=task_id), StatsResponse)
        assert reply.stats is not None
        if reply.stats.type_url == "io.containerd.cgroups.v1.Metrics":
            return cgroups_v1.Metrics.FromString(reply.stats.value)
        if reply.stats.type_url == "io.containerd.cgroups.v2.Metrics":
            return cgroups_v2.Metrics.FromString(reply.stats.value)
        raise AssertionError(f"unexpected stats type {reply.stats.type_url!r}")

    async def update(self, task_id: str, resources: Mapping[str, object]) -> None:
        """Update with OCI ``LinuxResources`` (sent as containerd does: JSON in an Any)."""
        packed = AnyMessage(
            type_url="types.containerd.io/opencontainers/runtime-spec/1/LinuxResources",
            value=json.dumps(resources).encode(),
        )
        await self._call("Update", UpdateTaskRequest(id=task_id, resources=packed), Empty)

    async def connect(self, task_id: str = "") -> ConnectResponse:
        """Connect: the shim's pid and the task's pid."""
        return await self._call("Connect", ConnectRequest(id=task_id), ConnectResponse)

    async def shutdown(self, task_id: str = "", *, now: bool = False) -> None:
        """Shutdown: the shim exits if it owns no task any more."""
        await self._call("Shutdown", ShutdownRequest(id=task_id, now=now), Empty, timeout=3.0)

    async def cleanup(self) -> None:
        """Kill and delete every task this driver created and did not delete."""
        for task_id in sorted(self.created):
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.kill(task_id, signal_mod.SIGKILL)
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.wait(task_id)
            with contextlib.suppress(ttrpc.TtrpcError):
                await self.delete(task_id)
        self.created.clear()

    async def run(self, bundle: Bundle, *, rootfs: Sequence[Mount] = ()) -> tuple[int, str, str]:
        """Create, start, wait and delete; returns (exit code, stdout, stderr)."""
        await self.create(bundle, rootfs=rootfs)
        try:
            await self.start(bundle.id)
            status = await self.wait(bundle.id)
        finally:
            try:
                await self.delete(bundle.id)
            except ttrpc.TtrpcError:
                await self.cleanup()
        stdout, stderr = await bundle.read_outputs()
        bundle.close()
        return status.exit_status, stdout, stderr
