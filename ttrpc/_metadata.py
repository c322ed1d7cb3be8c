"""``Metadata``: the multi-valued string map carried in ``Request.metadata``.

Received keys are kept exactly as sent (Go does not lower-case on receive); ``get``, ``set``
and ``append`` lower-case the key they are given, like Go's ``MD.Get/Set/Append``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ["Metadata"]


class Metadata:
    """An ordered multi-map of string keys to string values.

    Example:
        >>> md = Metadata({"containerd-namespace-ttrpc": "default"})
        >>> md.append("Foo", "a", "b")
        >>> md.get("foo")
        ['a', 'b']
        >>> list(md.items())
        [('containerd-namespace-ttrpc', 'default'), ('foo', 'a'), ('foo', 'b')]
    """

    __slots__ = ("_map",)

    def __init__(
        self,
        initial: Metadata | Mapping[str, str | list[str]] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self._map: dict[str, list[str]] = {}
        if initial is None:
            return
        if isinstance(initial, Metadata):
            self._map = {k: list(v) for k, v in initial._map.items()}
        elif isinstance(initial, Mapping):
            for key, value in initial.items():
                values = [value] if isinstance(value, str) else list(value)
                if values:
                    self._map.setdefault(key.lower(), []).extend(values)
        else:
            for key, value in initial:
                self._map.setdefault(key.lower(), []).append(value)

    @classmethod
    def from_wire(cls, pairs: Iterable[tuple[str, str]]) -> Metadata:
        """Build from received ``(key, value)`` pairs, keeping keys exactly as sent."""
        md = cls()
        m = md._map
        for key, value in pairs:
            if key in m:
                m[key].append(value)
            else:
                m[key] = [value]
        return md

    def get(self, key: str) -> list[str]:
        """All values of ``key`` (lower-cased) in order; ``[]`` when absent."""
        return list(self._map.get(key.lower(), ()))

    def first(self, key: str, default: str | None = None) -> str | None:
        """The first value of ``key`` (lower-cased), or ``default``."""
        values = self._map.get(key.lower())
        return values[0] if values else default

    def set(self, key: str, *values: str) -> None:
        """Replace the values of ``key``; with no values, delete it."""
        key = key.lower()
        if values:
            self._map[key] = list(values)
        else:
            self._map.pop(key, None)

    def append(self, key: str, *values: str) -> None:
        """Add values after any existing ones of ``key``."""
        if values:
            self._map.setdefault(key.lower(), []).extend(values)

    def items(self) -> Iterator[tuple[str, str]]:
        """Every ``(key, value)`` pair, keys in insertion order, values in order."""
        for key, values in self._map.items():
            for value in values:
                yield key, value

    def to_wire(self) -> list[tuple[str, str]]:
        """The pairs to put in ``Request.metadata``."""
        return list(self.items())

    def copy(self) -> Metadata:
        """An independent copy."""
        return Metadata(self)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __bool__(self) -> bool:
        return bool(self._map)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Metadata):
            return self._map == other._map
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Metadata({self._map!r})"
