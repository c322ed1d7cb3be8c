"""``Metadata``: Go's metadata_test behaviours."""

from __future__ import annotations

import pytest

from ttrpc import Metadata


def test_get_returns_all_values_in_order() -> None:
    md = Metadata.from_wire([("foo", "bar"), ("foo", "baz")])
    assert md.get("foo") == ["bar", "baz"]
    assert md.get("FOO") == ["bar", "baz"]  # the lookup key is lower-cased
    assert md.first("foo") == "bar"


def test_get_missing_key() -> None:
    md = Metadata()
    assert md.get("nope") == []
    assert md.first("nope") is None
    assert md.first("nope", "dflt") == "dflt"
    assert "nope" not in md


def test_received_keys_are_kept_as_sent() -> None:
    md = Metadata.from_wire([("Foo", "1")])
    assert list(md) == ["Foo"]
    assert md.get("foo") == []  # as in Go: Get lower-cases, the stored key is "Foo"
    assert list(md.items()) == [("Foo", "1")]


def test_set_replaces_and_set_nothing_deletes() -> None:
    md = Metadata({"foo": ["a", "b"]})
    md.set("Foo", "c")
    assert md.get("foo") == ["c"]
    md.set("foo")
    assert "foo" not in md
    assert len(md) == 0
    assert not md


def test_append_existing_and_new() -> None:
    md = Metadata({"foo": "bar"})
    md.append("foo", "baz")
    md.append("New", "1", "2")
    md.append("empty")
    assert md.to_wire() == [("foo", "bar"), ("foo", "baz"), ("new", "1"), ("new", "2")]


def test_copy_is_independent() -> None:
    md = Metadata({"foo": "bar"})
    clone = md.copy()
    clone.append("foo", "x")
    assert md.get("foo") == ["bar"]
    assert clone != md
    assert Metadata(md) == md


@pytest.mark.parametrize(
    "initial",
    [{"k": "v"}, {"K": ["v"]}, [("k", "v")], Metadata({"k": "v"})],
)
def test_constructor_forms(initial: object) -> None:
    assert Metadata(initial).to_wire() == [("k", "v")]  # type: ignore[arg-type]


def test_repr_and_unhashable() -> None:
    assert "foo" in repr(Metadata({"foo": "1"}))
    with pytest.raises(TypeError):
        hash(Metadata())
