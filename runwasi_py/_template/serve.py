"""The template process: import everything, freeze the heap, fork a pod's daemon per request.

It runs no thread, no event loop and no engine (checked before every fork): it imports the
shim, the framework and the engine's module, collects and freezes its heap
(``gc.freeze()``, so the children's collections never write to the shared pages), and
waits in a plain blocking ``accept``. Per request (from ``client.fork_daemon``): the peer
must be our user, the key ours, and the program files unchanged since we started (else we
exit: a newer build gets a new template); then fork. The child takes *everything* from the
request: argv, environment, working directory, the listener (fd 3), and waits for the
client's ``go`` before it serves. The template holds a ``flock`` on ``<socket>.lock`` for
its life (one template per key), exits after :data:`IDLE` seconds without a request, and
ignores SIGCHLD (the kernel reaps its children; they are in their own sessions and outlive
it: a SIGKILLed template loses no pod).
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import threading

from runwasi_py._launch.pod_cgroup import NOTE_ENV
from runwasi_py._template.client import MAX_NOTE, SERVE_ENV, template_key

TYPE_CHECKING = False
if TYPE_CHECKING:
    from runwasi_py._launch.flags import Flags
    from runwasi_py._shim import Shim

__all__ = ["IDLE_ENV", "serve_template"]

IDLE_ENV = "RUNWASI_PY_TEMPLATE_IDLE"
IDLE = 30.0
"""Seconds without a request after which the template exits (``$RUNWASI_PY_TEMPLATE_IDLE``)."""
COMMIT_TIMEOUT = 5.0
MAX_REQUEST = 1 << 20
LISTENER_FD = 3


def serve_template(shim: type[Shim] | str, flags: Flags) -> int:
    """Be the template named in ``$RUNWASI_PY_TEMPLATE_SERVE``; returns an exit status."""
    path, _, key = os.environ.pop(SERVE_ENV, "").partition("\n")
    prefix = _prefix(flags)
    if not path or not key or template_key(prefix, flags.address, flags.namespace) != key:
        return 2  # not what start asked for (another build already): nothing to serve
    if _in_pod_cgroup():
        return 2  # our pages would be charged to that pod, and our children born in it
    lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another template has this key
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())  # for tooling: _template/find.py
    os.chdir("/")  # not the first pod's bundle: that one goes away
    _warm(shim)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a dead template's socket (we hold the lock: nobody else's)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    old_umask = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    bound = os.stat(path).st_ino
    server.listen(64)
    idle = _idle_seconds()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        while True:
            server.settimeout(idle)
            try:
                conn, _ = server.accept()
            except TimeoutError:
                return 0
            with conn:
                if not _answer(conn, shim, key, prefix, server, lock):
                    return 0
    finally:
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == bound:
                os.unlink(path)
        server.close()


def _in_pod_cgroup() -> bool:
    """True when this process is in a pod daemon's cgroup (``start`` launches templates
    before it joins one; this guards against a launcher that did not)."""
    try:
        with open("/proc/self/cgroup") as f:
            return "/runwasi-py-shim-" in f.read()  # = _cgroups._daemon.DAEMON_CGROUP_PREFIX
    except OSError:
        return False


def _prefix(flags: Flags) -> list[str]:
    """How ``start`` runs this program (what its key is made of)."""
    orig = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    tail = sys.argv[1:]
    return [sys.executable, *orig[1 : len(orig) - len(tail)]]


def _idle_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(IDLE_ENV, IDLE)))
    except ValueError:
        return IDLE


# What the framework's daemon imports to serve its first task that the shim's own modules
# may not: most of it is imported inside functions (so that start stays light), and ttrpc
# loads its submodules on first use. Imported after the fork, each would cost every pod its
# import time (about 45 ms measured for these) and private pages. The engine's own lazy
# imports come from its ``Sandbox.template_modules``. tests/runwasi_py/_template checks that
# serving a task imports nothing more.
DAEMON_MODULES = (
    "encodings.ascii",
    "hashlib",
    "resource",
    "uvloop",
    "runwasi_py._bundle.bundle",
    "runwasi_py._bundle.mount",
    "runwasi_py._bundle.spec",
    "runwasi_py._cgroups",
    "runwasi_py._cgroups._placement",
    "runwasi_py._cgroups._metrics",
    "runwasi_py._cgroups._v1",
    "runwasi_py._cgroups._v2",
    "runwasi_py._compile_cache",
    "runwasi_py._daemon.log",
    "runwasi_py._daemon.main",
    "runwasi_py._daemon.reaper",
    "runwasi_py._daemon.reservations",
    "runwasi_py._events.publisher",
    "runwasi_py._launch.bootstrap",
    "runwasi_py._launch.reserve",
    "runwasi_py._launch.start",
    "runwasi_py._mountinfo",
    "runwasi_py._namespaces",
    "runwasi_py._native",
    "runwasi_py._native._reaper",
    "runwasi_py._native._task",
    "runwasi_py._precompile_memo",
    "runwasi_py._proto.messages",
    "runwasi_py._task.instance",
    "runwasi_py._task.placement",
    "runwasi_py._task.service",
    "runwasi_py._task.stats",
    "runwasi_py._task.workers",
)


def _warm(shim: type[Shim] | str) -> None:
    """Import what a daemon imports, then freeze the heap for copy-on-write sharing."""
    import importlib

    import ttrpc
    from runwasi_py._launch.main import _resolve

    cls = _resolve(shim)
    module = getattr(cls.sandbox, "__module__", "")
    if module:
        importlib.import_module(module)
    for name in ttrpc.__all__:  # its lazily loaded submodules
        with contextlib.suppress(Exception):
            getattr(ttrpc, name)
    # What each daemon would otherwise import after the fork, into private pages.
    for name in (*DAEMON_MODULES, *getattr(cls.sandbox, "template_modules", ())):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(Exception):
        cls.sandbox().cache_key()  # pywasmtime: wasmtime's version via importlib.metadata
    gc.collect()
    gc.freeze()


def _answer(
    conn: socket.socket,
    shim: type[Shim] | str,
    key: str,
    prefix: list[str],
    server: socket.socket,
    lock: int,
) -> bool:
    """Serve one request; False when the template must exit (it changed, or it cannot fork)."""
    conn.settimeout(1.0)
    fds: list[int] = []
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if struct.unpack("3i", creds)[1] != os.geteuid():
            return True  # another user: no answer at all
        request, fds = _read_request(conn)
        if request.get("key") != key:
            _reply(conn, {"error": "key"})
            return True
        if template_key(prefix, *_where(request)) != key:
            _reply(conn, {"error": "changed"})
            return False  # the program on disk changed under us: a newer template takes over
        if threading.active_count() != 1 or len(os.listdir("/proc/self/task")) != 1:
            _reply(conn, {"error": "threads"})
            return False  # never fork a process with threads
        listener, commit = fds
        pid = os.fork()
        if pid == 0:
            _child(shim, request, listener, commit, (server.fileno(), lock, conn.fileno()))
        _reply(conn, {"pid": pid})
        return True
    except (OSError, ValueError, KeyError):
        return True
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _where(request: dict[str, object]) -> tuple[str, str]:
    """(address, namespace) from the request's daemon argv (``-address`` / ``-namespace``)."""
    argv = request["argv"]
    if not isinstance(argv, list):
        raise ValueError("argv")
    values = {"-address": "", "-namespace": ""}
    for i, arg in enumerate(argv[:-1]):
        if arg in values:
            values[arg] = str(argv[i + 1])
    return values["-address"], values["-namespace"]


def _read_request(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    head, ancdata, _, _ = conn.recvmsg(4, socket.CMSG_SPACE(2 * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += list(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
    if len(head) != 4 or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise ValueError("bad request")
    size = struct.unpack("!I", head)[0]
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ValueError("short request")
        body += chunk
    request = json.loads(body)
    if not isinstance(request, dict):
        raise ValueError("request is no object")
    return request, fds


def _reply(conn: socket.socket, answer: dict[str, object]) -> None:
    conn.sendall(json.dumps(answer).encode() + b"\n")


def _join_pod(request: dict[str, object], cwd: str, env: dict[str, str]) -> tuple[bool, str]:
    """Join the pod's daemon cgroup the request names, as ``start`` would have before
    spawning: ``(joined or nothing to join, note for the log)``; False: not to be used."""
    pod = request.get("pod")
    if pod is None:
        return True, ""
    if not isinstance(pod, dict):
        return False, "bad pod"
    path, group = pod.get("cgroupsPath"), pod.get("group")
    if not isinstance(path, str) or not isinstance(group, str):
        return False, "bad pod"
    from runwasi_py._launch.pod_cgroup import join_pod_cgroup

    try:  # with our pid, a join that fails raises instead of leaving us where we are
        note = join_pod_cgroup({"linux": {"cgroupsPath": path}}, cwd, group, env, os.getpid())
    except Exception as e:
        return False, str(e)
    return True, note


def _read_commit(commit: int) -> str | None:
    """Wait for ``go`` (up to the socket's EOF); None: no ``go``."""
    import time

    deadline = time.monotonic() + COMMIT_TIMEOUT
    data = b""
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([commit], [], [], max(0.0, left))
        chunk = os.read(commit, 1024) if ready else b""
        if not chunk:  # EOF, or the time is up
            return data[2:].decode("utf-8", "replace") if data.startswith(b"go") else None
        data += chunk
        if len(data) > 4096:
            return None


def _child(
    shim: type[Shim] | str,
    request: dict[str, object],
    listener: int,
    commit: int,
    template_fds: tuple[int, ...],
) -> None:
    """The forked pod daemon: become exactly what ``start`` asked for, then run. Never returns."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the daemon reaps its own children
        for fd in template_fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # the lock above all: it must die with the template
        argv, env, cwd = request["argv"], request["env"], request["cwd"]
        if not isinstance(argv, list) or not isinstance(env, dict) or not isinstance(cwd, str):
            os._exit(1)
        # Into the pod's cgroup before this daemon allocates anything of its own (what the
        # template's pages hold stays charged where it is), then tell start how it went.
        joined, note = _join_pod(request, cwd, env)
        if request.get("pod") is not None:  # start waits for this only then
            answer = (b"placed " if joined else b"failed ") + note.encode()[:MAX_NOTE]
            os.write(commit, answer + b"\n")
        if not joined or _read_commit(commit) is None:
            # start spawns the daemon itself (which joins that cgroup); nothing is undone
            # here, where it could race with that daemon's own join and record.
            os._exit(0)
        os.close(commit)
        os.dup2(listener, LISTENER_FD)
        if listener != LISTENER_FD:
            os.close(listener)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
        if note:  # where we are (its pod's cgroup), for the daemon's log
            os.environ[NOTE_ENV] = note
        sys.argv = [sys.argv[0], *[str(a) for a in argv]]
        from runwasi_py._launch.main import shim_main

        shim_main(shim, sys.argv[1:])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
