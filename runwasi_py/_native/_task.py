"""One native container run through runc: the operations the task service needs.

Theory of operation: :meth:`NativeTask.create` opens the stdio (``_stdio``), runs ``runc
create`` and adopts the init (read from runc's pid file) into the daemon's
:class:`~runwasi_py._native._reaper.Reaper`; from then on the init's exit future is the one
truth about whether the container is alive. When it resolves, the task waits for the output
readers, closes its stdio, records the :class:`ExitStatus` (code or 128+signal, and when)
and calls ``on_exit`` on the loop: the task service's cue for STOPPED and TaskExit.

The task does not hold the Created/Running/Stopped state table: that stays the task
service's, the same for wasm and native tasks. It answers what runc knows: pids
(``runc ps``), stats (``runc events --stats`` as cgroup Metrics), update (``runc update``),
and it deletes the container (``runc delete``, ``--force`` while the init lives) so no runc
state, process or cgroup is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runwasi_py._errors import InvalidArgument, NotFound
from runwasi_py._native._metrics import metrics_any
from runwasi_py._native._reaper import ProcessExit, Reaper
from runwasi_py._native._runc import Runc, RuncError
from runwasi_py._native._stdio import NativeStdio
from runwasi_py._proto.messages import Any as AnyMessage
from runwasi_py._stdio import Stdio
from runwasi_py._task.instance import ExitStatus

__all__ = ["NativeTask", "linux_resources"]

log = logging.getLogger("runwasi_py.native")

DEFAULT_DRAIN_TIMEOUT = 10.0


class NativeTask:
    """A container whose init is a real process under runc, reaped by the daemon.

    Example:
        >>> task = await NativeTask.create(runc, reaper, "c1", bundle, Stdio(stdout=fifo))
        >>> await task.start()
        >>> await task.kill(signal.SIGTERM)
        >>> (await task.wait()).code
        143
        >>> await task.delete()
    """

    def __init__(
        self,
        container_id: str,
        bundle: Path,
        pid: int,
        runc: Runc,
        stdio: NativeStdio,
        init_exit: asyncio.Future[ProcessExit],
        *,
        on_exit: Callable[[NativeTask], None] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> None:
        self.id = container_id
        self.bundle = bundle
        self.pid = pid
        """The init's pid (host pid namespace); stays set after the exit, as runc's does."""
        self.stdio = stdio
        self._runc = runc
        self._on_exit = on_exit
        self._drain_timeout = drain_timeout
        self._exit_status: ExitStatus | None = None
        self._exited = asyncio.Event()
        self._deleted = False
        self._killed = False
        self._not_starting = asyncio.Event()
        self._not_starting.set()
        self._watcher = asyncio.ensure_future(self._watch(init_exit))

    @classmethod
    async def create(
        cls,
        runc: Runc,
        reaper: Reaper,
        container_id: str,
        bundle: Path,
        stdio: Stdio,
        *,
        on_exit: Callable[[NativeTask], None] | None = None,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    ) -> NativeTask:
        """``runc create`` the container in ``bundle`` with ``stdio``; its init waits for start.

        On any failure nothing is left: the stdio is closed and runc's container deleted.
        """
        fds = NativeStdio.open(stdio)
        try:
            pid = await runc.create(container_id, bundle, stdio=fds.fds)
        except BaseException:
            fds.close()
            raise
        fds.handed_over()
        try:
            init_exit = reaper.adopt(pid)
        except ProcessLookupError:
            # The init died and was reaped already (only possible without the subreaper
            # flag): make it a finished task rather than one nobody can wait for.
            loop = asyncio.get_running_loop()
            init_exit = loop.create_future()
            init_exit.set_result(ProcessExit(255, 0))
        except BaseException:
            fds.close()
            with contextlib.suppress(RuncError):
                await runc.delete(container_id, force=True)
            raise
        log.debug("native container %s created, init pid %d", container_id, pid)
        return cls(
            container_id,
            bundle,
            pid,
            runc,
            fds,
            init_exit,
            on_exit=on_exit,
            drain_timeout=drain_timeout,
        )

    async def _watch(self, init_exit: asyncio.Future[ProcessExit]) -> None:
        ended = await init_exit
        await self.stdio.finish(self._drain_timeout, stop=lambda: self._killed)
        self._exit_status = ExitStatus(ended.code, ended.exited_at_ns)
        # An exit seen while `runc start` is in flight is reported after start returned, so
        # the caller's TaskStart is queued before the TaskExit that on_exit queues.
        await self._not_starting.wait()
        self._exited.set()
        log.info("native container %s: init %d exited with %d", self.id, self.pid, ended.code)
        if self._on_exit is not None:
            self._on_exit(self)

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the init ended, or None while it lives (or is still being drained)."""
        return self._exit_status

    async def start(self) -> int:
        """``runc start``: the init execs the container's process. Returns the init's pid."""
        self._not_starting.clear()
        try:
            await self._runc.start(self.id)
        finally:
            self._not_starting.set()
        return self.pid

    async def kill(self, signal: int, *, all_processes: bool = False) -> None:
        """Signal the init (or, with ``all_processes``, every process of the container).

        NotFound once the init has exited, as the runc shim answers.
        """
        if self._exit_status is not None:
            raise NotFound("process already finished: not found")
        if signal != 0:
            self._killed = True
        try:
            await self._runc.kill(self.id, signal, all_processes=all_processes)
        except RuncError as e:
            if e.not_running or e.not_found:
                raise NotFound("process already finished: not found") from None
            raise

    async def wait(self) -> ExitStatus:
        """The init's exit status, once it has exited and its output was read."""
        await self._exited.wait()
        assert self._exit_status is not None
        return self._exit_status

    def close_stdin(self) -> None:
        """CloseIO: containerd's client has no more input; the init reads end-of-file."""
        self.stdio.close_stdin()

    async def runc_state(self) -> dict[str, Any]:
        """``runc state``: what runc says (status created/running/stopped)."""
        return await self._runc.state(self.id)

    async def pids(self) -> list[int]:
        """The container's processes (``runc ps``); empty once the init has exited."""
        if self._exit_status is not None:
            return []
        try:
            return await self._runc.ps(self.id)
        except RuncError as e:
            if self._exit_status is not None or e.not_found:
                return []
            raise

    async def stats(self) -> AnyMessage:
        """The container's cgroup figures as this host's cgroup Metrics, packed.

        Zero figures once the init has exited (runc reports no stats for a stopped container).
        """
        if self._exit_status is not None:
            return metrics_any({})
        try:
            return metrics_any(await self._runc.stats(self.id))
        except RuncError:
            if self._exit_status is not None:  # it ended while runc was asked
                return metrics_any({})
            raise

    async def update(self, resources: dict[str, Any]) -> None:
        """Apply OCI ``LinuxResources`` to the container (``runc update``); RuncError if refused."""
        await self._runc.update(self.id, resources)

    async def delete(self) -> ExitStatus:
        """Remove the container (killing a live init first); returns its exit status.

        Idempotent: a second call returns the same status.
        """
        if not self._deleted:
            if self._exit_status is None:
                self._killed = True
                with contextlib.suppress(RuncError):
                    await self._runc.kill(self.id, 9, all_processes=True)
            try:
                await self._runc.delete(self.id, force=True)
            except RuncError as e:
                if not e.not_found:
                    raise
            self._deleted = True
        await self._exited.wait()
        assert self._exit_status is not None
        return self._exit_status

    async def delete_quietly(self) -> None:
        """:meth:`delete`, logging a failure instead of raising (a stopping shim)."""
        try:
            await self.delete()
        except Exception:
            log.exception("cannot delete native container %s", self.id)

    async def aclose(self) -> None:
        """Stop watching (the loop is ending): kill and delete what still runs, quietly."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await self.delete()
        if not self._watcher.done():
            self._watcher.cancel()
        self.stdio.close()


def linux_resources(value: bytes, task_id: str) -> dict[str, Any]:
    """``UpdateTaskRequest.resources``: containerd sends OCI LinuxResources as JSON in an Any."""
    if not value:
        return {}
    try:
        resources = json.loads(value)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(
            f"update {task_id}: resources are not LinuxResources JSON: {e}"
        ) from None
    if not isinstance(resources, dict):
        raise InvalidArgument(f"update {task_id}: resources must be a LinuxResources object")
    return resources
