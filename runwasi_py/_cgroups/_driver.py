"""What a cgroup driver does for the shim, and the thin filesystem layer both drivers share.

A driver turns :class:`CgroupPath` names into directories of one host's hierarchies and does
five things with them: create (``mkdir -p`` below what exists, recorded), join a whole
process (the pod's shim daemon), place one thread (a container's worker), write CPU limits,
and read CPU figures. :mod:`._v1` and :mod:`._v2` implement it; :func:`driver_for` picks one.
Kernel refusals become :class:`InvalidArgument` (a value the kernel rejects, naming the
field) or :class:`FailedPrecondition` (the host cannot do it: no permission, no controller).
"""

from __future__ import annotations

import abc
import errno
import os
import time
from collections.abc import Sequence
from pathlib import Path

from runwasi_py._cgroups._hierarchy import CgroupLayout, Hierarchy, read_proc_cgroup
from runwasi_py._cgroups._path import CgroupPath
from runwasi_py._cgroups._record import CreationRecord
from runwasi_py._errors import FailedPrecondition, InvalidArgument

# Not typing.TYPE_CHECKING: ``start`` imports this module, and typing costs it ~5 ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import betterproto2

    from runwasi_py._cgroups._cpu import CpuLimits
    from runwasi_py._cgroups._metrics import EngineMemory

__all__ = ["CgroupDriver", "driver_for", "read_text", "write_text"]

_VALUE_ERRNOS = frozenset({errno.EINVAL, errno.ERANGE})


def read_text(path: Path) -> str:
    """A cgroup file's text; ``""`` when it does not exist or cannot be read in this cgroup
    (v2 answers EOPNOTSUPP for ``cgroup.procs`` of a threaded cgroup)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return ""
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            return ""
        raise


def write_text(path: Path, value: str, field: str = "") -> None:
    """Write one value to a cgroup file (a single ``write``, as the kernel expects).

    EINVAL/ERANGE is the kernel refusing the value: InvalidArgument naming ``field``.
    Anything else is the host: FailedPrecondition naming the file.
    """
    try:
        # the flags of a shell's `echo v > file`, which cgroupfs accepts
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        reason = e.strerror or str(e)
        if field and e.errno in _VALUE_ERRNOS:
            raise InvalidArgument(
                f"{field}: the kernel refused {value!r} for {path}: {reason}"
            ) from None
        raise FailedPrecondition(f"cannot write {value!r} to {path}: {reason}") from None


class CgroupDriver(abc.ABC):
    """One host's cgroups, as the shim uses them (see the module docstring)."""

    version: int

    def __init__(self, layout: CgroupLayout, proc: str | os.PathLike[str] = "/proc") -> None:
        self.layout = layout
        self.proc = os.fspath(proc)

    def own_cgroups(self, pid: int | str = "self") -> dict[str, str]:
        """``/proc/<pid>/cgroup`` of a process or ``self/task/<tid>``: controller -> path."""
        return read_proc_cgroup(pid, self.proc)

    @staticmethod
    def _chain(h: Hierarchy, path: CgroupPath) -> list[Path]:
        try:
            return [h.dir_of(p.path) for p in path.ancestors()]
        except ValueError as e:
            raise FailedPrecondition(f"cgroup {path}: {e}") from None

    @staticmethod
    def _mkdir_p(record: CreationRecord, chain: Sequence[Path], what: CgroupPath) -> list[Path]:
        try:
            return record.mkdir_p(chain)
        except OSError as e:
            raise FailedPrecondition(f"cannot create cgroup {what}: {e.strerror or e}") from None

    @abc.abstractmethod
    def thread_cgroup(self, spec_path: CgroupPath) -> CgroupPath:
        """Where a container named ``spec_path`` in its spec has its thread cgroup."""

    @abc.abstractmethod
    def create_thread_cgroup(self, path: CgroupPath, record: CreationRecord) -> None:
        """Create ``path`` for the controllers that can hold a thread."""

    @abc.abstractmethod
    def apply_cpu(self, path: CgroupPath, limits: CpuLimits, field: str) -> None:
        """Write ``limits`` to the thread cgroup ``path``."""

    @abc.abstractmethod
    def place_thread(self, path: CgroupPath, tid: int) -> None:
        """Move thread ``tid`` of this process into ``path``."""

    @abc.abstractmethod
    def thread_dirs(self, path: CgroupPath) -> list[Path]:
        """The directories a thread placed in ``path`` is listed in."""

    @abc.abstractmethod
    def join_process(self, path: CgroupPath, pid: int, record: CreationRecord) -> None:
        """Create ``path`` for every controller and move process ``pid`` (all threads) in."""

    @abc.abstractmethod
    def metrics(self, path: CgroupPath, memory: EngineMemory) -> betterproto2.Message:
        """The thread cgroup's figures as the Metrics message containerd expects here."""

    @abc.abstractmethod
    def move_out(self, directory: Path) -> None:
        """Move whatever threads are left in ``directory`` to its daemon's cgroup (or up)."""

    @abc.abstractmethod
    def leave(self, pid: int, home: dict[str, str]) -> None:
        """Move process ``pid`` back to the cgroups ``home`` (an earlier :meth:`own_cgroups`)."""

    def remove(self, record: CreationRecord) -> list[Path]:
        """Remove what ``record`` holds, innermost first; returns what could not go."""
        known = [h.mountpoint for h in self.layout.hierarchies()]
        for d in record.dirs:
            if not any(d.is_relative_to(m) and d != m for m in known):
                # a record names only dirs inside this host's hierarchies; never rmdir others
                raise FailedPrecondition(f"cgroup record names {d}, outside every cgroup mount")
        return record.remove_all(self.move_out, self.rmdir)

    def rmdir(self, directory: Path) -> None:
        """Remove one cgroup directory (cgroupfs drops its control files with it).

        A cgroup whose last task is still exiting (a runc command the daemon ran a moment
        ago) answers EBUSY for a moment although it lists no task (runc retries too): that
        is retried, ~0.3 s at most. A cgroup with a task or a child cgroup is busy for real
        and raises at once.
        """
        for delay in (*_RMDIR_RETRIES, None):
            try:
                os.rmdir(directory)
                return
            except OSError as e:
                if e.errno != errno.EBUSY or delay is None or not _looks_empty(directory):
                    raise
            time.sleep(delay)


_RMDIR_RETRIES = (0.01, 0.02, 0.04, 0.08, 0.16)
"""Seconds between tries of an rmdir that met an exiting task."""


def _looks_empty(directory: Path) -> bool:
    """No task listed and no child cgroup: an EBUSY is then a task still on its way out."""
    try:
        with os.scandir(directory) as entries:
            if any(entry.is_dir(follow_symlinks=False) for entry in entries):
                return False
        with open(directory / "cgroup.procs", "rb") as f:
            return not f.read().strip()
    except OSError:
        return False


def driver_for(layout: CgroupLayout, proc: str | os.PathLike[str] = "/proc") -> CgroupDriver:
    """The v1 or v2 driver for ``layout`` (hybrid hosts use v1)."""
    if layout.mode.is_v2:
        from runwasi_py._cgroups._v2 import CgroupV2

        return CgroupV2(layout, proc)
    from runwasi_py._cgroups._v1 import CgroupV1

    return CgroupV1(layout, proc)
