"""Read ``/proc/self/mountinfo``: the one parser, stdlib-only so ``delete`` can use it.

>>> unescape(r"/a\\040b"), is_mountpoint("/proc")
('/a b', True)
"""

from __future__ import annotations

import os

__all__ = ["is_mountpoint", "mount_points", "unescape"]


def mount_points() -> list[str]:
    """Every mount point (field 5), unescaped, in mount order; OSError if unreadable."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split(" ", 5)
            if len(fields) > 4:
                out.append(unescape(fields[4]))
    return out


def is_mountpoint(path: str | os.PathLike[str]) -> bool:
    """True when something is mounted exactly on ``path`` (read from ``/proc/self/mountinfo``)."""
    want = os.path.realpath(path)
    try:
        return want in mount_points()
    except OSError:
        return os.path.ismount(want)


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
