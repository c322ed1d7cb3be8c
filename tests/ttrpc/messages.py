"""Hand-declared betterproto2 messages for the ttrpc tests (what protoc would generate).

``TestPayload`` is the Go suite's test message; ``EchoPayload``/``Part``/``Sum`` are from
its streaming integration test; ``EchoRequest``/``EchoResponse`` mirror the example service.
"""

# betterproto2 declares fields as dataclass defaults by design (as its generated code does).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

import betterproto2

__all__ = ["EchoPayload", "EchoRequest", "EchoResponse", "Empty", "Part", "Sum", "TestPayload"]


@dataclass(eq=False, repr=False)
class TestPayload(betterproto2.Message):
    """Go's ``internal.TestPayload``: foo doubled, deadline as UnixNano, one metadata value."""

    __test__ = False  # not a pytest test class

    foo: str = betterproto2.field(1, betterproto2.TYPE_STRING)
    deadline: int = betterproto2.field(2, betterproto2.TYPE_INT64)
    metadata: str = betterproto2.field(3, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class EchoRequest(betterproto2.Message):
    payload: bytes = betterproto2.field(1, betterproto2.TYPE_BYTES)
    seq: int = betterproto2.field(2, betterproto2.TYPE_UINT32)


@dataclass(eq=False, repr=False)
class EchoResponse(betterproto2.Message):
    payload: bytes = betterproto2.field(1, betterproto2.TYPE_BYTES)
    seq: int = betterproto2.field(2, betterproto2.TYPE_UINT32)
    metadata: list[str] = betterproto2.field(3, betterproto2.TYPE_STRING, repeated=True)


@dataclass(eq=False, repr=False)
class EchoPayload(betterproto2.Message):
    seq: int = betterproto2.field(1, betterproto2.TYPE_UINT32)
    msg: str = betterproto2.field(2, betterproto2.TYPE_STRING)


@dataclass(eq=False, repr=False)
class Part(betterproto2.Message):
    add: int = betterproto2.field(1, betterproto2.TYPE_INT32)


@dataclass(eq=False, repr=False)
class Sum(betterproto2.Message):
    sum: int = betterproto2.field(1, betterproto2.TYPE_INT32)
    num: int = betterproto2.field(2, betterproto2.TYPE_INT32)


@dataclass(eq=False, repr=False)
class Empty(betterproto2.Message):
    """``google.protobuf.Empty``."""
