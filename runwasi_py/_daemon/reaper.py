"""The daemon is a child subreaper: orphans and containers' inits are reparented to it.

Who waits for them is ``runwasi_py._native._reaper`` (one waiter per pid, plus the sweep of
orphans nobody waits for); this module only sets the flag, early and without imports.
"""

from __future__ import annotations


def set_child_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
