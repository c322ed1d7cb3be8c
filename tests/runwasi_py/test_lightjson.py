"""``_lightjson.loads``/``dumps`` are ``json.loads``/``json.dumps``: same values, same errors,
same text, and no ``json`` import."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runwasi_py._lightjson import dumps, loads

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()  # lone surrogates included: json writes them as \ud800 escapes
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(_values, st.sampled_from([None, 2]), st.booleans(), st.sampled_from(["", " \n\t\r "]))
def test_same_value_as_json(value: object, indent: int | None, ascii_only: bool, ws: str) -> None:
    text = ws + json.dumps(value, indent=indent, ensure_ascii=ascii_only) + ws
    assert loads(text) == json.loads(text)
    data = text.encode("utf-8", "surrogatepass")
    assert loads(data) == json.loads(data)


@pytest.mark.parametrize(
    "doc",
    [b'\xef\xbb\xbf{"a": 1}', '{"a": [1]}'.encode("utf-16"), '"x"'.encode("utf-32-le")],
)
def test_bom_and_wide_encodings_as_json(doc: bytes) -> None:
    assert loads(doc) == json.loads(doc)


def test_constants_as_json() -> None:
    got = loads("[NaN, Infinity, -Infinity, 1e400]")
    assert math.isnan(got[0])
    assert got[1:] == [math.inf, -math.inf, math.inf]


@pytest.mark.parametrize(
    "doc",
    ["", "   ", "[1,", '{"a" 1}', '{"a": 1} x', "[1]]", '"\x01"', "\ufeff{}", "nul", "'a'"],
)
def test_same_error_as_json(doc: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(doc)
    with pytest.raises(json.JSONDecodeError) as got:
        loads(doc)
    assert str(got.value) == str(expected.value)


@given(st.binary(max_size=40))
def test_any_bytes_decode_or_fail_as_json(data: bytes) -> None:
    try:
        want: object = ("ok", json.loads(data))
    except (ValueError, RecursionError) as e:
        want = ("error", type(e))
    try:
        got: object = ("ok", loads(data))
    except (ValueError, RecursionError) as e:
        got = ("error", type(e))
    assert repr(got) == repr(want)  # repr: NaN is not equal to itself


def test_a_document_loads_without_importing_json() -> None:
    # A fresh interpreter (this one has json already): the point of the module is the import.
    program = (
        "import sys; from runwasi_py._lightjson import loads; "
        'v = loads(b\'{"annotations": {"k": [1, 2.5, true, null]}}\'); '
        "print(v == {'annotations': {'k': [1, 2.5, True, None]}}, 'json' in sys.modules, "
        "'re' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "False", "False"]


_plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(_plain | st.dictionaries(st.integers(), st.text(), min_size=1) | st.floats())
def test_dumps_is_json_dumps(value: object) -> None:
    # Plain values through the light path, the rest (int keys, floats) through json.dumps.
    assert dumps(value) == json.dumps(value)


def test_dumps_imports_no_json() -> None:
    program = (
        "import sys; from runwasi_py._lightjson import dumps; "
        "dumps({'argv': ['a', 1, None, True], 'env': {'K': 'v\\u00e9'}}); "
        "print('json' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, check=True)
    assert out.stdout.strip() == b"False"
