"""Which signals end a task: process semantics for containers that are not processes.

A process killed with a signal whose default action is to ignore it (SIGCHLD, SIGURG,
SIGWINCH, and SIGCONT, which also resumes) goes on running; one stopped with SIGSTOP or a
terminal stop signal is paused, not ended. containerd and its clients send these in normal
operation: a foreground ``ctr run`` forwards every signal it gets, and a terminal resize is
SIGWINCH. A wasm guest cannot be paused from outside its host calls, so the stop signals are
ignored too (the task keeps running, as runc's does once SIGCONT follows). Every other
signal ends the task with 128 + signal, as it would end a process without a handler.
"""

from __future__ import annotations

import signal

__all__ = ["NOT_ENDING", "ends_task"]

NOT_ENDING = frozenset(
    {
        signal.SIGCHLD,
        signal.SIGURG,
        signal.SIGWINCH,
        signal.SIGCONT,
        signal.SIGSTOP,
        signal.SIGTSTP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    }
)
"""Signals whose default action is to ignore the signal or to stop (not end) the process."""


def ends_task(sig: int) -> bool:
    """Whether ``sig`` (1-64) ends a task that has no handler for it."""
    return sig not in NOT_ENDING
