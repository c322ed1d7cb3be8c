"""JSON decoding for ``start`` and ``delete`` without importing :mod:`json`.

``import json`` costs more CPU than the rest of ``start``'s imports together (about 10 ms
here, half a bare interpreter start): ``json.decoder`` and ``json.encoder`` compile regular
expressions when imported, which loads ``re`` and ``enum``. The C scanner that
``json.loads`` runs underneath (``_json.make_scanner``) needs none of that, so :func:`loads`
drives it directly: for every document ``json.loads`` accepts it returns the same value;
a document it rejects is handed to ``json.loads``, which raises the same
``json.JSONDecodeError`` as always (only then is ``json`` imported). Where ``_json`` is
missing (a Python without the accelerator) it is ``json.loads``.

>>> loads(b'{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}')
{'annotations': {'io.kubernetes.cri.sandbox-id': 'pod1'}}
"""

from __future__ import annotations

# Not typing.TYPE_CHECKING: importing typing costs ~20 ms, and start must stay fast.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["dumps", "loads"]

_WHITESPACE = " \t\n\r"  # json's: nothing else may surround a document
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Context:
    """The attributes ``_json.make_scanner`` reads: those of a default ``JSONDecoder``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scanner: Any = None


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``, without importing :mod:`json` for a well-formed document."""
    global _scanner
    if isinstance(data, bytes):
        # json.loads detects UTF-16/32 from NUL bytes and accepts a UTF-8 BOM: leave those
        # rare documents to it; everything else is UTF-8, decoded as json.loads decodes it.
        if data.startswith(b"\xef\xbb\xbf") or b"\0" in data[:4]:
            return _json_loads(data)
        text = data.decode("utf-8", "surrogatepass")
    else:
        text = data
    if _scanner is None:
        try:
            from _json import make_scanner  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return _json_loads(text)
        # typeshed types the context as a scanner; any object with _Context's attributes does
        _scanner = make_scanner(_Context())  # type: ignore[arg-type,unused-ignore]
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scanner(text, start)
    except (StopIteration, SystemError):
        # Malformed. json.loads says where, as JSONDecodeError: on 3.11 the C scanner
        # cannot (it looks json.decoder up in sys.modules and fails with SystemError).
        return _json_loads(text)
    if text[end:].strip(_WHITESPACE):
        return _json_loads(text)  # extra data after the document: json.loads raises
    return value


def dumps(value: Any) -> str:
    """``json.dumps(value)`` (default options), without importing :mod:`json` for the plain
    values ``start`` writes: dicts with string keys, lists, tuples, strings, ints, bools and
    None (strings through json's own C escaper). Anything else goes to ``json.dumps``."""
    global _escape
    if _escape is None:
        try:
            from _json import encode_basestring_ascii  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            return _json_dumps(value)
        _escape = encode_basestring_ascii
    try:
        return _dump(value)
    except _NotPlain:
        return _json_dumps(value)


_escape: Any = None


class _NotPlain(Exception):
    """A value :func:`dumps` leaves to ``json.dumps``."""


def _dump(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return str(_escape(value))
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is list or kind is tuple:
        return "[" + ", ".join([_dump(v) for v in value]) + "]"
    if kind is dict:
        parts = []
        for k, v in value.items():
            if type(k) is not str:
                raise _NotPlain
            parts.append(f"{_escape(k)}: {_dump(v)}")
        return "{" + ", ".join(parts) + "}"
    raise _NotPlain


def _json_dumps(value: Any) -> str:
    import json

    return json.dumps(value)


def _json_loads(data: bytes | str) -> Any:
    import json

    return json.loads(data)
