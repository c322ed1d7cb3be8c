"""Linux namespaces for a container that is a thread: validate the spec's, join them per thread.

``setns(2)`` moves only the calling thread into a network, UTS or IPC namespace, so a wasm
container's worker thread can live in its pod's namespaces while its neighbours live in
theirs: any socket the guest or the engine opens on that thread is made in the pod's
network namespace. The other namespace types do not apply to a thread, and are skipped with
the reason recorded in :attr:`NamespacePlan.skipped`:

* **pid**: ``setns`` (or ``unshare``) of a pid namespace changes only the namespace of the
  caller's *children*; the thread itself keeps its pid, and a thread has no children here.
* **mount**: joining needs a caller whose fs context (root, cwd, umask) is not shared, but
  the threads of a process share one (``CLONE_FS``); the kernel answers EINVAL. The
  framework resolves paths inside the rootfs itself instead.
* **user**: the kernel lets only a single-threaded process join or create a user namespace.
* **cgroup** and **time**: a cgroup namespace changes only how ``/proc/self/cgroup`` and new
  cgroupfs mounts look; a time namespace, like pid, applies to children only.

A namespace with a ``path`` is validated when the plan is made (the file exists and is an
nsfs file of the stated type, by ``ioctl(NS_GET_NSTYPE)``), and kept open until the thread
joins it, so what was validated is what is joined. A network, UTS or IPC entry without a path
asks for a new namespace, which the thread makes with ``unshare``. :meth:`NamespacePlan.entered`
puts the thread back in its earlier namespaces afterwards (pooled workers are reused).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runwasi_py._errors import FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    import ctypes

__all__ = [
    "CLONE_FLAGS",
    "THREAD_NAMESPACES",
    "NamespaceJoin",
    "NamespacePlan",
    "namespace_type",
    "thread_namespace",
]

CLONE_FLAGS: Mapping[str, int] = {
    "mount": 0x00020000,
    "cgroup": 0x02000000,
    "uts": 0x04000000,
    "ipc": 0x08000000,
    "user": 0x10000000,
    "pid": 0x20000000,
    "network": 0x40000000,
    "time": 0x00000080,
}
"""OCI namespace type -> the ``CLONE_NEW*`` flag the kernel reports for it."""

PROC_NAMES: Mapping[str, str] = {
    "mount": "mnt",
    "cgroup": "cgroup",
    "uts": "uts",
    "ipc": "ipc",
    "user": "user",
    "pid": "pid",
    "network": "net",
    "time": "time",
}
"""OCI namespace type -> its file name in ``/proc/<pid>/ns``."""

THREAD_NAMESPACES = ("network", "uts", "ipc")
"""The types a single thread can join (and unshare) on its own."""

SKIP_REASONS: Mapping[str, str] = {
    "pid": "a pid namespace affects only the children of the thread that joins it",
    "mount": "a mount namespace needs an unshared fs context (threads share CLONE_FS)",
    "user": "a user namespace can be joined only by a single-threaded process",
    "cgroup": "a cgroup namespace changes only the view of /proc/self/cgroup",
    "time": "a time namespace affects only the children of the thread that joins it",
}

_NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3), Linux 4.11+
_libc: ctypes.CDLL | None = None


def _syscalls() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        import ctypes  # only a task that joins a namespace needs it: off the daemon's boot

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def namespace_type(fd: int) -> int:
    """The ``CLONE_NEW*`` type of the namespace file open at ``fd`` (OSError if not one)."""
    return fcntl.ioctl(fd, _NS_GET_NSTYPE)


def _setns(fd: int, flag: int) -> None:
    if _syscalls().setns(fd, flag) != 0:
        e = _errno()
        raise OSError(e, os.strerror(e))


def _unshare(flags: int) -> None:
    if _syscalls().unshare(flags) != 0:
        e = _errno()
        raise OSError(e, os.strerror(e))


@dataclass(slots=True)
class NamespaceJoin:
    """One namespace to join: its OCI type, the spec's path and the validated open file."""

    type: str
    path: str
    fd: int
    field: str

    @property
    def flag(self) -> int:
        """The ``CLONE_NEW*`` flag."""
        return CLONE_FLAGS[self.type]


def _open_namespace(ns_type: str, path: str, where: str) -> NamespaceJoin:
    """Open and check ``path``: it exists and is a namespace of ``ns_type``."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"{where}: {path!r} is not an absolute path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidArgument(f"{where}: {ns_type} namespace {path!r} does not exist") from None
    except OSError as e:
        raise InvalidArgument(f"{where}: cannot open {path!r}: {e.strerror or e}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidArgument(f"{where}: {path!r} is not a namespace file")
        try:
            actual = namespace_type(fd)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                raise InvalidArgument(f"{where}: {path!r} is not a namespace") from None
            raise InvalidArgument(f"{where}: cannot inspect {path!r}: {e.strerror}") from None
        if actual != CLONE_FLAGS[ns_type]:
            names = {v: k for k, v in CLONE_FLAGS.items()}
            raise InvalidArgument(
                f"{where}: {path!r} is a {names.get(actual, hex(actual))} namespace, not {ns_type}"
            )
    except BaseException:
        os.close(fd)
        raise
    return NamespaceJoin(type=ns_type, path=path, fd=fd, field=where)


@dataclass(slots=True)
class NamespacePlan:
    """What a container's worker thread does with the spec's ``linux.namespaces``.

    Example:
        >>> plan = NamespacePlan.from_spec(spec)
        >>> with plan.entered():   # on the worker thread, before the guest runs
        ...     run_guest()
        >>> plan.close()
    """

    joins: list[NamespaceJoin] = field(default_factory=list)
    unshare: list[str] = field(default_factory=list)
    """Thread namespace types the spec asks to be new (no path)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    hostname: str = ""
    """The spec's ``hostname``, set in a new UTS namespace (what runc does for a pod's
    sandbox: a sidecar that joins the pod's UTS namespace then sees the pod's name)."""
    """(type, why) for the entries a thread cannot apply."""

    @classmethod
    def from_spec(
        cls, spec: Mapping[str, Any], *, allow_new: Sequence[str] = THREAD_NAMESPACES
    ) -> NamespacePlan:
        """Validate ``linux.namespaces``; InvalidArgument naming the entry on bad input.

        Types in ``allow_new`` without a path become :attr:`unshare`; others without a path
        are left as they are (the thread stays in the daemon's namespace of that type).
        """
        linux = spec.get("linux") or {}
        entries = linux.get("namespaces") if isinstance(linux, Mapping) else None
        plan = cls()
        hostname = spec.get("hostname") or ""
        if not isinstance(hostname, str) or len(hostname.encode()) > 64 or "\0" in hostname:
            raise InvalidArgument("hostname must be a string of at most 64 bytes")
        plan.hostname = hostname
        if entries is None:
            return plan
        if not isinstance(entries, list):
            raise InvalidArgument("linux.namespaces must be a list")
        seen: set[str] = set()
        try:
            for i, entry in enumerate(entries):
                where = f"linux.namespaces[{i}]"
                if not isinstance(entry, Mapping):
                    raise InvalidArgument(f"{where} must be an object")
                ns_type, path = entry.get("type"), entry.get("path", "") or ""
                if not isinstance(ns_type, str) or ns_type not in CLONE_FLAGS:
                    raise InvalidArgument(f"{where}.type: unknown namespace type {ns_type!r}")
                if not isinstance(path, str):
                    raise InvalidArgument(f"{where}.path must be a string")
                if ns_type in seen:
                    raise InvalidArgument(f"{where}: a second {ns_type} namespace")
                seen.add(ns_type)
                if ns_type not in THREAD_NAMESPACES:
                    plan.skipped.append((ns_type, SKIP_REASONS[ns_type]))
                elif path:
                    plan.joins.append(_open_namespace(ns_type, path, f"{where}.path"))
                elif ns_type in allow_new:
                    plan.unshare.append(ns_type)
        except BaseException:
            plan.close()
            raise
        return plan

    @property
    def empty(self) -> bool:
        """True when the thread would stay where it is."""
        return not self.joins and not self.unshare

    def close(self) -> None:
        """Close the namespace files (after the join, or when the task is deleted)."""
        for j in self.joins:
            with contextlib.suppress(OSError):
                os.close(j.fd)
            j.fd = -1

    def join_current_thread(self) -> None:
        """``setns`` into each namespace, then ``unshare`` the new ones (calling thread)."""
        for j in self.joins:
            if j.fd < 0:
                raise FailedPrecondition(f"{j.field}: namespace {j.path!r} was already closed")
            try:
                _setns(j.fd, j.flag)
            except OSError as e:
                raise FailedPrecondition(
                    f"{j.field}: cannot join {j.type} namespace {j.path!r}: {e.strerror}"
                ) from None
        flags = 0
        for t in self.unshare:
            flags |= CLONE_FLAGS[t]
        if flags:
            try:
                _unshare(flags)
            except OSError as e:
                raise FailedPrecondition(
                    f"linux.namespaces: cannot make new {'/'.join(self.unshare)}"
                    f" namespaces: {e.strerror}"
                ) from None
        if "uts" in self.unshare and self.hostname:
            name = self.hostname.encode()
            if _syscalls().sethostname(name, len(name)) != 0:
                reason = os.strerror(_errno())
                raise FailedPrecondition(f"hostname: cannot set {self.hostname!r}: {reason}")

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Join for the duration of the block, then go back to the earlier namespaces.

        If going back fails the thread must not be reused: the error propagates.
        """
        if self.empty:
            yield
            return
        changed = {j.type for j in self.joins} | set(self.unshare)
        tid = ctypes_tid()
        saved = {
            t: os.open(f"/proc/self/task/{tid}/ns/{PROC_NAMES[t]}", os.O_RDONLY | os.O_CLOEXEC)
            for t in changed
        }
        try:
            self.join_current_thread()
            yield
        finally:
            try:
                for t, fd in saved.items():
                    _setns(fd, CLONE_FLAGS[t])
            finally:
                for fd in saved.values():
                    os.close(fd)


def ctypes_tid() -> int:
    """The calling thread's id (``gettid``), as ``/proc/self/task/<tid>`` names it."""
    return threading.get_native_id()


def thread_namespace(tid: int, ns_type: str, proc: str = "/proc") -> str:
    """``readlink /proc/<tid>/ns/<name>``: ``net:[4026531840]`` (for checks and tests)."""
    return os.readlink(os.path.join(proc, str(tid), "ns", PROC_NAMES[ns_type]))
