"""What a container's entrypoint is, when it is not wasm: an executable for runc, or an error.

Theory of operation: the framework asks the Sandbox's ``can_handle`` first (wasm is the
engine's decision). When the Sandbox refuses, :func:`classify_native` looks at the file the
entrypoint resolved to inside the rootfs, the way the kernel's ``execve`` would: an ELF file
of type executable or shared object, or a ``#!`` script, with an execute bit set, runs as a
native container. Anything else is refused with an :class:`InvalidArgument` that says what
the file is (missing, a directory, an ELF object file, a script without the execute bit...),
so a user sees why the container cannot run rather than runc's late "exec format error".

:func:`describe_file` is the pure core (header bytes and mode in, a verdict out).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from runwasi_py._context import WASM_MAGIC
from runwasi_py._errors import InvalidArgument

__all__ = ["NativeEntrypoint", "classify_native", "describe_file"]

ELF_MAGIC = b"\x7fELF"
SCRIPT_MAGIC = b"#!"
_HEADER_BYTES = 128
_ELF_TYPES = {1: "an ELF relocatable object (ET_REL)", 4: "an ELF core dump (ET_CORE)"}
_ET_EXEC, _ET_DYN = 2, 3


@dataclass(frozen=True, slots=True)
class NativeEntrypoint:
    """An entrypoint that runc can exec: where it is and what it is.

    ``kind`` is ``"ELF executable"`` or ``"#! script"``; ``interpreter`` is the script's
    ``#!`` line (without the ``#!``), empty for ELF files.
    """

    path: str
    host_path: Path
    kind: str
    interpreter: str = ""


def describe_file(header: bytes, mode: int) -> tuple[str, str | None]:
    """``(what the file is, why it cannot run or None)`` from its first bytes and mode.

    >>> describe_file(b"\\x7fELF\\x02\\x01\\x01" + bytes(9) + b"\\x02\\x00", 0o100755)
    ('ELF executable', None)
    >>> describe_file(b"#!/bin/sh\\n", 0o100644)
    ('#! script', 'it has no execute permission (mode 0644)')
    """
    if stat.S_ISDIR(mode):
        return "a directory", "a directory cannot be executed"
    if not stat.S_ISREG(mode):
        return "not a regular file", "only a regular file can be executed"
    perms = stat.S_IMODE(mode)
    no_exec = None if perms & 0o111 else f"it has no execute permission (mode {perms:04o})"
    if header.startswith(ELF_MAGIC):
        if len(header) < 18:
            return "a truncated ELF file", "its ELF header is incomplete"
        little = header[5] == 1  # EI_DATA: 1 little-endian, 2 big-endian
        e_type = int.from_bytes(header[16:18], "little" if little else "big")
        if e_type not in (_ET_EXEC, _ET_DYN):
            what = _ELF_TYPES.get(e_type, f"an ELF file of type {e_type}")
            return what, "it is not an executable program"
        return "ELF executable", no_exec
    if header.startswith(SCRIPT_MAGIC):
        return "#! script", no_exec
    if header.startswith(WASM_MAGIC):
        return "a wasm module", "the shim's engine did not accept it"
    if not header:
        return "an empty file", "it is not an ELF executable or a #! script"
    return "a file of unknown format", (
        f"it is not wasm, an ELF executable or a #! script (it starts with {header[:8]!r})"
    )


def classify_native(
    path: str, host_path: Path | None, rootfs: Path | None = None
) -> NativeEntrypoint:
    """The native entrypoint at ``host_path`` (``path`` as the container names it), or raise.

    ``host_path`` is the file the entrypoint resolved to inside the rootfs (None: nothing was
    found there). With ``rootfs``, a script's ``#!`` interpreter must be a file in it too (the
    kernel's exec would fail later with a bare ENOENT). Raises :class:`InvalidArgument`
    naming the entrypoint and what it is.

    Example:
        >>> classify_native("/hello", Path("/bundle/rootfs/hello")).kind
        'ELF executable'
    """
    if host_path is None:
        raise InvalidArgument(f"entrypoint {path!r} not found in the rootfs")
    try:
        fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except IsADirectoryError:
        raise InvalidArgument(f"entrypoint {path!r} is a directory, not an executable") from None
    except FileNotFoundError:
        raise InvalidArgument(f"entrypoint {path!r} not found in the rootfs") from None
    except OSError as e:
        raise InvalidArgument(f"entrypoint {path!r} cannot be read: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        header = os.read(fd, _HEADER_BYTES) if stat.S_ISREG(mode) else b""
    finally:
        os.close(fd)
    what, problem = describe_file(header, mode)
    if problem is not None:
        raise InvalidArgument(f"entrypoint {path!r} is {_article(what)}: {problem}")
    interpreter = ""
    if what == "#! script":
        interpreter = header[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        program = interpreter.split()[0] if interpreter.split() else ""
        if rootfs is not None and not _is_file_in(rootfs, program):
            raise InvalidArgument(
                f"entrypoint {path!r} is a #! script whose interpreter {program!r} "
                "is not in the rootfs"
            )
    return NativeEntrypoint(path=path, host_path=host_path, kind=what, interpreter=interpreter)


def _is_file_in(rootfs: Path, program: str) -> bool:
    from runwasi_py._bundle.spec import resolve_in_rootfs

    if not program:
        return False
    try:
        return resolve_in_rootfs(rootfs, program).is_file()
    except InvalidArgument:
        return False


def _article(what: str) -> str:
    if what.startswith(("a ", "an ", "not ")):
        return what
    return f"an {what}" if what[0] in "aeiouAEIOU" else f"a {what}"
