"""The bundled engine: :class:`WasmtimeSandbox` runs WASI programs with wasmtime-py.

Theory of operation. Each container runs on its worker thread's own ``wasmtime.Engine``
(one instance at a time per thread: ``_engines.py``) with epoch interruption on, and its
Store gets an epoch deadline of one tick: a kill (from
``interrupt`` or the context's ``on_kill``) bumps that engine's epoch and the guest traps at
its next function entry or loop header, without touching any other container. Everything
else in :meth:`WasmtimeSandbox.run_wasi` is synchronous and runs on the instance's worker
thread (wasmtime releases the GIL inside wasm): load, configure WASI (which opens the
stdio FIFOs), instantiate, call. A kill is looked for between those steps too, so one
that lands before the guest runs needs no trap.

Exit statuses: ``proc_exit`` is our own host function (wasmtime's refuses 126 and up); a
trap, or the memory budget, is 137 with the message on the container's stderr; a kill is
128 + signal. The memory limit is one budget across the container's memories and tables
(``_budget``); wasmtime-py's store limits make a refused ``memory.grow`` return -1 with no
callback, so "out of memory" is inferred: a trap with a memory near its cap.

Host calls: epoch interruption reaches wasm code only, so the calls a guest can block in
are made interruptible: ``poll_oneoff`` (every sleep) is our own (``_poll``) and returns on
a kill; a blocked stdin read is woken (``runwasi_py.FifoUnblocker``) and a write blocked on
a full output pipe is drained (``runwasi_py.OutputHold``). A component's wasi:io poll is
wasmtime's and still runs to its end.

Precompiled artifacts are native code: they run only from the framework's compile cache
(written by this engine's ``compile``), or from an image where the operator or the shim's
author opted in (``_trust``).

``import wasmtime`` costs ~28 ms, more than a shim's whole ``start`` budget, so this module
imports it only inside methods; importing the shim class stays cheap.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runwasi_py import (
    AppendingOutput,
    AppendingPipe,
    FifoUnblocker,
    InvalidArgument,
    OutputHold,
    RuntimeContext,
    Sandbox,
)
from runwasi_py.wasmtime._binary import BinaryKind, describe, detect
from runwasi_py.wasmtime._budget import MemoryBudget, configure_engine
from runwasi_py.wasmtime._engines import EngineSlot, slot_for_this_thread
from runwasi_py.wasmtime._exit import (
    EXIT_TRAP,
    _cannot_run,
    _check_kill,
    _Killed,
    _killed_status,
    _memory_at_limit,
    _message,
    _write_stderr,
)
from runwasi_py.wasmtime._trust import check_cache_entry, check_image_artifact
from runwasi_py.wasmtime._wasi import wasi_config

if TYPE_CHECKING:
    import wasmtime

__all__ = ["WasmtimeSandbox"]

log = logging.getLogger("runwasi_py.wasmtime")


_HEAD = 4096
_RUN_INTERFACE = "wasi:cli/run@"
# Bind mounts the instance may see; other OCI mounts (proc, sysfs, tmpfs...) name no host dir.


class _Program:
    """A compiled program: its kind (MODULE or COMPONENT) and the wasmtime object."""

    __slots__ = ("compiled", "kind")

    def __init__(self, kind: BinaryKind, compiled: Any) -> None:
        self.kind = kind
        self.compiled = compiled  # wasmtime.Module | wasmtime.component.Component


class WasmtimeSandbox(Sandbox):
    """Runs a WASI preview 1 module or a WASI preview 2 command component with wasmtime.

    Entrypoints: a core module (``_start``, or the function named after ``#``), a component
    exporting ``wasi:cli/run``, an artifact precompiled by this engine, or WebAssembly text.
    Exit codes: ``proc_exit(n)`` gives n, a return gives 0, a trap or the memory limit gives
    137 (message on the container's stderr), a kill gives 128 + signal.

    Example:
        >>> class MyShim(Shim):
        ...     name = "mywasmtime"
        ...     sandbox = WasmtimeSandbox
    """

    accept_precompiled: ClassVar[bool] = False
    """Run entrypoints that are wasmtime artifacts shipped in images (runwasi does).

    An artifact is native code that wasmtime maps and runs without validation, as the
    shim's user: set True only if every image this shim runs is trusted. The operator can
    opt in without a new shim: ``RUNWASI_PY_ACCEPT_PRECOMPILED=1`` in containerd's
    environment. Artifacts from the framework's compile cache are always run.
    """
    template_modules: ClassVar[tuple[str, ...]] = (
        "wasmtime",
        "wasmtime.component",
        "runwasi_py.wasmtime._poll",
        "runwasi_py.wasmtime._gil",
    )

    max_memories: ClassVar[int] = 1
    """Linear memories a container may have in all; the memory budget is shared evenly
    between them. 1 (the default) also validates modules without multi-memory."""
    worker_nice: ClassVar[int] = 10
    """Nice value of the worker thread while wasm runs (0 = leave it alone).

    A busy guest never yields: with many of them on few cores the shim's control loop
    waits its turn behind them. At nice 10 the loop thread (nice 0) preempts them when it
    wakes; measured with 100 spinning instances on 2 cores, the loop's 1 ms timer overshoot
    went from p95 27 / max 162 ms to 7 / 23 ms (benchmarks/wasmtime_bench.py). Inside a
    cgroup this only ranks the shim's own threads against each other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine: wasmtime.Engine | None = None
        self._fifos: FifoUnblocker | None = None
        self._hold: OutputHold | None = None
        self._appenders: list[AppendingOutput | AppendingPipe] = []  # worker thread only
        # Set by a kill: ends this task's poll_oneoff wait. One per task (a sandbox serves
        # one instance), handed to the thread's shared linker for this run only.
        self._wake = threading.Event()
        # What can_handle found at Create (a sandbox serves one container), so Start does
        # not read the file's head again. A file changed in between is still safe: an
        # artifact only runs from the trusted cache or past check_image_artifact, and
        # wasmtime validates what it compiles as the kind remembered here.
        self._kind: BinaryKind | None = None

    # -- Sandbox hooks --------------------------------------------------------------

    async def can_handle(self, ctx: RuntimeContext) -> None:
        """Accept wasm modules and components, this engine's artifacts, and WAT text."""
        src = ctx.entrypoint.source
        head = _read_head(src, ctx.entrypoint.path) if src is not None else None
        if head is None:
            raise InvalidArgument(f"entrypoint {ctx.entrypoint.path!r} not found in the rootfs")
        kind = detect(head)
        if kind is BinaryKind.PRECOMPILED:
            check_image_artifact(ctx.entrypoint.path, self.accept_precompiled)
        if kind is None:
            raise InvalidArgument(
                f"entrypoint {ctx.entrypoint.path!r} is {describe(head)}; the pywasmtime shim "
                "runs wasm modules, wasm components, wasmtime precompiled artifacts and "
                "WebAssembly text"
            )
        self._kind = kind

    def interrupt(self, signal: int) -> None:
        """Stop this container's guest: bump its engine's epoch and unblock its stdio.

        Any signal ends the guest (preview 1 has no signal handlers); the exit status is
        128 + the signal recorded in the context. Quick and thread-safe.
        """
        self._wake.set()
        with self._lock:
            engine, fifos, hold = self._engine, self._fifos, self._hold
            # Under the lock: the engine is the worker thread's (_engines.py) and serves the
            # next instance on that thread once run_wasi has cleared self._engine.
            if engine is not None:
                engine.increment_epoch()
        if fifos is not None:
            fifos.release()
        if hold is not None:
            hold.discard_after_kill()

    def cache_key(self) -> str:
        """wasmtime's version, the host machine and the engine settings artifacts depend on."""
        return _engine_key(self.max_memories)

    def compile(self, wasm: bytes) -> bytes:
        """Compile a module, component or WAT text into an artifact for ``run_wasi``."""
        kind = detect(wasm[:_HEAD])
        if kind is BinaryKind.PRECOMPILED:
            # Passed through into the cache, an image's artifact would come out trusted.
            check_image_artifact("the module", self.accept_precompiled)
            return wasm
        if kind is None:
            raise InvalidArgument(f"cannot compile {describe(wasm[:_HEAD])}")
        program = _compile(new_engine(self.max_memories), kind, wasm)
        return bytes(program.compiled.serialize())

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        """Run the container's program to its end on this (worker) thread; the exit code."""
        ctx.on_kill(self.interrupt)
        before = _renice(self.worker_nice) if self.worker_nice else None
        try:
            code = self._run(ctx)
            # Killed, but the guest got to its end first (it sat in a host call, where no
            # epoch check happens): still killed, as a process would be.
            return code if ctx.kill_signal is None else _killed_status(ctx)
        except _Killed:
            return _killed_status(ctx)
        finally:
            with self._lock:
                fifos, self._fifos = self._fifos, None
                hold, self._hold = self._hold, None
                self._engine = None
            if fifos is not None:
                fifos.close()
            if hold is not None:
                hold.close()  # before the framework's output drain (see runwasi_py._stdio)
            for appender in self._appenders:
                appender.close()
            self._appenders.clear()
            if before is not None:
                # The framework may reuse this thread; raising priority back needs
                # CAP_SYS_NICE (a root shim has it), so this is best effort.
                _renice(before)

    # -- one run, step by step ------------------------------------------------------

    def _run(self, ctx: RuntimeContext) -> int:
        _check_kill(ctx)
        import wasmtime

        slot = slot_for_this_thread(self.max_memories)
        engine = slot.engine
        with self._lock:
            self._engine = engine
        # A kill recorded before the engine was published bumped nothing; checked below.
        try:
            program = self._load(slot, ctx)
        except (wasmtime.WasmtimeError, OSError, InvalidArgument, UnicodeDecodeError) as exc:
            return _cannot_run(ctx, f"cannot load {ctx.entrypoint.path!r}: {_message(exc)}")
        _check_kill(ctx)

        try:
            wasi = wasi_config(ctx, self._publish_fifos, self._publish_hold, self._appenders)
        except (wasmtime.WasmtimeError, OSError) as exc:
            return _cannot_run(ctx, f"cannot set up WASI: {_message(exc)}")
        _check_kill(ctx)

        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1)  # with epoch interruption on, no deadline = trap at once
        budget = self._budget(ctx)
        if budget is not None:
            budget.apply(store)
        store.set_wasi(wasi)
        try:
            # The deadline is one tick after the engine's epoch *now*: a kill whose bump came
            # before it (this thread's engine outlives runs) is caught here instead.
            _check_kill(ctx)
            if program.kind is BinaryKind.COMPONENT:
                return self._run_component(ctx, store, program.compiled)
            return self._run_module(ctx, store, program.compiled)
        finally:
            # Close the guest's stdio now (EOF for containerd), not whenever GC gets to it.
            store.close()
            slot.end_run()

    def _load(self, slot: EngineSlot, ctx: RuntimeContext) -> _Program:
        src = ctx.entrypoint.source
        if src is None:
            raise InvalidArgument("the entrypoint has no file in the rootfs")
        kind = self._kind
        if kind is None:  # run without can_handle (direct use of the sandbox)
            with src.open("rb") as f:
                head = f.read(_HEAD)
            kind = detect(head)
            if kind is None:
                raise InvalidArgument(f"the file is {describe(head)}")
        if kind is BinaryKind.PRECOMPILED:
            check_image_artifact(ctx.entrypoint.path, self.accept_precompiled)
            # Not through the slot's module cache: that holds trusted cache entries only.
            return _deserialize(slot, src, None, cached=None)
        expected = None if kind is BinaryKind.WAT else kind
        if ctx.precompiled is not None:
            try:
                # Checked on every run, before the slot's cache: a hit proves nothing. The
                # check's lstat (a regular file, no symlink) is the cache's key as well.
                st = check_cache_entry(ctx.precompiled)
                return _deserialize(slot, ctx.precompiled, expected, cached=st)
            except Exception as exc:  # stale, or not provably ours: compile instead
                log.warning("precompiled %s unusable, compiling: %s", ctx.precompiled, exc)
        # No artifact from the framework's compile cache (or a stale one): compile here.
        return _compile(slot.engine, kind, src.read_bytes())

    def _publish_fifos(self, fifos: FifoUnblocker) -> None:
        with self._lock:
            self._fifos = fifos

    def _publish_hold(self, hold: OutputHold) -> None:
        with self._lock:
            self._hold = hold

    def _budget(self, ctx: RuntimeContext) -> MemoryBudget | None:
        limit = ctx.memory_limit
        if limit is None or limit <= 0:
            return None
        return MemoryBudget.split(limit, memories=self.max_memories)

    def _run_module(self, ctx: RuntimeContext, store: wasmtime.Store, module: Any) -> int:
        import wasmtime

        # The thread's linker, with this run's exit record, kill event and clock start.
        linker, exited = slot_for_this_thread(self.max_memories).module_linker(self._wake)
        try:
            instance = linker.instantiate(store, module)  # runs a start section, if any
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # Trap is no WasmtimeError
            if exited:
                return exited[0]
            return self._ended_by_error(ctx, exc, None, store, instantiating=True)
        if exited:
            return exited[0]
        _check_kill(ctx)
        exports = instance.exports(store)
        func_name = ctx.entrypoint.func
        func = exports.get(func_name)
        if not isinstance(func, wasmtime.Func):
            names = sorted(n for n in exports if isinstance(exports[n], wasmtime.Func))
            return _cannot_run(
                ctx, f"{ctx.entrypoint.path!r} exports no function {func_name!r} (has: {names})"
            )
        if _takes_params(module, func, store, func_name):
            return _cannot_run(ctx, f"function {func_name!r} takes parameters; it cannot be run")
        try:
            init = exports.get("_initialize")
            if func_name != "_initialize" and isinstance(init, wasmtime.Func):
                init(store)  # a WASI reactor: initialise before calling its export
            func(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # Trap is no WasmtimeError
            if exited:
                return exited[0]
            return self._ended_by_error(ctx, exc, instance, store, instantiating=False)
        return exited[0] if exited else 0

    def _run_component(self, ctx: RuntimeContext, store: wasmtime.Store, component: Any) -> int:
        import wasmtime
        import wasmtime.component as wc

        linker = wc.Linker(store.engine)
        linker.add_wasip2()
        try:
            instance = linker.instantiate(store, component)
        except wasmtime.ExitTrap as exc:
            return exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # Trap is no WasmtimeError
            return self._ended_by_error(ctx, exc, None, store, instantiating=True)
        _check_kill(ctx)
        func, what = _component_entry(store.engine, component, instance, store, ctx)
        if func is None:
            return _cannot_run(ctx, what)
        try:
            result = func(store)
            func.post_return(store)
        except wasmtime.ExitTrap as exc:
            return exc.code
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:  # Trap is no WasmtimeError
            return self._ended_by_error(ctx, exc, None, store, instantiating=False)
        # wasi:cli/run returns result<_, _>: ok is 0, err is 1 (as wasmtime's CLI does).
        return 1 if getattr(result, "tag", None) == "err" else 0

    def _ended_by_error(
        self,
        ctx: RuntimeContext,
        exc: Exception,
        instance: Any,
        store: wasmtime.Store,
        *,
        instantiating: bool,
    ) -> int:
        """A trap or a failed instantiation: killed, out of memory, or a plain trap."""
        if ctx.kill_signal is not None:
            return _killed_status(ctx)
        message = _message(exc)
        budget = self._budget(ctx)
        if budget is not None and (
            (instantiating and "exceeds memory limits" in message)
            or (instantiating and "table" in message and "limit" in message)
            or _memory_at_limit(instance, store, budget.memory_bytes)
        ):
            limit = budget.total
            ctx.report_oom()
            log.warning("container %s: out of memory (limit %d bytes)", ctx.container_id, limit)
            _write_stderr(ctx, f"out of memory: the {limit}-byte memory limit ended the program\n")
            return EXIT_TRAP
        if instantiating and "count too high" in message:
            tables = budget.tables if budget is not None else 0
            return _cannot_run(
                ctx,
                f"cannot instantiate {ctx.entrypoint.path!r}: {message} (the memory budget "
                f"allows {self.max_memories} memory and {tables} tables)",
            )
        if instantiating:
            return _cannot_run(ctx, f"cannot instantiate {ctx.entrypoint.path!r}: {message}")
        log.warning("container %s: wasm trap: %s", ctx.container_id, message)
        _write_stderr(ctx, message if message.endswith("\n") else message + "\n")
        return EXIT_TRAP


# -- helpers ------------------------------------------------------------------------

_preload_lock = threading.Lock()
_preloading: threading.Thread | None = None


def preload() -> None:
    """Import wasmtime on a background thread, once per process (quick; any thread).

    A fresh shim daemon otherwise pays the import (~28 ms, more on a busy machine) inside
    the first task's Start or Create. Python's import lock makes a run that starts before
    the import finished wait for it rather than import twice.
    """
    global _preloading
    with _preload_lock:
        if _preloading is not None:
            return

        def load() -> None:
            try:
                import wasmtime  # noqa: F401

                _engine_key()
            except Exception:  # the run that needs it will report the problem
                log.debug("preloading wasmtime failed", exc_info=True)

        _preloading = threading.Thread(target=load, name="wasmtime-preload", daemon=True)
        _preloading.start()


def new_engine(max_memories: int = 1) -> wasmtime.Engine:
    """An Engine configured exactly as every run and every compile needs it."""
    import wasmtime

    from runwasi_py.wasmtime._gil import keep_gil_in_short_calls

    keep_gil_in_short_calls()  # before the engine serves a run (see there why)
    config = wasmtime.Config()
    config.epoch_interruption = True
    configure_engine(config, max_memories)
    return wasmtime.Engine(config)


@functools.cache
def _engine_key(max_memories: int = 1) -> str:
    import platform
    from importlib.metadata import version

    import wasmtime

    # The artifact depends on these; deserialize checks them too, but a key that says
    # them keeps two incompatible hosts sharing a cache directory from thrashing it.
    features = configure_engine(wasmtime.Config(), max_memories)
    return f"wasmtime-py-{version('wasmtime')}:{platform.machine()}:epoch-interruption:{features}"


def _compile(engine: wasmtime.Engine, kind: BinaryKind, wasm: bytes) -> _Program:
    import wasmtime
    import wasmtime.component as wc

    if kind is BinaryKind.WAT:
        wasm = bytes(wasmtime.wat2wasm(wasm.decode("utf-8")))
        kind = detect(wasm[:8]) or BinaryKind.MODULE
    if kind is BinaryKind.COMPONENT:
        return _Program(BinaryKind.COMPONENT, wc.Component(engine, wasm))
    return _Program(BinaryKind.MODULE, wasmtime.Module(engine, wasm))


def _deserialize(
    slot: EngineSlot, path: Path, expected: BinaryKind | None, *, cached: os.stat_result | None
) -> _Program:
    """Load an artifact file as ``expected`` (None: a module, else a component).

    ``cached``: the trust-checked ``lstat`` of a compile-cache entry, which may then come
    from the slot's module cache; None for anything else.
    """
    import wasmtime
    import wasmtime.component as wc

    engine = slot.engine
    if expected is BinaryKind.COMPONENT:
        return _Program(BinaryKind.COMPONENT, wc.Component.deserialize_file(engine, str(path)))
    try:
        if cached is not None:
            return _Program(BinaryKind.MODULE, slot.module(path, cached))
        return _Program(BinaryKind.MODULE, wasmtime.Module.deserialize_file(engine, str(path)))
    except wasmtime.WasmtimeError:
        if expected is not None:
            raise
    return _Program(BinaryKind.COMPONENT, wc.Component.deserialize_file(engine, str(path)))


_PARAMS: weakref.WeakKeyDictionary[Any, dict[str, bool]] = weakref.WeakKeyDictionary()
_params_lock = threading.Lock()


def _takes_params(module: Any, func: Any, store: wasmtime.Store, name: str) -> bool:
    """Whether the module's export ``name`` (the function ``func``) takes parameters.

    A property of the module, remembered for the modules the engine slots keep: asking
    ``func.type`` is four calls into wasmtime, each of which lets go of the GIL.
    """
    with _params_lock:
        known = _PARAMS.get(module, {}).get(name)
    if known is None:
        known = bool(func.type(store).params)
        with _params_lock:
            _PARAMS.setdefault(module, {})[name] = known
    return known


def _component_entry(
    engine: wasmtime.Engine,
    component: Any,
    instance: Any,
    store: wasmtime.Store,
    ctx: RuntimeContext,
) -> tuple[Any, str]:
    """The function to call: ``wasi:cli/run``'s ``run``, or the top-level ``#func`` export."""
    func_name = ctx.entrypoint.func
    exports = list(component.type.exports(engine))
    if func_name != "_start":
        idx = component.get_export_index(func_name)
        func = instance.get_func(store, idx) if idx is not None else None
        if func is None:
            return None, f"{ctx.entrypoint.path!r} exports no function {func_name!r} ({exports})"
        return func, func_name
    for name in exports:
        if name.startswith(_RUN_INTERFACE):
            iface = component.get_export_index(name)
            idx = component.get_export_index("run", iface)
            func = instance.get_func(store, idx) if idx is not None else None
            if func is not None:
                return func, name
    return None, (
        f"{ctx.entrypoint.path!r} is a component without a wasi:cli/run export "
        f"(exports: {exports}); only command components can run"
    )


def _read_head(path: Path, guest_path: str) -> bytes | None:
    """The first ``_HEAD`` bytes of the regular file ``path``; None if it is not one.

    One open, fstat and read: this runs on the control loop at every Create. Raises
    InvalidArgument for a regular file that cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise InvalidArgument(f"entrypoint {guest_path!r}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, _HEAD)
    except OSError as exc:
        raise InvalidArgument(f"entrypoint {guest_path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _renice(nice: int) -> int | None:
    """Set this thread's nice value (per thread on Linux); the previous one, None if unchanged."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        if before == nice:
            return None
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError:
        return None
    return before
