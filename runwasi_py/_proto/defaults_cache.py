"""An opt-in speed-up of betterproto2's per-field default lookup; the daemon installs it.

Importing :mod:`runwasi_py` never patches a library: :func:`install_default_cache` runs only
where the shim daemon boots (``_daemon.main``), so a program that merely imports the
framework's messages keeps betterproto2 as it ships.
"""

from __future__ import annotations

import datetime
import enum

import betterproto2


def install_default_cache() -> None:
    """Make betterproto2's per-field default lookup cheap; applied before any message is used.

    ``Message._get_field_default`` (called for every field of every encode, ``repr`` and
    ``bool``) enters ``warnings.catch_warnings()`` and calls the field's default factory each
    time: most of the shim's encode cost. Immutable defaults (``""``, ``0``, ``b""``,
    ``False``, ``None``, enum members, datetimes) are now computed once per class and field;
    mutable ones (lists, maps, messages) still come fresh from the factory, so a caller that
    mutates a default never sees another message's value. Idempotent.
    """
    message = betterproto2.Message
    original = message._get_field_default
    if getattr(original, "_runwasi_cached", False):
        return
    cache: dict[tuple[type, str], object] = {}
    missing = object()

    def _get_field_default(self: betterproto2.Message, field_name: str) -> object:
        key = (type(self), field_name)
        value = cache.get(key, missing)
        if value is not missing:
            return value
        value = original(self, field_name)
        if type(value) in _IMMUTABLE_DEFAULTS or isinstance(value, enum.Enum):
            cache[key] = value
        return value

    _get_field_default._runwasi_cached = True  # type: ignore[attr-defined]
    message._get_field_default = _get_field_default  # type: ignore[method-assign]


_IMMUTABLE_DEFAULTS = frozenset(
    {str, bytes, int, float, bool, type(None), datetime.datetime, datetime.timedelta}
)
