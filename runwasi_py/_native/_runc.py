"""The ``runc`` command as async calls: create, start, kill, delete, state, ps, stats, update.

Theory of operation: every call runs the real ``runc`` binary (the OCI runtime containerd's
own runc shim drives) with ``--root <state dir>`` and ``--log-format json``, started through
the :class:`~runwasi_py._native._reaper.Reaper` (the daemon's one waiter), its stdout read on
the loop. A failing command raises :class:`RuncError` carrying runc's own message (the last
``level=error`` log line), the command, and a status class: "container does not exist" is
NotFound, a refused spec or resources (create, update) is InvalidArgument, anything else
Unknown. A command that does not finish in ``timeout`` seconds is killed and reported.

``runc create`` hands its own stdio to the container's init, so its stdout/stderr are the
container's; its log goes to a file in the state root instead, read back on failure.

The state root (see :func:`state_root`) is ours, not containerd's runc shim's
(``/run/containerd/runc/<namespace>``): that shim's ``delete`` and start-up cleanup run
``runc delete --force`` on the ids it finds there, and ``ctr``/operators read it as the runc
shim's inventory. A root of our own means the shim's ``delete`` action can clean what a
killed daemon left without ever touching a runc-shim container, and the containerd address
in the path keeps two containerds on one host (a private test one and the system's, both
with namespace ``default`` and ids like ``c1``) apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal as signal_mod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runwasi_py._errors import FailedPrecondition, ShimError
from runwasi_py._native._reaper import Reaper
from runwasi_py._native._state import DEFAULT_STATE_BASE_DIR, state_root_dir
from ttrpc import Code

__all__ = [
    "DEFAULT_STATE_BASE",
    "Runc",
    "RuncError",
    "RuncUnavailable",
    "find_runc",
    "runc_message",
    "state_root",
]

DEFAULT_STATE_BASE = Path(DEFAULT_STATE_BASE_DIR)
"""Where the per-(containerd, namespace) runc roots live; ``$RUNWASI_PY_RUNC_STATE``
overrides it (see ``_native/_state.py``)."""

_VALID_ID = re.compile(r"[\w+.-]+")
_MAX_STDIN = 64 << 10  # one pipe buffer: written before runc starts, so it must fit
_MAX_OUTPUT = 16 << 20


class RuncError(ShimError):
    """A runc command failed; ``message`` is runc's, ``command`` the subcommand."""

    def __init__(self, command: str, container_id: str, message: str, code: Code) -> None:
        self.code_for_class = code
        self.command = command
        self.container_id = container_id
        self.runc_message = message
        super().__init__(f"runc {command} {container_id}: {message}")

    @property
    def not_found(self) -> bool:
        """runc says the container does not exist."""
        return self.code_for_class is Code.NOT_FOUND

    @property
    def not_running(self) -> bool:
        """runc says the container's init is not running (kill of a stopped container)."""
        return "not running" in self.runc_message


class RuncUnavailable(FailedPrecondition):
    """There is no runc binary to run native containers with."""


def find_runc(path: str | None = None) -> str | None:
    """The absolute path of ``runc`` on ``path`` (default: this process's PATH), or None."""
    return shutil.which("runc", path=path)


def state_root(namespace: str, containerd_address: str, base: Path | None = None) -> Path:
    """The runc ``--root`` for containers of ``namespace`` under the containerd at an address.

    ``containerd_address`` is what identifies the containerd: the shim uses its
    ``TTRPC_ADDRESS``, which the daemon and the ``delete`` action are both given
    (the path itself comes from ``_native/_state.py``, which ``delete`` imports too).

    >>> state_root("default", "/run/containerd/containerd.sock").parent.parent
    PosixPath('/run/runwasi-py/runc')
    """
    return Path(state_root_dir(namespace, containerd_address, None if base is None else str(base)))


def runc_message(log_output: bytes, stderr: bytes = b"") -> str:
    """runc's error from its JSON log lines (last ``error``/``fatal``), else stderr's last line.

    >>> runc_message(b'{"level":"error","msg":"container does not exist","time":"t"}\\n')
    'container does not exist'
    """
    message = ""
    for line in log_output.splitlines():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                message = str(entry.get("msg", ""))
    if message:
        return message
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    if not lines:
        return "failed without a message"
    last = lines[-1]
    if 'msg="' in last:  # text format: time="..." level=error msg="..."
        last = last.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return last


def _error_code(command: str, message: str) -> Code:
    if command in ("create", "update"):
        return Code.INVALID_ARGUMENT  # runc refused the spec or the resources
    if "container does not exist" in message:
        return Code.NOT_FOUND
    return Code.UNKNOWN


class Runc:
    """One runc state root, driven through the daemon's :class:`Reaper`.

    Example:
        >>> runc = Runc(Path("/run/runwasi-py/runc/ab12/default"), reaper)
        >>> pid = await runc.create("c1", bundle, stdio=(0, out_fd, err_fd))
        >>> await runc.start("c1")
        >>> (await runc.state("c1"))["status"]
        'running'
    """

    def __init__(
        self, root: Path, reaper: Reaper, *, binary: str | None = None, timeout: float = 30.0
    ) -> None:
        found = binary or find_runc()
        if found is None:
            raise RuncUnavailable("runc is not on PATH: native containers need runc installed")
        self.binary = found
        self.root = root
        self.timeout = timeout
        self._reaper = reaper
        self._systemd: set[str] = set()

    def _argv(
        self, command: str, args: Sequence[str], log: Path | None = None, container_id: str = ""
    ) -> list[str]:
        argv = [self.binary, "--root", str(self.root), "--log-format", "json"]
        if container_id in self._systemd:
            # The spec names a systemd unit (slice:prefix:name): runc must use its systemd
            # cgroup driver, for this container's every command, as the runc shim does.
            argv.append("--systemd-cgroup")
        if log is not None:
            argv += ["--log", str(log)]
        return [*argv, command, *args]

    async def _run(
        self,
        command: str,
        container_id: str,
        args: Sequence[str],
        *,
        stdin: bytes | None = None,
    ) -> bytes:
        """Run ``runc <command> <args>`` to its end; its stdout, or RuncError with runc's message.

        ``container_id`` only names the container in errors; ``args`` include it.
        """
        loop = asyncio.get_running_loop()
        out_r, out_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        err_r, err_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        in_r = in_w = -1
        try:
            fds = {1: out_w, 2: err_w}
            if stdin is not None:
                if len(stdin) > _MAX_STDIN:
                    raise RuncError(command, container_id, "input too large", Code.INVALID_ARGUMENT)
                in_r, in_w = os.pipe2(os.O_CLOEXEC)
                os.write(in_w, stdin)  # fits in the pipe buffer: never blocks
                os.close(in_w)
                in_w = -1
                fds[0] = in_r
            pid, done = self._reaper.spawn(self._argv(command, args, None, container_id), fds)
        except BaseException:
            for fd in (out_r, err_r, in_w):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            for fd in (out_w, err_w, in_r):
                if fd >= 0:
                    os.close(fd)
        out_task = loop.create_task(_read_all(out_r))
        err_task = loop.create_task(_read_all(err_r))
        try:
            async with asyncio.timeout(self.timeout):
                exited = await asyncio.shield(done)
                out, err = await out_task, await err_task
        except TimeoutError:
            await _kill_and_wait(pid, done)
            raise RuncError(
                command, container_id, f"did not finish in {self.timeout:.0f} s", Code.UNKNOWN
            ) from None
        finally:
            for t in (out_task, err_task):
                t.cancel()
        if exited.code != 0:
            message = runc_message(err, err)
            raise RuncError(command, container_id, message, _error_code(command, message))
        return out

    async def create(self, container_id: str, bundle: Path, *, stdio: tuple[int, int, int]) -> int:
        """``runc create``: the container exists with its init waiting; returns the init pid.

        ``stdio`` are the fds for the init's stdin, stdout and stderr. On failure whatever
        runc made is deleted (``delete --force``) before :class:`RuncError` is raised.
        """
        if not _VALID_ID.fullmatch(container_id) or container_id in (".", ".."):
            # runc's own rule; checked here too because the id names our pid and log files
            raise RuncError("create", container_id, "invalid container id", Code.INVALID_ARGUMENT)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o711)
        pid_file = self.root / f".{container_id}.pid"
        log_file = self.root / f".{container_id}.create.log"
        if _systemd_cgroups_path(bundle):
            self._systemd.add(container_id)
        argv = self._argv(
            "create",
            ["--bundle", str(bundle), "--pid-file", str(pid_file), container_id],
            log=log_file,
            container_id=container_id,
        )
        try:
            pid, done = self._reaper.spawn(argv, {0: stdio[0], 1: stdio[1], 2: stdio[2]})
            try:
                async with asyncio.timeout(self.timeout):
                    exited = await asyncio.shield(done)
            except TimeoutError:
                await _kill_and_wait(pid, done)
                await self._forget(container_id)
                raise RuncError(
                    "create", container_id, f"did not finish in {self.timeout:.0f} s", Code.UNKNOWN
                ) from None
            if exited.code != 0:
                message = runc_message(_read_file(log_file))
                await self._forget(container_id)
                raise RuncError("create", container_id, message, _error_code("create", message))
            try:
                return int(pid_file.read_text().strip())
            except (OSError, ValueError) as e:
                await self._forget(container_id)
                raise RuncError(
                    "create", container_id, f"no init pid in {pid_file}: {e}", Code.UNKNOWN
                ) from None
        finally:
            for f in (pid_file, log_file):
                with contextlib.suppress(OSError):
                    f.unlink()

    async def _forget(self, container_id: str) -> None:
        """Delete a half-created container; quiet when runc made nothing."""
        try:
            await self.delete(container_id, force=True)
        except RuncError as e:
            if not e.not_found:
                raise

    async def start(self, container_id: str) -> None:
        """``runc start``: the waiting init execs the container's process."""
        await self._run("start", container_id, [container_id])

    async def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        """``runc kill [--all] <id> <signal>``."""
        flags = ["--all"] if all_processes else []
        await self._run("kill", container_id, [*flags, container_id, str(sig)])

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """``runc delete [--force]``: removes the container's state and cgroup."""
        flags = ["--force"] if force else []
        await self._run("delete", container_id, [*flags, container_id])
        self._systemd.discard(container_id)

    async def state(self, container_id: str) -> dict[str, Any]:
        """``runc state``: id, pid, status (created/running/stopped/paused), bundle..."""
        return _json_object(
            await self._run("state", container_id, [container_id]), "state", container_id
        )

    async def ps(self, container_id: str) -> list[int]:
        """``runc ps --format json``: the pids in the container's cgroup."""
        out = await self._run("ps", container_id, ["--format", "json", container_id])
        try:
            pids = json.loads(out or b"[]")
        except ValueError:
            pids = None
        if not isinstance(pids, list) or not all(isinstance(p, int) for p in pids):
            raise RuncError("ps", container_id, f"unexpected output {out[:80]!r}", Code.UNKNOWN)
        return pids

    async def stats(self, container_id: str) -> dict[str, Any]:
        """``runc events --stats``: the ``data`` object (runc's cgroup statistics)."""
        event = _json_object(
            await self._run("events", container_id, ["--stats", container_id]),
            "events",
            container_id,
        )
        data = event.get("data")
        return data if isinstance(data, dict) else {}

    async def update(self, container_id: str, resources: dict[str, Any]) -> None:
        """``runc update --resources -`` with an OCI ``LinuxResources`` object."""
        body = json.dumps(resources).encode()
        await self._run("update", container_id, ["--resources", "-", container_id], stdin=body)

    async def list_ids(self) -> list[str]:
        """The ids of the containers in this root (``runc list``); empty if it has none."""
        if not self.root.is_dir():
            return []
        out = await self._run("list", "", ["--format", "json"])
        items = json.loads(out or b"null") or []
        return [str(i["id"]) for i in items if isinstance(i, dict) and "id" in i]


async def _read_all(fd: int) -> bytes:
    """Everything from the non-blocking pipe ``fd`` until EOF; closes it."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    total = 0
    ready = asyncio.Event()
    loop.add_reader(fd, ready.set)
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                ready.clear()
                await ready.wait()
                continue
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total <= _MAX_OUTPUT:
                chunks.append(chunk)
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _kill_and_wait(pid: int, done: asyncio.Future[Any]) -> None:
    """SIGKILL a runc command that hung and let the reaper reap it."""
    if not done.done():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_mod.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(done), 5.0)


def _systemd_cgroups_path(bundle: Path) -> bool:
    """True when the bundle's ``linux.cgroupsPath`` has the systemd form ``slice:prefix:name``."""
    try:
        spec = json.loads((bundle / "config.json").read_bytes())
        path = spec.get("linux", {}).get("cgroupsPath", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(path, str) and not path.startswith("/") and path.count(":") == 2


def _json_object(out: bytes, command: str, container_id: str) -> dict[str, Any]:
    try:
        value = json.loads(out)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise RuncError(command, container_id, f"unexpected output {out[:80]!r}", Code.UNKNOWN)
    return value


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()[-_MAX_OUTPUT:]
    except OSError:
        return b""
