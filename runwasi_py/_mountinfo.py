"""Read ``/proc/<pid>/mountinfo``: the one parser (stdlib-only, so ``delete`` can use it).

Every reader of the mount table (the rootfs unmount, ``delete``, cgroup discovery, the
private-containerd harness's cleanup) goes through :func:`parse`, so the escaping and
field rules live in one place (proc(5): ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS
[OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``).

>>> unescape(r"/a\\040b"), is_mountpoint("/proc")
('/a b', True)
>>> [(m.root, m.mount_point, m.fstype) for m in parse(
...     "30 1 0:26 / /sys/fs/cgroup/cpu rw shared:9 - cgroup cgroup rw,cpu\\n")]
[('/', '/sys/fs/cgroup/cpu', 'cgroup')]
"""

from __future__ import annotations

import os

__all__ = ["MountEntry", "is_mountpoint", "mount_points", "parse", "read", "unescape"]


class MountEntry:
    """One line of a mountinfo file, its paths unescaped (a plain class: ``delete`` imports
    this module and must not pay for ``dataclasses``)."""

    __slots__ = ("fstype", "mount_point", "root", "source", "super_options")

    def __init__(
        self, root: str, mount_point: str, fstype: str, source: str, super_options: str
    ) -> None:
        self.root = root
        self.mount_point = mount_point
        self.fstype = fstype
        self.source = source
        self.super_options = super_options

    def __repr__(self) -> str:
        return f"MountEntry({self.mount_point!r}, {self.fstype!r}, root={self.root!r})"


def parse(text: str) -> list[MountEntry]:
    """The entries of a mountinfo text, in mount order; malformed lines are skipped."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        try:
            sep = parts.index("-", 6)  # the optional fields end at the lone "-"
        except ValueError:
            continue
        if len(parts) < sep + 3:
            continue
        super_options = parts[sep + 3] if len(parts) > sep + 3 else ""
        out.append(
            MountEntry(
                unescape(parts[3]),
                unescape(parts[4]),
                parts[sep + 1],
                parts[sep + 2],
                super_options,
            )
        )
    return out


def read(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """The entries of this process's mount table (OSError if unreadable)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse(f.read())


def mount_points() -> list[str]:
    """Every mount point, unescaped, in mount order; OSError if unreadable."""
    return [m.mount_point for m in read()]


def is_mountpoint(path: str | os.PathLike[str], mountinfo: str = "/proc/self/mountinfo") -> bool:
    """True when something is mounted exactly on ``path`` (read from ``mountinfo``)."""
    want = os.path.realpath(path)
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return os.path.ismount(want)
    # delete asks this of a rootfs that is usually not mounted, on nodes with hundreds of
    # mounts: a path with nothing to escape that the text does not even contain is not a
    # mount point, and the table need not be parsed.
    if not any(c in want for c in " \t\n\\") and want not in text:
        return False
    return want in [m.mount_point for m in parse(text)]


def unescape(field: str) -> str:
    """A mountinfo field with its ``\\ooo`` octal escapes decoded."""
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        octal = field[i + 1 : i + 4]
        if field[i] == "\\" and len(octal) == 3 and octal.isdigit():
            out.append(chr(int(octal, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
