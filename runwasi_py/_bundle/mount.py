"""Mount ``CreateTaskRequest.rootfs`` onto the bundle's rootfs and unmount it again.

containerd does not mount a task's rootfs for a shim: the snapshotter's mounts (overlay
with ``lowerdir=…,upperdir=…,workdir=…``, or ``bind`` with ``rbind,rw``) arrive in
CreateTaskRequest and the shim mounts them on ``<bundle>/rootfs``. Options are split the way
containerd's Go ``mount`` package does: known words become ``MS_*`` flags, propagation words
are applied by a second call, everything else is the filesystem's data string. A bind mount
with flags beyond ``MS_BIND|MS_REC`` (``ro`` most of all) is remounted, because the kernel
ignores those flags on the first bind.

The syscalls go through ``ctypes`` (no ``mount`` binary, no shell): the daemon may have
threads, and forking it is not allowed.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runwasi_py._errors import InvalidArgument, ShimError
from runwasi_py._mountinfo import is_mountpoint

__all__ = [
    "MountError",
    "MountLike",
    "MountOptions",
    "is_mountpoint",
    "mount",
    "mount_rootfs",
    "parse_options",
    "unmount_all",
]

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2
_MAX_DATA = 4095  # the kernel copies one page of mount data, NUL included

# option -> (clear?, flag), as in containerd's mount_linux.go
_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION: dict[str, int] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


class MountError(ShimError):
    """A mount or unmount syscall failed; the message names the mount and the errno."""

    def __init__(self, message: str, errno_: int = 0) -> None:
        super().__init__(message)
        self.errno = errno_


class MountLike(Protocol):
    """``containerd.types.Mount``: what the snapshotter says to mount."""

    @property
    def type(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def options(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class MountOptions:
    """Mount options split into ``mount(2)`` arguments.

    >>> parse_options(["rbind", "ro", "index=off"])
    MountOptions(flags=20481, propagation=0, data='index=off')
    """

    flags: int
    propagation: int
    data: str


def parse_options(options: Iterable[str]) -> MountOptions:
    """Split ``options`` into flags, a propagation change and the data string."""
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation = _PROPAGATION[opt]
        else:
            data.append(opt)
    return MountOptions(flags, propagation, ",".join(data))


class _Libc:
    """``mount(2)`` and ``umount2(2)`` through ctypes, loaded on first use."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._mount = libc.mount
        self._mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        self._mount.restype = ctypes.c_int
        self._umount2 = libc.umount2
        self._umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._umount2.restype = ctypes.c_int

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> int:
        rc = self._mount(
            os.fsencode(source),
            os.fsencode(target),
            os.fsencode(fstype) if fstype else None,
            flags,
            os.fsencode(data) if data else None,
        )
        return ctypes.get_errno() if rc != 0 else 0

    def umount2(self, target: str, flags: int) -> int:
        rc = self._umount2(os.fsencode(target), flags)
        return ctypes.get_errno() if rc != 0 else 0


_libc: _Libc | None = None


def _sys() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _fail(what: str, err: int) -> MountError:
    return MountError(f"{what}: {os.strerror(err)} (errno {errno.errorcode.get(err, err)})", err)


def mount(m: MountLike, target: str | os.PathLike[str]) -> None:
    """Mount one ``containerd.types.Mount`` on ``target`` (a directory that exists)."""
    opts = parse_options(m.options)
    if len(opts.data.encode()) > _MAX_DATA:
        # containerd shortens long overlay lowerdir lists by chdir'ing in a child; a
        # threaded daemon cannot chdir, so this is refused with a clear message instead.
        raise InvalidArgument(
            f"mount {m.type} on {os.fspath(target)}: options longer than {_MAX_DATA} bytes"
        )
    dest = os.fspath(target)
    what = f"mount {m.type or 'none'} {m.source!r} on {dest!r}"
    libc = _sys()
    err = libc.mount(m.source, dest, m.type, opts.flags, opts.data)
    if err:
        raise _fail(what, err)
    try:
        extra = opts.flags & ~(MS_BIND | MS_REC | MS_REMOUNT)
        if opts.flags & MS_BIND and extra:
            # the first bind ignores ro/nosuid/...: apply them with a remount of the bind
            err = libc.mount("", dest, "", opts.flags | MS_REMOUNT | MS_BIND, "")
            if err:
                raise _fail(f"{what} (remount {'ro' if extra & MS_RDONLY else 'flags'})", err)
        if opts.propagation:
            err = libc.mount("", dest, "", opts.propagation, "")
            if err:
                raise _fail(f"{what} (propagation)", err)
    except MountError:
        libc.umount2(dest, MNT_DETACH)
        raise


def mount_rootfs(mounts: Sequence[MountLike], rootfs: str | os.PathLike[str]) -> None:
    """Mount containerd's rootfs mounts, in order, on ``rootfs`` (created if missing).

    A mount with a ``target`` (containerd 2.x) goes on that path inside the rootfs. If one
    mount fails, the ones already made are undone before the error is raised.

    Example:
        >>> mount_rootfs(create_request.rootfs, Path(create_request.bundle) / "rootfs")
    """
    from runwasi_py._bundle.spec import resolve_in_rootfs

    root = Path(rootfs)
    root.mkdir(parents=True, exist_ok=True)
    done: list[Path] = []
    try:
        for m in mounts:
            dest = resolve_in_rootfs(root, m.target) if m.target else root
            mount(m, dest)
            done.append(dest)
    except BaseException:
        for dest in reversed(done):
            unmount_all(dest)
        raise


def unmount_all(target: str | os.PathLike[str]) -> None:
    """Unmount everything stacked on ``target``; a no-op when nothing is mounted there.

    A busy mount is detached lazily (``MNT_DETACH``) so that Delete never hangs on an open
    file. Missing targets and non-mountpoints are fine: the ``delete`` action calls this on
    whatever a dead daemon left behind.
    """
    dest = os.fspath(target)
    libc = _sys()
    for _ in range(64):  # bounded: a mount stack is shallow, a loop here would be a bug
        err = libc.umount2(dest, 0)
        if err == errno.EBUSY:
            err = libc.umount2(dest, MNT_DETACH)
        if err in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return  # not (or no longer) a mount point
        if err:
            raise _fail(f"unmount {dest!r}", err)
    raise MountError(f"unmount {dest!r}: still mounted after 64 unmounts")
