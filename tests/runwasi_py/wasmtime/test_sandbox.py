"""WasmtimeSandbox driven directly: a RuntimeContext built by hand, run on a worker thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from runwasi_py import InvalidArgument, Mount, RuntimeContext, Stdio
from runwasi_py.wasmtime import WasmtimeSandbox
from tests.runwasi_py.wasmtime.helpers import make_ctx, out, run, start, wasm


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own compile cache directory."""
    d = tmp_path / "cache"
    monkeypatch.setenv("RUNWASI_PY_CACHE_DIR", str(d))
    return d


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` is true (not a timing assertion: a bound on a hang)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def kill(sandbox: WasmtimeSandbox, ctx: RuntimeContext, sig: int) -> None:
    """What the framework does on Kill: record it in the context, then interrupt."""
    ctx.deliver_kill(sig)
    sandbox.interrupt(sig)


def test_hello(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello")
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "hello world\n"
    assert out(tmp_path, "stderr") == ""


def test_args_and_env_only_the_containers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_SECRET", "leak")
    ctx = make_ctx(tmp_path, "echo", args=["one", "two words"], envs=["A=1", "B=x=y", "BROKEN"])
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "/app.wasm\none\ntwo words\nA=1\nB=x=y\n"
    assert "SHIM_SECRET" not in out(tmp_path)


@pytest.mark.parametrize("code", [0, 3, 42, 125, 126, 255, 256, 4294967295])
def test_exit_codes(tmp_path: Path, code: int) -> None:
    ctx = make_ctx(tmp_path, "exit", args=[str(code)])
    assert run(WasmtimeSandbox(), ctx) == code
    assert out(tmp_path, "stderr") == ""


def test_return_from_start_is_zero(tmp_path: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "exit")) == 0


def test_stderr(tmp_path: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "stderr")) == 0
    assert out(tmp_path) == "to stdout\n"
    assert out(tmp_path, "stderr") == "to stderr\n"


def test_reads_a_file_from_the_rootfs(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "cat", args=["/etc/motd"])
    (ctx.rootfs / "etc").mkdir()
    (ctx.rootfs / "etc" / "motd").write_text("inside the rootfs\n")
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "inside the rootfs\n"


@pytest.mark.parametrize(
    ("path", "errno"),
    [
        ("/../../../../../../etc/passwd", 63),  # EPERM: escapes the preopen
        ("/etc/passwd", 44),  # ENOENT: the host's /etc is not the rootfs's
        ("../secret.txt", 63),
    ],
)
def test_files_outside_the_rootfs_are_unreachable(tmp_path: Path, path: str, errno: int) -> None:
    (tmp_path / "secret.txt").write_text("host secret\n")
    ctx = make_ctx(tmp_path, "cat", args=[path])
    assert run(WasmtimeSandbox(), ctx) == 1
    assert out(tmp_path) == ""
    assert out(tmp_path, "stderr") == f"errno={errno}\n"


def bind_mounts(tmp_path: Path) -> list[Mount]:
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("mounted\n")
    return [
        Mount(destination="/data", source=str(data), options=("rbind", "ro")),
        Mount(destination="/proc", source="proc", type="proc"),  # no host dir: skipped
        Mount(destination="/missing", source=str(tmp_path / "missing")),  # skipped
    ]


def test_preopens_are_the_rootfs_and_directory_mounts(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "preopens", mounts=bind_mounts(tmp_path))
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "/\n/data\n"


def test_a_bind_mount_is_readable(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "cat", args=["f.txt", "4"], mounts=bind_mounts(tmp_path))
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "mounted\n"


def test_cwd_is_offered_as_dot(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "preopens")
    (ctx.rootfs / "work").mkdir()
    ctx.cwd = "/work"
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "/\n.\n"


def test_cwd_outside_the_rootfs_is_ignored(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "preopens")
    ctx.cwd = "/../../.."
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "/\n"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_kill_ends_a_busy_loop(tmp_path: Path, sig: int) -> None:
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "loop")
    fut = start(sandbox, ctx)
    wait_for(lambda: out(tmp_path) == "running\n")
    assert not fut.done()
    kill(sandbox, ctx, sig)
    assert fut.result(20) == 128 + sig
    assert out(tmp_path, "stderr") == ""


def test_on_kill_alone_ends_the_loop(tmp_path: Path) -> None:
    """The context's kill callback is enough, even if the framework never calls interrupt."""
    ctx = make_ctx(tmp_path, "loop")
    fut = start(WasmtimeSandbox(), ctx)
    wait_for(lambda: out(tmp_path) == "running\n")
    ctx.deliver_kill(signal.SIGTERM)
    assert fut.result(20) == 128 + signal.SIGTERM


def test_kill_before_start(tmp_path: Path) -> None:
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "hello")
    kill(sandbox, ctx, signal.SIGKILL)
    assert run(sandbox, ctx) == 137
    assert out(tmp_path) == ""


def test_one_kill_stops_only_its_own_instance(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a, b = WasmtimeSandbox(), WasmtimeSandbox()
    ctx_a, ctx_b = make_ctx(a_dir, "loop"), make_ctx(b_dir, "loop")
    fa, fb = start(a, ctx_a), start(b, ctx_b)
    wait_for(lambda: out(a_dir) == "running\n" and out(b_dir) == "running\n")
    kill(a, ctx_a, signal.SIGKILL)
    assert fa.result(20) == 137
    assert not fb.done()
    kill(b, ctx_b, signal.SIGTERM)
    assert fb.result(20) == 143


def test_memory_limit_ends_the_task_as_oom(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "grow", memory_limit=4 << 20)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert ctx.oom
    assert out(tmp_path) == "growing\n"
    assert "out of memory" in out(tmp_path, "stderr")


def test_initial_memory_over_the_limit_is_oom(tmp_path: Path) -> None:
    big = b'(module (memory 64) (func (export "_start")))'
    ctx = make_ctx(tmp_path, big, memory_limit=1 << 20)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert ctx.oom


def test_without_a_limit_a_trap_is_not_oom(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "trap", memory_limit=64 << 20)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert not ctx.oom


def test_trap(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = make_ctx(tmp_path, "trap")
    with caplog.at_level("WARNING", logger="runwasi_py.wasmtime"):
        assert run(WasmtimeSandbox(), ctx) == 137
    assert out(tmp_path) == "before\n"
    assert "integer divide by zero" in out(tmp_path, "stderr")
    assert "integer divide by zero" in caplog.text
    assert not ctx.oom


def test_custom_entrypoint_function(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "entry", func="greet")
    assert run(WasmtimeSandbox(), ctx) == 7
    assert out(tmp_path) == "greet\n"


def test_default_entrypoint_function(tmp_path: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "entry")) == 0
    assert out(tmp_path) == "start\n"


def test_missing_entrypoint_function(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "entry", func="nope")
    assert run(WasmtimeSandbox(), ctx) == 1
    err = out(tmp_path, "stderr")
    assert "no function 'nope'" in err
    assert "greet" in err


def test_wat_text_entrypoint(tmp_path: Path) -> None:
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "hello", as_text=True)
    asyncio.run(sandbox.can_handle(ctx))
    assert run(sandbox, ctx) == 0
    assert out(tmp_path) == "hello world\n"


def test_component_prints(tmp_path: Path) -> None:
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "component")
    asyncio.run(sandbox.can_handle(ctx))
    assert run(sandbox, ctx) == 0
    assert out(tmp_path) == "hello from a component\n"


def test_component_err_is_exit_1(tmp_path: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "component_err")) == 1


def test_component_as_wat_text(tmp_path: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "component", as_text=True)) == 0
    assert out(tmp_path) == "hello from a component\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"#!/bin/sh\necho hi\n", "a script"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(56), "native ELF"),
        (b"\0asm\x02\x00\x00\x00", "unsupported version"),
        (b"", "an empty file"),
        (b"hello\n", "neither wasm"),
    ],
)
def test_can_handle_refuses_non_wasm(tmp_path: Path, content: bytes, says: str) -> None:
    ctx = make_ctx(tmp_path, content)
    with pytest.raises(InvalidArgument, match=says) as info:
        asyncio.run(WasmtimeSandbox().can_handle(ctx))
    assert "/app.wasm" in info.value.message


def test_can_handle_missing_file(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello")
    assert ctx.entrypoint.source is not None
    ctx.entrypoint.source.unlink()
    with pytest.raises(InvalidArgument, match="not found"):
        asyncio.run(WasmtimeSandbox().can_handle(ctx))


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_can_handle_refuses_what_is_not_a_file_without_blocking(tmp_path: Path, kind: str) -> None:
    """A FIFO as the entrypoint: opening it to read its head must not wait for a writer."""
    ctx = make_ctx(tmp_path, "hello")
    assert ctx.entrypoint.source is not None
    ctx.entrypoint.source.unlink()
    if kind == "fifo":
        os.mkfifo(ctx.entrypoint.source)
    else:
        ctx.entrypoint.source.mkdir()
    result: list[BaseException | None] = []

    def check() -> None:
        try:
            asyncio.run(WasmtimeSandbox().can_handle(ctx))
            result.append(None)
        except BaseException as exc:  # handed to the test
            result.append(exc)

    t = threading.Thread(target=check, daemon=True)
    t.start()
    t.join(10)
    assert result, "can_handle blocked"
    assert isinstance(result[0], InvalidArgument)
    assert "not found" in str(result[0])


def test_can_handle_reports_an_unreadable_file(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello")
    assert ctx.entrypoint.source is not None
    ctx.entrypoint.source.chmod(0)
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    with pytest.raises(InvalidArgument, match="Permission denied"):
        asyncio.run(WasmtimeSandbox().can_handle(ctx))


def test_invalid_wasm_body_fails_cleanly(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, b"\0asm\x01\x00\x00\x00\xff\xff\xff")
    assert run(WasmtimeSandbox(), ctx) == 1
    assert "cannot load" in out(tmp_path, "stderr")


def test_unknown_import_fails_cleanly(tmp_path: Path) -> None:
    mod = b'(module (import "env" "nope" (func)) (func (export "_start")))'
    ctx = make_ctx(tmp_path, mod)
    assert run(WasmtimeSandbox(), ctx) == 1
    assert "cannot instantiate" in out(tmp_path, "stderr")


class TrustingSandbox(WasmtimeSandbox):
    accept_precompiled = True


def test_precompiled_entrypoint(tmp_path: Path) -> None:
    sandbox = TrustingSandbox()
    ctx = make_ctx(tmp_path, sandbox.compile(wasm("hello")))
    asyncio.run(sandbox.can_handle(ctx))
    assert run(sandbox, ctx) == 0
    assert out(tmp_path) == "hello world\n"


def test_precompiled_component_entrypoint(tmp_path: Path) -> None:
    sandbox = TrustingSandbox()
    ctx = make_ctx(tmp_path, sandbox.compile(wasm("component")))
    assert run(sandbox, ctx) == 0
    assert out(tmp_path) == "hello from a component\n"


def test_ctx_precompiled_is_used(tmp_path: Path) -> None:
    """The artifact in ctx.precompiled runs, not the module's bytes (they differ here)."""
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "hello")
    artifact = tmp_path / "hello.cwasm"
    artifact.write_bytes(sandbox.compile(wasm("stderr")))
    ctx.precompiled = artifact
    assert run(sandbox, ctx) == 0
    assert out(tmp_path) == "to stdout\n"


def test_stale_precompiled_falls_back_to_compiling(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "hello")
    stale = tmp_path / "stale.cwasm"
    stale.write_bytes(b"\x7fELF\x02\x01\x01\xc8garbage")
    ctx.precompiled = stale
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "hello world\n"


def test_run_fills_the_compile_cache(tmp_path: Path, cache_dir: Path) -> None:
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "hello")) == 0
    entries = list(cache_dir.glob("*.cwasm"))
    assert len(entries) == 1
    # A corrupt entry is detected and replaced on the next run.
    entries[0].write_bytes(b"\x7fELF" + bytes(100))
    from runwasi_py._compile_cache import _shared

    _shared.clear()  # a new shim process: nothing verified in memory
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "hello")) == 0
    assert out(tmp_path) == "hello world\n" * 2  # both runs, appended to one file


def test_compile_refuses_non_wasm() -> None:
    with pytest.raises(InvalidArgument):
        WasmtimeSandbox().compile(b"#!/bin/sh\n")


def test_cache_key_names_version_and_settings() -> None:
    key = WasmtimeSandbox().cache_key()
    assert "50." in key
    assert "epoch" in key


# -- FIFOs ----------------------------------------------------------------------------


def fifo_stdio(tmp_path: Path) -> Stdio:
    paths = {}
    for name in ("stdin", "stdout", "stderr"):
        p = tmp_path / f"{name}.fifo"
        os.mkfifo(p)
        paths[name] = str(p)
    return Stdio(**paths)


class FifoReader:
    """containerd's side of an output FIFO: read everything into a buffer on a thread.

    The thread opens the FIFO blocking, so it reads until the instance's end closes
    (a reader opened earlier would see end-of-file before the instance ever opened it).
    """

    def __init__(self, path: str) -> None:
        self.data = b""
        self.path = path
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 65536):
                self.data += chunk
        finally:
            os.close(fd)

    def finish(self) -> bytes:
        self.thread.join(20)
        assert not self.thread.is_alive()
        return self.data


def test_fifo_stdio(tmp_path: Path) -> None:
    stdio = fifo_stdio(tmp_path)
    ctx = make_ctx(tmp_path, "stdin", stdio=stdio)
    readers = FifoReader(stdio.stdout), FifoReader(stdio.stderr)
    # containerd's writer, connected before the task starts (O_RDWR: no wait for a reader)
    w = os.open(stdio.stdin, os.O_RDWR)
    os.write(w, b"ping\n")
    fut = start(WasmtimeSandbox(), ctx)
    wait_for(lambda: readers[0].data == b"ping\n")
    assert not fut.done()  # the writer is still there: no end-of-file yet
    os.close(w)
    assert fut.result(20) == 0
    assert readers[0].finish() == b"ping\n"
    assert readers[1].finish() == b""


def test_stdin_fifo_nobody_ever_writes_is_eof(tmp_path: Path) -> None:
    """``ctr run`` without -i: the client closed stdin before opening it; no writer comes."""
    stdio = fifo_stdio(tmp_path)
    ctx = make_ctx(tmp_path, "stdin", stdio=stdio)
    readers = FifoReader(stdio.stdout), FifoReader(stdio.stderr)
    assert run(WasmtimeSandbox(), ctx) == 0
    assert readers[0].finish() == b""
    assert readers[1].finish() == b""


def thread_state(tid: int) -> str:
    return Path(f"/proc/self/task/{tid}/wchan").read_text()


def test_stdin_fifo_late_writer_is_not_eof(tmp_path: Path) -> None:
    """containerd's writer still waiting in open(O_WRONLY) counts: the guest waits for data."""
    stdio = fifo_stdio(tmp_path)
    ctx = make_ctx(tmp_path, "stdin", stdio=stdio)
    readers = FifoReader(stdio.stdout), FifoReader(stdio.stderr)
    proceed = threading.Event()

    def late_writer() -> None:
        w = os.open(stdio.stdin, os.O_WRONLY)  # blocks until the task opens its end
        proceed.wait(20)
        os.write(w, b"late\n")
        os.close(w)

    writer = threading.Thread(target=late_writer)
    writer.start()
    assert writer.native_id is not None
    wait_for(lambda: thread_state(writer.native_id) == "wait_for_partner")
    fut = start(WasmtimeSandbox(), ctx)
    # the writer's open returned and the guest sits in fd_read: it did not see end-of-file
    wait_for(lambda: thread_state(writer.native_id) != "wait_for_partner")
    assert not fut.done()
    proceed.set()
    assert fut.result(20) == 0
    writer.join(20)
    assert readers[0].finish() == b"late\n"
    assert readers[1].finish() == b""


def test_no_reader_on_stdout_does_not_stop_the_guest(tmp_path: Path) -> None:
    """``ctr run -d``: the client (and its readers) left; the guest runs to its end anyway."""
    stdio = fifo_stdio(tmp_path)
    ctx = make_ctx(tmp_path, "stderr", stdio=Stdio(stdout=stdio.stdout, stderr=stdio.stderr))
    assert run(WasmtimeSandbox(), ctx) == 0


def test_kill_while_blocked_reading_stdin(tmp_path: Path) -> None:
    stdio = fifo_stdio(tmp_path)
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "stdin", stdio=stdio)
    readers = FifoReader(stdio.stdout), FifoReader(stdio.stderr)
    w = os.open(stdio.stdin, os.O_RDWR)  # containerd's writer, which never closes here
    os.write(w, b"first\n")
    fut = start(sandbox, ctx)
    wait_for(lambda: readers[0].data == b"first\n")
    assert not fut.done()
    kill(sandbox, ctx, signal.SIGTERM)
    assert fut.result(20) == 143
    os.close(w)
    for r in readers:
        r.finish()


def test_trap_message_reaches_a_fifo_stderr(tmp_path: Path) -> None:
    stdio = fifo_stdio(tmp_path)
    stdio = Stdio(stdout=stdio.stdout, stderr=stdio.stderr)
    ctx = make_ctx(tmp_path, "trap", stdio=stdio)
    readers = FifoReader(stdio.stdout), FifoReader(stdio.stderr)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert readers[0].finish() == b"before\n"
    assert b"integer divide by zero" in readers[1].finish()


@pytest.mark.parametrize("fixture", ["hello", "component"])
def test_a_cached_artifact_is_what_runs(tmp_path: Path, cache_dir: Path, fixture: str) -> None:
    """Plant another program's artifact under this module's key: the run proves a cache hit."""
    from runwasi_py._compile_cache import CompileCache, _shared, cache_key_for

    sandbox = WasmtimeSandbox()
    other = "stderr" if fixture == "hello" else "component_err"
    key = cache_key_for(wasm(fixture), sandbox.cache_key())
    CompileCache(cache_dir).put(key, sandbox.compile(wasm(other)))
    _shared.clear()
    code = run(sandbox, make_ctx(tmp_path, fixture))
    if fixture == "hello":
        assert (code, out(tmp_path)) == (0, "to stdout\n")
    else:
        assert (code, out(tmp_path)) == (1, "")


def test_worker_thread_runs_niced_and_is_restored(tmp_path: Path) -> None:
    """The guest runs at worker_nice; the thread gets its old priority back afterwards."""
    seen: list[int] = []
    ctx = make_ctx(tmp_path, "loop")
    sandbox = WasmtimeSandbox()
    done = threading.Event()

    def worker() -> None:
        tid = threading.get_native_id()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        fut = asyncio.run(sandbox.run_wasi(ctx))
        seen.append(fut)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    wait_for(lambda: out(tmp_path) == "running\n")
    tid = t.native_id
    assert tid is not None
    assert os.getpriority(os.PRIO_PROCESS, tid) == WasmtimeSandbox.worker_nice
    kill(sandbox, ctx, signal.SIGKILL)
    assert done.wait(20)
    t.join(20)
    assert seen[1] == 137
    if os.geteuid() == 0:  # raising priority back needs CAP_SYS_NICE
        assert seen[2] == seen[0]


def test_a_reused_worker_thread_is_niced_and_restored_on_every_run(tmp_path: Path) -> None:
    """A pool thread runs task after task: each run is niced and the thread restored."""
    sandbox_nice: list[tuple[int, int]] = []

    class Probe(WasmtimeSandbox):
        def _run(self, ctx: RuntimeContext) -> int:
            sandbox_nice.append((threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)))
            return 0

    def worker() -> list[int]:
        after = []
        for _ in range(3):
            asyncio.run(Probe().run_wasi(make_ctx(tmp_path, "hello")))
            after.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return after

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        after = pool.submit(worker).result(20)
    assert [nice for _, nice in sandbox_nice] == [WasmtimeSandbox.worker_nice] * 3
    if os.geteuid() == 0:  # raising priority back needs CAP_SYS_NICE
        assert after == [0, 0, 0]


def test_preload_imports_wasmtime_once() -> None:
    from runwasi_py.wasmtime import _sandbox

    _sandbox.preload()
    first = _sandbox._preloading
    assert first is not None
    _sandbox.preload()
    assert _sandbox._preloading is first  # once per process
    first.join(30)
    assert not first.is_alive()


def test_unlimited_memory_limit_is_no_oom(tmp_path: Path) -> None:
    """OCI's -1 means no limit: a trap stays a trap."""
    ctx = make_ctx(tmp_path, "trap", memory_limit=-1)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert not ctx.oom
    assert "integer divide by zero" in out(tmp_path, "stderr")


def test_env_entries_without_a_name_are_dropped(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, "echo", envs=["=nameless", "A=1", "NOVALUE"])
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "/app.wasm\nA=1\n"


def test_precompiled_entrypoints_are_refused_by_default(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, TrustingSandbox().compile(wasm("hello")))
    with pytest.raises(InvalidArgument, match="precompiled"):
        asyncio.run(WasmtimeSandbox().can_handle(ctx))
    assert run(WasmtimeSandbox(), ctx) == 1
    assert out(tmp_path) == ""
    assert "precompiled wasmtime artifact" in out(tmp_path, "stderr")


def test_code_after_proc_exit_does_not_run_on(tmp_path: Path) -> None:
    """A guest that keeps going after proc_exit (no ``unreachable``) is stopped: exit 9."""
    mod = b"""(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (func (export "_start") (call $exit (i32.const 9)) (loop $spin (br $spin))))"""
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, mod)) == 9


def test_proc_exit_in_a_start_section(tmp_path: Path) -> None:
    mod = b"""(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (func $init (call $exit (i32.const 200)))
      (start $init)
      (func (export "_start") unreachable))"""
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, mod)) == 200


def test_kill_during_a_start_section_loop(tmp_path: Path) -> None:
    mod = (
        b"""(module (func $init (loop $spin (br $spin))) (start $init) (func (export "_start")))"""
    )
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, mod)
    fut = start(sandbox, ctx)
    wait_for(lambda: sandbox._engine is not None and sandbox._fifos is not None)
    kill(sandbox, ctx, signal.SIGTERM)
    assert fut.result(20) == 143


def test_killed_during_a_host_call_is_still_killed(tmp_path: Path) -> None:
    """A short sleep in poll_oneoff, killed in or around it: the status says killed."""
    mod = b"""(module
      (import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll (param i32 i32 i32 i32) (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        ;; one clock subscription: clock id 1 (monotonic) at 16, timeout 0.3 s at 24
        (i32.store (i32.const 16) (i32.const 1))
        (i64.store (i32.const 24) (i64.const 300000000))
        (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 200)))))"""
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, mod)
    fut = start(sandbox, ctx)
    wait_for(lambda: sandbox._fifos is not None)
    time.sleep(0.1)  # most likely inside the sleep now; the status is 143 either way
    kill(sandbox, ctx, signal.SIGTERM)
    assert fut.result(20) == 143


def test_a_shared_log_file_is_appended_not_truncated(tmp_path: Path) -> None:
    """``ctr run --log-uri file://…``: stdout and stderr are one file that already has lines."""
    log_file = tmp_path / "container.log"
    log_file.write_text("earlier line\n")
    stdio = Stdio(stdout=str(log_file), stderr=str(log_file))
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "stderr", stdio=stdio)) == 0
    assert log_file.read_text() == "earlier line\nto stdout\nto stderr\n"


def test_a_log_file_is_written_by_wasmtime_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No pumped pipe (nor a callback) is needed for file stdio: wasmtime's fd is the file's."""
    import runwasi_py.wasmtime._wasi as wasi_mod

    def refuse(path: str) -> None:
        raise AssertionError("file stdio went through a pump")

    monkeypatch.setattr(wasi_mod, "AppendingPipe", refuse)
    monkeypatch.setattr(wasi_mod, "AppendingOutput", refuse)
    log_file = tmp_path / "container.log"
    log_file.write_text("earlier line\n")
    stdio = Stdio(stdout=str(log_file), stderr=str(log_file))
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "stderr", stdio=stdio)) == 0
    assert log_file.read_text() == "earlier line\nto stdout\nto stderr\n"


def test_trap_message_is_appended_to_a_log_file(tmp_path: Path) -> None:
    log_file = tmp_path / "container.log"
    stdio = Stdio(stdout=str(log_file), stderr=str(log_file))
    assert run(WasmtimeSandbox(), make_ctx(tmp_path, "trap", stdio=stdio)) == 137
    text = log_file.read_text()
    assert text.startswith("before\n")
    assert "integer divide by zero" in text


def test_appending_output_reports_errors_instead_of_raising(tmp_path: Path) -> None:
    from runwasi_py import AppendingOutput

    out_file = AppendingOutput(str(tmp_path / "f"))
    assert out_file(b"abc") == 3
    out_file.close()
    assert out_file(b"x") < 0
    assert (tmp_path / "f").read_bytes() == b"abc"
