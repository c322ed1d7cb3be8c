"""Service tables are built from type hints at class creation; errors map to codes once."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from dataclasses import dataclass

import betterproto2
import pytest

from ttrpc import Code, MethodKind, Service, TtrpcError, rpc
from ttrpc._errors import ClosedError, status_from_exception


@dataclass(eq=False, repr=False)
class Ping(betterproto2.Message):
    seq: int = betterproto2.field(1, betterproto2.TYPE_UINT32)


class PingBase(Service):
    service_name = "test.v1.Ping"

    @rpc
    async def ping(self, request: Ping, context: object) -> Ping:
        raise TtrpcError(Code.UNIMPLEMENTED, "method Ping")

    @rpc(name="CloseIO")
    async def close_io(self, requests: AsyncIterator[Ping], context: object) -> Ping:
        raise TtrpcError(Code.UNIMPLEMENTED, "method CloseIO")

    @rpc
    async def count(self, request: Ping, context: object) -> AsyncIterator[Ping]:
        yield request

    @rpc
    async def echo_stream(
        self, requests: AsyncIterator[Ping], context: object
    ) -> AsyncIterator[Ping]:
        async for r in requests:
            yield r


class PingImpl(PingBase):
    async def ping(self, request: Ping, context: object) -> Ping:
        return Ping(seq=request.seq + 1)


def test_table_has_wire_names_kinds_and_types() -> None:
    table = PingImpl.ttrpc_methods()
    assert set(table) == {"Ping", "CloseIO", "Count", "EchoStream"}
    assert table["Ping"].kind is MethodKind.UNARY
    assert table["CloseIO"].kind is MethodKind.CLIENT_STREAM
    assert table["Count"].kind is MethodKind.SERVER_STREAM
    assert table["EchoStream"].kind is MethodKind.BIDI_STREAM
    assert table["CloseIO"].attribute == "close_io"
    assert table["Ping"].request_type is Ping
    assert table["Ping"].response_type is Ping


def test_override_without_decorator_keeps_spec_and_dispatches_to_override() -> None:
    spec = PingImpl.ttrpc_methods()["Ping"]
    handler = getattr(PingImpl(), spec.attribute)
    assert asyncio.run(handler(Ping(seq=1), None)).seq == 2


def test_kind_flags() -> None:
    assert MethodKind.BIDI_STREAM.client_streams
    assert MethodKind.BIDI_STREAM.server_streams
    assert not MethodKind.UNARY.client_streams
    assert not MethodKind.UNARY.server_streams
    assert MethodKind.SERVER_STREAM.server_streams
    assert not MethodKind.SERVER_STREAM.client_streams


def test_non_message_type_is_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="not a message"):

        class Bad(Service):
            @rpc
            async def m(self, request: int, context: object) -> Ping:
                raise NotImplementedError


def test_missing_hints_are_refused() -> None:
    with pytest.raises(TypeError, match="type hints"):

        class Bad(Service):
            @rpc
            async def m(self, request, context):  # type: ignore[no-untyped-def]
                raise NotImplementedError


def test_invalid_service_name_is_refused() -> None:
    with pytest.raises(TypeError, match="invalid service_name"):

        class Bad(Service):
            service_name = "not a name"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (TtrpcError(Code.NOT_FOUND, "x"), Code.NOT_FOUND),
        (TimeoutError(), Code.DEADLINE_EXCEEDED),
        (asyncio.CancelledError(), Code.CANCELLED),
        (EOFError(), Code.OUT_OF_RANGE),
        (NotImplementedError(), Code.UNIMPLEMENTED),
        (FileNotFoundError(errno.ENOENT, "gone"), Code.NOT_FOUND),
        (FileExistsError(errno.EEXIST, "there"), Code.ALREADY_EXISTS),
        (PermissionError(errno.EACCES, "no"), Code.PERMISSION_DENIED),
        (ValueError("boom"), Code.UNKNOWN),
    ],
)
def test_status_from_exception(exc: BaseException, code: Code) -> None:
    assert status_from_exception(exc)[0] is code


def test_unknown_code_number_becomes_unknown_and_message_kept() -> None:
    err = TtrpcError(99, "odd")
    assert err.code is Code.UNKNOWN
    assert str(TtrpcError(Code.NOT_FOUND, "c1")) == "NOT_FOUND: c1"
    assert status_from_exception(ValueError("boom")) == (Code.UNKNOWN, "boom")
    assert ClosedError().message == "ttrpc: closed"
