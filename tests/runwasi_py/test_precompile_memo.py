"""The precompile memo: the same file, unchanged, skips the lookup; anything else does not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runwasi_py import CompileCache, Entrypoint, RuntimeContext, Sandbox
from runwasi_py import _precompile_memo as memo


def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    cache = tmp_path / "cache"
    cache.mkdir()
    source = tmp_path / "app.wasm"
    source.write_bytes(b"\0asm\x01\0\0\0")
    artifact = cache / "a.cwasm"
    artifact.write_bytes(b"compiled")
    memo.remember(cache, "engine-1", source, artifact)
    return cache, source, artifact


def test_the_same_file_is_recalled(tmp_path: Path) -> None:
    cache, source, artifact = setup(tmp_path)
    assert memo.recall(cache, "engine-1", source) == artifact


def test_a_rewritten_file_is_not(tmp_path: Path) -> None:
    cache, source, _ = setup(tmp_path)
    st = source.stat()
    source.write_bytes(b"\0asm\x01\0\0\x01")  # same size
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: ctime moved
    assert memo.recall(cache, "engine-1", source) is None


def test_a_replaced_file_is_not(tmp_path: Path) -> None:
    cache, source, _ = setup(tmp_path)
    other = tmp_path / "other.wasm"
    other.write_bytes(source.read_bytes())
    os.replace(other, source)
    assert memo.recall(cache, "engine-1", source) is None


def test_another_engine_or_cache_or_a_gone_artifact_is_not(tmp_path: Path) -> None:
    cache, source, artifact = setup(tmp_path)
    assert memo.recall(cache, "engine-2", source) is None
    assert memo.recall(tmp_path, "engine-1", source) is None
    artifact.unlink()
    assert memo.recall(cache, "engine-1", source) is None


def test_no_engine_key_or_no_source_means_no_memo(tmp_path: Path) -> None:
    cache, source, _ = setup(tmp_path)
    assert memo.recall(cache, None, source) is None
    assert memo.recall(cache, "engine-1", None) is None
    assert memo.recall(cache, "engine-1", tmp_path / "missing.wasm") is None


# -- find_artifact: Create's lookup, inline when that is cheap ----------------------------


class CountingSandbox(Sandbox):
    """A Sandbox whose "compile" is a tag on the bytes, counting compiles."""

    compiled = 0

    async def run_wasi(self, ctx: RuntimeContext) -> int:
        return 0

    def cache_key(self) -> str:
        return "counting-1"

    def compile(self, wasm: bytes) -> bytes:
        CountingSandbox.compiled += 1
        return b"compiled:" + wasm


def entry_ctx(tmp_path: Path, name: str, content: bytes) -> RuntimeContext:
    rootfs = tmp_path / name
    rootfs.mkdir()
    app = rootfs / "app.wasm"
    app.write_bytes(content)
    return RuntimeContext(
        container_id=name,
        namespace="default",
        bundle=tmp_path,
        rootfs=rootfs,
        args=["/app.wasm"],
        envs=[],
        cwd="/",
        entrypoint=Entrypoint.parse("/app.wasm", source=app),
    )


def no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: object) -> object:
        raise AssertionError("went to a thread")

    monkeypatch.setattr(asyncio, "to_thread", refuse)


def test_a_copy_of_a_known_module_is_found_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CompileCache(tmp_path / "cache")
    sandbox = CountingSandbox()
    first = asyncio.run(memo.find_artifact(sandbox, entry_ctx(tmp_path, "a", b"module-1"), cache))
    assert first is not None
    assert first.read_bytes().startswith(b"compiled:module-1")
    no_thread(monkeypatch)
    # another container's own copy (another inode), then that same file again
    copy = entry_ctx(tmp_path, "b", b"module-1")
    assert asyncio.run(memo.find_artifact(sandbox, copy, cache)) == first
    assert asyncio.run(memo.find_artifact(sandbox, copy, cache)) == first


def test_a_module_with_other_content_gets_its_own_artifact(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    sandbox = CountingSandbox()
    before = CountingSandbox.compiled
    one = asyncio.run(memo.find_artifact(sandbox, entry_ctx(tmp_path, "a", b"module-1"), cache))
    two = asyncio.run(memo.find_artifact(sandbox, entry_ctx(tmp_path, "b", b"module-2"), cache))
    assert one != two
    assert two is not None
    assert two.read_bytes().startswith(b"compiled:module-2")
    assert CountingSandbox.compiled == before + 2


def test_a_rewritten_module_is_not_served_the_old_artifact(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cache")
    sandbox = CountingSandbox()
    ctx = entry_ctx(tmp_path, "a", b"module-1")
    old = asyncio.run(memo.find_artifact(sandbox, ctx, cache))
    assert ctx.entrypoint.source is not None
    ctx.entrypoint.source.write_bytes(b"module-X")  # same size, new content
    new = asyncio.run(memo.find_artifact(sandbox, ctx, cache))
    assert new != old
    assert new is not None
    assert new.read_bytes().startswith(b"compiled:module-X")


def test_a_large_module_is_hashed_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = CompileCache(tmp_path / "cache")
    sandbox = CountingSandbox()
    big = b"\0" * (memo._INLINE_BYTES + 1)
    asyncio.run(memo.find_artifact(sandbox, entry_ctx(tmp_path, "a", big), cache))
    no_thread(monkeypatch)
    with pytest.raises(AssertionError, match="thread"):
        asyncio.run(memo.find_artifact(sandbox, entry_ctx(tmp_path, "b", big), cache))
