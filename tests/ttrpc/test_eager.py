"""Inline first steps of unary handlers (ttrpc._eager) and what a handler can rely on there."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

from tests.ttrpc.harness import serving
from tests.ttrpc.messages import EchoRequest, EchoResponse
from ttrpc import CallContext, Client, Code, Service, TtrpcError, rpc
from ttrpc._eager import NOT_STARTED, EagerHandle, Resume, Stepper, step

pytestmark = pytest.mark.anyio

_var: contextvars.ContextVar[str] = contextvars.ContextVar("_var", default="unset")


class Eager(Service):
    """Handlers that do (or do not) suspend, probing the task they run in."""

    service_name = "test.v1.Eager"

    def __init__(self) -> None:
        self.seen_vars: list[str] = []
        self.tasks: list[Any] = []

    @rpc
    async def sync(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        # Never suspends: runs inline. current_task() and asyncio.timeout() still work.
        self.seen_vars.append(_var.get())
        _var.set(f"call {request.seq}")
        self.tasks.append(asyncio.current_task())
        async with asyncio.timeout(30):
            await asyncio.sleep(0)  # a bare yield: suspends, and the call becomes a Task
        return EchoResponse(payload=request.payload, seq=request.seq)

    @rpc
    async def timeout_after_suspend(
        self, request: EchoRequest, context: CallContext
    ) -> EchoResponse:
        # The timeout is armed inline (on the stand-in) and fires after the call became a
        # Task: it must cancel that task and surface as TimeoutError here.
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(30)
        except TimeoutError:
            return EchoResponse(seq=1)
        return EchoResponse(seq=2)

    @rpc
    async def task_group(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        async with asyncio.TaskGroup() as group:
            child = group.create_task(asyncio.sleep(0, result=request.seq))
        return EchoResponse(seq=child.result())

    @rpc
    async def raises_cancelled(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        raise asyncio.CancelledError

    @rpc
    async def plain(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        return EchoResponse(payload=request.payload, seq=request.seq + 1)

    @rpc
    async def bad_result(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        return "not a message"  # type: ignore[return-value]


async def test_inline_handler_has_a_current_task_and_timeout() -> None:
    service = Eager()
    async with serving(service) as (_, address):
        client = await Client.connect(address)
        try:
            for seq in (1, 2, 3):
                reply = await client.call(
                    "test.v1.Eager", "Sync", EchoRequest(b"x", seq), EchoResponse
                )
                assert (reply.payload, reply.seq) == (b"x", seq)
        finally:
            await client.close()
    assert all(task is not None for task in service.tasks)
    # A context variable a handler sets does not leak into the next call of the connection.
    assert service.seen_vars == ["unset", "unset", "unset"]


async def test_timeout_armed_inline_fires_after_suspension() -> None:
    async with serving(Eager()) as (_, address):
        client = await Client.connect(address)
        try:
            reply = await client.call(
                "test.v1.Eager", "TimeoutAfterSuspend", EchoRequest(), EchoResponse
            )
        finally:
            await client.close()
    assert reply.seq == 1


async def test_task_group_inside_a_handler() -> None:
    async with serving(Eager()) as (_, address):
        client = await Client.connect(address)
        try:
            reply = await client.call(
                "test.v1.Eager", "TaskGroup", EchoRequest(seq=7), EchoResponse
            )
        finally:
            await client.close()
    assert reply.seq == 7


@pytest.mark.parametrize(
    ("method", "code"),
    [("RaisesCancelled", Code.CANCELLED), ("BadResult", Code.UNKNOWN)],
)
async def test_inline_errors_become_statuses(method: str, code: Code) -> None:
    async with serving(Eager()) as (_, address):
        client = await Client.connect(address)
        try:
            with pytest.raises(TtrpcError) as err:
                await client.call("test.v1.Eager", method, EchoRequest(), EchoResponse)
            # the connection still serves
            reply = await client.call("test.v1.Eager", "Sync", EchoRequest(seq=5), EchoResponse)
        finally:
            await client.close()
    assert err.value.code == code
    assert reply.seq == 5


# --- the module itself -------------------------------------------------------------------


async def _value(v: int) -> int:
    return v


async def _wait(fut: asyncio.Future[int]) -> int:
    return await fut + 1


def _step_in_callback(coro: Any) -> Any:
    """Run step() from a loop callback, where the server runs it."""
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()
    loop.call_soon(lambda: out.set_result(step(coro, loop)))
    return out


async def test_step_finishes_inline() -> None:
    done, value, handle = await _step_in_callback(_value(3))
    assert (done, value) == (True, 3)
    assert isinstance(handle, EagerHandle)
    assert handle.task is None


async def test_step_then_resume_in_a_task() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    coro = _wait(fut)
    done, awaited, handle = await _step_in_callback(coro)
    assert not done
    assert awaited is fut
    task: asyncio.Task[int] = loop.create_task(Resume(coro, awaited))
    handle.adopt(task)
    fut.set_result(41)
    assert await task == 42
    assert handle.done()
    assert handle.get_loop() is loop


async def _await(aw: Any) -> Any:
    return await aw


async def test_cancel_before_the_task_starts_reaches_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    seen: list[str] = []

    async def guarded() -> int:
        try:
            return await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    coro = guarded()
    done, awaited, handle = await _step_in_callback(coro)
    assert not done
    # The Resume itself is the Task's coroutine (as in the server): a cancel before the
    # Task's first step is thrown into it, and so into the coroutine.
    task: asyncio.Task[int] = loop.create_task(Resume(coro, awaited))
    handle.adopt(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
    assert fut.cancelled()  # as Task.cancel() would have cancelled what it awaited


async def test_cancel_requested_inline_applies_to_the_task() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()

    async def cancel_self_then_wait() -> int:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        assert current.cancelling() == 1
        return await fut

    coro = cancel_self_then_wait()
    done, awaited, handle = await _step_in_callback(coro)
    assert not done
    task: asyncio.Task[int] = loop.create_task(Resume(coro, awaited))
    handle.adopt(task)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_step_inside_a_task_does_not_run_inline() -> None:
    # No inline step while a task runs (asyncio allows one current task): Resume starts it.
    loop = asyncio.get_running_loop()
    coro = _value(5)
    done, awaited, _ = step(coro, loop)
    assert not done
    assert awaited is NOT_STARTED
    assert await _await(Resume(coro, awaited)) == 5


async def test_handle_before_suspension() -> None:
    handle = EagerHandle(asyncio.get_running_loop())
    assert not handle.done()
    assert handle.cancel("why") is True
    assert handle.cancelling() == 1
    assert handle.uncancel() == 0
    with pytest.raises(AttributeError, match="before the ttrpc call suspends"):
        handle.get_name()


class _Transport:
    """Enough of a transport for a ServerConnection fed by hand."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closed = True

    abort = close


async def test_request_fed_from_inside_a_task_is_answered() -> None:
    # A shell that feeds bytes from inside a task (not a loop callback) gets no inline
    # step; a handler that then finishes without suspending must still be answered, and
    # the connection must stay up (it once raised StopIteration and aborted it).
    from ttrpc import Server
    from ttrpc._connection import Connection, Role
    from ttrpc._envelope import Request
    from ttrpc._server import ServerConnection

    server = Server()
    server.register(Eager())
    conn = ServerConnection(server)
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    client = Connection(Role.CLIENT)
    for seq in (1, 2):
        payload = bytes(EchoRequest(b"x", seq))
        _, wire = client.send_request(Request("test.v1.Eager", "Plain", payload))
        conn._view[: len(wire)] = wire
        conn.buffer_updated(len(wire))
        for _ in range(3):
            await asyncio.sleep(0)
        assert not transport.closed
        (event,) = client.receive_data(transport.written.pop())
        assert EchoResponse.FromString(event.response.payload).seq == seq + 1  # type: ignore[union-attr]
    assert not conn.tasks


# --- Stepper: the server's reusable-driver step -----------------------------------------


class _Boom(Exception):
    pass


async def _raises() -> int:
    raise _Boom


async def _catches_cancel(fut: asyncio.Future[int]) -> int:
    try:
        return await fut
    except asyncio.CancelledError:
        return -1


async def _two_waits(a: asyncio.Future[int], b: asyncio.Future[int]) -> int:
    return await a + await b


def _in_callback(fn: Any, *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    out: asyncio.Future[Any] = loop.create_future()

    def run() -> None:
        try:
            out.set_result(fn(*args))
        except BaseException as exc:  # handed to the test as is
            out.set_exception(exc)

    loop.call_soon(run)
    return out


async def test_stepper_runs_many_calls_on_one_driver() -> None:
    # Finished, raised, suspended-then-finished and cancelled calls, interleaved on one
    # Stepper: each gets its own result, as with step(), and the driver survives them all.
    loop = asyncio.get_running_loop()
    stepper = Stepper(loop)
    assert (await _in_callback(stepper.step, _value(1)))[:2] == (True, 1)
    with pytest.raises(_Boom):
        await _in_callback(stepper.step, _raises())
    a, b = loop.create_future(), loop.create_future()
    done, rest, handle = await _in_callback(stepper.step, _two_waits(a, b))
    assert not done
    task: asyncio.Task[int] = loop.create_task(rest)
    handle.adopt(task)
    # While that call waits in its Task, more calls run inline on a fresh driver.
    for v in (2, 3):
        done, value, _ = await _in_callback(stepper.step, _value(v))
        assert (done, value) == (True, v)
    a.set_result(10)
    await asyncio.sleep(0)
    b.set_result(5)
    assert await task == 15
    fut: asyncio.Future[int] = loop.create_future()
    done, rest, handle = await _in_callback(stepper.step, _catches_cancel(fut))
    task = loop.create_task(rest)
    handle.adopt(task)
    await asyncio.sleep(0)
    task.cancel()
    assert await task == -1  # the handler caught the cancel and returned
    assert (await _in_callback(stepper.step, _value(4)))[:2] == (True, 4)


async def test_stepper_cancel_before_the_task_starts_cancels_the_awaited_future() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[int] = loop.create_future()
    done, rest, handle = await _in_callback(Stepper(loop).step, _wait(fut))
    assert not done
    task: asyncio.Task[int] = loop.create_task(rest)
    handle.adopt(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fut.cancelled()


async def test_stepper_inside_a_task_does_not_run_inline() -> None:
    done, rest, _ = Stepper(asyncio.get_running_loop()).step(_value(5))
    assert not done
    assert await _await(rest) == 5


async def test_stepper_hands_on_a_finished_calls_handle_only_when_nothing_kept_it() -> None:
    loop = asyncio.get_running_loop()
    stepper = Stepper(loop)
    kept: list[Any] = []
    seen: list[tuple[Any, int]] = []

    async def keeps() -> int:
        kept.append(asyncio.current_task())
        return 1

    async def cancels_itself() -> int:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # counted on the handle; the call finishes before it could apply
        return 2

    async def looks() -> int:
        task = asyncio.current_task()
        assert task is not None
        seen.append((task, task.cancelling()))
        return 3

    _, _, first = await _in_callback(stepper.step, _value(1))
    _, _, second = await _in_callback(stepper.step, _value(1))
    assert second is first  # nothing kept it: handed on
    _, _, third = await _in_callback(stepper.step, keeps())
    _, _, fourth = await _in_callback(stepper.step, _value(1))
    assert kept == [third]  # the handler kept its handle: not handed on
    assert fourth is not third
    _, _, fifth = await _in_callback(stepper.step, cancels_itself())
    await _in_callback(stepper.step, looks())
    assert seen[0][0] is not fifth  # a new call never sees an earlier call's cancel
    assert seen[0][1] == 0
