"""One container's workload: ``Sandbox.run_wasi`` on its own worker thread and event loop.

Theory of operation:

* At Create the instance takes a worker thread from a :class:`WorkerPool` (a real
  ``threading.Thread``, never anyio's shared limiter); the thread's native id is the task's
  pid. The thread waits until Start hands it the job.
* The job makes a fresh event loop on the worker, runs ``await sandbox.run_wasi(ctx)`` to the
  end, closes the loop, records the thread CPU time spent, and reports the exit to the
  control loop with ``call_soon_threadsafe``. A workload that blocks only blocks its thread.
* Kill records the signal in the context (the engine's ``on_kill`` hooks run), calls
  ``sandbox.interrupt``, and cancels the coroutine inside the worker's loop. A killed task
  exits with 128+signal: the first signal that ends it decides (a SIGKILL after a SIGTERM
  the workload outlived overrides it, as the kernel's would). Signals that do not end a
  process by default (``signals``: SIGCHLD, SIGWINCH, SIGCONT, SIGSTOP...) only reach
  ``sandbox.notify_signal``; the task runs on. If a SIGKILL does not end the job within
  ``kill_timeout`` seconds (a run_wasi that blocks and ignores cancellation), the instance
  is marked exited with 137 anyway and its thread is abandoned: the control plane never
  waits for it.
* The exit status: the code run_wasi returned; 128+signal if the task was killed; 137 if
  run_wasi raised (logged with its traceback), as runwasi does.

The threads come from :mod:`runwasi_py._task.workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal as signal_mod
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from runwasi_py._context import RuntimeContext
from runwasi_py._sandbox import Sandbox
from runwasi_py._stdio import drain_outputs
from runwasi_py._task.signals import ends_task
from runwasi_py._task.workers import (
    Worker,
    WorkerPool,
    drop_thread_loop,
    loop_tasks,
    reuse_or_drop_loop,
    thread_loop,
)

# WorkerPool: from .workers
__all__ = ["CpuUsage", "ExitStatus", "Instance", "ThreadPlacement", "WorkerPool"]

log = logging.getLogger("runwasi_py.instance")

EXIT_ON_ERROR = 137
"""Exit status of a task whose run_wasi raised, or that had to be abandoned (as SIGKILL)."""

_CLOCK_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class ThreadPlacement(Protocol):
    """Where a worker thread must be while its instance runs (a pod's cgroup, namespaces)."""

    def on_worker(self) -> AbstractContextManager[None]:
        """Entered and left on the worker thread, around ``run_wasi``."""
        ...


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a task ended: its exit status and the wall-clock time (ns since the epoch)."""

    code: int
    exited_at_ns: int


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU time an instance used on its worker thread, in nanoseconds."""

    total_ns: int = 0
    user_ns: int = 0
    system_ns: int = 0


def _thread_ticks(native_id: int) -> tuple[int, int]:
    """(user, system) clock ticks a thread of this process used, from /proc."""
    try:
        with open(f"/proc/self/task/{native_id}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return 0, 0
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = data[data.rfind(b")") + 2 :].split()
    return int(fields[11]), int(fields[12])


class Instance:
    """One container: a Sandbox, its RuntimeContext, and the worker thread that runs it.

    Create it on the control loop (the loop that serves the task service); all methods
    except those noted are called there.

    Example:
        >>> inst = Instance("c1", MySandbox(), ctx, pool=pool, on_exit=print)
        >>> inst.pid                # the worker thread's native id
        >>> inst.start()
        >>> status = await inst.wait()   # ExitStatus(code=0, exited_at_ns=...)
    """

    def __init__(
        self,
        container_id: str,
        sandbox: Sandbox,
        ctx: RuntimeContext,
        *,
        pool: WorkerPool,
        on_exit: Callable[[Instance], None] | None = None,
        kill_timeout: float = 1.0,
        placement: ThreadPlacement | None = None,
    ) -> None:
        self.id = container_id
        self.placement = placement
        """Entered by the worker thread before the guest runs (cgroup, namespaces)."""
        self.sandbox = sandbox
        self.ctx = ctx
        self._pool = pool
        self._on_exit = on_exit
        self.kill_timeout = kill_timeout
        self._control_loop = asyncio.get_running_loop()
        self._worker: Worker | None = pool.acquire()
        self.pid: int = self._worker.native_id or 0
        self._started = False
        self._exit: ExitStatus | None = None
        self._exited = asyncio.Event()
        self._abandoned = False
        # Shared with the worker thread, under _lock:
        self._lock = threading.Lock()
        self._worker_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[int] | None = None
        self._last_signal: int | None = None
        self._cpu_start_ns = 0
        self._ru_start = (0.0, 0.0)
        self._cpu_final: CpuUsage | None = None

    # -- control plane -------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once :meth:`start` handed the job to the worker."""
        return self._started

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the instance ended, or None while it has not."""
        return self._exit

    @property
    def oom(self) -> bool:
        """The engine reported that the memory limit ended the workload."""
        return self.ctx.oom

    def start(self) -> int:
        """Run the workload on the worker thread; return the pid."""
        if self._started:
            raise RuntimeError(f"instance {self.id} already started")
        if self._exit is not None or self._worker is None:
            raise RuntimeError(f"instance {self.id} already ended")
        self._started = True
        self._worker.submit(self._run_on_worker)
        return self.pid

    def kill(self, sig: int) -> None:
        """Deliver ``sig``: tell the engine, cancel run_wasi; SIGKILL ends the task for sure.

        Signal 0 only checks that the task exists (as ``kill(2)``). Killing a task that was
        never started ends it at once with 128+signal. A signal that does not end a process
        by default goes to ``sandbox.notify_signal`` only.
        """
        if sig == 0 or self._exit is not None:
            return
        if not ends_task(sig):
            log.info(
                "instance %s: signal %d does not end a task; passed on, not a kill", self.id, sig
            )
            try:
                self.sandbox.notify_signal(sig)
            except Exception:
                log.exception("instance %s: sandbox.notify_signal(%d) failed", self.id, sig)
            return
        with self._lock:
            last = self._last_signal
            if last is None or (sig == signal_mod.SIGKILL and last != sig):
                self._last_signal = sig  # the first decides; SIGKILL overrides the rest
            loop, task = self._worker_loop, self._task
        if not self._started:
            self._finish(128 + sig)
            self._release_worker()
            return
        self.ctx.deliver_kill(sig)
        try:
            self.sandbox.interrupt(sig)
        except Exception:
            log.exception("instance %s: sandbox.interrupt(%d) failed", self.id, sig)
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the worker's loop closed meanwhile
                loop.call_soon_threadsafe(task.cancel)
        if sig == signal_mod.SIGKILL:
            self._control_loop.call_later(self.kill_timeout, self._abandon_if_running)

    def discard(self) -> None:
        """Forget a never-started instance (Delete after Create): its waiters see 137."""
        if self._started:
            return
        if self._exit is None:
            with self._lock:
                self._last_signal = signal_mod.SIGKILL
            self._finish(EXIT_ON_ERROR)
        self._release_worker()

    async def wait(self) -> ExitStatus:
        """Wait until the instance ended; return its :class:`ExitStatus`."""
        await self._exited.wait()
        assert self._exit is not None
        return self._exit

    def cpu_usage(self) -> CpuUsage:
        """CPU time this instance used on its worker thread (live, or the final total)."""
        final = self._cpu_final
        if final is not None:
            return final
        worker = self._worker
        if not self._started or worker is None or worker.ident is None:
            return CpuUsage()
        try:
            clock = time.pthread_getcpuclockid(worker.ident)
            now_ns = time.clock_gettime_ns(clock)
        except OSError:
            return self._cpu_final or CpuUsage()
        if self._cpu_final is not None:  # ended while we read the clock
            return self._cpu_final
        total = max(0, now_ns - self._cpu_start_ns)
        # /proc's per-thread split has 10 ms ticks; good enough to apportion the exact total
        ticks = _thread_ticks(worker.native_id or 0)
        user = max(0, ticks[0] * _CLOCK_TICK_NS - int(self._ru_start[0] * 1e9))
        system = max(0, ticks[1] * _CLOCK_TICK_NS - int(self._ru_start[1] * 1e9))
        return CpuUsage(total, min(user, total), min(system, total))

    def _release_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None and not self._started:
            self._pool.release(worker)

    def _abandon_if_running(self) -> None:
        if self._exit is not None:
            return
        worker = self._worker
        log.error(
            "instance %s: run_wasi did not stop within %.1fs of SIGKILL; reporting exit 137 "
            "and abandoning its thread %s",
            self.id,
            self.kill_timeout,
            worker.name if worker else "?",
        )
        self._abandoned = True
        if worker is not None:
            worker.abandoned = True
        self._finish(128 + signal_mod.SIGKILL)

    def _finish(self, code: int, exited_at_ns: int | None = None) -> None:
        """Record the exit once (control loop) and tell the owner."""
        if self._exit is not None:
            return
        self._exit = ExitStatus(code, exited_at_ns or time.time_ns())
        self._exited.set()
        if self._on_exit is not None:
            try:
                self._on_exit(self)
            except Exception:
                log.exception("instance %s: exit callback failed", self.id)

    def _report_from_worker(self, code: int, exited_at_ns: int) -> None:
        if self._abandoned:
            log.warning("instance %s: abandoned run_wasi finally ended (status %d)", self.id, code)
            return
        self._finish(code, exited_at_ns)

    # -- worker thread -------------------------------------------------------------------

    def _run_on_worker(self) -> Callable[[], None]:
        self._cpu_start_ns = time.thread_time_ns()
        ru = resource.getrusage(resource.RUSAGE_THREAD)
        self._ru_start = (ru.ru_utime, ru.ru_stime)
        code = self._run_placed()
        if self.ctx.kill_signal is None:
            drain_outputs(self.ctx, self.sandbox.drain_timeout)
        ru = resource.getrusage(resource.RUSAGE_THREAD)
        total = time.thread_time_ns() - self._cpu_start_ns
        self._cpu_final = CpuUsage(
            total,
            min(total, int((ru.ru_utime - self._ru_start[0]) * 1e9)),
            min(total, int((ru.ru_stime - self._ru_start[1]) * 1e9)),
        )
        exited_at = time.time_ns()

        def report() -> None:
            try:
                self._control_loop.call_soon_threadsafe(self._report_from_worker, code, exited_at)
            except RuntimeError:  # the control loop is closed: nobody is waiting any more
                log.warning("instance %s: exited with %d after the shim stopped", self.id, code)

        return report

    def _run_placed(self) -> int:
        """:meth:`_run_to_end` inside the placement: a thread that cannot enter its pod's
        cgroup or namespaces does not run the guest outside them (status 137, logged), and
        one that cannot leave them again is not reused for another container."""
        if self.placement is None:
            return self._run_to_end()
        placed = self.placement.on_worker()
        try:
            placed.__enter__()
        except Exception:
            log.exception(
                "instance %s: cannot enter its cgroup/namespaces; exit status 137", self.id
            )
            return EXIT_ON_ERROR
        try:
            return self._run_to_end()
        finally:
            try:
                placed.__exit__(None, None, None)
            except Exception:
                log.exception("instance %s: cannot leave its namespaces; thread retired", self.id)
                if self._worker is not None:
                    self._worker.abandoned = True

    def _run_to_end(self) -> int:
        """Run run_wasi in this thread's loop; return the exit status."""
        if self.ctx.kill_signal is not None:
            return 128 + self.ctx.kill_signal
        loop = thread_loop()
        try:
            task = loop.create_task(self._run_wasi())
            with self._lock:
                self._worker_loop, self._task = loop, task
                killed = self._last_signal is not None
            if killed:  # a kill raced with the start: it was recorded but not yet delivered
                task.cancel()
            try:
                code = loop.run_until_complete(task)
            except asyncio.CancelledError:
                code = -1
            except BaseException:
                if self._last_signal is None:
                    log.exception("instance %s: run_wasi raised; exit status 137", self.id)
                code = EXIT_ON_ERROR
        finally:
            with self._lock:
                self._worker_loop, self._task = None, None
            _clean_loop(loop, self.id)
        with self._lock:
            sig = self._last_signal
        if self.ctx.oom:
            return code if code >= 0 else EXIT_ON_ERROR
        if sig is not None:
            return 128 + sig
        if code < 0:  # cancelled without a kill: only the framework cancels
            return EXIT_ON_ERROR
        return code

    async def _run_wasi(self) -> int:
        code = await self.sandbox.run_wasi(self.ctx)
        if isinstance(code, bool) or not isinstance(code, int):
            log.error(
                "instance %s: run_wasi returned %r, not an int; exit status 137", self.id, code
            )
            return EXIT_ON_ERROR
        # Exit statuses are a byte, as for processes (exit(256) is 0).
        return code & 0xFF


def _clean_loop(loop: asyncio.AbstractEventLoop, instance_id: str) -> None:
    """Cancel what run_wasi left running and finish its async generators (as asyncio.Runner
    does at close), then keep the loop for the next instance or drop it."""
    try:
        pending = loop_tasks()
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            for t in pending:
                if not t.cancelled() and t.exception() is not None:
                    log.warning(
                        "instance %s: a task left by run_wasi failed: %r",
                        instance_id,
                        t.exception(),
                    )
        if getattr(loop, "_asyncgens", True):
            # Live async generators: finalize them. A loop that did this cannot register
            # new ones any more, so it is not reused.
            loop.run_until_complete(loop.shutdown_asyncgens())
            drop_thread_loop()
            return
    except BaseException:
        log.exception("instance %s: cleaning up its event loop failed", instance_id)
        drop_thread_loop()
        return
    reuse_or_drop_loop(loop)
