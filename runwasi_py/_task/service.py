"""containerd's Task service (``containerd.task.v2.Task``, and v3) over the instances.

Theory of operation: one :class:`TaskService` per shim process holds the tasks by container
id. Each task has a :class:`TaskState` moved only through :func:`transition`, an
:class:`Instance` (the worker thread that runs ``Sandbox.run_wasi``) or, for a container the
Sandbox refused whose entrypoint is an executable, a :class:`NativeTask` (its init under runc,
see ``runwasi_py._native``), and the rootfs it mounted. Every handler runs on the control
loop and does not await between a state check and the change it guards, so two calls on one
task cannot interleave badly; Create reserves its id before its first await; a native Start
or Delete, which awaits runc, moves the state first (Start) or checks it again after.

Events go to the :class:`EventSink` in the order containerd requires: TaskCreate when Create
succeeds, TaskStart when Start succeeds, TaskOOM and TaskExit when the instance ends (an
instance reports its end through the control loop, so its exit is always queued after the
TaskStart of the Start call that started it), TaskDelete on Delete.

Where containerd relies on the runc shim's behaviour, this matches it: NotFound for an
unknown id and for killing a finished task, AlreadyExists for a duplicate Create, 128+signal
exit statuses, ``exited_at`` = Go's zero time until the task exits, Connect's pids, Shutdown
that exits only when no task is left. Exec, Pause, Resume, Checkpoint and ResizePty answer
Unimplemented.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal as signal_mod
from collections.abc import Awaitable, Callable
from pathlib import Path

import betterproto2

from runwasi_py import _precompile_memo as precompile_memo
from runwasi_py._bundle.bundle import Bundle
from runwasi_py._bundle.memory_limit import DEFAULT_MEMORY_LIMIT, effective_memory_limit
from runwasi_py._bundle.spec import is_sandbox_container
from runwasi_py._cgroups import CpuLimits
from runwasi_py._compile_cache import CompileCache, shared_cache
from runwasi_py._context import RuntimeContext
from runwasi_py._daemon.reservations import DEFAULT_RESERVATION_TIMEOUT, Reservations
from runwasi_py._errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from runwasi_py._events.publisher import EventSink, NullEventSink
from runwasi_py._events.topics import (
    TOPIC_CREATE,
    TOPIC_DELETE,
    TOPIC_EXIT,
    TOPIC_OOM,
    TOPIC_START,
)
from runwasi_py._native._runtime import ContainerKind, NativeRuntime, is_wasm
from runwasi_py._native._task import NativeTask, linux_resources
from runwasi_py._proto.gen.containerd.task.v2.shim_ttrpc import TaskBase
from runwasi_py._proto.messages import (
    CheckpointTaskRequest,
    CloseIoRequest,
    ConnectRequest,
    ConnectResponse,
    CreateTaskRequest,
    CreateTaskResponse,
    DeleteRequest,
    DeleteResponse,
    Empty,
    ExecProcessRequest,
    KillRequest,
    PauseRequest,
    PidsRequest,
    PidsResponse,
    ProcessInfo,
    ResizePtyRequest,
    ResumeRequest,
    ShutdownRequest,
    StartRequest,
    StartResponse,
    StateRequest,
    StateResponse,
    StatsRequest,
    StatsResponse,
    Status,
    TaskCreate,
    TaskDelete,
    TaskExit,
    TaskIo,
    TaskOom,
    TaskStart,
    UpdateTaskRequest,
    WaitRequest,
    WaitResponse,
    pack_any,
)
from runwasi_py._sandbox import Sandbox
from runwasi_py._stdio import Stdio
from runwasi_py._task.instance import Instance, WorkerPool
from runwasi_py._task.placement import (
    TaskPlacement,
    refuse_cri_in_shared_shim,
    resources_from_update,
    systemd_from_options,
)
from runwasi_py._task.state import TaskState, transition
from runwasi_py._task.stats import engine_memory, stats_any
from runwasi_py._task.task import PauseSandbox, Task, exited_at
from ttrpc import CallContext

__all__ = ["TASK_V3_SERVICE", "PauseSandbox", "TaskService"]

log = logging.getLogger("runwasi_py.task")

TASK_V3_SERVICE = "containerd.task.v3.Task"
"""The wire-identical v3 name containerd 2.x uses; register the same service under it."""


_STATUS = {
    TaskState.CREATED: Status.CREATED,
    TaskState.RUNNING: Status.RUNNING,
    TaskState.STOPPED: Status.STOPPED,
    TaskState.DELETED: Status.STOPPED,
}


class TaskService(TaskBase):
    """The Task service of one shim process: every RPC of ``containerd.task.v2.Task``.

    Example:
        >>> service = TaskService(MySandbox, namespace="default", events=publisher)
        >>> server.register(service)
        >>> server.register(service, name=TASK_V3_SERVICE)
        >>> await service.shutdown_requested.wait()   # Shutdown with no task left
        >>> await service.aclose()
    """

    def __init__(
        self,
        sandbox: Callable[[], Sandbox],
        *,
        namespace: str,
        events: EventSink | None = None,
        shim_name: str = "runwasi-py",
        kill_timeout: float = 1.0,
        compile_cache_dir: Path | None = None,
        reservation_timeout: float = DEFAULT_RESERVATION_TIMEOUT,
        default_memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        shared_shim: bool | None = None,
        native: NativeRuntime | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._memory_ceiling = default_memory_limit
        # A namespace-shared daemon serves many pods, so it cannot be in any pod's cgroup
        self._shared_shim = (
            os.environ.get("RUNWASI_PY_SHIM_GROUP") == "namespace"
            if shared_shim is None
            else shared_shim
        )
        self._native = native
        """Native containers through runc; None turns them off (Config.native_containers)."""
        self.namespace = namespace
        self._events: EventSink = events if events is not None else NullEventSink()
        self._shim_name = shim_name
        self._kill_timeout = kill_timeout
        self._compile_cache_dir = compile_cache_dir
        self._cache: CompileCache | None = None
        self._tasks: dict[str, Task] = {}
        self._creating: set[str] = set()
        self._pool = WorkerPool()
        self.shutdown_requested = asyncio.Event()
        """Set by a Shutdown call that found no task; the server owner stops serving."""
        self._shutdown_declined = False
        # With task API v3, containerd sends Shutdown only for a pod's sandbox container: if
        # the sandbox goes first, the last Delete of the pod must end the shim instead.
        self.reservations = Reservations(timeout=reservation_timeout)
        """Container ids a ``start`` handed this shim's address for (see ``_reservations``)."""

    # -- helpers -------------------------------------------------------------------------

    @property
    def task_count(self) -> int:
        """Tasks this shim owns (created and not yet deleted), including ones being created."""
        return len(self._tasks) + len(self._creating)

    def _publish(self, topic: str, event: betterproto2.Message) -> None:
        try:
            self._events.publish(topic, event)
        except Exception:
            log.exception("cannot queue event %s", topic)

    def _get(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise NotFound(f"container {task_id} not created: not found")
        return task

    @staticmethod
    def _no_exec(exec_id: str, task_id: str) -> None:
        # This shim never creates exec processes (Exec is Unimplemented), so any exec id
        # names a process that does not exist: runc's answer for an unknown exec.
        if exec_id:
            raise NotFound(f"process does not exist {exec_id} in container {task_id}: not found")

    def _running_count(self) -> int:
        return sum(1 for t in self._tasks.values() if t.state is TaskState.RUNNING)

    def _on_exit(self, task: Task) -> None:
        """The instance or init ended (control loop): STOPPED, then TaskOOM and TaskExit."""
        if task.state is TaskState.DELETED:
            return
        task.state = transition(task.state, TaskState.STOPPED, task_id=task.id)
        status = task.exit_status
        assert status is not None
        # debug: containerd logs the TaskExit itself; an info line per task was a tenth of
        # the shim's Python time at 300 tasks/s (logging's record and logrus formatting)
        log.debug("task %s exited with status %d", task.id, status.code)
        if task.instance is not None and task.instance.oom:
            self._publish(TOPIC_OOM, TaskOom(container_id=task.id))
        self._publish(
            TOPIC_EXIT,
            TaskExit(
                container_id=task.id,
                id=task.id,
                pid=task.pid,
                exit_status=status.code,
                exited_at=exited_at(status.exited_at_ns),
            ),
        )

    # -- Create --------------------------------------------------------------------------

    async def create(self, request: CreateTaskRequest, context: CallContext) -> CreateTaskResponse:
        task_id = request.id
        if not task_id:
            raise InvalidArgument("create: the task id is empty")
        if request.terminal:
            raise InvalidArgument(f"create {task_id}: terminal (tty) is not supported")
        if request.checkpoint or request.parent_checkpoint:
            raise Unimplemented(f"create {task_id}: checkpoint restore is not supported")
        if task_id in self._tasks or task_id in self._creating:
            raise AlreadyExists(f"task {task_id}: already exists")
        self.reservations.release(task_id)  # containerd came: the task now holds the shim
        self._creating.add(task_id)
        try:
            task = await self._create(request)
        finally:
            self._creating.discard(task_id)
        self._tasks[task_id] = task
        log.debug("task %s created, pid %d", task_id, task.pid)
        self._publish(
            TOPIC_CREATE,
            TaskCreate(
                container_id=task_id,
                bundle=request.bundle,
                rootfs=list(request.rootfs),
                io=TaskIo(stdin=request.stdin, stdout=request.stdout, stderr=request.stderr),
                checkpoint=request.checkpoint,
                pid=task.pid,
            ),
        )
        return CreateTaskResponse(pid=task.pid)

    async def _create(self, request: CreateTaskRequest) -> Task:
        if not request.bundle:
            raise InvalidArgument(f"create {request.id}: the bundle path is empty")
        stdio = Stdio.from_request(request.stdin, request.stdout, request.stderr)
        bundle = Bundle.load(request.bundle)
        if self._shared_shim:
            refuse_cri_in_shared_shim(bundle.spec.annotations, request.id)
        placement: TaskPlacement | None = None
        bundle.mount(request.rootfs)
        try:
            ctx = bundle.context(container_id=request.id, namespace=self.namespace, stdio=stdio)
            ctx.memory_limit = effective_memory_limit(ctx.memory_limit, self._memory_ceiling)
            sandbox = await self._choose_sandbox(ctx)
            if sandbox is None:
                return await self._create_native(request, stdio, bundle)
            await self._precompile(sandbox, ctx)
            placement = TaskPlacement.prepare(
                bundle.spec.raw,
                request.bundle,
                sandbox_container=is_sandbox_container(bundle.spec.annotations),
                systemd=systemd_from_options(request.options),
            )
            task: Task | None = None

            def on_exit(instance: Instance) -> None:
                if task is not None:
                    self._on_exit(task)

            instance = Instance(
                request.id,
                sandbox,
                ctx,
                pool=self._pool,
                on_exit=on_exit,
                kill_timeout=self._kill_timeout,
                placement=placement,
            )
            task = Task(
                id=request.id,
                bundle=request.bundle,
                stdio=stdio,
                instance=instance,
                disk=bundle,
                placement=placement,
            )
            return task
        except BaseException:
            if placement is not None:
                placement.remove()
            bundle.unmount(request.id)
            raise

    async def _choose_sandbox(self, ctx: RuntimeContext) -> Sandbox | None:
        """Classify the container once: its Sandbox (wasm, or the idle pause), None = native."""
        sandbox = self._sandbox()
        try:
            await sandbox.can_handle(ctx)
        except InvalidArgument as refusal:
            if is_wasm(ctx):
                raise  # wasm the engine refused: its message says why
            if self._native is None:
                kind = ContainerKind.IDLE_SANDBOX if is_sandbox_container(ctx.annotations) else None
                if kind is None:
                    raise
            else:
                kind = self._native.classify(ctx, refusal)
            if kind is ContainerKind.NATIVE:
                return None
            log.info("task %s: CRI sandbox container runs as an idle task", ctx.container_id)
            return PauseSandbox()
        return sandbox

    async def _create_native(
        self, request: CreateTaskRequest, stdio: Stdio, bundle: Bundle
    ) -> Task:
        """``runc create`` the container; the caller unmounts the rootfs if this raises."""
        assert self._native is not None
        task: Task | None = None

        def on_exit(native: NativeTask) -> None:
            if task is not None:
                self._on_exit(task)

        runc, reaper = self._native.runc(), self._native.reaper
        native = await NativeTask.create(
            runc, reaper, request.id, Path(request.bundle), stdio, on_exit=on_exit
        )
        task = Task(request.id, request.bundle, stdio, None, bundle, native=native)
        return task

    async def _precompile(self, sandbox: Sandbox, ctx: RuntimeContext) -> None:
        if self._cache is None:  # the directory comes from the shim's environment: fixed
            self._cache = shared_cache(self._compile_cache_dir, shim_name=self._shim_name)
        try:
            ctx.precompiled = await precompile_memo.find_artifact(sandbox, ctx, self._cache)
        except NotImplementedError:
            return  # a cache_key without a compile hook: nothing to precompile
        except OSError as e:
            raise InvalidArgument(f"cannot read entrypoint {ctx.entrypoint.path!r}: {e}") from None
        except Exception as e:
            raise InvalidArgument(
                f"cannot compile entrypoint {ctx.entrypoint.path!r}: {e}"
            ) from None

    # -- Start / Kill / Wait / Delete ------------------------------------------------------

    async def start(self, request: StartRequest, context: CallContext) -> StartResponse:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        task.state = transition(task.state, TaskState.RUNNING, task_id=task.id)
        if task.native is not None:
            try:
                pid = await task.native.start()
            except BaseException:
                if task.state is TaskState.RUNNING:  # not ended meanwhile: still only created
                    task.state = TaskState.CREATED
                raise
            log.debug("task %s started", task.id)
            # The init's exit reaches _on_exit only after this step (NativeTask holds it
            # until start returned), so TaskExit is never queued ahead of TaskStart.
            self._publish(TOPIC_START, TaskStart(container_id=task.id, pid=pid))
            return StartResponse(pid=pid)
        pid = task.wasm.start()
        log.debug("task %s started", task.id)
        # Queued before this returns; the instance's exit reaches the control loop only
        # through call_soon_threadsafe, so TaskExit can never be queued ahead of this.
        self._publish(TOPIC_START, TaskStart(container_id=task.id, pid=pid))
        return StartResponse(pid=pid)

    async def kill(self, request: KillRequest, context: CallContext) -> Empty:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        sig = request.signal
        if sig > 64:
            raise InvalidArgument(f"kill {task.id}: invalid signal {sig}")
        if task.state is not TaskState.CREATED and task.state is not TaskState.RUNNING:
            raise NotFound("process already finished: not found")
        if task.state is TaskState.CREATED and sig not in (0, signal_mod.SIGKILL):
            # Only SIGKILL ends a task that never started (containerd's forced delete sends
            # it and then expects the task stopped); other signals would be lost.
            raise FailedPrecondition(
                f"kill {task.id}: task is created, not running: start it first "
                f"(only SIGKILL ends a created task)"
            )
        log.info("task %s: kill with signal %d", task.id, sig)
        if task.native is not None:
            await task.native.kill(sig, all_processes=request.all)
            return Empty()
        task.wasm.kill(sig)
        return Empty()

    async def wait(self, request: WaitRequest, context: CallContext) -> WaitResponse:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        status = await (task.native.wait() if task.native is not None else task.wasm.wait())
        return WaitResponse(exit_status=status.code, exited_at=exited_at(status.exited_at_ns))

    async def delete(self, request: DeleteRequest, context: CallContext) -> DeleteResponse:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        was = task.state
        transition(task.state, TaskState.DELETED, task_id=task.id)  # raises if not allowed
        if task.native is not None:
            await task.native.delete()  # runc delete: its state and cgroup go
            if task.state is TaskState.DELETED:  # a concurrent Delete finished first
                raise NotFound(f"container {task.id} not created: not found")
        task.state = TaskState.DELETED
        if was is TaskState.CREATED and task.instance is not None:
            task.instance.discard()
        del self._tasks[task.id]
        task.remove_placement()
        if self._shutdown_declined and not self.task_count:
            self._shutdown_declined = False
            log.info("task %s deleted: the last one since a Shutdown; stopping", task.id)
            self.shutdown_requested.set()
        task.disk.unmount(task.id)
        status = task.exit_status
        assert status is not None
        when = exited_at(status.exited_at_ns)
        log.debug("task %s deleted", task.id)
        self._publish(
            TOPIC_DELETE,
            TaskDelete(
                container_id=task.id,
                pid=task.pid,
                exit_status=status.code,
                exited_at=when,
                id="",
            ),
        )
        return DeleteResponse(pid=task.pid, exit_status=status.code, exited_at=when)

    # -- queries ---------------------------------------------------------------------------

    async def state(self, request: StateRequest, context: CallContext) -> StateResponse:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        status = task.exit_status
        return StateResponse(
            id=task.id,
            bundle=task.bundle,
            pid=task.pid,
            status=_STATUS[task.state],
            stdin=task.stdio.stdin,
            stdout=task.stdio.stdout,
            stderr=task.stdio.stderr,
            terminal=False,
            exit_status=status.code if status is not None else 0,
            exited_at=exited_at(status.exited_at_ns if status is not None else None),
            exec_id="",
        )

    async def pids(self, request: PidsRequest, context: CallContext) -> PidsResponse:
        task = self._get(request.id)
        if task.exit_status is not None:
            return PidsResponse(processes=[])
        if task.native is not None:
            return PidsResponse(processes=[ProcessInfo(pid=p) for p in await task.native.pids()])
        return PidsResponse(processes=[ProcessInfo(pid=task.pid)])

    async def stats(self, request: StatsRequest, context: CallContext) -> StatsResponse:
        task = self._get(request.id)
        if task.native is not None:
            return StatsResponse(stats=await task.native.stats())
        running = self._running_count()
        if task.placement is not None:
            metrics = task.placement.metrics(engine_memory(task.wasm, running))
            if metrics is not None:
                return StatsResponse(stats=pack_any(metrics))
        return StatsResponse(stats=stats_any(task.wasm, running))

    async def connect(self, request: ConnectRequest, context: CallContext) -> ConnectResponse:
        # runc answers an unknown id with task_pid 0 rather than an error; containerd calls
        # Connect to learn the shim's pid.
        task = self._tasks.get(request.id)
        return ConnectResponse(shim_pid=os.getpid(), task_pid=task.pid if task is not None else 0)

    # -- control -----------------------------------------------------------------------------

    async def shutdown(self, request: ShutdownRequest, context: CallContext) -> Empty:
        if self.task_count:
            log.debug("shutdown: %d task(s) left; keep serving", self.task_count)
            self._shutdown_declined = True
            return Empty()
        if self.reservations.pending:
            log.debug("shutdown: a start just handed out this shim's address; keep serving")
            return Empty()
        log.info("shutdown: no task left; stopping")
        self.shutdown_requested.set()
        return Empty()

    async def close_io(self, request: CloseIoRequest, context: CallContext) -> Empty:
        task = self._get(request.id)
        self._no_exec(request.exec_id, request.id)
        if task.native is not None:
            if request.stdin:
                task.native.close_stdin()
            return Empty()
        # The sandbox opens stdin itself on its own thread; the shim holds no copy of it to
        # close, so there is nothing to do (containerd closes its end of the FIFO).
        log.debug("task %s: CloseIO(stdin=%s)", task.id, request.stdin)
        return Empty()

    async def update(self, request: UpdateTaskRequest, context: CallContext) -> Empty:
        task = self._get(request.id)
        if task.native is not None:
            value = request.resources.value if request.resources is not None else b""
            await task.native.update(linux_resources(value, task.id))
            return Empty()
        # CPU limits go to the task's cgroup; an engine cannot change a running instance's
        # memory limit. The annotations are kept so State-level readers see them.
        if request.resources is not None and request.resources.value:
            resources = resources_from_update(request.resources.type_url, request.resources.value)
            if task.placement is not None:
                task.placement.update(resources)
            else:
                CpuLimits.from_resources(resources, field="resources")  # still refuse bad input
                log.debug("task %s: Update without a cgroup: CPU limits not applied", task.id)
        task.wasm.ctx.annotations.update(request.annotations)
        return Empty()

    async def exec(self, request: ExecProcessRequest, context: CallContext) -> Empty:
        raise Unimplemented(f"exec {request.exec_id} in {request.id}: exec is not supported")

    async def pause(self, request: PauseRequest, context: CallContext) -> Empty:
        raise Unimplemented(f"pause {request.id}: pause is not supported")

    async def resume(self, request: ResumeRequest, context: CallContext) -> Empty:
        raise Unimplemented(f"resume {request.id}: resume is not supported")

    async def checkpoint(self, request: CheckpointTaskRequest, context: CallContext) -> Empty:
        raise Unimplemented(f"checkpoint {request.id}: checkpoint is not supported")

    async def resize_pty(self, request: ResizePtyRequest, context: CallContext) -> Empty:
        raise Unimplemented(f"resize pty {request.id}: terminals are not supported")

    # -- lifetime --------------------------------------------------------------------------

    async def kill_all(self, grace: float = 5.0) -> None:
        """SIGKILL every task that has not ended and wait for their exits (shim stopping)."""
        natives = [t.native for t in self._tasks.values() if t.native is not None]
        for task in list(self._tasks.values()):
            if task.instance is not None and task.state in (TaskState.RUNNING, TaskState.CREATED):
                task.instance.kill(signal_mod.SIGKILL)
        waits: list[Awaitable[object]] = [
            t.instance.wait() for t in self._tasks.values() if t.instance is not None
        ]
        waits += [n.delete_quietly() for n in natives]  # a stopping shim leaves no runc container
        if waits:
            try:
                async with asyncio.timeout(grace):
                    await asyncio.gather(*waits)
            except TimeoutError:
                log.warning("close: some instances did not end in time")

    async def aclose(self, grace: float = 5.0) -> None:
        """Kill what still runs, unmount, and stop the worker threads (serve's last step)."""
        await self.kill_all(grace)
        for task in list(self._tasks.values()):
            task.disk.unmount(task.id)
        self._tasks.clear()
        pool = self._pool
        await asyncio.to_thread(pool.close, grace)
        await asyncio.to_thread(pool.join_all, grace)
