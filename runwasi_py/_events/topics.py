"""The one table of containerd task-event topics: which message goes out under which topic.

>>> topic_for(TaskExit(container_id="c1")), TOPIC_EXIT
('/tasks/exit', '/tasks/exit')
"""

from __future__ import annotations

from typing import Final

import betterproto2

from runwasi_py._proto.messages import (
    TaskCheckpointed,
    TaskCreate,
    TaskDelete,
    TaskExecAdded,
    TaskExecStarted,
    TaskExit,
    TaskOom,
    TaskPaused,
    TaskResumed,
    TaskStart,
)

__all__ = [
    "TOPICS",
    "TOPIC_CREATE",
    "TOPIC_DELETE",
    "TOPIC_EXIT",
    "TOPIC_OOM",
    "TOPIC_START",
    "topic_for",
]

TOPICS: Final[dict[type[betterproto2.Message], str]] = {
    TaskCreate: "/tasks/create",
    TaskStart: "/tasks/start",
    TaskExit: "/tasks/exit",
    TaskDelete: "/tasks/delete",
    TaskOom: "/tasks/oom",
    TaskExecAdded: "/tasks/exec-added",
    TaskExecStarted: "/tasks/exec-started",
    TaskPaused: "/tasks/paused",
    TaskResumed: "/tasks/resumed",
    TaskCheckpointed: "/tasks/checkpointed",
}
"""containerd's topic for each task event (``runtime/v2`` in containerd's source)."""

TOPIC_CREATE: Final = TOPICS[TaskCreate]
TOPIC_START: Final = TOPICS[TaskStart]
TOPIC_EXIT: Final = TOPICS[TaskExit]
TOPIC_DELETE: Final = TOPICS[TaskDelete]
TOPIC_OOM: Final = TOPICS[TaskOom]


def topic_for(event: betterproto2.Message) -> str:
    """The containerd topic of a task event (``TaskExit`` -> ``/tasks/exit``).

    >>> topic_for(TaskStart(container_id="c1"))
    '/tasks/start'
    """
    try:
        return TOPICS[type(event)]
    except KeyError:
        raise ValueError(f"no topic for {type(event).__qualname__}") from None
