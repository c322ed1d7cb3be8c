"""Guests that try what a hostile workload would, against WasmtimeSandbox directly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runwasi_py import InvalidArgument, Stdio
from runwasi_py.wasmtime import WasmtimeSandbox
from runwasi_py.wasmtime._trust import ENV_ACCEPT_PRECOMPILED
from tests.runwasi_py.wasmtime.helpers import make_ctx, out, run, start, wasm
from tests.runwasi_py.wasmtime.test_sandbox import TrustingSandbox, kill, wait_for

_MIB = 1 << 20


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own compile cache directory, and no operator opt-in."""
    d = tmp_path / "cache"
    monkeypatch.setenv("RUNWASI_PY_CACHE_DIR", str(d))
    monkeypatch.delenv(ENV_ACCEPT_PRECOMPILED, raising=False)
    return d


# --- precompiled native code ---------------------------------------------------------


def artifact(name: str = "hello") -> bytes:
    return TrustingSandbox().compile(wasm(name))


def test_the_operator_can_opt_in_through_the_shims_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_ACCEPT_PRECOMPILED, "1")
    ctx = make_ctx(tmp_path, artifact())
    asyncio.run(WasmtimeSandbox().can_handle(ctx))
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "hello world\n"


def test_the_containers_own_environment_cannot_opt_in(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, artifact(), envs=[f"{ENV_ACCEPT_PRECOMPILED}=1"])
    with pytest.raises(InvalidArgument, match="precompiled"):
        asyncio.run(WasmtimeSandbox().can_handle(ctx))
    assert run(WasmtimeSandbox(), ctx) == 1


def test_a_module_swapped_for_an_artifact_after_create_is_not_run(tmp_path: Path) -> None:
    """Start trusts the kind Create found, never the bytes: an artifact planted in between
    is handed to wasmtime as a module to compile, which refuses it (no native code runs)."""
    ctx = make_ctx(tmp_path, "hello")
    sandbox = WasmtimeSandbox()
    asyncio.run(sandbox.can_handle(ctx))  # a module: remembered for the run
    assert ctx.entrypoint.source is not None
    ctx.entrypoint.source.write_bytes(artifact("stderr"))  # would print to stderr
    assert run(sandbox, ctx) == 1
    assert out(tmp_path) == ""
    assert "cannot load" in (tmp_path / "stderr").read_text()


def test_a_sandbox_remembers_its_own_containers_kind_only(tmp_path: Path) -> None:
    """One sandbox per container: a module and a WAT text side by side each run as such."""
    (tmp_path / "m").mkdir()
    (tmp_path / "t").mkdir()
    module_ctx = make_ctx(tmp_path / "m", "hello")
    text_ctx = make_ctx(tmp_path / "t", "stderr", as_text=True)
    module_box, text_box = WasmtimeSandbox(), WasmtimeSandbox()
    asyncio.run(module_box.can_handle(module_ctx))
    asyncio.run(text_box.can_handle(text_ctx))
    assert run(text_box, text_ctx) == 0
    assert run(module_box, module_ctx) == 0
    assert out(tmp_path / "m") == "hello world\n"
    assert out(tmp_path / "t") == "to stdout\n"


def test_compile_does_not_launder_an_artifact_into_the_cache() -> None:
    with pytest.raises(InvalidArgument, match="precompiled"):
        WasmtimeSandbox().compile(artifact())


def test_a_precompiled_file_others_could_write_is_not_run(tmp_path: Path) -> None:
    """ctx.precompiled in a world-writable place: compiled from the module instead."""
    ctx = make_ctx(tmp_path, "hello")
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    evil = planted / "hello.cwasm"
    evil.write_bytes(artifact("stderr"))  # would print "to stdout" and "to stderr"
    ctx.precompiled = evil
    assert run(WasmtimeSandbox(), ctx) == 0
    assert out(tmp_path) == "hello world\n"


def test_a_cache_entry_others_could_write_is_not_run(tmp_path: Path, cache_dir: Path) -> None:
    sandbox = WasmtimeSandbox()
    assert run(sandbox, make_ctx(tmp_path, "hello")) == 0
    (entry,) = cache_dir.glob("*.cwasm")
    os.chmod(entry, 0o666)
    again = tmp_path / "again"
    again.mkdir()
    assert run(WasmtimeSandbox(), make_ctx(again, "hello")) == 0  # recompiled, not mapped
    assert out(again) == "hello world\n"


# --- memory --------------------------------------------------------------------------


def many_memories(n: int) -> bytes:
    mems = " ".join(f'(memory $m{i} (export "m{i}") 1)' for i in range(n))
    grows = " ".join(
        f"(block $d{i} (loop $l{i} (br_if $d{i} (i32.eq (memory.grow $m{i} (i32.const 16))"
        f" (i32.const -1))) (br $l{i})))"
        for i in range(n)
    )
    return f'(module {mems} (func (export "_start") {grows} unreachable))'.encode()


def test_sixteen_memories_cannot_run(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, many_memories(16), memory_limit=64 * _MIB)
    assert run(WasmtimeSandbox(), ctx) == 1
    assert "memor" in out(tmp_path, "stderr")
    assert not ctx.oom


class MultiMemorySandbox(WasmtimeSandbox):
    max_memories = 16


def test_with_multi_memory_enabled_sixteen_memories_share_the_budget(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, many_memories(16), memory_limit=64 * _MIB)
    assert run(MultiMemorySandbox(), ctx) == 137
    assert "out of memory" in out(tmp_path, "stderr")


def test_more_memories_than_enabled_cannot_run(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, many_memories(17), memory_limit=64 * _MIB)
    assert run(MultiMemorySandbox(), ctx) == 1
    assert "memory count" in out(tmp_path, "stderr")


def test_a_budget_of_one_memory_keeps_tables_apart(tmp_path: Path) -> None:
    """A module that wants a table larger than the tables' share fails to instantiate."""
    mod = b'(module (table 10000000 funcref) (func (export "_start")))'
    ctx = make_ctx(tmp_path, mod, memory_limit=16 * _MIB)
    assert run(WasmtimeSandbox(), ctx) == 137
    assert ctx.oom


# --- a guest asleep in WASI ----------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_kill_ends_a_guest_asleep_for_an_hour(tmp_path: Path, sig: int) -> None:
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "sleep")
    fut = start(sandbox, ctx)
    wait_for(lambda: out(tmp_path) == "running\n")
    assert not fut.done()
    kill(sandbox, ctx, sig)
    # Without the shadow poll_oneoff this would wait out the hour (and the result's timeout).
    assert fut.result(20) == 128 + sig


# --- stdio with no reader ------------------------------------------------------------

FLOOD = b"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 65536))
    (loop $more (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br $more))))"""


def fifos(tmp_path: Path) -> tuple[str, str]:
    paths = []
    for name in ("stdout", "stderr"):
        p = tmp_path / f"{name}.fifo"
        os.mkfifo(p)
        paths.append(str(p))
    return paths[0], paths[1]


def test_output_written_before_a_reader_comes_is_kept(tmp_path: Path) -> None:
    """``ctr task attach`` after ``ctr run -d``: the reader arrives while the guest runs."""
    stdout, stderr = fifos(tmp_path)
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, "sleep", stdio=Stdio(stdout=stdout, stderr=stderr))
    fut = start(sandbox, ctx)
    wait_for(lambda: sandbox._hold is not None and sandbox._engine is not None)
    reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)  # the late attach
    try:
        got = b""

        def read_some() -> bool:
            nonlocal got
            with contextlib.suppress(BlockingIOError):
                got += os.read(reader, 100)
            return got == b"running\n"

        wait_for(read_some)
        assert not fut.done()
        kill(sandbox, ctx, signal.SIGTERM)
        assert fut.result(20) == 143
    finally:
        os.close(reader)


def test_a_kill_ends_a_guest_blocked_on_a_full_pipe_nobody_reads(tmp_path: Path) -> None:
    stdout, stderr = fifos(tmp_path)
    sandbox = WasmtimeSandbox()
    ctx = make_ctx(tmp_path, FLOOD, stdio=Stdio(stdout=stdout, stderr=stderr))
    fut = start(sandbox, ctx)
    worker = next(t for t in threading.enumerate() if t.name == "wasm-worker")
    assert worker.native_id is not None
    tid = worker.native_id
    wait_for(lambda: Path(f"/proc/self/task/{tid}/wchan").read_text().endswith("pipe_write"))
    assert not fut.done()
    kill(sandbox, ctx, signal.SIGKILL)
    assert fut.result(20) == 137


def test_generic_stdio_opens_output_fifos_without_a_reader(tmp_path: Path) -> None:
    """Any Sandbox's ``ctx.stdio.open_stdout()`` returns at once with nobody reading."""
    stdout, _ = fifos(tmp_path)
    f = Stdio(stdout=stdout).open_stdout()
    assert f is not None
    with f:
        f.write(b"kept\n")
        reader = os.open(stdout, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(reader, 100) == b"kept\n"
        finally:
            os.close(reader)


# --- any entrypoint file -------------------------------------------------------------

heads = st.sampled_from([b"", b"\0asm\x01\0\0\0", b"\0asm\x0d\0\x01\0", b"\x7fELF", b"(module"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(head=heads, body=st.binary(max_size=200))
def test_any_entrypoint_bytes_are_refused_or_run_never_raise(head: bytes, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ctx = make_ctx(tmp, head + body)
        try:
            asyncio.run(WasmtimeSandbox().can_handle(ctx))
        except InvalidArgument:
            return
        assert head != b"\x7fELF"  # an image's artifact is refused by default
        code = run(WasmtimeSandbox(), ctx)
        assert 0 <= code <= 255
