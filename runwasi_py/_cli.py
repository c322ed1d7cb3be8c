"""The shim executable: containerd's argv, ``-v``, ``-info``, ``start``, ``delete``, the daemon.

Theory of operation (containerd shim v2): containerd runs the shim binary with Go-style
flags and an action. ``start`` must print the address of a listening ttrpc socket and exit;
containerd dials it at once (1.6 does not retry), and reads ``start``'s stdout and stderr
*combined*, so nothing else may be written there. This module therefore

1. computes the socket address from (``-address``, namespace, group), where the group is the
   CRI sandbox id of the container or its id, so one shim serves a whole pod;
2. reuses a live shim already listening there, else binds and listens *before* printing;
3. writes ``<bundle>/address`` (containerd 1.6/1.7 read it back after a restart);
4. re-executes the same program as the long-running daemon with the listening socket as
   fd 3, stdio on ``/dev/null`` and a new session, so containerd's pipes close when
   ``start`` exits (``os.posix_spawn`` spawns; ``start`` never forks a process with threads);
5. prints the address and exits 0.

The daemon (no action) logs to the bundle's ``log`` FIFO, becomes a child subreaper and
runs ``Shim.serve`` on fd 3 until Shutdown. ``delete`` is containerd's cleanup after a shim
died: unmount the rootfs, remove a dead socket, print a ``DeleteResponse`` (exit 137).

``start`` is latency-critical (containerd waits for it on every container): this module
imports only light standard-library modules at the top and everything else where needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

from runwasi_py._address import is_listening, socket_address, socket_path
from runwasi_py._protowire import encode_varint, length_delimited

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any, NoReturn

    from runwasi_py._shim import Shim

__all__ = ["Flags", "UsageError", "parse_flags", "shim_main"]

ANNOTATION_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
GROUP_ENV = "RUNWASI_PY_SHIM_GROUP"
"""``namespace``: one shim daemon per containerd namespace; ``sandbox`` (default): per pod."""
_GROUP_MODES = ("sandbox", "namespace")
_RESERVE_SERVICE = "runwasi.shim.v1.Shim"  # = _reservations.RESERVE_SERVICE (not imported:
_RESERVE_METHOD = "Reserve"  # start stays light)
_FAILED_PRECONDITION = 9
_STRING_FLAGS = frozenset(
    {"namespace", "address", "publish-binary", "id", "bundle", "socket", "debug-socket"}
)
_BOOL_FLAGS = frozenset({"debug", "v", "info"})
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_LISTENER_FD = 3
_CGROUP_RECORDS = ("runwasi-py-cgroups.json", "runwasi-py-daemon-cgroups.json")
"""= _cgroups.RECORD_NAME, DAEMON_RECORD_NAME (not imported: delete stays light)."""
_SYSTEMD_ENV = "RUNWASI_PY_SYSTEMD_CGROUP"  # = _placement.SYSTEMD_ENV
_CGROUP_NOTE_ENV = "RUNWASI_PY_DAEMON_CGROUP"  # start -> daemon: where it put the daemon
_DELETE_EXIT_STATUS = 128 + 9  # what the runc shim reports for a task it could not reap
_USAGE = """\
Usage of {prog}:
  -address string
        grpc address back to main containerd
  -bundle string
        path to the bundle if not workdir
  -debug
        enable debug output in logs
  -id string
        id of the task
  -info
        get the runtime info and exit
  -namespace string
        namespace that owns the shim
  -publish-binary string
        path to publish binary (used for publishing events)
  -socket string
        socket path to serve
  -v    show the shim version and exit
Actions: start | delete | (none: serve as the daemon)
"""


class UsageError(Exception):
    """The command line is wrong (Go's flag package exits 2 with this message)."""


class Flags:
    """containerd's shim command line, parsed the way Go's ``flag`` package does.

    (A plain class rather than a dataclass: ``dataclasses`` costs ~10 ms to import, and
    ``start`` is on containerd's critical path.)
    """

    def __init__(
        self,
        *,
        namespace: str = "",
        address: str = "",
        publish_binary: str = "",
        id: str = "",
        bundle: str = "",
        socket: str = "",
        debug_socket: str = "",
        debug: bool = False,
        v: bool = False,
        info: bool = False,
        help: bool = False,
        action: str = "",
        args: list[str] | None = None,
    ) -> None:
        self.namespace = namespace
        self.address = address
        self.publish_binary = publish_binary
        self.id = id
        self.bundle = bundle
        self.socket = socket
        self.debug_socket = debug_socket
        self.debug = debug
        self.v = v
        self.info = info
        self.help = help
        self.action = action
        self.args: list[str] = list(args or [])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Flags) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if v)
        return f"Flags({fields})"


def parse_flags(argv: list[str]) -> Flags:
    """Parse ``argv`` (without the program name) like Go's ``flag.Parse``.

    Single or double dash, ``-k v`` or ``-k=v``; boolean flags take no separate value
    (``-debug`` or ``-debug=false``); parsing stops at the first non-flag (the action) or
    after ``--``. Raises UsageError for an unknown flag or a missing value.

    >>> parse_flags(["-namespace", "default", "-id=c1", "-debug", "start"]).action
    'start'
    """
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if len(arg) < 2 or not arg.startswith("-"):
            break
        i += 1
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise UsageError(f"bad flag syntax: {arg}")
        name, has_value, value = name.partition("=")
        if name in ("h", "help"):
            flags.help = True
        elif name in _BOOL_FLAGS:
            if has_value and value not in _TRUE | _FALSE:
                raise UsageError(f'invalid boolean value "{value}" for -{name}: parse error')
            setattr(flags, name, not has_value or value in _TRUE)
        elif name in _STRING_FLAGS:
            if not has_value:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            setattr(flags, name.replace("-", "_"), value)
        else:
            raise UsageError(f"flag provided but not defined: -{name}")
    rest = argv[i:]
    flags.action = rest[0] if rest else ""
    flags.args = rest[1:]
    return flags


def shim_main(
    shim: type[Shim] | str, argv: list[str] | None = None, *, group_by: str | None = None
) -> NoReturn:
    """Run ``shim`` as containerd runs a shim binary; never returns.

    ``shim`` is the Shim class, or its import path ``"package.module:ShimClass"``: with a
    string, ``start`` and ``delete`` never import the shim's module (nor the engine it
    pulls in), which keeps ``start`` fast. ``argv`` defaults to ``sys.argv[1:]``. Exit
    status 0 on success, 1 on failure (the message on stderr, which containerd reports),
    2 on a bad command line. ``group_by`` (``"sandbox"`` or ``"namespace"``) is
    ``Config.group_by`` for an import-path ``shim``, whose Config ``start`` does not read;
    ``$RUNWASI_PY_SHIM_GROUP`` overrides both.

    Example (the body of a console script ``containerd-shim-my-shim-v1``):
        >>> def main() -> None:
        ...     shim_main("my_shim._shim:MyShim")
    """
    sys.exit(_main(shim, argv, group_by))


def _resolve(shim: type[Shim] | str) -> type[Shim]:
    """The Shim class of a class-or-import-path reference."""
    if not isinstance(shim, str):
        return shim
    import importlib

    module, _, qualname = shim.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _main(shim: type[Shim] | str, argv: list[str] | None, group_by: str | None = None) -> int:
    explicit = argv is not None
    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "shim"
    try:
        flags = parse_flags(args)
    except UsageError as e:
        sys.stderr.write(f"{e}\n{_USAGE.format(prog=prog)}")
        return 2
    if flags.help:
        sys.stderr.write(_USAGE.format(prog=prog))
        return 0
    if flags.v:
        from runwasi_py._version import version_text

        cls = _resolve(shim)
        ver, rev = cls.version()
        sys.stdout.write(version_text(sys.argv[0] if sys.argv else prog, cls.name, ver, rev))
        sys.stdout.flush()
        return 0
    if flags.info:
        return _info(_resolve(shim))
    flags.namespace = flags.namespace or os.environ.get("NAMESPACE", "")
    flags.address = flags.address or os.environ.get("GRPC_ADDRESS", "")
    if not flags.namespace:
        sys.stderr.write("shim namespace cannot be empty\n")
        return 1
    try:
        if flags.action == "start":
            return _start(shim, flags, explicit, group_by)
        if flags.action == "delete":
            return _delete(flags)
        if flags.action == "":
            try:
                return _daemon(_resolve(shim), flags, os.environ.pop(_CGROUP_NOTE_ENV, ""))
            finally:
                _leave_pod_cgroup(flags)
    except Exception as e:
        # containerd shows start's combined output as the error: one clear line
        sys.stderr.write(f"{flags.action or 'shim'}: {e}\n")
        return 1
    sys.stderr.write(f"unknown action {flags.action!r}: want start, delete or none\n")
    return 1


# --- -info ------------------------------------------------------------------------------


def _info(shim: type[Shim]) -> int:
    from runwasi_py._proto import Any as AnyMessage
    from runwasi_py._proto import RuntimeInfo, RuntimeVersion
    from runwasi_py._version import runtime_name

    options = None
    data = _read_stdin()
    if data:
        try:
            options = AnyMessage.FromString(data)
        except Exception:
            options = None  # not an Any: containerd only echoes options it sent
    ver, rev = shim.version()
    info = RuntimeInfo(
        name=runtime_name(shim.name or "runwasi-py"),
        version=RuntimeVersion(version=ver, revision=rev),
        options=options if options is not None and options.type_url else None,
    )
    sys.stdout.buffer.write(bytes(info))
    sys.stdout.flush()
    return 0


def _read_stdin() -> bytes:
    """What containerd wrote on stdin ("" for a terminal or a closed stdin)."""
    try:
        if os.isatty(0):
            return b""
        chunks = []
        while chunk := os.read(0, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return b""


# --- start -----------------------------------------------------------------------------


class _Bootstrap:
    """The parts of containerd 2.3's BootstrapParams that ``start`` needs."""

    def __init__(
        self, ttrpc_address: str, grpc_address: str, socket_dir: str | None, debug: bool
    ) -> None:
        self.ttrpc_address = ttrpc_address
        self.grpc_address = grpc_address
        self.socket_dir = socket_dir
        self.debug = debug


def _proto_fields(data: bytes) -> dict[int, list[bytes | int]]:
    """A minimal protobuf wire decoder (varints and length-delimited fields only matter here).

    Hand-written so that ``start`` does not import the generated classes (~100 ms).
    Raises ValueError on malformed input.
    """
    out: dict[int, list[bytes | int]] = {}
    pos, end = 0, len(data)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result
            shift += 7

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        value: bytes | int
        if wire == 0:
            value = varint()
        elif wire == 2:
            n = varint()
            if pos + n > end:
                raise ValueError("truncated field")
            value, pos = data[pos : pos + n], pos + n
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("truncated field")
        out.setdefault(number, []).append(value)
    return out


def _systemd_cgroup(data: bytes) -> bool:
    """``SystemdCgroup = true`` in a pre-2.3 stdin's runtime options (an ``Any`` holding
    ``runtimeoptions.v1.Options``, whose field 3 is the options table as TOML)."""
    if b"SystemdCgroup" not in data:
        return False
    try:
        fields = _proto_fields(data)
        url, value = fields.get(1, [b""])[-1], fields.get(2, [b""])[-1]
        if not isinstance(url, bytes) or not url.endswith(b"runtimeoptions.v1.Options"):
            return False
        body = _proto_fields(value).get(3, [b""])[-1] if isinstance(value, bytes) else b""
        if not isinstance(body, bytes):
            return False
        import tomllib

        return tomllib.loads(body.decode("utf-8")).get("SystemdCgroup") is True
    except (ValueError, UnicodeDecodeError):
        return False


def _bootstrap(data: bytes, flags: Flags) -> _Bootstrap | None:
    """Decode ``data`` as BootstrapParams if it is one for this shim (containerd 2.3+).

    Before 2.3, stdin carries the runtime options as a bare ``Any`` (or nothing); such bytes
    may even decode as BootstrapParams, so the instance id and namespace must match the flags.
    """
    if not data:
        return None
    try:
        fields = _proto_fields(data)

        def text(n: int) -> str | None:
            values = fields.get(n)
            if not values or not isinstance(values[-1], bytes):
                return None
            return values[-1].decode("utf-8")

        if text(1) != flags.id or text(2) != flags.namespace:
            return None
        level = fields.get(3, [0])[-1]
        if isinstance(level, int) and level >= 1 << 63:
            level -= 1 << 64  # enum values are int32, negative ones come as 10-byte varints
        return _Bootstrap(
            ttrpc_address=text(5) or "",
            grpc_address=text(6) or "",
            socket_dir=text(9),
            debug=isinstance(level, int) and level < 0,  # TRACE -8, DEBUG -4
        )
    except (ValueError, UnicodeDecodeError):
        return None


def _group(bundle: str, container_id: str) -> str:
    """The shim group: the CRI sandbox id from config.json, else the container id."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        annotations = spec.get("annotations") or {}
        group = annotations.get(ANNOTATION_SANDBOX_ID)
        if isinstance(group, str) and group:
            return group
    except (OSError, ValueError, AttributeError):
        pass  # Create will report a bad bundle clearly; start only needs a name
    return container_id


def _write_address(bundle: str, address: str) -> None:
    """``<bundle>/address``, atomically, without a newline (as Go shims write it)."""
    final = os.path.join(bundle, "address")
    tmp = final + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, address.encode())
    finally:
        os.close(fd)
    os.replace(tmp, final)


def _listen(address: str, container_id: str = "") -> socket.socket | None:
    """Bind and listen on ``address``; None when a live shim there reserved itself for us."""
    import errno
    import socket as socket_mod
    import time

    path = socket_path(address)
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for attempt in range(40):
        sock = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
        try:
            sock.bind(path)
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE:
                raise
            answer = _reserve(address, container_id) if container_id else "unknown"
            if answer == "reserved" or (answer == "unknown" and is_listening(address)):
                return None  # a live shim serves this group
            if answer == "refused":  # it is exiting and has unlinked its socket: bind again
                time.sleep(0.002)
                continue
            # Nobody answers: a dead shim's file, or one that a concurrent start for the
            # same group has bound and is about to listen on. Give the latter a moment
            # before removing the file (binding first, as Go shims do, keeps this rare).
            if attempt < 3:
                time.sleep(0.005)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            continue
        try:
            sock.listen(128)
            os.chmod(path, 0o600)
        except BaseException:
            sock.close()
            raise
        return sock
    raise OSError(f"cannot bind {path}: address in use and nobody answers")


def _daemon_command(shim: type[Shim] | str, flags: Flags, explicit: bool) -> list[str]:
    """How to run this same program again as the daemon (no action)."""
    daemon_flags = [
        "-namespace", flags.namespace,
        "-id", flags.id,
        "-address", flags.address,
        "-publish-binary", flags.publish_binary,
        "-bundle", flags.bundle,
    ]  # fmt: skip
    if flags.debug:
        daemon_flags.append("-debug")
    orig = list(getattr(sys, "orig_argv", []))
    tail = sys.argv[1:]
    if not explicit and len(orig) > len(tail) and orig[len(orig) - len(tail) :] == tail:
        # the exact interpreter options and script / -m module / -c code we were run with
        return [sys.executable, *orig[1 : len(orig) - len(tail)], *daemon_flags]
    if isinstance(shim, str):
        module, _, qualname = shim.partition(":")
    else:
        module, qualname = shim.__module__, shim.__qualname__
    if module == "__main__" or "<locals>" in qualname:
        raise RuntimeError(
            f"cannot re-run {qualname} as a daemon: define the Shim class in an importable "
            "module or call shim_main without argv"
        )
    root = _import_root(module)
    code = (
        "import sys; root = sys.argv.pop(1); root and sys.path.insert(0, root); "
        "from runwasi_py._cli import _daemon_entry; _daemon_entry()"
    )
    return [sys.executable, "-c", code, root or "", f"{module}:{qualname}", *daemon_flags]


def _import_root(module: str) -> str | None:
    """The sys.path entry ``module`` was imported from (so the daemon can import it too)."""
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    if not isinstance(file, str) or not file:
        return None
    path = os.path.dirname(os.path.abspath(file))
    is_package = os.path.basename(file) == "__init__.py"
    for _ in range(module.count(".") + (1 if is_package else 0)):
        path = os.path.dirname(path)
    return path


def _daemon_entry() -> NoReturn:
    """Entry of a daemon started through ``python -c``: ``<module>:<qualname> <flags…>``."""
    target = sys.argv.pop(1)
    shim_main(target, sys.argv[1:])


def _group_mode(shim: type[Shim] | str, group_by: str | None) -> str:
    """``sandbox`` or ``namespace``: $RUNWASI_PY_SHIM_GROUP, else the shim's choice."""
    mode = os.environ.get(GROUP_ENV, "")
    if not mode:
        mode = group_by or (shim.config.group_by if not isinstance(shim, str) else "sandbox")
    if mode not in _GROUP_MODES:
        raise ValueError(f"{GROUP_ENV}={mode!r}: want one of {', '.join(_GROUP_MODES)}")
    return mode


def _shim_ref(shim: type[Shim] | str) -> str:
    return shim if isinstance(shim, str) else f"{shim.__module__}:{shim.__qualname__}"


def _start(
    shim: type[Shim] | str, flags: Flags, explicit: bool, group_by: str | None = None
) -> int:
    if not flags.id:
        raise ValueError("-id is required")
    flags.bundle = os.path.abspath(flags.bundle or os.getcwd())
    stdin = _read_stdin()
    boot = _bootstrap(stdin, flags)
    mode = _group_mode(shim, group_by)
    env = None
    if boot is None and _systemd_cgroup(stdin):
        env = dict(os.environ, **{_SYSTEMD_ENV: "1"})
    if boot is not None:
        flags.debug = flags.debug or boot.debug
        flags.address = flags.address or boot.grpc_address
        if boot.ttrpc_address and not os.environ.get("TTRPC_ADDRESS"):
            env = dict(os.environ, TTRPC_ADDRESS=boot.ttrpc_address)
    if os.environ.get(GROUP_ENV) != mode:  # the daemon lingers only when shared
        env = dict(env if env is not None else os.environ, **{GROUP_ENV: mode})
    # A namespace-wide group is named after the shim ("@" never appears in a container
    # id), so two shim programs sharing a namespace do not meet on one socket.
    group = "@" + _shim_ref(shim) if mode == "namespace" else _group(flags.bundle, flags.id)
    address = socket_address(
        flags.address,
        flags.namespace,
        group,
        directory=boot.socket_dir if boot is not None else None,
    )
    listener = _listen(address, flags.id)
    if listener is None:  # a live shim serves this group and holds itself for our Create
        _write_address(flags.bundle, address)
        _print_address(address)
        return 0
    try:
        _write_address(flags.bundle, address)
        command = _daemon_command(shim, flags, explicit)
        if listener.fileno() != _LISTENER_FD:
            os.dup2(listener.fileno(), _LISTENER_FD)  # start is exiting: fd 3 is free to take
        else:
            os.set_inheritable(_LISTENER_FD, True)
        if mode == "sandbox":
            note = _join_pod_cgroup(flags.bundle, group)
            if note:
                env = dict(env if env is not None else os.environ, **{_CGROUP_NOTE_ENV: note})
        pid = _spawn_daemon(command, flags.bundle, env)
    except BaseException:
        os.unlink(socket_path(address))
        listener.close()
        raise
    _raise_oom_score(pid)
    _print_address(address)
    return 0


def _reserve(address: str, container_id: str, timeout: float = 2.0) -> str:
    """Ask the live shim on ``address`` to hold itself for ``container_id``'s Create.

    One raw ttrpc request (``runwasi.shim.v1.Shim/Reserve``) over a blocking socket, so
    that ``start`` imports neither asyncio nor ttrpc. Returns ``"reserved"`` (also for a
    shim that does not know Reserve, or that is too slow to answer: it is alive),
    ``"refused"`` (the shim is exiting and has already unlinked its socket), ``"dead"``
    (nobody accepts) or ``"unknown"`` (the connection closed without an answer).
    """
    import socket as socket_mod
    import struct

    request = (
        length_delimited(1, _RESERVE_SERVICE.encode())
        + length_delimited(2, _RESERVE_METHOD.encode())
        + length_delimited(3, length_delimited(1, container_id.encode("utf-8", "surrogateescape")))
    )
    with socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path(address))
        except OSError:
            return "dead"
        try:
            sock.sendall(struct.pack(">IIBB", len(request), 1, 1, 0) + request)
            header = _recv_exactly(sock, 10)
            length, stream_id, kind, _ = struct.unpack(">IIBB", header)
            if stream_id != 1 or kind != 2 or length > 1 << 20:
                return "reserved"  # not a reply we understand, but a live ttrpc server
            body = _recv_exactly(sock, length)
        except TimeoutError:
            return "reserved"
        except (OSError, EOFError):
            return "unknown"  # closed without an answer: not a Reserve-aware shim, or exiting
    try:
        status = _proto_fields(body).get(1, [b""])[-1]
        code = _proto_fields(status).get(1, [0])[-1] if isinstance(status, bytes) else 0
    except ValueError:
        return "reserved"
    return "refused" if code == _FAILED_PRECONDITION else "reserved"


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return buf


def _spawn_daemon(command: list[str], cwd: str, env: dict[str, str] | None) -> int:
    """Start the daemon in a new session with /dev/null stdio and the listener on fd 3.

    ``os.posix_spawn`` rather than ``subprocess``: importing subprocess alone costs
    ~12 ms of a start budget of tens of ms. Every fd of ours except fd 3 is close-on-exec
    (PEP 446), so containerd's stdout/stderr pipes do not leak into the daemon.
    posix_spawn has no cwd argument, so change ours: start exits right after.
    """
    os.chdir(cwd)
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
    # Inheritable fds our parent leaked to us (libuv's spawn leaves one on a high number)
    # would keep containerd's stdout pipe open in the daemon: start's reader never sees EOF.
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _leaked_fds()]
    try:
        return os.posix_spawn(
            command[0],
            command,
            os.environ if env is None else env,
            file_actions=actions,
            setsid=True,
        )
    finally:
        os.close(devnull)


def _leaked_fds() -> list[int]:
    """Our inheritable fds above the listener's: none is meant for the daemon."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        return []
    leaked = []
    for fd in fds:
        if fd > _LISTENER_FD:
            with contextlib.suppress(OSError):  # the listdir fd itself is gone by now
                if os.get_inheritable(fd):
                    leaked.append(fd)
    return leaked


def _print_address(address: str) -> None:
    sys.stdout.write(address)
    sys.stdout.flush()


def _raise_oom_score(pid: int) -> None:
    """Daemon's oom_score_adj = ours + 1, as Go shims do: killed before containerd."""
    try:
        with open("/proc/self/oom_score_adj") as f:
            score = int(f.read().strip())
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))
    except (OSError, ValueError):
        pass


# --- delete ----------------------------------------------------------------------------


def _delete(flags: Flags) -> int:
    """containerd's cleanup after a shim died; as light as ``start`` (no asyncio, no protos).

    A live shim on the bundle's address (a shared daemon still serving other containers)
    is never touched: only a socket nobody answers on is removed.
    """
    import time

    bundle = os.path.abspath(flags.bundle or os.getcwd())
    rootfs = os.path.join(bundle, "rootfs")
    if _is_mountpoint(rootfs):  # rare (a daemon that died mid-task): only then load _mount
        from runwasi_py._mount import unmount_all

        try:
            unmount_all(rootfs)
        except Exception as e:  # containerd logs delete's stderr as a warning on success
            sys.stderr.write(f"delete: unmount rootfs: {e}\n")
    if any(os.path.exists(os.path.join(bundle, n)) for n in _CGROUP_RECORDS):
        try:
            from runwasi_py._cgroups import cleanup_bundle

            left = cleanup_bundle(bundle)
            if left:
                sys.stderr.write(f"delete: cgroups left behind: {', '.join(map(str, left))}\n")
        except Exception as e:
            sys.stderr.write(f"delete: remove cgroups: {e}\n")
    try:
        with open(os.path.join(bundle, "address")) as f:
            address = f.read().strip()
    except OSError:
        address = ""
    if address and not is_listening(address):
        try:
            os.unlink(socket_path(address))
        except FileNotFoundError:
            pass
        except OSError as e:
            sys.stderr.write(f"delete: remove socket: {e}\n")
    now = time.time_ns()
    sys.stdout.buffer.write(
        encode_delete_response(0, _DELETE_EXIT_STATUS, now // 1_000_000_000, now % 1_000_000_000)
    )
    sys.stdout.flush()
    return 0


def _is_mountpoint(path: str) -> bool:
    """True when something is mounted on ``path`` (``/proc/self/mountinfo``, field 5)."""
    want = os.path.realpath(path).encode("utf-8", "surrogateescape")
    # mountinfo escapes space, tab, newline and backslash as \ooo; a path with one of them
    # is compared escaped
    for ch, esc in ((b"\\", b"\\134"), (b" ", b"\\040"), (b"\t", b"\\011"), (b"\n", b"\\012")):
        want = want.replace(ch, esc)
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            for line in f:
                fields = line.split(b" ", 5)
                if len(fields) > 4 and fields[4] == want:
                    return True
    except OSError:
        return os.path.ismount(path)
    return False


def encode_delete_response(pid: int, exit_status: int, seconds: int, nanos: int) -> bytes:
    """``containerd.task.v2.DeleteResponse{pid, exit_status, exited_at}`` on the wire.

    Hand-encoded so that ``delete`` does not import betterproto2 and the generated classes
    (~100 ms); byte-identical to ``bytes(DeleteResponse(...))`` (tests check it). Zero fields
    are omitted as proto3 does; ``exited_at`` is always present.

    >>> encode_delete_response(0, 137, 1, 0)
    b'\\x10\\x89\\x01\\x1a\\x02\\x08\\x01'
    """
    ts = b""
    if seconds:
        ts += b"\x08" + encode_varint(seconds)
    if nanos:
        ts += b"\x10" + encode_varint(nanos)
    out = b""
    if pid:
        out += b"\x08" + encode_varint(pid)
    if exit_status:
        out += b"\x10" + encode_varint(exit_status)
    return out + b"\x1a" + encode_varint(len(ts)) + ts


# --- the daemon ------------------------------------------------------------------------


def _join_pod_cgroup(bundle: str, group: str) -> str:
    """Move this ``start`` process into ``<cgroup_parent>/runwasi-py-shim-<group>`` right
    before it spawns the pod's daemon, so the daemon is born there and every page it ever
    allocates is the pod's (charges never move with a process on v2, and on v1 only with
    ``memory.move_charge_at_immigrate``). Returns a line for the daemon's log.

    A spec the join cannot use is not fatal here: Create reports it to containerd.
    """
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
        linux = spec.get("linux") if isinstance(spec, dict) else None
        if not isinstance(linux, dict) or not linux.get("cgroupsPath"):
            return ""
        from runwasi_py._placement import join_pod_cgroup

        systemd = os.environ.get(_SYSTEMD_ENV, "") in ("1", "true")
        pod = join_pod_cgroup(spec, bundle, group, systemd=systemd)
    except Exception as e:
        return f"the daemon stays in containerd's cgroup: {e}"
    return f"daemon cgroup {pod.path}" if pod is not None else ""


def _leave_pod_cgroup(flags: Flags) -> None:
    """At the daemon's exit: go back to where ``start`` came from, remove the daemon cgroup."""
    bundle = os.path.abspath(flags.bundle or os.getcwd())
    if not os.path.exists(os.path.join(bundle, _CGROUP_RECORDS[1])):
        return
    import logging

    from runwasi_py._placement import leave_pod_cgroup

    try:
        left: list[object] = list(leave_pod_cgroup(bundle))
    except Exception as e:
        left = [e]
    if left:
        logging.getLogger("runwasi_py.daemon").warning("cgroups left behind: %s", left)


def _daemon(shim: type[Shim], flags: Flags, placement_note: str = "") -> int:
    import logging
    import signal
    import socket as socket_mod

    # What serve() needs, imported before serve() runs: a shim's serve() may start a
    # background import (pywasmtime imports wasmtime on a thread), which would otherwise
    # share the GIL with these imports and delay the first accepted connection.
    import runwasi_py._events
    import runwasi_py._task_service  # noqa: F401
    import ttrpc
    from runwasi_py._logging import setup_logging

    bundle = os.path.abspath(flags.bundle or os.getcwd())
    log = logging.getLogger("runwasi_py.daemon")
    if not shim.config.no_setup_logger:
        level = logging.getLevelName(shim.config.default_log_level.upper())
        setup_logging(
            bundle,
            debug=flags.debug,
            default_level=level if isinstance(level, int) else logging.INFO,
        )
    try:
        listener = socket_mod.socket(fileno=_LISTENER_FD)
    except OSError as e:
        log.error("no listening socket on fd %d: %s", _LISTENER_FD, e)
        return 1
    path = _bound_path(listener)
    inode = _inode(path)
    _set_child_subreaper()
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS", "")
    log.info("shim %s starting", shim.name, extra={"namespace": flags.namespace, "id": flags.id})
    if placement_note:
        log.info("%s", placement_note)
    try:
        shared = os.environ.get(GROUP_ENV) == "namespace"
        linger = shim.config.linger if shared else 0.0
        ttrpc.run(_serve(shim(), listener, flags.namespace, ttrpc_address, linger))
    except Exception:
        log.exception("shim failed")
        return 1
    finally:
        if path and _inode(path) == inode:  # still ours: not replaced by a newer shim
            with contextlib.suppress(OSError):
                os.unlink(path)
    return 0


async def _serve(
    shim: Shim, listener: socket.socket, namespace: str, ttrpc_address: str, linger: float = 0.0
) -> None:
    import asyncio
    import logging
    import signal

    from runwasi_py._events import EventPublisher, NullEventSink

    log = logging.getLogger("runwasi_py.daemon")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shim.shutdown)
    reaper = asyncio.ensure_future(_reap_orphans())
    publisher = EventPublisher(ttrpc_address, namespace) if ttrpc_address else None
    if publisher is None:
        log.warning("TTRPC_ADDRESS is not set: task events are not published")
    # An attribute, not a serve() keyword: a Shim subclass may override serve() with the
    # older signature and call super().serve() without it.
    shim.linger = linger
    try:
        await shim.serve(
            listener,
            namespace=namespace,
            ttrpc_address=ttrpc_address,
            publisher=publisher if publisher is not None else NullEventSink(),
        )
    finally:
        reaper.cancel()
        if publisher is not None:
            await publisher.close(timeout=shim.config.shutdown_timeout)


async def _reap_orphans(interval: float = 5.0) -> None:
    """Reap zombies nobody waits for: as a subreaper the daemon inherits orphans.

    Not ``waitpid(-1)`` on SIGCHLD: that would steal the exit status of subprocesses a
    Sandbox (or the event loop's own child watcher; uvloop even refuses a SIGCHLD handler)
    is waiting for. A child found a zombie on two scans ``interval`` apart is one nobody
    will ever wait for.
    """
    import asyncio

    seen: set[int] = set()
    while True:
        await asyncio.sleep(interval)
        zombies = _zombie_children()
        for pid in zombies & seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        seen = zombies - seen


def _zombie_children() -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError), open(f"/proc/self/task/{tid}/children") as f:
                for pid in f.read().split():
                    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                            found.add(int(pid))
    return found


def _set_child_subreaper() -> None:
    import ctypes

    pr_set_child_subreaper = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _bound_path(sock: socket.socket) -> str:
    try:
        name = sock.getsockname()
    except OSError:
        return ""
    if isinstance(name, bytes):
        name = name.decode(errors="surrogateescape")
    return name if isinstance(name, str) and name and not name.startswith("\0") else ""


def _inode(path: str) -> int | None:
    if not path:
        return None
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
