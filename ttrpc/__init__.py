"""Native asyncio ttrpc, byte-compatible with containerd's Go implementation."""

from ttrpc._client import Client, ClientInterceptor
from ttrpc._context import CallContext
from ttrpc._errors import ClosedError, Code, ProtocolError, TtrpcError
from ttrpc._loop import run
from ttrpc._metadata import Metadata
from ttrpc._peercred import PeerCredentials
from ttrpc._server import Server, ServerInterceptor
from ttrpc._service import Message, MethodKind, MethodSpec, Service, rpc
from ttrpc._stream import ClientStream

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
    "Server",
    "ServerInterceptor",
    "Service",
    "TtrpcError",
    "rpc",
    "run",
]
