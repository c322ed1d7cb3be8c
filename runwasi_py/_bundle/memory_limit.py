"""A container's memory limit: the spec's ``linux.resources.memory.limit``, else a default ceiling.

Without a ceiling one guest in a shared shim can grow until the kernel OOM-kills the whole
process, and every neighbour with it. The ceiling applies to containers whose spec sets no
limit; it comes from ``$RUNWASI_PY_DEFAULT_MEMORY_LIMIT`` in containerd's environment (the
operator's word wins), else from ``Config.default_memory_limit`` (the shim author's), whose
default is :data:`DEFAULT_MEMORY_LIMIT`. ``0`` (or ``none``, ``unlimited``) turns it off.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "ENV_DEFAULT_MEMORY_LIMIT",
    "effective_memory_limit",
    "parse_size",
]

log = logging.getLogger("runwasi_py")

ENV_DEFAULT_MEMORY_LIMIT = "RUNWASI_PY_DEFAULT_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = 1 << 30
"""1 GiB: a quarter of what one wasm32 memory can address, far above what most guests use."""

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1 << 10,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1 << 20,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1 << 30,
    "gib": 1 << 30,
}
_SIZE = re.compile(r"\s*(\d{1,20})\s*([a-z]*)\s*")
_OFF = frozenset({"0", "none", "unlimited", "off"})


def parse_size(text: str) -> int | None:
    """``"512Mi"`` -> 536870912; ``"0"``/``"none"`` -> None (no ceiling).

    Raises ``ValueError`` naming the variable for anything else.
    """
    value = text.strip().lower()
    if value in _OFF:
        return None
    m = _SIZE.fullmatch(value)
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(
            f"{ENV_DEFAULT_MEMORY_LIMIT}={text!r}: expected bytes, optionally with a unit "
            "(k, M, G, Ki, Mi, Gi), or 0 for no ceiling"
        )
    size = int(m.group(1)) * _UNITS[m.group(2)]
    return size or None


def effective_memory_limit(
    spec_limit: int | None,
    configured: int | None = DEFAULT_MEMORY_LIMIT,
    environ: Mapping[str, str] | None = None,
) -> int | None:
    """The limit a container runs under, in bytes, or None for none at all.

    ``spec_limit`` (positive) wins; else the environment's ceiling; else ``configured``.
    A malformed variable is logged and ignored (the shim keeps serving with the configured
    ceiling rather than failing every Create).
    """
    if spec_limit is not None and spec_limit > 0:
        return spec_limit
    env = os.environ if environ is None else environ
    raw = env.get(ENV_DEFAULT_MEMORY_LIMIT)
    if raw is not None and raw.strip():
        try:
            return parse_size(raw)
        except ValueError as exc:
            log.warning("%s; using the configured ceiling", exc)
    return configured if configured is not None and configured > 0 else None
