"""Run a coroutine's first step inline and make a Task only when it suspends.

Python 3.11 has no eager task factory, and a Task costs ~9 us (creation, registration,
one loop iteration to start, one to finish): more than a whole trivial ttrpc call. Most
unary handlers never suspend, so the server steps their coroutine once itself and wraps it
in a Task only when it awaits something that is not ready.

While the inline step runs, :func:`asyncio.current_task` returns an :class:`EagerHandle`
that stands in for the task the call will get if it suspends: ``cancel``, ``cancelling``,
``uncancel`` and ``done`` work on it before and after that point (what ``asyncio.timeout``
and ``asyncio.TaskGroup`` use), and everything else is forwarded to the task once it exists.
Known difference from a real eager task: code that compares task identity across the
suspension (anyio's cancel scopes entered before the first suspension) sees the handle
before and the task after.

Example:
    >>> import asyncio
    >>> async def main() -> str:
    ...     async def handler() -> str:
    ...         return "done"
    ...     done, value, handle = step(handler(), asyncio.get_running_loop())
    ...     return value if done else "suspended"
    >>> asyncio.run(main())
    'done'
"""

from __future__ import annotations

import asyncio
import sys
import types
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["NOT_STARTED", "EagerHandle", "Resume", "Stepper", "step"]

_getrefcount = sys.getrefcount


def _alone() -> int:
    # What getrefcount says of an object only a local variable holds: 2 on 3.11-3.13, lower
    # where the interpreter passes borrowed references (3.14). Measured, not assumed, so
    # that a handle someone else holds is never taken for one nobody does.
    probe = object()
    return _getrefcount(probe)


_ALONE = _alone()

NOT_STARTED: Any = object()
"""What :func:`step` returns as ``awaited`` when it could not run the coroutine inline."""


class EagerHandle:
    """What ``asyncio.current_task()`` is during the inline step of a call."""

    __slots__ = ("__weakref__", "_cancel_msg", "_cancels", "_loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._cancels = 0
        self._cancel_msg: Any = None
        self.task: asyncio.Task[Any] | None = None

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """The call suspended and now runs in ``task``: forward to it from here on."""
        self.task = task
        if self._cancels:
            # cancel() during the inline step: a real task would throw CancelledError in at
            # its next suspension, which is the task's first step.
            task.cancel(self._cancel_msg)

    def cancel(self, msg: Any = None) -> bool:
        if self.task is not None:
            return self.task.cancel(msg)
        self._cancels += 1
        self._cancel_msg = msg
        return True

    def cancelling(self) -> int:
        return self.task.cancelling() if self.task is not None else self._cancels

    def uncancel(self) -> int:
        if self.task is not None:
            return self.task.uncancel()
        if self._cancels > 0:
            self._cancels -= 1
        return self._cancels

    def done(self) -> bool:
        return self.task.done() if self.task is not None else False

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def __getattr__(self, name: str) -> Any:
        task = self.task
        if task is None:
            raise AttributeError(f"{name!r}: not available before the ttrpc call suspends")
        return getattr(task, name)

    def __repr__(self) -> str:
        return f"<EagerHandle task={self.task!r}>"


def step(
    coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop
) -> tuple[bool, Any, EagerHandle]:
    """Run ``coro`` up to its first suspension with an :class:`EagerHandle` as current task.

    Returns ``(True, result, handle)`` when it finished (its exception propagates), else
    ``(False, awaited, handle)``: pass ``awaited`` to :class:`Resume` to continue in a Task.
    Call it from a loop callback (no task running), never from inside a task.
    """
    handle = EagerHandle(loop)
    try:
        _enter_task(loop, handle)  # type: ignore[arg-type]
    except RuntimeError:
        # Called from inside a task: nothing runs inline; Resume starts the coroutine.
        return False, NOT_STARTED, handle
    try:
        awaited = coro.send(None)
    except StopIteration as stop:
        return True, stop.value, handle
    finally:
        _leave_task(loop, handle)  # type: ignore[arg-type]
    return False, awaited, handle


class Resume(Coroutine[Any, Any, Any]):
    """Continues a coroutine that suspended in :func:`step`; ``await`` it inside a Task.

    Its first step hands the Task what the coroutine was waiting on, as if the Task had run
    that first step itself; later steps are forwarded unchanged.
    """

    __slots__ = ("_awaited", "_coro", "_started")

    def __init__(self, coro: Coroutine[Any, Any, Any], awaited: Any) -> None:
        self._coro = coro
        self._awaited = awaited
        self._started = awaited is NOT_STARTED

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            awaited, self._awaited = self._awaited, None
            return awaited
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if not self._started:
            # Cancelled before the Task's first step: the Task never saw the awaited future,
            # so cancel it here as Task.cancel() would have.
            self._started = True
            awaited, self._awaited = self._awaited, None
            if isinstance(typ, asyncio.CancelledError) and isinstance(awaited, asyncio.Future):
                awaited.cancel()
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)  # pragma: no cover - the old three-arg form

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> Resume:
        return self

    def __next__(self) -> Any:
        return self.send(None)


_DONE: Any = object()  # what the driver yields when the coroutine it runs has returned


@types.coroutine
def _drive(box: list[Any]) -> Generator[Any, Any, None]:
    # Runs each coroutine sent in to its end, one after another. ``yield from`` takes a
    # coroutine's return value without a StopIteration (an exception per call, which
    # ``coro.send`` raises, costs more than the rest of a small handler's first step).
    coro = yield
    while True:
        box[0] = yield from coro
        coro = yield _DONE


class _Driven(Coroutine[Any, Any, Any]):
    """A driver that took over a suspended coroutine, as that coroutine: its result is the
    coroutine's (the driver's _DONE becomes a StopIteration with it)."""

    __slots__ = ("_box", "_driver")

    def __init__(self, driver: Generator[Any, Any, None], box: list[Any]) -> None:
        self._driver = driver
        self._box = box

    def send(self, value: Any) -> Any:
        out = self._driver.send(value)
        if out is _DONE:
            raise StopIteration(self._box[0])
        return out

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            out = self._driver.throw(typ)
        else:  # pragma: no cover - the old three-arg form
            out = self._driver.throw(typ, val, tb)
        if out is _DONE:
            raise StopIteration(self._box[0])
        return out

    def close(self) -> None:
        self._driver.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> _Driven:
        return self

    def __next__(self) -> Any:
        return self.send(None)


class Stepper:
    """:func:`step` for one loop, cheaper per call: a coroutine that finishes in its first
    step is run by a reused driver generator, so finishing raises nothing.

    :meth:`step` returns ``(True, result, handle)``, or ``(False, rest, handle)`` where
    ``rest`` is an awaitable that continues the call in a Task (a :class:`Resume`).

    Example:
        >>> import asyncio
        >>> async def main() -> str:
        ...     async def handler() -> str:
        ...         return "done"
        ...     done, value, handle = Stepper(asyncio.get_running_loop()).step(handler())
        ...     return value if done else "suspended"
        >>> asyncio.run(main())
        'done'
    """

    __slots__ = ("_box", "_driver", "_loop", "_send", "_spare")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._spare: EagerHandle | None = None
        self._fresh()

    def _fresh(self) -> None:
        box: list[Any] = [None]
        driver = _drive(box)
        driver.send(None)
        self._box = box
        self._driver = driver
        self._send = driver.send

    def step(self, coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any, EagerHandle]:
        """Run ``coro`` up to its first suspension (see :func:`step`; its exception
        propagates). Call it from a loop callback; inside a task nothing runs inline.

        The handle of a call that finished may be handed to a later call: keep it only
        when the call suspended (it stands for that call's task from then on)."""
        loop = self._loop
        handle = self._spare
        if handle is None:
            handle = EagerHandle(loop)
        else:
            self._spare = None
        try:
            _enter_task(loop, handle)  # type: ignore[arg-type]
        except RuntimeError:
            return False, Resume(coro, NOT_STARTED), handle
        try:
            out = self._send(coro)
        except BaseException:
            self._fresh()  # the driver ended with the coroutine's exception
            raise
        finally:
            _leave_task(loop, handle)  # type: ignore[arg-type]
        if out is _DONE:
            box = self._box
            value = box[0]
            box[0] = None
            # Reused only when nothing kept it (asyncio.current_task() stored, a cancel
            # counted): the next call then sees a handle as new as a fresh one. Only this
            # frame's local holds it then (the spare slot was emptied above).
            if _getrefcount(handle) == _ALONE and not handle._cancels:
                self._spare = handle
            return True, value, handle
        # The coroutine suspended inside the driver: the driver goes with it to its Task.
        rest = Resume(_Driven(self._driver, self._box), out)
        self._fresh()
        return False, rest, handle
