"""One task as the Task service holds it (:class:`Task`), and the idle sandbox task."""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass

from runwasi_py._bundle.bundle import Bundle
from runwasi_py._context import RuntimeContext
from runwasi_py._native._task import NativeTask
from runwasi_py._proto.messages import GO_ZERO_TIME
from runwasi_py._sandbox import Sandbox
from runwasi_py._stdio import Stdio
from runwasi_py._task.instance import ExitStatus, Instance
from runwasi_py._task.placement import TaskPlacement
from runwasi_py._task.state import TaskState

__all__ = ["PauseSandbox", "Task", "exited_at"]

log = logging.getLogger("runwasi_py.task")


def exited_at(ns: int | None) -> datetime.datetime:
    """An exit time for containerd's messages: Go's zero time until the task has exited."""
    if ns is None:
        return GO_ZERO_TIME
    return datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)


@dataclass(eq=False)
class Task:
    """One task as the service holds it: a wasm instance or a native (runc) init, its state."""

    id: str
    bundle: str
    stdio: Stdio
    instance: Instance | None  # a wasm (or idle) task: the worker thread running it
    disk: Bundle  # the bundle on disk, with what Create mounted in it
    state: TaskState = TaskState.CREATED
    placement: TaskPlacement | None = None  # its cgroup and namespaces; None outside a pod
    native: NativeTask | None = None  # a native task: its init under runc

    @property
    def pid(self) -> int:
        if self.native is not None:
            return self.native.pid
        assert self.instance is not None
        return self.instance.pid

    @property
    def exit_status(self) -> ExitStatus | None:
        if self.native is not None:
            return self.native.exit_status
        assert self.instance is not None
        return self.instance.exit_status

    @property
    def wasm(self) -> Instance:
        """The instance of a wasm task (callers checked ``native`` first)."""
        assert self.instance is not None
        return self.instance

    def remove_placement(self) -> None:
        """Remove the task's cgroup; a failure is logged, never raised (Delete must go on)."""
        if self.placement is None:
            return
        try:
            self.placement.remove()
        except Exception:  # a cgroup left behind must not fail the Delete; the log names it
            log.exception("task %s: removing its cgroup failed", self.id)


class PauseSandbox(Sandbox):
    """A CRI pod's sandbox (pause) container: does nothing until it is killed."""

    async def can_handle(self, ctx: RuntimeContext) -> None:
        pass

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        await asyncio.Event().wait()  # cancelled by Kill; the exit status is 128+signal
        return 0
