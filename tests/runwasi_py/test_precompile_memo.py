"""The precompile memo: the same file, unchanged, skips the lookup; anything else does not."""

from __future__ import annotations

import os
from pathlib import Path

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
