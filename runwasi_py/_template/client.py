"""``start``'s side of the template: ask it to fork the pod's daemon, or fall back to spawning.

Every failure here returns None and ``start`` spawns the daemon as before: no template, a
stale socket, another user's socket, a template of another build (another key, so another
socket), a template that dies mid-fork or does not answer within :data:`TIMEOUT`. The
forked daemon waits for our ``go`` on a socket pair before it serves, so a fork whose
answer never reached us exits on its own instead of serving beside the daemon we spawn.

A pod's daemon joins its pod's cgroup itself, first thing after the fork (the template has
imported the cgroup code; ``start`` would spend ~25 ms importing it), and tells us the
outcome before it waits for ``go``: one that could not join gets no ``go`` (it exits) and
``start`` spawns instead, which joins itself.

Standard library only, and its light corners (``_socket``, ``_sha256``, json's C scanner
and escaper through :mod:`runwasi_py._lightjson`, ints packed with ``to_bytes`` rather
than :mod:`struct`): this runs inside every ``start``.
"""

from __future__ import annotations

import _socket as socket  # not socket.py (enum, selectors): start's imports stay light
import os
import sys

from runwasi_py._launch.address import sha256  # _sha256: hashlib would load OpenSSL
from runwasi_py._lightjson import dumps, loads  # not json: it loads re and enum

__all__ = [
    "ENABLE_ENV",
    "SERVE_ENV",
    "fork_daemon",
    "launch_template",
    "template_key",
    "template_path",
]

ENABLE_ENV = "RUNWASI_PY_TEMPLATE"
"""In containerd's environment: ``0`` (or ``false``, ``no``, ``off``) turns the template off;
unset or anything else, ``start`` uses one (``_launch/start.py`` reads it)."""
SERVE_ENV = "RUNWASI_PY_TEMPLATE_SERVE"
"""Set (to ``<socket path>\\n<key>``) in the environment of a process that is to be the template."""
TIMEOUT = 0.5
"""Seconds for connect + request + answer; past it ``start`` spawns."""
PLACE_TIMEOUT = 5.0
"""Seconds a forked pod daemon has to join its pod's cgroup (real work: mkdirs and writes
in every hierarchy, slower on a busy node) and say so; past it ``start`` spawns."""
MAX_ANSWER = 4096
MAX_NOTE = 512
"""Bytes of the placement note a forked daemon sends (one short write)."""
PROTOCOL = 2
"""Of the request and commit socket; part of the key, so a template speaking another never
meets this start."""


def template_key(prefix: list[str], address: str, namespace: str) -> str:
    """Identity of a template: the exact program, its build on disk, containerd, namespace.

    Any change of the interpreter, the shim program or the installed runwasi_py (size or
    mtime of their files) gives another key, so a template of another version is never
    asked. Costs a few ``stat`` calls.
    """
    marks: list[object] = [PROTOCOL, prefix, address, namespace]
    files = [sys.executable, *[a for a in prefix[1:2] if os.path.isabs(a)]]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files += [os.path.join(here, "__init__.py"), os.path.join(here, "_version.py")]
    for path in files:
        try:
            st = os.stat(path)
            marks.append([path, st.st_ino, st.st_size, st.st_mtime_ns])
        except OSError:
            marks.append([path, None])
    return str(sha256(dumps(marks).encode()).hexdigest()[:32])


def template_path(socket_dir: str, key: str) -> str:
    """The template's socket: beside the shim sockets (a 0700 directory), named by key."""
    return os.path.join(socket_dir, f"t-{key}.sock")


def fork_daemon(
    path: str,
    key: str,
    argv: list[str],
    env: dict[str, str],
    cwd: str,
    listener_fd: int,
    pod: dict[str, object] | None = None,
) -> int | None:
    """The pid of a daemon the template at ``path`` forked for us; None: spawn instead.

    ``pod``: ``{"cgroupsPath": ..., "group": ...}`` (systemd or not: ``env`` says); the
    daemon joins ``<cgroup_parent>/runwasi-py-shim-<group>`` before anything else and
    reports back. If it could not, or says nothing within :data:`PLACE_TIMEOUT`, it gets no
    ``go`` (it exits at the socket's EOF) and None tells ``start`` to spawn.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    ours = theirs = None
    try:
        sock.connect(path)
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)  # pid, uid, gid
        uid = int.from_bytes(cred[4:8], sys.byteorder, signed=True)
        if uid != os.geteuid():
            return None  # not our user's template: never hand it a pod
        # The commit channel, both ways: the daemon's placement to us, our "go" to it.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        ours.settimeout(PLACE_TIMEOUT)
        request = dumps({"key": key, "argv": argv, "env": env, "cwd": cwd, "pod": pod}).encode()
        fds = _int32(listener_fd) + _int32(theirs.fileno())  # struct.pack("2i", ...)
        sock.sendmsg(
            [len(request).to_bytes(4, "big"), request],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)],
        )
        theirs.close()
        theirs = None
        answer = _read_answer(sock)
        pid = answer.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return None
        # Only a pod's daemon has something to report (no wait for the child otherwise).
        if pod is not None and not _line(ours).startswith(b"placed"):
            return None  # it could not join its pod's cgroup (or died): not used
        ours.sendall(b"go")
        return pid
    except Exception:  # whatever went wrong, the pod is not lost: start spawns its daemon
        return None
    finally:
        sock.close()
        for end in (ours, theirs):
            if end is not None:
                end.close()  # without our "go" a forked daemon exits at this EOF


def _line(sock: socket.socket) -> bytes:
    """One newline-ended message (at most MAX_NOTE + a little); b"" at EOF."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(MAX_NOTE + 64)
        if not chunk or len(data) > MAX_NOTE + 64:
            return b""
        data += chunk
    return data


def _int32(value: int) -> bytes:
    return value.to_bytes(4, sys.byteorder, signed=True)


def _read_answer(sock: socket.socket) -> dict[str, object]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(MAX_ANSWER)
        if not chunk:
            raise ValueError("the template closed the connection")  # died mid-fork, say
        data += chunk
        if len(data) > MAX_ANSWER:
            raise ValueError("answer too long")
    answer = loads(data)
    if not isinstance(answer, dict):
        raise ValueError("answer is no object")
    return answer


def launch_template(prefix: list[str], flags: list[str], path: str, key: str) -> None:
    """Spawn a template for later ``start``\\s (detached; it exits at once if one runs)."""
    env = dict(os.environ)
    env[SERVE_ENV] = f"{path}\n{key}"
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
    # Nothing of this pod may reach the template: a template holding the pod's listener
    # would keep its socket answering after the pod's daemon is gone.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in inheritable_fds()]
    try:
        os.posix_spawn(prefix[0], [*prefix, *flags], env, file_actions=actions, setsid=True)
    except OSError:
        pass  # no template: the next start spawns its daemon, as without one
    finally:
        os.close(devnull)


def inheritable_fds() -> list[int]:
    """Our inheritable fds above stderr (the listener on fd 3, whatever leaked to us)."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        return []
    found = []
    for fd in fds:
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    found.append(fd)
            except OSError:  # the listdir fd itself is gone by now
                continue
    return found
