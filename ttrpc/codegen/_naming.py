"""Python names for proto names: rpc attributes, message classes, module aliases."""

from __future__ import annotations

import keyword
import re

__all__ = ["message_class_name", "module_alias", "rpc_attribute"]

# Attributes that ttrpc.Service (and object) already use on a service class.
_RESERVED = frozenset({"service_name", "ttrpc_methods", "mro"})

_LOWER_TO_UPPER = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_ACRONYM_END = re.compile(r"(?<=[A-Z])(?=[A-Z][a-z])")


def rpc_attribute(rpc_name: str) -> str:
    """snake_case method attribute for an rpc: ``CloseIO`` -> ``close_io``.

    An uppercase run is one word (``ResizePTY`` -> ``resize_pty``, ``HTTPGet`` -> ``http_get``).
    A name that would collide with a keyword or a ``Service`` attribute gets a trailing ``_``.

    Example:
        >>> rpc_attribute("EchoStream")
        'echo_stream'
    """
    name = _ACRONYM_END.sub("_", _LOWER_TO_UPPER.sub("_", rpc_name)).lower()
    if keyword.iskeyword(name) or name in _RESERVED:
        name += "_"
    return name


def message_class_name(prefixed_name: str) -> str:
    """The class name betterproto2 gives a message (``Outer.Inner`` -> ``OuterInner``).

    Delegates to betterproto2-compiler itself so the two generators can never disagree
    (it renames, e.g. ``CloseIORequest`` -> ``CloseIoRequest``).
    """
    try:
        from betterproto2_compiler.compile.naming import pythonize_class_name
    except ImportError as exc:  # generation-time dependency only
        raise RuntimeError(
            "protoc-gen-ttrpc-python needs betterproto2-compiler (pip install "
            "'betterproto2-compiler==0.10.1') to name message classes as betterproto2 does"
        ) from exc
    return pythonize_class_name(prefixed_name)


def module_alias(module: str, taken: set[str]) -> str:
    """A unique local alias for an imported messages module: ``a.b.v1`` -> ``pb_b_v1``."""
    parts = module.split(".")
    base = "pb_" + "_".join(parts[-2:]) if len(parts) > 1 else "pb_" + parts[0]
    alias, n = base, 2
    while alias in taken:
        alias, n = f"{base}_{n}", n + 1
    taken.add(alias)
    return alias
