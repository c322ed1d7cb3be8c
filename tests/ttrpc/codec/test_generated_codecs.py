"""The generated codecs against betterproto2's own: same bytes, same values, same errors."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import betterproto2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ttrpc.codec._gen.ttrpc.codectest import v1 as pb
from tests.ttrpc.codec.strategies import messages, snapshot
from ttrpc import _msgcodec
from ttrpc.codegen import _codecs

CLASSES: list[type[betterproto2.Message]] = [
    pb.Scalars,
    pb.Repeated,
    pb.Optionals,
    pb.Maps,
    pb.Oneofs,
    pb.WellKnown,
    pb.Nested,
    pb.NestedInner,
    pb.FieldNumbers,
]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_bytes(message: betterproto2.Message) -> bytes:
    with _msgcodec.reference_codecs():
        return bytes(message)


def outcome(fn: Callable[[], Any]) -> Any:
    """What a call gives: ("ok", snapshot) or ("raises", exception type)."""
    try:
        return ("ok", snapshot(fn()))
    except Exception as exc:
        return ("raises", type(exc))


def _no_fallback(cls: type[Any], data: bytes) -> Any:
    raise AssertionError(f"{cls.__name__} fell back to betterproto2 on valid input")


def reference_outcome(cls: type[betterproto2.Message], data: bytes) -> Any:
    with _msgcodec.reference_codecs():
        return outcome(lambda: cls.FromString(data))


def test_every_class_has_generated_codecs() -> None:
    for module in (pb, importlib.import_module("tests.ttrpc.codec._gen.google.protobuf")):
        for cls in _codecs.message_classes(module):
            assert "parse" in cls.__dict__, cls
            assert "__bytes__" in cls.__dict__, cls
    with _msgcodec.reference_codecs():
        assert "parse" not in pb.Scalars.__dict__
    assert "parse" in pb.Scalars.__dict__


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_bytes_identical_to_betterproto2(cls: type[betterproto2.Message], data: Any) -> None:
    message = data.draw(messages(cls))
    assert bytes(message) == reference_bytes(message)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_decode_and_round_trip_identical(cls: type[betterproto2.Message], data: Any) -> None:
    message = data.draw(messages(cls))
    wire = reference_bytes(message)
    assert outcome(lambda: cls.FromString(wire)) == reference_outcome(cls, wire)
    # Valid input stays on the generated path: betterproto2's decoder is never asked.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_msgcodec, "reference_parse", _no_fallback)
        cls.FromString(wire)
    # A round trip through the generated codecs alone ends where betterproto2's own does (not
    # always at the start: a negative timedelta is not a fixed point of Duration's conversion).
    with _msgcodec.reference_codecs():
        expected = bytes(cls.FromString(wire))
    assert bytes(cls.FromString(bytes(message))) == expected


def _unknown_field() -> st.SearchStrategy[bytes]:
    # Numbers no test message uses (FieldNumbers has 2047, 2048, 262143, 262144, 2**29 - 1).
    number = st.one_of(st.integers(1000, 2000), st.integers(300_000, 2**29 - 2))
    varint = st.integers(0, 2**64 - 1).map(betterproto2.encode_varint)
    payload = st.binary(max_size=20)
    return st.one_of(
        number.flatmap(lambda n: varint.map(lambda v: betterproto2.encode_varint(n << 3) + v)),
        number.flatmap(
            lambda n: payload.map(
                lambda p: (
                    betterproto2.encode_varint(n << 3 | 2) + betterproto2.encode_varint(len(p)) + p
                )
            )
        ),
        number.map(lambda n: betterproto2.encode_varint(n << 3 | 5) + b"\x01\x02\x03\x04"),
        number.map(lambda n: betterproto2.encode_varint(n << 3 | 1) + bytes(8)),
    )


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_unknown_fields_kept(cls: type[betterproto2.Message], data: Any) -> None:
    message = data.draw(messages(cls))
    extra = data.draw(st.lists(_unknown_field(), min_size=1, max_size=3))
    wire = reference_bytes(message) + b"".join(extra)
    got = cls.FromString(wire)
    assert bytes(got._unknown_fields).endswith(b"".join(extra))
    assert outcome(lambda: got) == reference_outcome(cls, wire)
    assert bytes(got) == reference_bytes(got)


def _mutations(wire: bytes) -> st.SearchStrategy[bytes]:
    """Truncated, extended, byte-flipped and spliced versions of a valid encoding."""
    n = len(wire)
    cut = st.integers(0, max(n - 1, 0)).map(lambda i: wire[:i])
    flip = st.tuples(st.integers(0, max(n - 1, 0)), st.integers(0, 255)).map(
        lambda t: wire[: t[0]] + bytes([t[1]]) + wire[t[0] + 1 :] if n else bytes([t[1]])
    )
    splice = st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=12)).map(
        lambda t: wire[: t[0]] + t[1] + wire[t[0] :]
    )
    overlong = st.just(wire + b"\x08" + b"\xff" * 10 + b"\x01")
    return st.one_of(cut, flip, splice, overlong)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_bad_input_same_as_betterproto2(cls: type[betterproto2.Message], data: Any) -> None:
    message = data.draw(messages(cls))
    wire = data.draw(_mutations(reference_bytes(message)))
    assert outcome(lambda: cls.FromString(wire)) == reference_outcome(cls, wire)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(wire=st.binary(max_size=64))
def test_random_bytes_same_as_betterproto2(cls: type[betterproto2.Message], wire: bytes) -> None:
    assert outcome(lambda: cls.FromString(wire)) == reference_outcome(cls, wire)


@pytest.mark.parametrize(
    ("cls", "wire"),
    [
        (pb.Scalars, b"\x08"),  # double field, data ends before the value
        (pb.Scalars, b"\x18\x80"),  # int32 varint cut short
        (pb.Scalars, b"\x18" + b"\xff" * 11),  # varint longer than 10 bytes
        (pb.Scalars, b"\x1d\x00\x00\x00\x00"),  # int32 sent as fixed32: wrong wire type
        (pb.Scalars, b"\x72\x05ab"),  # string longer than the data
        (pb.Scalars, b"\x72\x02\xff\xfe"),  # string that is not UTF-8
        (pb.Scalars, b"\x18\x02\x01\x02"),  # int32 sent packed into a singular field
        (pb.Scalars, b"\x70\x05"),  # string field sent as a varint
        (pb.Scalars, b"\x80"),  # key cut short
        (pb.Scalars, b"\xfb\x07"),  # unknown group start
        (pb.Maps, b"\x0a\x04\x08\x01\x10\x02"),  # map<string,string> entry of varints
        (pb.Repeated, b"\x4a\x03\x01\x02\x03"),  # packed fixed32 not a multiple of 4
        (pb.Repeated, b"\x1a\x02\x80\x80"),  # packed varint cut short inside its bytes
        (pb.WellKnown, b"\x0a\x02\x08"),  # Timestamp cut short
        (pb.Nested, b"\x0a\x03\x12\x05\x08"),  # inner message longer than its parent
    ],
)
def test_known_bad_inputs(cls: type[betterproto2.Message], wire: bytes) -> None:
    assert outcome(lambda: cls.FromString(wire)) == reference_outcome(cls, wire)


def test_memoryview_and_bytearray_input() -> None:
    message = pb.Scalars(f_string="é", f_bytes=b"\x00\x01", f_int32=-5)
    wire = bytes(message)
    for data in (bytearray(wire), memoryview(wire)):
        got = pb.Scalars.FromString(data)  # type: ignore[arg-type]
        assert got == message
        assert type(got.f_bytes) is bytes


def test_subclass_uses_betterproto2() -> None:
    class Mine(pb.Scalars):
        pass

    got = Mine.FromString(bytes(pb.Scalars(f_int32=3)))
    assert type(got) is Mine
    assert got.f_int32 == 3
    assert bytes(got) == b"\x18\x03"


def test_generated_files_up_to_date() -> None:
    from ttrpc.codegen.codecs import write_codecs

    assert write_codecs("tests.ttrpc.codec._gen", check=True) == []
    assert write_codecs("ttrpc.example._gen", check=True) == []
    assert write_codecs("runwasi_py._proto.gen", check=True) == []


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_generated_init_is_dataclasses_init(cls: type[betterproto2.Message], data: Any) -> None:
    # Same attributes, values and order for any mix of given and omitted arguments,
    # positional or keyword; defaults are new objects per instance where they are mutable.
    assert "__init__" in cls.__dict__
    reference = _msgcodec.original_init(cls)
    assert reference is not None
    assert reference is not cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    assert list(inspect.signature(cls.__init__).parameters)[1:] == names
    source = data.draw(messages(cls))
    given_names = data.draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    kwargs = {name: getattr(source, name) for name in given_names}
    npos = data.draw(st.integers(0, len(names)))
    args = [getattr(source, name) for name in names[:npos]]
    kwargs = {k: v for k, v in kwargs.items() if k not in names[:npos]}
    ours, theirs = object.__new__(cls), object.__new__(cls)
    cls.__init__(ours, *args, **kwargs)
    reference(theirs, *args, **kwargs)
    assert list(vars(ours)) == list(vars(theirs))
    assert snapshot(ours) == snapshot(theirs)
    again = object.__new__(cls)
    cls.__init__(again, *args, **kwargs)
    for name in names:
        value = getattr(ours, name)
        if name not in kwargs and names.index(name) >= npos and isinstance(value, (list, dict)):
            assert value is not getattr(again, name)  # a default list or dict of its own


def test_generated_init_refuses_what_dataclasses_refuses() -> None:
    with pytest.raises(TypeError):
        pb.Scalars(no_such_field=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        pb.Scalars(*range(100))
