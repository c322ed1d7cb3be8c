"""Native asyncio ttrpc, byte-compatible with containerd's Go implementation."""

from ttrpc._errors import ClosedError, Code, ProtocolError, TtrpcError
from ttrpc._service import Message, MethodKind, MethodSpec, Service, rpc

__all__ = [
    "ClosedError",
    "Code",
    "Message",
    "MethodKind",
    "MethodSpec",
    "ProtocolError",
    "Service",
    "TtrpcError",
    "rpc",
]
