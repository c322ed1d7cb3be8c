"""Where a shim listens: ``unix://<dir>/<sha256 of address, namespace, group>``.

containerd never chooses the socket; the shim does, at ``start``, and prints it. Go shims
hash ``filepath.Join(<-address>, <namespace>, <group>)`` so that every container of one group
(one Kubernetes pod) maps to the same socket and so to the same shim process; this module
reproduces that, including Go's path cleaning, so a Python shim and a Go shim agree on names.
The directory defaults to ``/run/containerd/s`` (what containerd's own shims use) and can be
moved with ``RUNWASI_PY_SOCKET_DIR`` (tests) or containerd 2.3's ``socket_dir``.

This module is on the ``start`` path: it imports only the standard library's light modules.
"""

from __future__ import annotations

# The C modules themselves: ``socket`` pulls in selectors and enum, ``hashlib`` loads
# OpenSSL; together about a third of start's imports (``python -X importtime``).
import _socket as socket
import os

try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # a Python built without it
    from hashlib import sha256

__all__ = [
    "DEFAULT_SOCKET_DIR",
    "MAX_SOCKET_PATH",
    "SOCKET_DIR_ENV",
    "bound_path",
    "go_clean",
    "go_join",
    "inode",
    "is_listening",
    "sha256",
    "socket_address",
    "socket_dir",
    "socket_path",
]

DEFAULT_SOCKET_DIR = "/run/containerd/s"
SOCKET_DIR_ENV = "RUNWASI_PY_SOCKET_DIR"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the terminating NUL
_SCHEME = "unix://"


def go_clean(path: str) -> str:
    """Go's ``filepath.Clean`` on Linux: the shortest equivalent path, lexically.

    >>> go_clean("/run//containerd/./x/../containerd.sock")
    '/run/containerd/containerd.sock'
    """
    if not path:
        return "."
    rooted = path.startswith("/")
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out and out[-1] != "..":
                out.pop()
            elif not rooted:
                out.append("..")
            continue
        out.append(part)
    cleaned = "/".join(out)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def go_join(*elements: str) -> str:
    """Go's ``filepath.Join``: non-empty elements joined by ``/`` and cleaned; "" if none.

    >>> go_join("/run/containerd/containerd.sock", "default", "c1")
    '/run/containerd/containerd.sock/default/c1'
    """
    parts = [e for e in elements if e]
    return go_clean("/".join(parts)) if parts else ""


def socket_dir(override: str | None = None) -> str:
    """The directory for shim sockets: ``override``, else ``$RUNWASI_PY_SOCKET_DIR``, else
    ``/run/containerd/s``."""
    return override or os.environ.get(SOCKET_DIR_ENV) or DEFAULT_SOCKET_DIR


def socket_address(
    address: str,
    namespace: str,
    group: str,
    *,
    directory: str | None = None,
    debug: bool = False,
) -> str:
    """The ``unix://`` address the shim for (address, namespace, group) listens on.

    ``debug`` names the debug socket (containerd 2.x appends ``debug`` before hashing).
    Raises ValueError when the resulting path would not fit in a unix socket address.

    >>> socket_address("/run/containerd/containerd.sock", "default", "c1")[:25]
    'unix:///run/containerd/s/'
    """
    key = (
        go_join(address, namespace, group, "debug") if debug else go_join(address, namespace, group)
    )
    digest = sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
    path = os.path.join(socket_dir(directory), digest)
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ValueError(
            f"shim socket path {path!r} is longer than {MAX_SOCKET_PATH} bytes; "
            f"use a shorter {SOCKET_DIR_ENV}"
        )
    return _SCHEME + path


def socket_path(address: str) -> str:
    """The filesystem path of a ``unix://`` address (an address without scheme is a path).

    >>> socket_path("unix:///run/containerd/s/ab")
    '/run/containerd/s/ab'
    """
    return address[len(_SCHEME) :] if address.startswith(_SCHEME) else address


def is_listening(address: str, timeout: float = 1.0) -> bool:
    """True when a process accepts connections on ``address`` (a live shim)."""
    path = socket_path(address)
    if not path:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError:
            return False
        try:  # noqa: SIM105 (contextlib loads collections and functools: start stays light)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True
    finally:
        sock.close()


def bound_path(sock: socket.socket) -> str:
    """The file a listening unix socket is bound to ("" for abstract or unnamed ones)."""
    try:
        name = sock.getsockname()
    except OSError:
        return ""
    if isinstance(name, bytes):
        name = name.decode(errors="surrogateescape")
    if not isinstance(name, str) or not name or name.startswith("\0"):
        return ""
    return name


def inode(path: str) -> int | None:
    """The inode of ``path`` (None for "" or a missing file): is the socket file still ours?"""
    try:
        return os.stat(path).st_ino if path else None
    except OSError:
        return None
