"""Hypothesis strategies for any betterproto2 message, and a structural snapshot to compare.

Both work from betterproto2's own field metadata, so they cover every class the codec
generator plans (the test messages, the Example, containerd's messages).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import struct
from functools import cache
from typing import Any

import betterproto2
from hypothesis import strategies as st

__all__ = ["messages", "snapshot"]

_INT_RANGES = {
    betterproto2.TYPE_INT32: (-(2**31), 2**31 - 1),
    betterproto2.TYPE_SINT32: (-(2**31), 2**31 - 1),
    betterproto2.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    betterproto2.TYPE_INT64: (-(2**63), 2**63 - 1),
    betterproto2.TYPE_SINT64: (-(2**63), 2**63 - 1),
    betterproto2.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    betterproto2.TYPE_UINT32: (0, 2**32 - 1),
    betterproto2.TYPE_FIXED32: (0, 2**32 - 1),
    betterproto2.TYPE_UINT64: (0, 2**64 - 1),
    betterproto2.TYPE_FIXED64: (0, 2**64 - 1),
}
_UTC = datetime.UTC


def _ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    # Bias to the edges and small values: where varint lengths and signs change.
    edges = [lo, hi, 0, 1, 127, 128, 16383, 16384, -1, -128, -129]
    return st.one_of(st.sampled_from([e for e in edges if lo <= e <= hi]), st.integers(lo, hi))


def _floats(width: int, nan: bool) -> st.SearchStrategy[float]:
    return st.floats(width=width, allow_nan=nan)  # type: ignore[arg-type]


def _wrapped(cls: type, nan: bool) -> st.SearchStrategy[Any]:
    name = cls.__name__
    if name == "Timestamp":
        return st.datetimes(
            min_value=datetime.datetime(1, 1, 1),
            max_value=datetime.datetime(9999, 12, 31),
            timezones=st.just(_UTC),
        )
    if name == "Duration":
        return st.timedeltas(
            min_value=datetime.timedelta(days=-(10**6)), max_value=datetime.timedelta(days=10**6)
        )
    scalar = {
        "Int32Value": _ints(-(2**31), 2**31 - 1),
        "Int64Value": _ints(-(2**63), 2**63 - 1),
        "UInt32Value": _ints(0, 2**32 - 1),
        "UInt64Value": _ints(0, 2**64 - 1),
        "BoolValue": st.booleans(),
        "StringValue": st.text(),
        "BytesValue": st.binary(),
        "DoubleValue": _floats(64, nan),
        "FloatValue": _floats(32, nan),
    }
    return scalar[name]


def _value(kind: str, cls: Any, unwrap: Any, depth: int, nan: bool) -> st.SearchStrategy[Any]:
    if kind in _INT_RANGES:
        return _ints(*_INT_RANGES[kind])
    if kind == betterproto2.TYPE_BOOL:
        return st.booleans()
    if kind == betterproto2.TYPE_FLOAT:
        return _floats(32, nan)
    if kind == betterproto2.TYPE_DOUBLE:
        return _floats(64, nan)
    if kind == betterproto2.TYPE_STRING:
        return st.text(max_size=40)
    if kind == betterproto2.TYPE_BYTES:
        # Lengths of one, two (128 B..16 KiB) and three varint bytes: each is its own path.
        return st.one_of(
            st.binary(max_size=300), st.integers(16380, 16390).map(lambda n: b"\xa5" * n)
        )
    if kind == betterproto2.TYPE_ENUM:
        return st.one_of(st.sampled_from(list(cls)), st.integers(-5, 300).map(cls))
    if kind == betterproto2.TYPE_MESSAGE:
        if unwrap is not None:
            return _wrapped(unwrap(), nan)
        return messages(cls, depth + 1, nan)
    raise AssertionError(kind)


@cache
def messages(
    cls: type[betterproto2.Message], depth: int = 0, nan: bool = True
) -> st.SearchStrategy[Any]:
    """Random instances of ``cls``: every field, nested messages down to a few levels."""
    meta_of: Any = getattr(cls, "_betterproto")  # noqa: B009 - a classproperty mypy cannot type
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = betterproto2.FieldMetadata.get(f)
        if depth > 1 and meta.proto_type == betterproto2.TYPE_MESSAGE and meta.unwrap is None:
            continue  # recursion stops here: message fields stay unset
        if meta.proto_type == betterproto2.TYPE_MAP:
            assert meta.map_meta is not None
            k, v = meta.map_meta
            if depth > 1 and v.proto_type == betterproto2.TYPE_MESSAGE and v.unwrap is None:
                continue
            value_cls = meta_of.cls_by_field[f"{f.name}.value"]
            kwargs[f.name] = st.dictionaries(
                _value(k.proto_type, None, None, depth, nan),
                _value(v.proto_type, value_cls, v.unwrap, depth, nan),
                max_size=4,
            )
            continue
        one = _value(meta.proto_type, meta_of.cls_by_field[f.name], meta.unwrap, depth, nan)
        if meta.repeated:
            kwargs[f.name] = st.lists(one, max_size=4)
        elif meta.optional or meta.group or meta.proto_type == betterproto2.TYPE_MESSAGE:
            kwargs[f.name] = st.one_of(st.none(), one)
        else:
            kwargs[f.name] = one
    return st.builds(cls, **kwargs)


def snapshot(value: Any) -> Any:
    """A comparable picture of a decoded value: types kept, floats by their bits."""
    if isinstance(value, betterproto2.Message):
        fields = tuple(
            (f.name, snapshot(getattr(value, f.name)))
            for f in dataclasses.fields(value)  # type: ignore[arg-type]
        )
        return (type(value).__qualname__, fields, bytes(value._unknown_fields))
    if isinstance(value, enum.Enum):
        return ("enum", type(value).__qualname__, value.value)
    if isinstance(value, float):
        return ("float", struct.pack("<d", value) if not math.isnan(value) else "nan")
    if isinstance(value, list):
        return ("list", tuple(snapshot(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((snapshot(k), snapshot(v)) for k, v in value.items()))
    return (type(value).__name__, value)
