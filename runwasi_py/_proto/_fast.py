"""Fast ``bytes(message)`` for the messages the shim sends on every task (byte-identical).

betterproto2's generic ``Message.__bytes__`` walks field metadata, builds ``BytesIO`` objects
and calls several helpers per field: about half of the shim's protobuf time per task. For the
hot classes (the Task responses and ``TaskCreate``/``TaskStart``/``TaskExit``/``TaskDelete``
events) :func:`install` replaces ``__bytes__`` with an encoder planned once from the same
metadata, producing exactly the same bytes: the fields in the same order, zero values and
``None`` skipped the same way, unknown fields appended. A class using anything outside the
planned subset (maps, fixed-width or zig-zag numbers, wrapped types other than Timestamp,
pydantic dataclasses) keeps betterproto2's encoder. tests/runwasi_py/test_proto.py checks the
two against each other on generated values.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import betterproto2

from runwasi_py._proto.wire import encode_varint

__all__ = ["install"]

_VARINT_TYPES = frozenset(
    {
        betterproto2.TYPE_BOOL,
        betterproto2.TYPE_ENUM,
        betterproto2.TYPE_INT32,
        betterproto2.TYPE_INT64,
        betterproto2.TYPE_UINT32,
        betterproto2.TYPE_UINT64,
    }
)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_SCALAR_DEFAULTS = (str, int, bool, bytes)


def _timestamp(value: datetime.datetime) -> bytes:
    """``Timestamp.from_datetime(value)`` encoded (same rounding: whole microseconds)."""
    if not value.tzinfo:
        raise ValueError("datetime must be timezone aware")
    offset = value.astimezone(datetime.UTC) - _EPOCH
    offset_us = (offset.days * 86400 + offset.seconds) * 10**6 + offset.microseconds
    seconds, us = divmod(offset_us, 10**6)
    out = b""
    if seconds:
        out += b"\x08" + encode_varint(seconds)
    if us:
        out += b"\x10" + encode_varint(us * 1000)
    return out


_Step = Callable[[Any, list[bytes]], None]


def _plan_field(name: str, meta: Any, default: object) -> _Step | None:
    number, kind = meta.number, meta.proto_type
    if meta.map_meta:
        return None
    if kind in _VARINT_TYPES:
        key = encode_varint(number << 3)
        if meta.repeated:
            return None  # packed repeated numbers: not needed here

        def varint(msg: Any, out: list[bytes]) -> None:
            value = getattr(msg, name)
            if value is not None and value != default:
                out.append(key + encode_varint(int(value)))

        return varint
    if kind not in (betterproto2.TYPE_STRING, betterproto2.TYPE_BYTES, betterproto2.TYPE_MESSAGE):
        return None
    key = encode_varint((number << 3) | 2)
    if kind == betterproto2.TYPE_MESSAGE:
        if meta.unwrap is not None:
            if meta.unwrap().__name__ != "Timestamp" or meta.repeated:
                return None
            encode: Callable[[Any], bytes] = _timestamp
        else:
            encode = bytes
    elif kind == betterproto2.TYPE_STRING:
        encode = str.encode
    else:
        encode = bytes
    if meta.repeated:

        def repeated(msg: Any, out: list[bytes]) -> None:
            for item in getattr(msg, name) or ():
                data = encode(item)
                out.append(key + encode_varint(len(data)) + data)

        return repeated

    def single(msg: Any, out: list[bytes]) -> None:
        value = getattr(msg, name)
        if value is None or value == default:
            return
        data = encode(value)
        out.append(key + encode_varint(len(data)) + data)

    return single


def _plan(cls: type[betterproto2.Message]) -> Callable[[betterproto2.Message], bytes] | None:
    meta: Any = cls._betterproto  # type: ignore[arg-type]
    steps: list[_Step] = []
    for name, field in meta.meta_by_field_name.items():
        factory = meta.default_gen[name]
        default = factory()
        if field.repeated:
            if default != []:
                return None
            default = None
        elif default is not None and not isinstance(default, _SCALAR_DEFAULTS):
            return None  # a message-valued default: keep betterproto2's comparison
        step = _plan_field(name, field, default)
        if step is None:
            return None
        steps.append(step)

    def fast_bytes(self: betterproto2.Message) -> bytes:
        out: list[bytes] = []
        for step in steps:
            step(self, out)
        out.append(self._unknown_fields)
        return b"".join(out)

    return fast_bytes


def install(classes: list[type[betterproto2.Message]]) -> list[type[betterproto2.Message]]:
    """Give each of ``classes`` a planned ``__bytes__``; returns the ones that got it."""
    done = []
    for cls in classes:
        if "__bytes__" in vars(cls) or getattr(cls, "__pydantic_fields__", None) is not None:
            continue
        fast = _plan(cls)
        if fast is not None:
            cls.__bytes__ = fast  # type: ignore[method-assign,assignment]
            done.append(cls)
    return done
