"""The life of one task as data: :class:`TaskState` and the table of allowed transitions.

Theory of operation: a task is CREATED by Create, RUNNING after Start, STOPPED once its
instance ended (or was killed before it started), and DELETED by Delete. The table below is
the whole state machine; :func:`transition` is the only way to move along it, and any move
not in the table is answered with FailedPrecondition naming both states, so containerd's
errdefs sees the class it expects.

Calls that do not move the state (Kill, Wait, State, Stats, ...) check the state themselves;
the table only says where a task may go next.
"""

from __future__ import annotations

import enum
from types import MappingProxyType

from runwasi_py._errors import FailedPrecondition

__all__ = ["TRANSITIONS", "TaskState", "transition"]


class TaskState(enum.Enum):
    """Where a task is in its life; the value is the word containerd's runtimes use."""

    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"
    DELETED = "deleted"


TRANSITIONS: MappingProxyType[TaskState, frozenset[TaskState]] = MappingProxyType(
    {
        # Delete of a never-started task is allowed (runc allows it too); STOPPED from
        # CREATED is a Start that failed or a SIGKILL before Start (containerd's forced
        # delete kills a created task and then expects it stopped).
        TaskState.CREATED: frozenset({TaskState.RUNNING, TaskState.STOPPED, TaskState.DELETED}),
        TaskState.RUNNING: frozenset({TaskState.STOPPED}),
        TaskState.STOPPED: frozenset({TaskState.DELETED}),
        TaskState.DELETED: frozenset(),
    }
)
"""state -> the states it may move to next."""


def transition(current: TaskState, target: TaskState, *, task_id: str = "") -> TaskState:
    """Return ``target`` if the table allows ``current -> target``, else raise.

    Example:
        >>> transition(TaskState.CREATED, TaskState.RUNNING)
        <TaskState.RUNNING: 'running'>
        >>> transition(TaskState.RUNNING, TaskState.DELETED, task_id="c1")
        Traceback (most recent call last):
        ...
        runwasi_py._errors.FailedPrecondition: FAILED_PRECONDITION: task c1: invalid state \
transition: running => deleted
    """
    if target not in TRANSITIONS[current]:
        who = f"task {task_id}: " if task_id else ""
        raise FailedPrecondition(
            f"{who}invalid state transition: {current.value} => {target.value}"
        )
    return target
