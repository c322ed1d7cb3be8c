"""Create's compile-cache lookup without reading and hashing the entrypoint again.

:func:`runwasi_py._compile_cache.precompile` reads the whole entrypoint and hashes it on
every Create, on a thread (a thread hop costs as much as the lookup: ~7% of a task's
time in the shim, ``benchmarks/shim_stress.py`` under py-spy). A task that runs the same
file as an earlier one (same device, inode, size, mtime and ctime: any write or ``utime``
changes the ctime) gets the artifact that lookup found then, inline, if it still exists.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

__all__ = ["identity", "recall", "remember"]

_MAX = 256
_lock = threading.Lock()
_memo: OrderedDict[tuple[object, ...], Path] = OrderedDict()


def _key(cache_dir: Path, engine_key: str, source: Path) -> tuple[object, ...] | None:
    try:
        st = os.stat(source)
    except OSError:
        return None
    return (cache_dir, engine_key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def identity(
    cache_dir: Path, engine_key: str | None, source: Path | None
) -> tuple[object, ...] | None:
    """The memo's key for ``source`` as it is now (None: not memoisable); take it before the
    lookup and pass it to :func:`remember` as ``seen``."""
    if engine_key is None or source is None:
        return None
    return _key(cache_dir, engine_key, source)


def recall(cache_dir: Path, engine_key: str | None, source: Path | None) -> Path | None:
    """The artifact an earlier lookup found for this very file, if it is still there."""
    if engine_key is None or source is None:
        return None
    key = _key(cache_dir, engine_key, source)
    if key is None:
        return None
    with _lock:
        artifact = _memo.get(key)
    if artifact is None or not artifact.is_file():
        return None
    return artifact


def remember(
    cache_dir: Path,
    engine_key: str | None,
    source: Path | None,
    artifact: Path | None,
    *,
    seen: tuple[object, ...] | None = None,
) -> None:
    """Note that ``source`` (as it is now) compiles to ``artifact``.

    ``seen``: its :func:`identity` from before the lookup; a file that changed meanwhile
    (its artifact is the old content's) is not remembered.
    """
    if engine_key is None or source is None or artifact is None:
        return
    key = _key(cache_dir, engine_key, source)
    if key is None or (seen is not None and key != seen):
        return
    with _lock:
        _memo[key] = artifact
        _memo.move_to_end(key)
        while len(_memo) > _MAX:
            _memo.popitem(last=False)
