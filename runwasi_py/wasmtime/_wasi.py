"""The guest's WASI configuration for wasmtime-py: argv, env, preopens and stdio."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runwasi_py import (
    AppendingOutput,
    AppendingPipe,
    FifoUnblocker,
    OutputHold,
    hand_appending_file,
    pipe_paths_work,
    stdin_opens_at_once,
)

if TYPE_CHECKING:
    import wasmtime

    from runwasi_py import RuntimeContext

__all__ = ["wasi_config"]

_BIND_TYPES = frozenset({"bind", "rbind", "none", ""})


def _is_regular_or_missing(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _is_dir_bind(kind: str, options: tuple[str, ...], source: str) -> bool:
    is_bind = kind in _BIND_TYPES or "bind" in options or "rbind" in options
    return is_bind and os.path.isabs(source) and os.path.isdir(source)


def _inside(base: Path, guest_path: str) -> Path | None:
    """The host directory for ``guest_path`` inside ``base`` (resolved), or None if it
    escapes or is absent."""
    try:
        p = (base / guest_path.lstrip("/")).resolve()
    except (OSError, RuntimeError):
        return None
    return p if p.is_relative_to(base) and p.is_dir() else None


def _cwd_preopen(root: Path, cwd: str) -> Path | None:
    """The host directory to offer as ``.`` for the guest's ``cwd``; None for the root
    itself (already ``/``) or a cwd outside it."""
    if not cwd.strip("/"):
        return None  # "/": nothing to resolve (each resolve is an lstat per component)
    try:
        base = root.resolve()
    except (OSError, RuntimeError):
        return None
    found = _inside(base, cwd)
    return found if found is not None and found != base else None


def wasi_config(
    ctx: RuntimeContext,
    publish: Callable[[FifoUnblocker], None],
    publish_hold: Callable[[OutputHold], None],
    appenders: list[AppendingOutput | AppendingPipe],
) -> wasmtime.WasiConfig:
    """The guest's WASI: argv, its own env only, preopens (rootfs, bind mounts, cwd), stdio.

    ``publish`` gets the FIFO unblocker before any stdio open can block (the kill side
    releases it), ``publish_hold`` the read-write hold on the output FIFOs (the caller
    closes it after the Store, before the output drain); regular-file outputs are appended
    by wasmtime itself (:func:`~runwasi_py.hand_appending_file`), else through
    :class:`AppendingPipe`s (or, without ``/proc``, :class:`AppendingOutput` callbacks)
    added to ``appenders``, which the caller closes after the Store is gone: the
    two cover different outputs (FIFOs vs files). Worker thread only.
    """
    import wasmtime

    wasi = wasmtime.WasiConfig()
    wasi.argv = list(ctx.args)
    # Only the container's own env: nothing of the shim's environment leaks in.
    wasi.env = [tuple(e.split("=", 1)) for e in ctx.envs if e.partition("=")[0] and "=" in e]
    root = ctx.rootfs
    readonly = bool(ctx.spec.get("root", {}).get("readonly", False))
    wasi.preopen_dir(str(root), "/", fs_mutable=not readonly)
    for m in ctx.mounts:
        if not _is_dir_bind(m.type, m.options, m.source) or m.destination in ("", "/"):
            continue
        wasi.preopen_dir(m.source, m.destination, fs_mutable="ro" not in m.options)
    # wasmtime-py cannot set the guest's working directory. Newer wasi-libc resolves
    # relative paths from "/", older toolchains from a "." preopen: give them cwd.
    cwd = _cwd_preopen(root, ctx.cwd)
    if cwd is not None:
        wasi.preopen_dir(str(cwd), ".", fs_mutable=not readonly)

    stdio = ctx.stdio
    fifos = stdio.unblocker()
    publish(fifos)
    if ctx.kill_signal is not None:  # killed before the unblocker was published
        fifos.release()
    # Each assignment opens its path here, on the worker thread. Output FIFOs are held
    # read-write first, so their opens never wait for a reader (see runwasi_py._stdio).
    hold = stdio.output_hold()
    publish_hold(hold)
    if ctx.kill_signal is not None:
        hold.discard_after_kill()
    if stdio.stdin:
        with stdin_opens_at_once(stdio.stdin):
            wasi.stdin_file = stdio.stdin
    for path, native, custom in (
        (stdio.stdout, "stdout_file", "stdout_custom"),
        (stdio.stderr, "stderr_file", "stderr_custom"),
    ):
        if not path:
            continue
        if not stdio.is_fifo(path) and _is_regular_or_missing(path):
            if pipe_paths_work():
                # wasmtime writes the file itself, appending (its fd swapped for ours)
                if hand_appending_file(path, functools.partial(setattr, wasi, native)):
                    continue
                # its fd was not found: a pipe the pump appends (no Python per write)
                pipe = AppendingPipe(path)
                appenders.append(pipe)
                setattr(wasi, native, pipe.path)
                pipe.opened()
            else:
                appender = AppendingOutput(path)
                appenders.append(appender)
                setattr(wasi, custom, appender)
        else:
            setattr(wasi, native, path)
    return wasi
