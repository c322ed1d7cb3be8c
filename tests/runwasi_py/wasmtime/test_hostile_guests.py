"""Guests that try what a hostile workload would, against WasmtimeSandbox directly."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from runwasi_py import InvalidArgument
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
