"""Compiled-artifact cache: in memory across one shim's tasks, on disk across shims.

Theory of operation: an entry is one file, ``<sha256(key)>.cwasm``, holding the engine's
artifact followed by a 48-byte trailer (magic, payload length, sha256 of the payload).
The artifact stays at offset 0 so an engine can map the file directly (wasmtime's
``Module.deserialize_file`` ignores bytes after its ELF image). A write goes to a temporary
file in the same directory and is renamed into place, so readers see either no entry or a
whole one. The first ``get`` of an entry in a process checks the trailer and the checksum;
a bad entry (truncated, corrupt, foreign) is a miss and gets deleted, never an exception.
Verified entries are remembered by key with the file's identity (inode, size, mtime), so
later hits in the same shim cost one ``stat``.

Keys are built by :func:`cache_key_for`: the sha256 of the module bytes plus the engine's
``Sandbox.cache_key()`` (its version and the settings that change the artifact).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runwasi_py._context import RuntimeContext
    from runwasi_py._sandbox import Sandbox

__all__ = [
    "CompileCache",
    "cache_key_for",
    "default_cache_dir",
    "precompile",
    "shared_cache",
]

log = logging.getLogger("runwasi_py.compile_cache")

ENV_CACHE_DIR = "RUNWASI_PY_CACHE_DIR"
_MAGIC = b"RWPYCC01"
_TRAILER = struct.Struct(">8sQ32s")  # magic, payload length, sha256(payload)
_SUFFIX = ".cwasm"


def cache_key_for(wasm: bytes, engine_key: str) -> str:
    """The cache key of ``wasm`` compiled by the engine identified by ``engine_key``.

    >>> cache_key_for(b"abc", "wasmtime-50.0.1")
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad:wasmtime-50.0.1'
    """
    return f"{hashlib.sha256(wasm).hexdigest()}:{engine_key}"


def default_cache_dir(shim_name: str = "runwasi-py") -> Path:
    """Where a shim keeps compiled artifacts when nobody says otherwise.

    ``$RUNWASI_PY_CACHE_DIR`` wins; as root, beside containerd's own state in
    ``/var/lib/containerd/io.containerd.<shim_name>.v1/compile-cache`` (``/run`` is tmpfs and
    would lose the cache on reboot); otherwise under ``$XDG_CACHE_HOME`` (``~/.cache``).
    """
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/containerd") / f"io.containerd.{shim_name}.v1" / "compile-cache"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "runwasi-py" / shim_name / "compile-cache"


class CompileCache:
    """Compiled artifacts by key, in memory and in ``directory`` (made on first write).

    Thread-safe: instances run on their own threads and may share one cache.

    Example:
        >>> cache = CompileCache(Path("/tmp/cc"))
        >>> key = cache_key_for(wasm, sandbox.cache_key())
        >>> path = cache.get(key) or cache.put(key, sandbox.compile(wasm))
    """

    def __init__(self, directory: Path | None = None, *, shim_name: str = "runwasi-py") -> None:
        self.directory = directory if directory is not None else default_cache_dir(shim_name)
        self._lock = threading.Lock()
        # key -> (path, (inode, size, mtime_ns)) of an entry verified by this process
        self._memo: dict[str, tuple[Path, tuple[int, int, int]]] = {}

    def path_for(self, key: str) -> Path:
        """The file an entry for ``key`` lives in (whether or not it exists)."""
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + _SUFFIX)

    def get(self, key: str) -> Path | None:
        """The path of a verified artifact for ``key``, or None (a miss, never an error).

        The artifact is the file's leading bytes; the trailer after it is ignored by
        wasmtime. Use :meth:`read` for the bare bytes.
        """
        with self._lock:
            memo = self._memo.get(key)
        if memo is not None:
            path, ident = memo
            try:
                if _identity(path) == ident:
                    return path
            except OSError:
                pass
            with self._lock:
                self._memo.pop(key, None)
        path = self.path_for(key)
        try:
            ident = self._verify(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("compile cache: dropping bad entry %s: %s", path, exc)
            self._unlink(path)
            return None
        with self._lock:
            self._memo[key] = (path, ident)
        return path

    def known(self, key: str) -> Path | None:
        """The entry for ``key`` if this process verified it and it is unchanged since, else
        None. One ``stat``: no read, no checksum (what :meth:`get` does the first time)."""
        with self._lock:
            memo = self._memo.get(key)
        if memo is None:
            return None
        path, ident = memo
        try:
            return path if _identity(path) == ident else None
        except OSError:
            return None

    def read(self, key: str) -> bytes | None:
        """The artifact bytes for ``key`` (without the trailer), or None."""
        path = self.get(key)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return data[: len(data) - _TRAILER.size]

    def put(self, key: str, artifact: bytes) -> Path:
        """Store ``artifact`` for ``key`` atomically and return its path.

        Concurrent puts of one key are safe: each writes its own temporary file and the
        last rename wins with a whole entry. Raises OSError when the directory is not
        writable (callers run on without the cache).
        """
        path = self.path_for(key)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        trailer = _TRAILER.pack(_MAGIC, len(artifact), hashlib.sha256(artifact).digest())
        # A name of our own (not tempfile: it costs a shim's start a few ms of imports).
        tmp = self.directory / f".tmp-{os.getpid()}-{os.urandom(6).hex()}{_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(artifact)
                f.write(trailer)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            self._unlink(tmp)
            raise
        ident = _identity(path)
        with self._lock:
            self._memo[key] = (path, ident)
        return path

    def invalidate(self, key: str) -> None:
        """Forget ``key`` here and on disk (an artifact the engine refused to load)."""
        with self._lock:
            self._memo.pop(key, None)
        self._unlink(self.path_for(key))

    def _verify(self, path: Path) -> tuple[int, int, int]:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size < _TRAILER.size:
                raise ValueError(f"truncated ({st.st_size} bytes)")
            f.seek(st.st_size - _TRAILER.size)
            magic, length, digest = _TRAILER.unpack(f.read(_TRAILER.size))
            if magic != _MAGIC:
                raise ValueError("no cache trailer")
            if length != st.st_size - _TRAILER.size:
                raise ValueError(f"length {length} != {st.st_size - _TRAILER.size}")
            f.seek(0)
            h = hashlib.sha256()
            remaining = length
            while remaining:
                chunk = f.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ValueError("shrank while reading")
                h.update(chunk)
                remaining -= len(chunk)
            if h.digest() != digest:
                raise ValueError("checksum mismatch")
            return (st.st_ino, st.st_size, st.st_mtime_ns)

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


_shared: dict[Path, CompileCache] = {}
_shared_lock = threading.Lock()


def shared_cache(directory: Path | None = None, *, shim_name: str = "runwasi-py") -> CompileCache:
    """The process-wide cache for ``directory`` (default: :func:`default_cache_dir`).

    One instance per directory, so every task of a shim shares the in-memory memo.
    """
    d = directory if directory is not None else default_cache_dir(shim_name)
    with _shared_lock:
        cache = _shared.get(d)
        if cache is None:
            cache = _shared[d] = CompileCache(d, shim_name=shim_name)
        return cache


def precompile(
    sandbox: Sandbox, ctx: RuntimeContext, cache: CompileCache | None = None
) -> Path | None:
    """Look the entrypoint up in the compile cache, else compile and store it (blocking).

    What the framework does at Create for every Sandbox with a ``cache_key()``: the result
    goes into ``ctx.precompiled``, and the engine only reads that. None when the Sandbox has
    no cache key, the entrypoint no file, or the cache cannot be written. Raises
    NotImplementedError for a ``cache_key`` without a ``compile`` hook, OSError when the
    entrypoint cannot be read, and whatever ``compile`` raises.
    """
    engine_key = sandbox.cache_key()
    source = ctx.entrypoint.source
    if engine_key is None or source is None:
        return None
    cache = cache if cache is not None else shared_cache()
    wasm = source.read_bytes()
    key = cache_key_for(wasm, engine_key)
    path = cache.get(key)
    if path is not None:
        return path
    artifact = sandbox.compile(wasm)
    try:
        return cache.put(key, artifact)
    except OSError as e:
        log.warning("compile cache not writable (%s); running without it", e)
        return None
