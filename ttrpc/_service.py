"""How a ttrpc service is described: a class of typed ``async def`` methods.

Theory of operation: every RPC method is marked with :func:`rpc`. When a subclass of
:class:`Service` is created, ``__init_subclass__`` walks the MRO and builds one table,
wire method name -> :class:`MethodSpec`, from the methods' type hints. A subclass that
overrides a method without the decorator keeps the base class's spec (that is how a
hand-written implementation of a generated base class works). The server reads only this
table; it never inspects a handler at call time.

Handler shapes, by kind (``Req``/``Resp`` are message classes):

* unary:          ``async def m(self, request: Req, context: CallContext) -> Resp``
* client stream:  ``async def m(self, requests: AsyncIterator[Req], context: CallContext) -> Resp``
* server stream:  ``async def m(self, request: Req, context: CallContext) -> AsyncIterator[Resp]``
  (an async generator)
* bidi stream:    ``async def m(self, requests: AsyncIterator[Req], context: CallContext)
  -> AsyncIterator[Resp]``
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

__all__ = ["Message", "MethodKind", "MethodSpec", "Service", "rpc"]


@runtime_checkable
class Message(Protocol):
    """Anything ttrpc can carry: betterproto2 messages and official protobuf messages both fit."""

    def SerializeToString(self) -> bytes: ...

    @classmethod
    def FromString(cls, data: bytes, /) -> Any: ...


class MethodKind(enum.Enum):
    """Which side streams. Decided by registration, never by Request flags (as in Go)."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"

    @property
    def client_streams(self) -> bool:
        return self in (MethodKind.CLIENT_STREAM, MethodKind.BIDI_STREAM)

    @property
    def server_streams(self) -> bool:
        return self in (MethodKind.SERVER_STREAM, MethodKind.BIDI_STREAM)


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """One RPC of a service: wire name, Python attribute, kind and message types."""

    name: str
    attribute: str
    kind: MethodKind
    request_type: type[Any]
    response_type: type[Any]


_F = TypeVar("_F", bound=Callable[..., Any])
_RPC_ATTR = "__ttrpc_rpc__"


@typing.overload
def rpc(func: _F, /) -> _F: ...
@typing.overload
def rpc(*, name: str | None = None) -> Callable[[_F], _F]: ...
def rpc(func: _F | None = None, /, *, name: str | None = None) -> _F | Callable[[_F], _F]:
    """Mark an ``async def`` method of a :class:`Service` as an RPC.

    The wire name defaults to the method name in CamelCase (``echo_stream`` -> ``EchoStream``);
    pass ``name=`` where the proto spelling differs (``CloseIO``).

    Example:
        >>> class Greeter(Service):
        ...     service_name = "example.v1.Greeter"
        ...     @rpc
        ...     async def say_hello(self, request: Hello, context: CallContext) -> Hello:
        ...         return request
    """

    def mark(f: _F) -> _F:
        setattr(f, _RPC_ATTR, name or _camel(f.__name__))
        return f

    return mark(func) if func is not None else mark


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


_ASYNC_ITER_ORIGINS = (
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def _stream_item(hint: Any) -> Any | None:
    """``AsyncIterator[X]`` (or Iterable/Generator) -> X; anything else -> None."""
    if typing.get_origin(hint) in _ASYNC_ITER_ORIGINS:
        return typing.get_args(hint)[0]
    return None


def _spec_for(cls: type, attribute: str, func: Callable[..., Any], wire_name: str) -> MethodSpec:
    hints = typing.get_type_hints(func)
    params = [p for p in inspect.signature(func).parameters.values() if p.name != "self"]
    if len(params) != 2 or "return" not in hints or params[0].name not in hints:
        raise TypeError(
            f"{cls.__qualname__}.{attribute}: an rpc takes (request, context) and has type hints "
            "for the request and the return value"
        )
    req_hint, resp_hint = hints[params[0].name], hints["return"]
    req_item, resp_item = _stream_item(req_hint), _stream_item(resp_hint)
    kind = {
        (False, False): MethodKind.UNARY,
        (True, False): MethodKind.CLIENT_STREAM,
        (False, True): MethodKind.SERVER_STREAM,
        (True, True): MethodKind.BIDI_STREAM,
    }[(req_item is not None, resp_item is not None)]
    request_type = req_item if req_item is not None else req_hint
    response_type = resp_item if resp_item is not None else resp_hint
    for what, t in (("request", request_type), ("response", response_type)):
        if not (
            isinstance(t, type) and hasattr(t, "FromString") and hasattr(t, "SerializeToString")
        ):
            raise TypeError(f"{cls.__qualname__}.{attribute}: {what} type {t!r} is not a message")
    return MethodSpec(wire_name, attribute, kind, request_type, response_type)


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class Service:
    """Base class of a ttrpc service implementation.

    Set ``service_name`` to the fully-qualified proto name and mark methods with :func:`rpc`.
    Register an instance with ``Server.register``.

    Example:
        >>> class Echo(Service):
        ...     service_name = "ttrpc.example.v1.Example"
        ...     @rpc
        ...     async def echo(self, request: EchoRequest, context: CallContext) -> EchoResponse:
        ...         return EchoResponse(payload=request.payload, seq=request.seq)
    """

    service_name: ClassVar[str] = ""
    __ttrpc_methods__: ClassVar[dict[str, MethodSpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table: dict[str, MethodSpec] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                wire = getattr(value, _RPC_ATTR, None)
                if wire is None:
                    continue
                table[wire] = _spec_for(klass, attribute, value, wire)
        cls.__ttrpc_methods__ = table
        if cls.service_name and not _NAME_RE.match(cls.service_name):
            raise TypeError(f"{cls.__qualname__}: invalid service_name {cls.service_name!r}")

    @classmethod
    def ttrpc_methods(cls) -> dict[str, MethodSpec]:
        """The wire method name -> :class:`MethodSpec` table of this service."""
        return cls.__ttrpc_methods__
