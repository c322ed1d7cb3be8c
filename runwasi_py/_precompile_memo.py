"""Create's compile-cache lookup without reading and hashing the entrypoint again.

:func:`runwasi_py._compile_cache.precompile` reads the whole entrypoint and hashes it on
every Create, on a thread (a thread hop costs as much as the lookup: ~7% of a task's
time in the shim, ``benchmarks/shim_stress.py`` under py-spy). A task that runs the same
file as an earlier one (same device, inode, size, mtime and ctime: any write or ``utime``
changes the ctime) gets the artifact that lookup found then, inline, if it still exists.

Another file with the same content (every container's rootfs has its own copy of the
module, on its own device) needs the content's hash: :func:`find_artifact` reads and hashes
a small entrypoint inline when the cache has already verified its entry (a ``stat``), and
takes the thread only for a large file or an entry this process has not seen yet.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from runwasi_py._compile_cache import cache_key_for, precompile

if TYPE_CHECKING:
    from runwasi_py._compile_cache import CompileCache
    from runwasi_py._context import RuntimeContext
    from runwasi_py._sandbox import Sandbox

__all__ = ["find_artifact", "identity", "recall", "remember"]

_MAX = 256
_INLINE_BYTES = 256 * 1024
"""Entrypoints up to this size are read and hashed on the loop (~0.1 ms at the limit) when
the cache already holds their entry: less than the thread hop it saves."""
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


def _read_small(path: Path, size: int) -> bytes:
    """The whole file, expected to be ``size`` bytes: one open and read (no buffered file
    object, whose set-up costs four more system calls)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = [os.read(fd, size + 1)]
        while len(chunks[-1]) > 0 and sum(map(len, chunks)) <= size:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


async def find_artifact(sandbox: Sandbox, ctx: RuntimeContext, cache: CompileCache) -> Path | None:
    """Create's :func:`~runwasi_py._compile_cache.precompile`, on the loop where it is cheap.

    The same file as before: the memo. A small file whose content this process has looked
    up before: read and hashed here. Anything else: ``precompile`` on a thread. Raises what
    ``precompile`` raises (OSError if the entrypoint cannot be read, ...).
    """
    engine_key, source = sandbox.cache_key(), ctx.entrypoint.source
    if engine_key is None or source is None:
        return None
    seen = _key(cache.directory, engine_key, source)
    if seen is not None:
        with _lock:
            artifact = _memo.get(seen)
        if artifact is not None and artifact.is_file():
            return artifact
        size = seen[4]
        if isinstance(size, int) and size <= _INLINE_BYTES:
            artifact = cache.known(cache_key_for(_read_small(source, size), engine_key))
            if artifact is not None:
                remember(cache.directory, engine_key, source, artifact, seen=seen)
                return artifact
    artifact = await asyncio.to_thread(precompile, sandbox, ctx, cache)
    remember(cache.directory, engine_key, source, artifact, seen=seen)
    return artifact
