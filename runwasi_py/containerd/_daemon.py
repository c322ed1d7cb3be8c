"""A private containerd for tests and demos: :class:`PrivateContainerd`.

Theory of operation: everything (root, state, sockets, FIFOs, log) lives under one working
directory, so it never touches a system containerd on /run/containerd. ``start`` finds the
build to run (``containerd_bin``, ``$RUNWASI_PY_CONTAINERD_BIN`` or PATH), reads its version,
writes the config that version reads (with the CRI plugin when ``cri``), launches containerd
in its own session with the shim directories and then the build's own folder first on its
PATH (containerd, not ctr, resolves ``io.containerd.<name>.v1`` to
``containerd-shim-<name>-v1``; the build's folder makes a 2.x use its own runc shim), and
polls ``ctr version`` until it answers. With ``cri`` it then imports the pause image.
``stop`` sends SIGTERM, escalates to SIGKILL, and then (unless asked to keep them, as a
restart does) kills leftover shim daemons and container processes (found by the harness's
cgroup root), unmounts leftover rootfs and netns mounts, removes the cgroups, the CNI
bridge and the directories, keeping ``containerd.log``.

The pid is also written to ``containerd.pid`` so a later process (``runwasi-py containerd
down``) can stop a containerd it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import anyio.to_thread

from runwasi_py.containerd._cleanup import (
    kill_processes,
    process_alive,
    processes_of,
    unmount_all,
)
from runwasi_py.containerd._config import (
    MAX_SOCKET_PATH,
    ContainerdPaths,
    CriSettings,
    host_platform,
    render_config,
)
from runwasi_py.containerd._cri_setup import (
    CRI_NAMESPACE,
    cgroup_root,
    prepare_cri,
    teardown_cri,
)
from runwasi_py.containerd._errors import ContainerdError, ContainerdUnavailable, CtrError
from runwasi_py.containerd._podcgroup import PodCgroup, create_pod_cgroup, processes_in
from runwasi_py.containerd._version import ContainerdBuild, ContainerdVersion, build_of, find_build
from runwasi_py.image import ImageError, read_image

__all__ = ["PrivateContainerd", "check_available"]

INSTALL_HINT = "as root run `apt-get install containerd` (or `bash scripts/setup.sh`)"


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ContainerdUnavailable(
            "a private containerd needs root (it mounts snapshots and creates cgroups); run as root"
        )


def check_available(containerd: str = "containerd", ctr: str = "ctr") -> None:
    """Raise :class:`ContainerdUnavailable` saying why this machine cannot run one."""
    _require_root()
    for exe in (containerd, ctr):
        if shutil.which(exe) is None:
            raise ContainerdUnavailable(f"{exe!r} not found: {INSTALL_HINT}")


class PrivateContainerd:
    """A containerd with its own root, state, sockets and log under ``workdir``.

    Example:
        >>> with PrivateContainerd("/tmp/c8d", shim_dirs=[".venv/bin"]) as c8d:
        ...     c8d.ctr("image", "import", "--all-platforms", "hello.tar")
        ...     out = c8d.run("docker.io/library/hello:latest", "c1",
        ...                   runtime="io.containerd.pywasmtime.v1")
        ...     print(out.stdout)

    ``async with`` works too (start and stop run on a worker thread).

    ``containerd_bin`` names a folder holding ``containerd`` and ``ctr`` (default:
    ``$RUNWASI_PY_CONTAINERD_BIN``, else the ``containerd``/``ctr`` executables on PATH).
    ``cri=True`` turns the CRI plugin on (runtime handlers ``runc`` and ``pywasmtime``, a
    locally built pause image, a CNI bridge of its own); :attr:`address` is then also the
    CRI endpoint.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        shim_dirs: Sequence[str | os.PathLike[str]] = (),
        namespace: str = "default",
        containerd: str = "containerd",
        ctr: str = "ctr",
        log_level: str = "debug",
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
        containerd_bin: str | os.PathLike[str] | None = None,
        cri: bool = False,
    ) -> None:
        self.paths = ContainerdPaths(Path(workdir).absolute())
        self.shim_dirs = [Path(d).absolute() for d in shim_dirs]
        self.namespace = namespace
        self.containerd_exe = containerd
        self.ctr_exe = ctr
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.containerd_bin = containerd_bin
        self.cri = cri
        self._build: ContainerdBuild | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths -----------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        return self.paths.workdir

    @property
    def address(self) -> str:
        """The grpc socket to give ``ctr --address``."""
        return str(self.paths.address)

    @property
    def ttrpc_address(self) -> str:
        return str(self.paths.ttrpc_address)

    @property
    def log_path(self) -> Path:
        return self.paths.log

    @property
    def fifo_dir(self) -> Path:
        return self.paths.fifo_dir

    @property
    def build(self) -> ContainerdBuild:
        """The containerd build this harness runs (resolved once, on first use)."""
        if self._build is None:
            explicit = self.containerd_exe != "containerd" or self.ctr_exe != "ctr"
            if self.containerd_bin is None and explicit:
                self._build = build_of(self.containerd_exe, self.ctr_exe)
            else:
                self._build = find_build(self.containerd_bin)
        return self._build

    @property
    def version(self) -> ContainerdVersion:
        """The version ``containerd --version`` reports for :attr:`build`."""
        return self.build.version

    @property
    def cgroup_root(self) -> str:
        """The cgroup under which :meth:`pod_cgroup` creates pods' cgroups (removed at stop)."""
        return cgroup_root(self.paths)

    def pod_cgroup(self, name: str) -> PodCgroup:
        """Create the pod-level cgroup ``<cgroup_root>/<name>`` as kubelet would.

        Its :attr:`PodCgroup.path` is the ``cgroup_parent`` for RunPodSandbox; it is
        removed with :meth:`PodCgroup.remove` or at the harness's cleanup.
        """
        return create_pod_cgroup(f"{self.cgroup_root}/{name}")

    def bundle(self, container_id: str, namespace: str | None = None) -> Path:
        """The bundle directory containerd makes for a task (``address``, ``log``, ...)."""
        return self.paths.bundles() / (namespace or self.namespace) / container_id

    def shim_daemons(self) -> dict[int, str]:
        """Live shim daemons of this containerd: {pid: the container id they were started for}.

        Found by working directory (a daemon's cwd is the bundle of the container whose
        ``start`` made it), not by ``-id`` in the argv: a daemon forked by the pod daemon
        template (docs/template.md) shows the template's command line. ``start``/``delete``
        invocations (argv ending in the action) and templates (cwd ``/``) are not daemons.
        """
        root = self.paths.bundles()
        found: dict[int, str] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd").removesuffix(" (deleted)"))
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cwd.parent.parent != root or argv[-2:-1] in ([b"start"], [b"delete"]):
                continue
            if b"-address" in argv and process_alive(pid):
                found[pid] = cwd.name
        return found

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """containerd's pid, from this object or from ``containerd.pid`` when it is ours."""
        if self._proc is not None:
            return self._proc.pid
        try:
            pid = int(self.paths.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        # A pid file can outlive its process and the pid be reused: check the argv.
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return os.fsencode(self.paths.config) in argv

    def is_running(self) -> bool:
        """True while our containerd process is alive."""
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self.pid
        return pid is not None and process_alive(pid)

    def start(self) -> None:
        """Write the config, start containerd and wait until ``ctr version`` answers."""
        _require_root()
        check_available(self.build.containerd, self.build.ctr)
        if self.is_running():
            raise ContainerdError(f"a containerd already runs for {self.workdir} (pid {self.pid})")
        for sock in self.paths.sockets():
            if len(os.fsencode(sock)) > MAX_SOCKET_PATH:
                raise ContainerdError(
                    f"{sock} is longer than {MAX_SOCKET_PATH} bytes, too long for a unix "
                    "socket: use a shorter working directory"
                )
        for d in (self.workdir, self.paths.root, self.paths.state, self.paths.opt, self.fifo_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o711)
        # Stale sockets of a killed containerd would make ctr wait on a dead listener.
        for sock in self.paths.sockets():
            sock.unlink(missing_ok=True)
        cri: CriSettings | None = None
        pause_tarball = None
        if self.cri:
            cri, pause_tarball = prepare_cri(self.paths)
        self.paths.config.write_text(
            render_config(
                self.paths,
                log_level=self.log_level,
                config_version=self.version.config_version,
                cri=cri,
            )
        )
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [*map(str, self.shim_dirs), str(self.build.bin_dir), env.get("PATH", os.defpath)]
        )
        exe = self.build.containerd
        with open(self.log_path, "ab") as log:
            log.write(f"--- runwasi-py: starting {exe} ({self.version}) ---\n".encode())
            log.flush()
            # Own session: a Ctrl-C on the terminal of `runwasi-py containerd up` must not
            # reach it, and it must not hold the caller's terminal.
            self._proc = subprocess.Popen(
                [exe, "--config", str(self.paths.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.paths.pid_file.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready()
            if pause_tarball is not None:
                self.import_image(pause_tarball, namespace=CRI_NAMESPACE)
                self._wait_cri_ready()
        except BaseException:
            self.stop(cleanup=False)
            raise

    def _wait_cri_ready(self) -> None:
        """containerd serves its socket before the CRI plugin has initialised; kubelet (and
        our tests) would meet "server is not initialized yet" until then."""
        from runwasi_py.containerd.cri import CriClient, CriError

        with CriClient(self.address, timeout=5.0) as client:
            try:
                client.wait_ready(self.start_timeout)
            except CriError as e:
                raise ContainerdError(
                    f"the CRI plugin did not become ready: {e}\n"
                    f"--- containerd log (tail) ---\n{self.log_tail()}"
                ) from None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self._proc.returncode} while starting\n"
                    f"--- containerd log (tail) ---\n{self.log_tail()}"
                )
            # ctr blocks while the socket is missing: only ask once containerd made it.
            if self.paths.address.is_socket():
                res = self._ctr_raw(["version"], timeout=5.0)
                if res.returncode == 0:
                    return
                last = (res.stderr or res.stdout).strip()
            else:
                last = "no socket yet"
            if time.monotonic() > deadline:
                raise ContainerdError(
                    f"containerd did not answer within {self.start_timeout:g}s ({last})\n"
                    f"--- containerd log (tail) ---\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, *, cleanup: bool = True) -> None:
        """Stop containerd (SIGTERM, then SIGKILL after ``stop_timeout``).

        With ``cleanup`` (the default) also kill leftover shim daemons of this containerd,
        unmount everything under the working directory and remove its directories; the log
        and config stay. ``cleanup=False`` leaves shims running, as for a restart.
        """
        pid = self.pid
        if pid is not None:
            self._terminate(pid)
        self._proc = None
        self.paths.pid_file.unlink(missing_ok=True)
        if cleanup:
            self.cleanup()

    def _terminate(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if self._proc is not None:
            try:
                self._proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            return
        # Not our child: poll (a zombie counts as gone; its parent reaps it).
        if not _wait_gone(pid, self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, self.stop_timeout):
                raise ContainerdError(f"containerd (pid {pid}) did not exit after SIGKILL")

    def detach(self) -> None:
        """Forget the running containerd without stopping it (``runwasi-py containerd up``).

        A later object on the same directory finds it again through ``containerd.pid``.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            # It keeps running on purpose: mark the handle settled so its finaliser neither
            # warns about a live child nor tries to reap it.
            proc.returncode = 0

    def restart(self) -> None:
        """Stop containerd without touching running shims, then start it again."""
        self.stop(cleanup=False)
        self.start()

    def leftover_processes(self) -> list[int]:
        """Live processes started for this containerd (shim daemons), excluding containerd."""
        own = self.pid
        found = set(processes_of(self.paths.address, self.workdir))
        found.update(self._bundle_pids())
        found.discard(own or -1)
        return sorted(found)

    def _bundle_pids(self) -> list[int]:
        """Live shims named by bundles' ``shim.pid`` files (checked to be shims)."""
        out = []
        root = self.paths.bundles()
        if root.is_dir():
            for f in root.glob("*/*/shim.pid"):
                with contextlib.suppress(OSError, ValueError):
                    pid = int(f.read_text().strip())
                    # A script shim runs as `python3 /path/containerd-shim-x-v1 ...`.
                    head = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2]
                    if b"containerd-shim" in b" ".join(head) and process_alive(pid):
                        out.append(pid)
        return out

    def cleanup(self) -> None:
        """Kill leftover shims, unmount, remove sockets and directories (keeps log, config)."""
        sockets = self._shim_sockets()
        stuck = kill_processes(self.leftover_processes())
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.unlink()
        # Container processes (runc's pause and native containers) are found by cgroup;
        # they hold rootfs mounts, so they go before the unmount.
        stuck += kill_processes(processes_in(self.cgroup_root))
        resisted = unmount_all(self.workdir)
        for d in (
            self.paths.root,
            self.paths.state,
            self.paths.opt,
            self.fifo_dir,
            self.paths.cni_conf_dir.parent,
            self.paths.pod_logs,
            self.paths.registry_hosts,
        ):
            shutil.rmtree(d, ignore_errors=True)
        for sock in self.paths.sockets():
            sock.unlink(missing_ok=True)
        problems = teardown_cri(self.paths)
        if stuck or resisted or problems:
            raise ContainerdError(
                f"cleanup of {self.workdir} incomplete: processes {stuck} alive, "
                f"mounts {resisted} busy" + "".join(f"; {p}" for p in problems)
            )

    def _shim_sockets(self) -> list[Path]:
        """Socket files named by bundles' ``address`` files (a killed shim leaves them)."""
        out = []
        root = self.paths.bundles()
        if root.is_dir():
            for addr in root.glob("*/*/address"):
                with contextlib.suppress(OSError):
                    text = addr.read_text().strip()
                    if text.startswith("unix://"):
                        out.append(Path(text[len("unix://") :]))
        return out

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of containerd's log (which includes the shims' logs)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 256 * lines))
                data = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    # -- ctr -------------------------------------------------------------------------------

    def ctr_argv(self, *args: str, namespace: str | None = None) -> list[str]:
        """``ctr --address <ours> --namespace <ns> *args``."""
        return [
            self.build.ctr,
            "--address",
            self.address,
            "--namespace",
            namespace or self.namespace,
            *args,
        ]

    def _ctr_raw(
        self, args: Sequence[str], *, timeout: float, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self._exec(self.ctr_argv(*args, namespace=namespace), timeout=timeout)

    @staticmethod
    def ctr_env() -> dict[str, str]:
        """The environment to run ``ctr`` in: ours, with 2.x's deprecation warnings off.

        ctr 2.2+ prints "The support for cgroup v1 is deprecated" on stderr at every call
        on a v1 host, which would mix into the container's own stderr of ``ctr run``.
        """
        return {**os.environ, "CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS": "1"}

    def _exec(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        # stdin is /dev/null: ctr would otherwise read the test runner's stdin.
        try:
            return subprocess.run(
                argv,
                env=self.ctr_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise ContainerdError(
                f"`{' '.join(argv)}` did not finish within {timeout:g}s\n"
                f"--- containerd log (tail) ---\n{self.log_tail()}"
            ) from e

    def ctr(
        self, *args: str, check: bool = True, timeout: float = 30.0, namespace: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this containerd; raise :class:`CtrError` on failure if ``check``."""
        res = self._ctr_raw(args, timeout=timeout, namespace=namespace)
        if check and res.returncode != 0:
            raise CtrError(res.args, res.returncode, res.stdout, res.stderr, self.log_tail(20))
        return res

    def run_argv(
        self,
        image: str,
        container_id: str,
        *args: str,
        runtime: str | None = None,
        rm: bool = True,
        detach: bool = False,
        env: Sequence[str] = (),
        extra: Sequence[str] = (),
        namespace: str | None = None,
    ) -> list[str]:
        """The argv of ``ctr run`` (always with ``--fifo-dir`` under our directory)."""
        argv = ["run", "--fifo-dir", str(self.fifo_dir)]
        if rm:
            argv.append("--rm")
        if detach:
            argv.append("-d")
        if runtime:
            argv += ["--runtime", runtime]
        for item in env:
            argv += ["--env", item]
        argv += [*extra, image, container_id, *args]
        return self.ctr_argv(*argv, namespace=namespace)

    def run(
        self,
        image: str,
        container_id: str,
        *args: str,
        runtime: str | None = None,
        rm: bool = True,
        detach: bool = False,
        env: Sequence[str] = (),
        extra: Sequence[str] = (),
        timeout: float = 30.0,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr run`` a container; returns the result (``returncode`` = the exit status)."""
        argv = self.run_argv(
            image, container_id, *args, runtime=runtime, rm=rm, detach=detach, env=env, extra=extra
        )
        res = self._exec(argv, timeout=timeout)
        if check and res.returncode != 0:
            raise CtrError(argv, res.returncode, res.stdout, res.stderr, self.log_tail(20))
        return res

    def import_image(self, tarball: str | os.PathLike[str], *, namespace: str | None = None) -> str:
        """Import an image tarball so that both ``ctr run`` and CRI can run it.

        1.x: ``ctr image import --all-platforms`` (needed for wasip1/wasm images; it also
        unpacks them). 2.x: ctr imports through the transfer service, which with
        ``--all-platforms`` unpacks only the host platform, leaving CRI without a snapshot
        of a wasm image ("parent snapshot ... does not exist"); so a non-host image is
        imported with ``--platform <its platform>``, which the transfer service unpacks
        because the config lists ``wasip1/wasm`` in its ``unpack_config``.
        """
        flag = ["--all-platforms"]
        if self.version.major >= 2:
            try:
                plat = str(read_image(tarball).platform)
            except ImageError:
                plat = host_platform()  # not one of ours (several manifests): let ctr choose
            if plat != host_platform():
                flag = ["--platform", plat]
        return self.ctr(
            "image", "import", *flag, os.fspath(tarball), timeout=60, namespace=namespace
        ).stdout

    # -- context managers ------------------------------------------------------------------

    def __enter__(self) -> PrivateContainerd:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> PrivateContainerd:
        await anyio.to_thread.run_sync(self.start)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await anyio.to_thread.run_sync(self.stop)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
