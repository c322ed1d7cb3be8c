"""Find and remove what containers of one private containerd left behind.

A shim daemon outlives containerd by design (so a restarted containerd can reconnect), and
a killed shim can leave its rootfs mounted. When the harness is torn down for good, both
must go: shims are found by their command line (``-address <our socket>``) or their working
directory (a bundle under our state dir), mounts by their mount point under our directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

from runwasi_py._mountinfo import mount_points

__all__ = ["kill_processes", "mounts_under", "process_alive", "processes_of", "unmount_all"]

_MNT_DETACH = 2


def _is_under(path: str, root: Path) -> bool:
    r = str(root).rstrip("/")
    return path == r or path.startswith(r + "/")


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie is dead, only unreaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def processes_of(address: Path, workdir: Path) -> list[int]:
    """Pids of live processes started for the containerd at ``address`` (shims, mostly).

    Matches ``-address <address>`` in the argv, or a working directory under ``workdir``
    (a shim's cwd is its bundle). Never this process or its ancestors.
    """
    addr = str(address)
    skip = {os.getpid()}
    pid = os.getppid()
    while pid > 1:
        skip.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        p = int(entry.name)
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        match = any(
            # Shims take Go-style "-address"; ctr's "--address" is a client, not a leftover.
            a == addr and i > 0 and args[i - 1] == "-address"
            for i, a in enumerate(args)
        )
        if not match:
            with contextlib.suppress(OSError):
                match = _is_under(os.readlink(f"/proc/{p}/cwd"), workdir)
        if match and process_alive(p):
            found.append(p)
    return found


def kill_processes(pids: list[int], *, timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone; return those still alive after timeout."""
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if process_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if process_alive(p)]
    return alive


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    points = [mp for mp in mount_points() if _is_under(mp, root)]
    return sorted(points, key=lambda p: (p.count("/"), p), reverse=True)


def unmount_all(root: Path) -> list[str]:
    """Lazily unmount everything below ``root``; return the mount points that resisted."""
    libc = ctypes.CDLL(None, use_errno=True)
    failed = []
    # A mount point can be stacked; repeat until nothing under root is left or no progress.
    for _ in range(8):
        points = mounts_under(root)
        if not points:
            return []
        failed = [mp for mp in points if libc.umount2(os.fsencode(mp), _MNT_DETACH) != 0]
        if len(failed) == len(points):
            return failed
    return failed
