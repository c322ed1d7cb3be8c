"""A message kept as its wire bytes: for proxies, pre-encoded payloads and benchmarks."""

from __future__ import annotations

__all__ = ["RawMessage"]


class RawMessage:
    """Bytes that go on the wire as they are, in either direction.

    Use it as a request or response type when the payload is encoded or decoded by hand
    (a hot path that must not pay for a generic protobuf codec), or passed through.

    Example:
        >>> reply = await client.call("svc.v1.S", "Get", RawMessage(b"\\x0a\\x02c1"), RawMessage)
        >>> reply.data
        b''
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes = b"") -> None:
        self.data = data

    def SerializeToString(self) -> bytes:
        return self.data

    @classmethod
    def FromString(cls, data: bytes) -> RawMessage:
        # bytes(): the server may hand over a view of its receive buffer, which it reuses.
        return cls(bytes(data))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawMessage) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"RawMessage({self.data!r})"
