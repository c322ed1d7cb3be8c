"""``start``: find or spawn the shim daemon for this container's group and print its address.

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
5. prints the address and exits 0: the plain address (task API v2) to containerd 1.6 to
   2.2, a protobuf BootstrapResult announcing task API v3 to containerd 2.3+ (see
   :mod:`.bootstrap` and docs/containerd-2.md).

The daemon (no action) logs to the bundle's ``log`` FIFO, becomes a child subreaper and
runs ``Shim.serve`` on fd 3 until Shutdown. ``delete`` is containerd's cleanup after a shim
died: unmount the rootfs, remove a dead socket, print a ``DeleteResponse`` (exit 137).

"""

from __future__ import annotations

import os
import sys

from runwasi_py._bundle.group import GROUP_ENV, group_mode, grouping_id_from_bundle
from runwasi_py._launch.address import is_listening, socket_address, socket_path
from runwasi_py._launch.bootstrap import bootstrap, read_stdin, start_answer, task_api_version
from runwasi_py._launch.pod_cgroup import (
    SYSTEMD_ENV,
    join_before_spawn,
    pod_spec,
    systemd_cgroup,
    systemd_in_options,
)

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket as socket
    from typing import Any

    from runwasi_py._launch.flags import Flags
    from runwasi_py._shim import Shim


LISTENER_FD = 3


def start(shim: type[Shim] | str, flags: Flags, explicit: bool, group_by: str | None = None) -> int:
    if not flags.id:
        raise ValueError("-id is required")
    flags.bundle = os.path.abspath(flags.bundle or os.getcwd())
    stdin = read_stdin()
    boot = bootstrap(stdin, flags)
    version = task_api_version(boot, os.environ)
    mode = group_mode(shim, group_by)
    env = None
    if boot is not None:
        flags.debug = flags.debug or boot.debug
        flags.address = flags.address or boot.grpc_address
        flags.publish_binary = flags.publish_binary or boot.containerd_binary
        if boot.ttrpc_address and not os.environ.get("TTRPC_ADDRESS"):
            env = dict(os.environ, TTRPC_ADDRESS=boot.ttrpc_address)
        options = boot.runtime_options
        systemd = options is not None and systemd_in_options(*options)
    else:
        systemd = systemd_cgroup(stdin)
    if systemd:
        env = dict(env if env is not None else os.environ, **{SYSTEMD_ENV: "1"})
    if os.environ.get(GROUP_ENV) != mode:  # the daemon lingers only when shared
        env = dict(env if env is not None else os.environ, **{GROUP_ENV: mode})
    # A namespace-wide group is named after the shim ("@" never appears in a container
    # id), so two shim programs sharing a namespace do not meet on one socket.
    if mode == "namespace":
        group = "@" + _shim_ref(shim)
    else:
        group = grouping_id_from_bundle(flags.bundle, flags.id)
    address = socket_address(
        flags.address,
        flags.namespace,
        group,
        directory=boot.socket_dir if boot is not None else None,
    )
    listener = _listen(address, flags.id)
    if listener is None:  # a live shim serves this group and holds itself for our Create
        _write_address(flags.bundle, address)
        _print_answer(start_answer(address, version, boot))
        return 0
    try:
        _write_address(flags.bundle, address)
        command = _daemon_command(shim, flags, explicit)
        if listener.fileno() != LISTENER_FD:
            os.dup2(listener.fileno(), LISTENER_FD)  # start is exiting: fd 3 is free to take
        else:
            os.set_inheritable(LISTENER_FD, True)
        # A per-pod daemon is born in (spawned) or joins (forked, before its "go") the
        # pod's daemon cgroup: <cgroup_parent>/runwasi-py-shim-<group>.
        spec = pod_spec(flags.bundle) if mode == "sandbox" else None
        pod = (group, spec) if spec is not None else None
        # The namespace-shared daemon starts once per namespace: a template would only linger.
        template = mode == "sandbox"
        pid = _start_daemon(command, flags, address, env, pod=pod, template=template)
    except BaseException:
        os.unlink(socket_path(address))
        listener.close()
        raise
    _raise_oom_score(pid)
    _print_answer(start_answer(address, version, boot))
    return 0


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
    import _socket as socket_mod  # not socket.py: start's imports (see address.py)
    import errno
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
            # Only here (a live or dead shim on the socket) is the Reserve client loaded.
            from runwasi_py._launch.reserve import reserve

            answer = reserve(address, container_id) if container_id else "unknown"
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
                try:  # noqa: SIM105 (contextlib loads collections and functools)
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            continue
        try:
            sock.listen(128)
            os.chmod(path, 0o600)
        except BaseException:
            sock.close()
            raise
        return sock
    raise OSError(f"cannot bind {path}: address in use and nobody answers")


TEMPLATE_OFF = ("0", "false", "no", "off")
"""``$RUNWASI_PY_TEMPLATE`` values (in containerd's environment) that turn the template off."""


def _start_daemon(
    command: list[str],
    flags: Flags,
    address: str,
    env: dict[str, str] | None,
    *,
    pod: tuple[str, dict[str, Any]] | None = None,
    template: bool = True,
) -> int:
    """Fork the daemon from this program's template when there is one, else spawn it.

    ``pod``: ``(group, spec)``, the daemon belongs in ``<cgroup_parent>/runwasi-py-shim-<group>``
    (``spec``: :func:`~runwasi_py._launch.pod_cgroup.pod_spec`'s, read once). A
    forked daemon joins it itself before its ``go``; if that fails it is not used and the
    daemon is spawned from this process, which joins that cgroup first. The template is
    always launched before that join: it must never live in a pod's cgroup. ``template``
    False, or ``$RUNWASI_PY_TEMPLATE`` off: spawn, and launch no template.
    """
    environ = os.environ if env is None else env
    if not template or environ.get("RUNWASI_PY_TEMPLATE", "").strip().lower() in TEMPLATE_OFF:
        if pod is not None:
            env = join_before_spawn(pod[1], flags.bundle, pod[0], env)
        return _spawn_daemon(command, flags.bundle, env)
    from runwasi_py._template import client

    prefix = command[: len(command) - len(_daemon_flags(flags))]
    key = client.template_key(prefix, flags.address, flags.namespace)
    path = client.template_path(os.path.dirname(socket_path(address)), key)
    argv, cwd = command[len(prefix) :], flags.bundle

    # The forked daemon joins its pod's cgroup itself (the template imported the cgroup
    # code, which start would spend ~25 ms importing); one that cannot is not used.
    request_pod: dict[str, object] | None = None
    if pod is not None:
        linux = pod[1].get("linux")
        cgroups_path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
        if isinstance(cgroups_path, str):
            request_pod = {"cgroupsPath": cgroups_path, "group": pod[0]}
    pid = client.fork_daemon(path, key, argv, dict(environ), cwd, LISTENER_FD, request_pod)
    if pid is not None:
        return pid
    client.launch_template(
        prefix, ["-namespace", flags.namespace, "-address", flags.address], path, key
    )
    if pod is not None:
        env = join_before_spawn(pod[1], flags.bundle, pod[0], env)
    return _spawn_daemon(command, flags.bundle, env)


def _daemon_flags(flags: Flags) -> list[str]:
    """The daemon's flags (the tail of its command line)."""
    daemon_flags = [
        "-namespace", flags.namespace,
        "-id", flags.id,
        "-address", flags.address,
        "-publish-binary", flags.publish_binary,
        "-bundle", flags.bundle,
    ]  # fmt: skip
    if flags.debug:
        daemon_flags.append("-debug")
    return daemon_flags


def _daemon_command(shim: type[Shim] | str, flags: Flags, explicit: bool) -> list[str]:
    """How to run this same program again as the daemon (no action)."""
    daemon_flags = _daemon_flags(flags)
    orig = list(getattr(sys, "orig_argv", []))
    tail = sys.argv[1:]
    if not explicit and len(orig) > len(tail) and orig[len(orig) - len(tail) :] == tail:
        # the exact interpreter options and script / -m module / -c code we were run with
        options = orig[1 : len(orig) - len(tail)]
        entry = sys.modules.get("runwasi_py._launch.entry")
        if entry is not None and entry.active and "-S" in options:
            # a lean entry script's -S (see _launch/entry.py): the daemon needs site, and
            # runs as it would under pip's script
            options.remove("-S")
        return [sys.executable, *options, *daemon_flags]
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
        "from runwasi_py._launch.main import daemon_entry; daemon_entry()"
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


def _shim_ref(shim: type[Shim] | str) -> str:
    return shim if isinstance(shim, str) else f"{shim.__module__}:{shim.__qualname__}"


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
        if fd > LISTENER_FD:
            try:
                if os.get_inheritable(fd):
                    leaked.append(fd)
            except OSError:  # the listdir fd itself is gone by now
                pass
    return leaked


def _print_answer(answer: bytes) -> None:
    sys.stdout.buffer.write(answer)
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
