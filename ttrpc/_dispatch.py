"""``ServerConnection``: one accepted connection of a :class:`ttrpc.Server`, and its dispatch.

A unary handler first runs inline, inside the read callback (see :mod:`ttrpc._eager`): most
finish there and their reply is written with the read's other replies; one that suspends
continues in its own Task, with its deadline as a single loop timer. Streaming calls get a
Task each. Replies go out in completion order. Dispatch reads only the method tables built
at :meth:`ttrpc.Server.register` (:class:`_Method`); nothing is looked up by reflection per
call. A read holding exactly one request (one call in flight, the common case) skips the
event list: :meth:`ttrpc._connection.Connection.receive_request`.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from ttrpc._connection import DataReceived, Event, RequestReceived, Role, StreamReset
from ttrpc._context import CallContext, server_context
from ttrpc._eager import EagerHandle, Resume, Stepper
from ttrpc._envelope import Request
from ttrpc._errors import Code, TtrpcError, status_from_exception
from ttrpc._peercred import PeerCredentials, peer_credentials
from ttrpc._protocol import FrameProtocol, logger
from ttrpc._service import MethodKind, MethodSpec
from ttrpc._stream import STREAM_FULL, Inbox, RequestStream
from ttrpc._wire import FLAG_REMOTE_OPEN

if TYPE_CHECKING:
    from ttrpc._server import Server

__all__ = ["CallNext", "ServerConnection", "ServerInterceptor"]

CallNext = Callable[[CallContext, Any], Awaitable[Any]]
ServerInterceptor = Callable[[CallContext, Any, CallNext], Awaitable[Any]]
"""``async def i(context, request, call_next) -> response``; ``call_next(context, request)``
runs the next interceptor or the handler. Applies to unary methods."""

_copy_context = contextvars.copy_context  # per call: one global lookup, not two
_DEADLINE = "context deadline exceeded"
_UNARY = MethodKind.UNARY
# Marks "the handler raised CancelledError on its own" (answered Cancelled).
_CANCELLED = asyncio.CancelledError()


async def _as_coroutine(aw: Awaitable[Any]) -> Any:
    return await aw


def _expire(handle: EagerHandle, expired: list[bool]) -> None:
    """A suspended unary call's deadline passed: cancel its task, remember why."""
    task = handle.task
    if task is not None and not task.done():
        expired[0] = True
        task.cancel()


class _Method:
    """One dispatch-table entry: spec, bound handler, and the unary call chain."""

    __slots__ = ("call", "decode", "direct", "handler", "kind", "request_type", "spec")

    def __init__(
        self,
        spec: MethodSpec,
        handler: Callable[..., Any],
        interceptors: Sequence[ServerInterceptor],
    ) -> None:
        self.spec = spec
        self.kind = spec.kind
        self.request_type = spec.request_type
        self.decode: Callable[[bytes], Any] = spec.request_type.FromString  # bound once
        self.handler = handler

        async def final(ctx: CallContext, request: Any) -> Any:
            return await handler(request, ctx)

        call: CallNext = final
        for interceptor in reversed(interceptors):
            call = _link(interceptor, call)
        self.call = call
        # Without interceptors the handler is called directly (one coroutine less per call).
        self.direct: Callable[..., Any] | None = None if interceptors else handler


def _link(interceptor: ServerInterceptor, nxt: CallNext) -> CallNext:
    def step(ctx: CallContext, request: Any) -> Awaitable[Any]:
        return interceptor(ctx, request, nxt)

    return step


class ServerConnection(FrameProtocol):
    """One accepted connection: dispatches requests, tracks its in-flight handlers."""

    def __init__(self, server: Server) -> None:
        super().__init__(Role.SERVER)
        self.server = server
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.inboxes: dict[int, Inbox] = {}
        self.peer: PeerCredentials | None = None
        self.closing = False
        self._loop = asyncio.get_running_loop()
        self._held = 0  # request bytes counted in server._limits
        self._running: dict[int, int] = {}  # payload sizes of requests whose handler runs
        self._step = Stepper(self._loop).step

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        server = self.server
        sock = transport.get_extra_info("socket")
        try:
            self.peer = peer_credentials(sock) if sock is not None else None
        except OSError:
            self.peer = None
        check = server._peer_check
        if check is not None and (self.peer is None or not check(self.peer)):
            logger.warning("ttrpc: rejected connection from %s: invalid credentials", self.peer)
            self.is_closed = True
            transport.close()
            return
        if not server._limits.admits(len(server._connections)):
            line = server._limits.rejected()
            if line is not None:
                logger.warning("%s", line)
            self.is_closed = True
            transport.close()
            return
        server._connections.add(self)
        if server._closing:
            self.begin_close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for task in self.tasks.values():
            task.cancel()
        for inbox in self.inboxes.values():
            inbox.end(EOFError())
        self.inboxes.clear()
        self.server._limits.forget(self)
        self.server._connection_gone(self)

    def buffer_updated(self, nbytes: int) -> None:
        # The common read first: one whole request, dispatched without an event list. Its
        # reply is written at once (one request, one write, as the batch would do).
        accepted = (
            None if self.is_closed else self.core.receive_request(self._buffer, self._view, nbytes)
        )
        if accepted is not None:
            sid, flags, request = accepted
            service = self.server._services.get(request.service)
            method = service.get(request.method) if service is not None else None
            try:
                if method is not None and method.kind is _UNARY:
                    self._unary(sid, method, request)
                else:
                    self._request(sid, flags, request)
            except Exception:
                # A bug of ours, not the peer's: drop this connection, keep the process.
                logger.exception("ttrpc: internal error handling a request; closing connection")
                self.abort()
                return
            # Most requests are answered inline, and this path buffers no partial frame:
            # then nothing is held, and there is nothing to account.
            if self._held or self._running or self.inboxes:
                self._account()
            return
        super().buffer_updated(nbytes)
        self._account()

    def _account(self) -> None:
        partial = self.core.buffered_bytes
        running = sum(self._running.values()) if self._running else 0
        if self.inboxes:  # streamed messages not yet taken by their handlers
            running += sum(inbox.nbytes for inbox in self.inboxes.values())
        if partial + running != self._held:
            self._held = partial + running
            if not self.is_closed:
                self.server._limits.hold(self, partial, running)

    def pause_writing(self) -> None:
        # The peer reads slower than we answer: stop taking new requests until it catches
        # up, so buffered replies stay bounded. (Only the server does this: a client must
        # keep reading or both ends could wait on each other.)
        super().pause_writing()
        self.pause_reading("write")

    def resume_writing(self) -> None:
        super().resume_writing()
        self.resume_reading("write")

    def begin_close(self) -> None:
        """Close now if idle, else as soon as the last in-flight call has replied."""
        self.closing = True
        if not self.tasks:
            self.close()

    # --- dispatch ---------------------------------------------------------------------

    def events_received(self, events: list[Event]) -> None:
        if self.is_closed:
            return  # rejected at connect, or already gone: nothing more is served
        services = self.server._services
        for event in events:
            if type(event) is RequestReceived:
                request = event.request
                # The common case first, without the general dispatch's extra calls.
                service = services.get(request.service)
                method = service.get(request.method) if service is not None else None
                if method is not None and method.kind is _UNARY:
                    self._unary(event.stream_id, method, request)
                else:
                    self._request(event.stream_id, event.flags, request)
            elif type(event) is DataReceived:
                inbox = self.inboxes.get(event.stream_id)
                if inbox is not None:
                    if event.data is not None:
                        inbox.put(event.data)
                    if event.end:
                        inbox.end()
            elif type(event) is StreamReset:
                self._reset(event.stream_id)

    def _reset(self, sid: int) -> None:
        task = self.tasks.get(sid)
        if task is not None:
            task.cancel()
        inbox = self.inboxes.pop(sid, None)
        if inbox is not None:
            inbox.end(EOFError())

    def _request(self, sid: int, flags: int, request: Request) -> None:
        service = self.server._services.get(request.service)
        if service is None:
            self._reply_error(sid, Code.UNIMPLEMENTED, f"service {request.service}")
            return
        method = service.get(request.method)
        if method is None:
            self._reply_error(sid, Code.UNIMPLEMENTED, f"method {request.method}")
            return
        if method.kind is MethodKind.UNARY:
            self._unary(sid, method, request)
            return
        inbox = None
        if method.kind.client_streams:
            # Registered now, not when the task starts: Data may be in this very chunk.
            inbox = Inbox(self, sid, lambda: self._stream_full(sid), self._account)
            self.inboxes[sid] = inbox
            # Go's rule (ttrpc #126): the Request payload is a first message only when
            # non-empty, for client-streaming methods.
            if request.payload:
                inbox.put(request.payload)
            if not flags & FLAG_REMOTE_OPEN:
                inbox.end()
        coro = self._streaming(sid, inbox, method, request)
        self.tasks[sid] = self._loop.create_task(coro)
        self._running[sid] = len(request.payload)

    def _reply_error(self, sid: int, code: Code, message: str) -> None:
        self.write(self.core.send_response(sid, b"", code, message))

    def _context(self, request: Request) -> CallContext:
        deadline = None
        if request.timeout_nano:
            deadline = time.monotonic() + request.timeout_nano / 1e9
        return server_context(
            request.service, request.method, request.metadata, deadline, self.peer
        )

    def _finished(self, sid: int) -> None:
        self.tasks.pop(sid, None)
        self.inboxes.pop(sid, None)
        if self._running.pop(sid, None) is not None:
            self._account()
        if self.closing and not self.tasks:
            self.close()

    def _unary(self, sid: int, method: _Method, request: Request) -> None:
        """Run a unary call: inline while its handler does not suspend, else in a Task."""
        timeout = request.timeout_nano
        ctx = server_context(
            request.service,
            request.method,
            request.metadata,
            time.monotonic() + timeout / 1e9 if timeout else None,
            self.peer,
        )
        try:
            msg = method.decode(request.payload)
        except Exception as exc:
            ctx._finish()
            self._reply_error(sid, Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}")
            return
        if timeout < 0:
            # An already expired deadline: Go hands the handler a done context.
            ctx._finish()
            self._reply_error(sid, Code.DEADLINE_EXCEEDED, _DEADLINE)
            return
        handler = method.direct
        coro: Any = handler(msg, ctx) if handler is not None else method.call(ctx, msg)
        if type(coro) is not CoroutineType:
            coro = _as_coroutine(coro)  # any other awaitable an interceptor may return
        cctx = _copy_context()
        try:
            # The handler's context variables stay its own, as in a Task.
            done, value, handle = cctx.run(self._step, coro)
        except Exception as exc:
            self._eager_reply(sid, ctx, None, exc)
            return
        except asyncio.CancelledError:
            self._eager_reply(sid, ctx, None, _CANCELLED)
            return
        if done:
            if value is not None and not self._write_paused:
                # The common case inline: a result, written now (batched per read).
                try:
                    data = self.core.send_response(sid, value.SerializeToString())
                except Exception:
                    pass  # the general path below turns it into the right status
                else:
                    self.write(data)
                    if ctx._waiter is None:
                        ctx._ended = True
                    else:
                        ctx._finish()
                    if self.closing and not self.tasks:
                        self.close()
                    return
            self._eager_reply(sid, ctx, value, None)
            return
        # The Task's first step must reach the handler (a cancel before it starts included),
        # so the rest of the call is primed up to the handler's pending await, and the Task
        # resumes it from there.
        rest = self._unary_rest(sid, ctx, handle, value)
        try:
            awaited = cctx.run(rest.send, None)
        except StopIteration:
            # Only when step could not run inline (fed from inside a task): the handler ran
            # here instead and finished without suspending; _unary_rest has replied.
            return
        task: asyncio.Task[None] = self._loop.create_task(Resume(rest, awaited), context=cctx)
        handle.adopt(task)
        self.tasks[sid] = task
        self._running[sid] = len(request.payload)

    def _eager_reply(
        self, sid: int, ctx: CallContext, result: Any, error: BaseException | None
    ) -> None:
        if not self.write_paused:
            self._unary_reply(sid, ctx, result, error)
            return
        # The peer reads slower than we answer: the reply waits for the buffer to drain,
        # as in a Task, so buffered replies stay bounded.
        self.tasks[sid] = self._loop.create_task(self._reply_drained(sid, ctx, result, error))

    async def _reply_drained(
        self, sid: int, ctx: CallContext, result: Any, error: BaseException | None
    ) -> None:
        try:
            while self.write_paused and not self.is_closed:
                await self.drain()
            self._unary_reply(sid, ctx, result, error, finished=False)
        finally:
            ctx._finish()
            self._finished(sid)

    async def _unary_rest(
        self, sid: int, ctx: CallContext, handle: EagerHandle, rest: Resume
    ) -> None:
        """The part of a unary call after its handler first suspended (inside its Task)."""
        timer = None
        expired = [False]
        if ctx.deadline is not None:
            # One timer per suspended call, cancelled when it ends: no asyncio.timeout()
            # context per call (measured 35-60 us).
            delay = ctx.deadline - time.monotonic()
            timer = self._loop.call_later(delay, _expire, handle, expired)
        try:
            result: Any = None
            error: BaseException | None = None
            try:
                result = await rest
            except asyncio.CancelledError:
                task = handle.task
                assert task is not None
                if expired[0]:
                    if task.uncancel() > 0:
                        raise  # also cancelled by us (connection gone, server closing)
                    error = TtrpcError(Code.DEADLINE_EXCEEDED, _DEADLINE)
                elif task.cancelling() > 0:
                    raise
                else:
                    error = _CANCELLED
            except Exception as exc:
                error = exc
            else:
                if expired[0] and handle.task is not None:
                    handle.task.uncancel()  # the handler swallowed the deadline's cancel
            if timer is not None:
                timer.cancel()
                timer = None
            while self.write_paused and not self.is_closed:
                await self.drain()
            self._unary_reply(sid, ctx, result, error, finished=False)
        finally:
            if timer is not None:
                timer.cancel()
            ctx._finish()
            self._finished(sid)

    def _unary_reply(
        self,
        sid: int,
        ctx: CallContext,
        result: Any,
        error: BaseException | None,
        *,
        finished: bool = True,
    ) -> None:
        """Send a unary call's Response (its result, or the status of ``error``)."""
        code: int = 0
        message = ""
        payload = b""
        if error is None:
            if result is None:
                code, message = Code.UNKNOWN, "ttrpc: marshal called with nil"
            else:
                try:
                    payload = result.SerializeToString()
                except Exception as exc:
                    code, message = self._status(exc, ctx)
        elif error is _CANCELLED:
            code, message = Code.CANCELLED, "context canceled"
        else:
            assert isinstance(error, Exception)
            code, message = self._status(error, ctx)
        self._send_final(sid, payload, code, message)
        if finished:
            ctx._finish()
            if self.closing and not self.tasks:
                self.close()

    async def _with_deadline(self, aw: Awaitable[Any], timeout_nano: int) -> Any:
        if timeout_nano < 0:
            # An already expired deadline: Go hands the handler a done context.
            if asyncio.iscoroutine(aw):
                aw.close()
            raise TtrpcError(Code.DEADLINE_EXCEEDED, _DEADLINE)
        try:
            async with asyncio.timeout(timeout_nano / 1e9):
                return await aw
        except TimeoutError:
            raise TtrpcError(Code.DEADLINE_EXCEEDED, _DEADLINE) from None

    @staticmethod
    def _cancelled_by_us() -> bool:
        task = asyncio.current_task()
        return task is not None and task.cancelling() > 0

    @staticmethod
    def _status(exc: Exception, ctx: CallContext) -> tuple[Code, str]:
        if not isinstance(exc, TtrpcError):
            logger.error("ttrpc: %s failed", ctx.full_method, exc_info=exc)
        return status_from_exception(exc)

    def _send_final(self, sid: int, payload: bytes, code: int, message: str) -> None:
        try:
            data = self.core.send_response(sid, payload, code, message)
        except TtrpcError as exc:
            # Never send a frame over the limit: containerd 1.6's client panics on one.
            logger.error("ttrpc: response on stream %d too large: %s", sid, exc.message)
            data = self.core.send_response(sid, b"", exc.code, exc.message)
        self.write(data)

    async def _streaming(
        self, sid: int, inbox: Inbox | None, method: _Method, request: Request
    ) -> None:
        ctx = self._context(request)
        kind = method.kind
        try:
            code: int = 0
            message = ""
            payload = b""
            try:
                if inbox is not None:
                    arg: Any = RequestStream(inbox, method.request_type)
                else:
                    try:
                        arg = method.request_type.FromString(request.payload)
                    except Exception as exc:
                        raise TtrpcError(
                            Code.INTERNAL, f"ttrpc: error unmarshalling payload: {exc}"
                        ) from exc
                run = self._run_stream(sid, method, arg, ctx)
                if request.timeout_nano:
                    payload = await self._with_deadline(run, request.timeout_nano)
                else:
                    payload = await run
            except asyncio.CancelledError:
                if self._cancelled_by_us():
                    raise
                code, message = Code.CANCELLED, "context canceled"
            except Exception as exc:
                code, message = self._status(exc, ctx)
            if not self.core.is_open(sid):
                return  # already answered (reset, stream buffer full)
            while self.write_paused and not self.is_closed:
                await self.drain()
            if code or not kind.server_streams:
                self._send_final(sid, payload, code, message)
            else:
                self.write(self.core.send_close(sid))
        finally:
            ctx._finish()
            if inbox is not None:
                inbox.end(EOFError())
            self._finished(sid)

    async def _run_stream(self, sid: int, method: _Method, arg: Any, ctx: CallContext) -> bytes:
        if not method.kind.server_streams:
            result = await method.handler(arg, ctx)
            if result is None:
                raise TtrpcError(Code.UNKNOWN, "ttrpc: marshal called with nil")
            return result.SerializeToString()  # type: ignore[no-any-return]
        agen = method.handler(arg, ctx)
        if inspect.iscoroutine(agen):
            # ``async def`` returning an async iterator (or raising) rather than yielding
            agen = await agen
        try:
            async for item in agen:
                data = self.core.send_data(sid, item.SerializeToString())
                while self.write_paused and not self.is_closed:
                    await self.drain()
                self.write(data)
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()
        return b""

    def _stream_full(self, sid: int) -> None:
        logger.warning("ttrpc: stream %d not consumed by its handler; closing it", sid)
        if self.core.is_open(sid):
            self._reply_error(sid, Code.RESOURCE_EXHAUSTED, STREAM_FULL)
        task = self.tasks.get(sid)
        if task is not None:
            task.cancel()
