"""Peer credentials of a unix-socket connection (``SO_PEERCRED``) and the checks on them.

The kernel records the peer's pid and effective uid/gid at ``connect()`` time. containerd's
own socket and Go shims both accept only the same user (``UnixSocketRequireSameUser``).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "PeerCheck",
    "PeerCredentials",
    "peer_credentials",
    "require_same_user",
    "require_uid_gid",
]

_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """Who is on the other end of a unix socket, as the kernel saw it at connect time.

    Example:
        >>> a, b = socket.socketpair()
        >>> peer_credentials(a).uid == os.geteuid()
        True
        >>> a.close(); b.close()
    """

    pid: int
    uid: int
    gid: int


PeerCheck = Callable[[PeerCredentials], bool]
"""A predicate over the peer; False closes the connection silently (as Go's handshaker)."""


def peer_credentials(sock: socket.socket) -> PeerCredentials:
    """Read ``SO_PEERCRED`` from a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid)


def require_uid_gid(uid: int, gid: int) -> PeerCheck:
    """Accept only a peer with this uid and gid; -1 is a wildcard.

    Go's ``UnixSocketRequireUidGid``.
    """

    def check(creds: PeerCredentials) -> bool:
        return (uid == -1 or creds.uid == uid) and (gid == -1 or creds.gid == gid)

    return check


def require_same_user() -> PeerCheck:
    """Accept only a peer running as our effective uid and gid."""
    return require_uid_gid(os.geteuid(), os.getegid())
