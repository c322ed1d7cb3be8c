"""Runtime of the generated per-message codecs: wire primitives, install, the reference.

``python -m ttrpc.codegen.codecs`` appends to every betterproto2 module a ``parse`` and a
``__bytes__`` per message class (source, no ``exec``); they call the helpers here. Both follow
betterproto2 0.10's own encoder and decoder exactly (same bytes, same decoded values); any input
the generated decoder does not take on its fast path (a wrong wire type, truncation, an
over-long varint, a subclass) is handed to betterproto2's own decoder, so bad input gives
betterproto2's result or exception. :func:`reference_codecs` switches the generated codecs off,
for tests and benchmarks that compare against betterproto2.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import betterproto2

__all__ = [
    "F32",
    "F64",
    "I32",
    "I64",
    "MISSING",
    "U16",
    "U32",
    "U64",
    "VARINT1",
    "Fallback",
    "decode_varint",
    "encode_varint",
    "install",
    "installed",
    "original_init",
    "reference_bytes",
    "reference_codecs",
    "reference_parse",
    "skip_field",
]

M = TypeVar("M", bound=betterproto2.Message)

VARINT1: tuple[bytes, ...] = tuple(bytes((i,)) for i in range(128))
"""The one-byte varints, ``VARINT1[n]`` for ``0 <= n < 128``."""

# A two-byte varint n (128 <= n < 16384) is U16.pack(n + 0x80 + (n >> 7 << 7)): the low
# seven bits with the continuation bit, then the rest, as one little-endian short.
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
I32 = struct.Struct("<i")
F32 = struct.Struct("<f")
U64 = struct.Struct("<Q")
I64 = struct.Struct("<q")
F64 = struct.Struct("<d")

_MIN_INT64 = -(1 << 63)
_TWO64 = 1 << 64


class Fallback(Exception):
    """Raised inside a generated decoder: this input goes to betterproto2's own decoder."""


def encode_varint(value: int) -> bytes:
    """A varint as betterproto2 writes it: negatives as 10-byte two's complement."""
    if 0 <= value < 128:
        return VARINT1[value]
    if value < _MIN_INT64:
        raise ValueError(
            "Negative value is not representable as a 64-bit integer - unable to encode a "
            "varint within 10 bytes."
        )
    if value < 0:
        value += _TWO64
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """``(value, next position)``; at most 10 bytes and not masked, as betterproto2 reads.

    Raises ``IndexError`` when the data ends inside the varint and ``ValueError`` when it is
    longer than 10 bytes (the generated decoder then defers to betterproto2).
    """
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise ValueError("Too many bytes when decoding varint.")


def skip_field(data: bytes, pos: int, key: int) -> int:
    """The position after the value of an unknown field whose key (already read) is ``key``."""
    wire_type = key & 7
    if wire_type == 0:
        _, pos = decode_varint(data, pos)
    elif wire_type == 2:
        length, pos = decode_varint(data, pos)
        pos += length
    elif wire_type == 1:
        pos += 8
    elif wire_type == 5:
        pos += 4
    else:
        raise Fallback  # groups and invalid wire types: betterproto2's own handling
    if pos > len(data):
        raise Fallback
    return pos


_PARSE: Callable[..., Any] = betterproto2.Message.__dict__["parse"].__func__
# (class, what install set on it, what the class itself held before under those names)
_INSTALLED: list[tuple[type[betterproto2.Message], dict[str, Any], dict[str, Any]]] = []


def reference_parse(cls: type[M], data: bytes) -> M:
    """betterproto2's own ``Message.parse`` for ``cls``."""
    result: M = _PARSE(cls, data)
    return result


def reference_bytes(message: betterproto2.Message) -> bytes:
    """betterproto2's own ``Message.__bytes__``."""
    return betterproto2.Message.__bytes__(message)


class _Missing:
    """The default of a generated ``__init__``'s list and dict parameters: a new empty one."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows a default factory


MISSING: Any = _Missing()


def install(
    cls: type[betterproto2.Message],
    parse: Callable[[type[Any], bytes], Any],
    encode: Callable[[Any], bytes],
    init: Callable[..., None] | None = None,
) -> None:
    """Make ``parse``/``encode`` the class's ``parse`` classmethod and ``__bytes__``, and
    ``init`` (when given) its ``__init__``.

    ``FromString`` and ``SerializeToString`` (which only call those two) are bound to them
    directly too: one call less per message on a ttrpc server.
    """
    method = classmethod(parse)
    methods = {
        "parse": method,
        "FromString": method,
        "__bytes__": encode,
        "SerializeToString": encode,
    }
    if init is not None:
        init.__qualname__ = f"{cls.__qualname__}.__init__"
        methods["__init__"] = init
    # What the class itself held (dataclasses' __init__); the rest it inherits.
    own = {name: cls.__dict__[name] for name in methods if name in cls.__dict__}
    for name, value in methods.items():
        setattr(cls, name, value)
    _INSTALLED.append((cls, methods, own))


def installed() -> list[type[betterproto2.Message]]:
    """Every class whose generated codecs are installed (in import order)."""
    return [cls for cls, _, _ in _INSTALLED]


def original_init(cls: type[betterproto2.Message]) -> Callable[..., None] | None:
    """The ``__init__`` defined on ``cls`` itself before the generated one was installed
    (the one dataclasses wrote: the reference for the generated one), else the one it has."""
    for installed_cls, _, own in _INSTALLED:
        if installed_cls is cls:
            init: Callable[..., None] | None = own.get("__init__")
            return init
    return cls.__dict__.get("__init__")


@contextmanager
def reference_codecs() -> Iterator[None]:
    """Within the block every message uses betterproto2's own encoder and decoder (and the
    ``__init__`` dataclasses wrote).

    Not thread-safe; meant for tests and benchmarks that compare the two.
    """
    entries = list(_INSTALLED)
    for cls, methods, own in entries:
        for name in methods:
            if name in own:
                setattr(cls, name, own[name])
            else:
                delattr(cls, name)
    try:
        yield
    finally:
        for cls, methods, _ in entries:
            for name, value in methods.items():
                setattr(cls, name, value)
