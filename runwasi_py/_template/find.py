"""Find and end the templates of one socket directory (tooling, tests, benchmarks).

A template writes its pid into ``t-<key>.sock.lock`` once it holds that file's ``flock``;
the lock is held exactly while it lives (its forked daemons close it). So a lock file that
can be locked belongs to no live template, and one that cannot names its template's pid.
Forked daemons are not templates: find those by their working directory (the bundle).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time

__all__ = ["end_templates", "template_pids"]


def template_pids(socket_dir: str | os.PathLike[str]) -> list[int]:
    """Pids of the live templates whose sockets are in ``socket_dir``."""
    found = []
    try:
        names = sorted(os.listdir(socket_dir))
    except OSError:
        return []
    for name in names:
        if not (name.startswith("t-") and name.endswith(".sock.lock")):
            continue
        try:
            fd = os.open(os.path.join(socket_dir, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                pid = int(os.read(fd, 32).decode().strip() or 0)
                if pid > 0:
                    found.append(pid)
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it: no template
        except ValueError:
            continue
        finally:
            os.close(fd)
    return found


def end_templates(socket_dir: str | os.PathLike[str], timeout: float = 5.0) -> list[int]:
    """SIGTERM the templates of ``socket_dir`` (SIGKILL after ``timeout``); their pids.

    Pods they forked are in their own sessions and keep running.
    """
    pids = template_pids(socket_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.01)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
