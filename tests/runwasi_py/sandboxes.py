"""Test sandboxes: no wasm, just Python that behaves like the workloads the tests need.

:class:`ScriptSandbox` reads a tiny script from ``ctx.args[1:]``, so one class covers every
case and works through a real bundle (subprocess shims included):

====================  ==================================================================
``out TEXT``          write TEXT and a newline to stdout
``err TEXT``          write TEXT and a newline to stderr
``env NAME``          write the value of NAME from ``ctx.envs`` to stdout
``arg``               write ``ctx.args`` joined by spaces to stdout
``exit N``            return N
``raise MSG``         raise RuntimeError(MSG)
``sleep``             await forever (cancellable: a kill ends it)
``block``             block the thread, ignoring cancellation, until :data:`RELEASE` is set
``oom``               report an OOM to the framework and return 137
``burn MS``           spin the CPU for MS milliseconds
``idle``              wait for the kill through ``ctx.on_kill`` only (as an engine does)
====================  ==================================================================

The script ends with exit 0 unless it says otherwise.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import BinaryIO

from runwasi_py import RuntimeContext, Sandbox, Shim

RELEASE = threading.Event()
"""Set by tests to let a ``block`` script end (so no thread outlives the test)."""

_ENTERED: dict[str, threading.Event] = {}
_ENTERED_LOCK = threading.Lock()


def entered(container_id: str) -> threading.Event:
    """Set once the container's script reached ``sleep``, ``block`` or ``idle``."""
    with _ENTERED_LOCK:
        return _ENTERED.setdefault(container_id, threading.Event())


INTERRUPTS: list[tuple[str, int]] = []
"""(container id, signal) for every ``interrupt`` call, in order."""


def reset() -> None:
    """Forget what earlier tests recorded; block ``block`` scripts again."""
    RELEASE.clear()
    INTERRUPTS.clear()
    with _ENTERED_LOCK:
        _ENTERED.clear()


class ScriptSandbox(Sandbox):
    """Runs the script in ``ctx.args[1:]`` (see the module docstring)."""

    def __init__(self) -> None:
        self._ctx: RuntimeContext | None = None

    def interrupt(self, signal: int) -> None:
        if self._ctx is not None:
            INTERRUPTS.append((self._ctx.container_id, signal))

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        self._ctx = ctx
        stdout = ctx.stdio.open_stdout()
        stderr = ctx.stdio.open_stderr()
        try:
            it = iter(ctx.args[1:])
            for word in it:
                if word == "out":
                    _write(stdout, next(it))
                elif word == "err":
                    _write(stderr, next(it))
                elif word == "env":
                    name = next(it)
                    value = next(
                        (e.partition("=")[2] for e in ctx.envs if e.partition("=")[0] == name), ""
                    )
                    _write(stdout, value)
                elif word == "arg":
                    _write(stdout, " ".join(ctx.args))
                elif word == "exit":
                    return int(next(it))
                elif word == "raise":
                    raise RuntimeError(next(it))
                elif word == "sleep":
                    entered(ctx.container_id).set()
                    await asyncio.Event().wait()
                elif word == "block":
                    entered(ctx.container_id).set()
                    while not RELEASE.wait(0.05):
                        pass
                elif word == "oom":
                    ctx.report_oom()
                    return 137
                elif word == "burn":
                    end = time.thread_time() + int(next(it)) / 1000
                    while time.thread_time() < end:
                        pass
                elif word == "idle":
                    entered(ctx.container_id).set()
                    return await _until_killed(ctx)
                else:
                    raise ValueError(f"unknown script word {word!r}")
            return 0
        finally:
            for f in (stdout, stderr):
                if f is not None:
                    f.close()


async def _until_killed(ctx: RuntimeContext) -> int:
    """Wait for the kill through ``on_kill`` alone (as an engine would), shielded from cancel."""
    loop = asyncio.get_running_loop()
    killed: asyncio.Future[int] = loop.create_future()

    def deliver(sig: int) -> None:
        loop.call_soon_threadsafe(lambda: None if killed.done() else killed.set_result(sig))

    ctx.on_kill(deliver)
    try:
        return await asyncio.shield(killed)
    except asyncio.CancelledError:
        return 128 + await killed


def _write(f: BinaryIO | None, text: str) -> None:
    if f is not None:
        f.write(text.encode() + b"\n")


class ScriptShim(Shim):
    """A shim running :class:`ScriptSandbox` (``tests.runwasi_py.sandboxes:ScriptShim``)."""

    name = "script-test"
    sandbox = ScriptSandbox
