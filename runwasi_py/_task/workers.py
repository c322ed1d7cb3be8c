"""Worker threads for instances: a pool of real threads, each with a reusable event loop.

Threads are pooled because creating one costs a few hundred microseconds on a busy 2-core
machine, a quarter of the budget of a whole create/start/wait/delete cycle. A worker runs one
instance at a time; an abandoned worker is never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = [
    "Worker",
    "WorkerPool",
    "drop_thread_loop",
    "loop_tasks",
    "reuse_or_drop_loop",
    "thread_loop",
]

log = logging.getLogger("runwasi_py.instance")


_Job = Callable[[], Callable[[], None] | None]
"""Work for a worker; it may return a callback to run once the worker is back in the pool
(the exit report: the control loop may then reuse this very worker at once)."""


class Worker(threading.Thread):
    """A worker thread that runs the jobs it is given, one at a time, until told to stop."""

    def __init__(self, pool: WorkerPool, name: str) -> None:
        super().__init__(name=name, daemon=True)
        # daemon: an abandoned worker (a run_wasi that never returns) must not keep the
        # interpreter alive at exit.
        self._pool = pool
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.abandoned = False

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def stop(self) -> None:
        self._jobs.put(None)

    def run(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                after: Callable[[], None] | None = None
                try:
                    after = job()
                except BaseException:  # a bug in the framework; keep the thread's death visible
                    log.exception("worker %s: job failed", self.name)
                    self.abandoned = True
                keep = not self.abandoned and self._pool._give_back(self)
                if after is not None:
                    after()
                if not keep:
                    return
        finally:
            drop_thread_loop()


_local = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This worker thread's event loop, reused from its last instance when that left it clean.

    A fresh loop costs ~200 us of CPU (epoll fd, self-pipe, teardown): most of a task's
    budget, paid while holding the GIL that the control loop needs.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.SelectorEventLoop()
        tasks: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()

        def task_factory(
            loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kw: Any
        ) -> asyncio.Task[Any]:
            task = asyncio.Task(coro, loop=loop, **kw)
            tasks.add(task)
            return task

        loop.set_task_factory(task_factory)  # type: ignore[arg-type]
        asyncio.set_event_loop(loop)
        _local.loop = loop
        _local.tasks = tasks
    return loop


def loop_tasks() -> set[asyncio.Task[Any]]:
    """The unfinished tasks of this thread's loop.

    Not ``asyncio.all_tasks(loop)``: that walks every task of the process, and the control
    loop holds one per outstanding Wait call; per instance that cost over a millisecond.
    """
    tasks: weakref.WeakSet[asyncio.Task[Any]] = getattr(_local, "tasks", weakref.WeakSet())
    return {t for t in tasks if not t.done()}


def reuse_or_drop_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Keep the loop for the next instance only if nothing of this one is left in it."""
    # A timer or callback left behind by run_wasi must never fire inside another
    # container's run_wasi: such a loop is closed, not reused.
    dirty = getattr(loop, "_scheduled", True) or getattr(loop, "_ready", True)
    if dirty or loop_tasks():
        drop_thread_loop()


def drop_thread_loop() -> None:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    _local.loop = None
    if loop is not None and not loop.is_closed():
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        asyncio.set_event_loop(None)


class WorkerPool:
    """Worker threads for instances: idle ones are reused, at most ``max_idle`` are kept.

    Example:
        >>> pool = WorkerPool()
        >>> worker = pool.acquire()       # a started thread; worker.native_id is the pid
        >>> pool.release(worker)          # unused: back to the pool
        >>> pool.close()
    """

    def __init__(self, max_idle: int = 32) -> None:
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._all: set[Worker] = set()
        self._closed = False
        self._serial = 0

    def acquire(self) -> Worker:
        """An idle worker, or a new started one."""
        with self._lock:
            if self._closed:
                raise RuntimeError("worker pool is closed")
            if self._idle:
                return self._idle.pop()
            self._serial += 1
            worker = Worker(self, f"instance-{self._serial}")
            self._all.add(worker)
        worker.start()
        return worker

    def release(self, worker: Worker) -> None:
        """Give back a worker that was acquired but never given a job."""
        if not self._give_back(worker):
            worker.stop()

    def _give_back(self, worker: Worker) -> bool:
        """True if the pool keeps ``worker`` idle; False means it should end."""
        with self._lock:
            if self._closed or worker.abandoned or len(self._idle) >= self._max_idle:
                self._all.discard(worker)
                return False
            self._idle.append(worker)
            return True

    @property
    def busy(self) -> int:
        """Workers that are neither idle nor ended (running or waiting for Start)."""
        with self._lock:
            return sum(1 for w in self._all if w not in self._idle and w.is_alive())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the idle workers and wait for them; busy ones stop after their job."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
        deadline = time.monotonic() + timeout
        for worker in idle:
            worker.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._all.discard(worker)

    def join_all(self, timeout: float = 5.0) -> bool:
        """Wait for every non-abandoned worker thread to end (after :meth:`close`)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = [w for w in self._all if not w.abandoned]
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(w.is_alive() for w in workers)
