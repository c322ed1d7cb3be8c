"""Native asyncio ttrpc, byte-compatible with containerd's Go implementation.

The public names load on first use (PEP 562), so a program that needs only the error
vocabulary (a shim's ``start``/``delete`` path, which must finish in tens of
milliseconds) does not pay for importing asyncio.

Example:
    >>> import ttrpc
    >>> ttrpc.Code.NOT_FOUND
    <Code.NOT_FOUND: 5>
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing alone costs ~20 ms on the start path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ttrpc._client import Client, ClientInterceptor
    from ttrpc._context import CallContext
    from ttrpc._errors import ClosedError, Code, ProtocolError, TtrpcError
    from ttrpc._loop import run
    from ttrpc._metadata import Metadata
    from ttrpc._peercred import PeerCredentials
    from ttrpc._raw import RawMessage
    from ttrpc._server import Server, ServerInterceptor
    from ttrpc._service import Message, MethodKind, MethodSpec, Service, rpc
    from ttrpc._stream import ClientStream

_EXPORTS = {
    "CallContext": "ttrpc._context",
    "Client": "ttrpc._client",
    "ClientInterceptor": "ttrpc._client",
    "ClientStream": "ttrpc._stream",
    "ClosedError": "ttrpc._errors",
    "Code": "ttrpc._errors",
    "Message": "ttrpc._service",
    "Metadata": "ttrpc._metadata",
    "MethodKind": "ttrpc._service",
    "MethodSpec": "ttrpc._service",
    "PeerCredentials": "ttrpc._peercred",
    "RawMessage": "ttrpc._raw",
    "ProtocolError": "ttrpc._errors",
    "Server": "ttrpc._server",
    "ServerInterceptor": "ttrpc._server",
    "Service": "ttrpc._service",
    "TtrpcError": "ttrpc._errors",
    "rpc": "ttrpc._service",
    "run": "ttrpc._loop",
}

__all__ = [
    "CallContext",
    "Client",
    "ClientInterceptor",
    "ClientStream",
    "ClosedError",
    "Code",
    "Message",
    "Metadata",
    "MethodKind",
    "MethodSpec",
    "PeerCredentials",
    "ProtocolError",
    "RawMessage",
    "Server",
    "ServerInterceptor",
    "Service",
    "TtrpcError",
    "rpc",
    "run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ttrpc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
