"""CompileCache: memory and disk hits, atomic writes, bad entries are misses, never errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from runwasi_py import _compile_cache
from runwasi_py._compile_cache import CompileCache, cache_key_for, default_cache_dir, shared_cache

KEY = cache_key_for(b"\0asm\x01\0\0\0", "engine-1")
ARTIFACT = b"\x7fELF" + bytes(range(256)) * 40


def test_key_is_content_hash_and_engine() -> None:
    assert cache_key_for(b"abc", "e") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad:e"
    )
    assert cache_key_for(b"abc", "e") != cache_key_for(b"abc", "f")
    assert cache_key_for(b"abc", "e") != cache_key_for(b"abd", "e")


def test_miss_on_an_empty_cache(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path / "cc")
    assert cache.get(KEY) is None
    assert cache.read(KEY) is None
    assert not (tmp_path / "cc").exists()  # made on first write only


def test_put_then_get(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    path = cache.put(KEY, ARTIFACT)
    assert cache.get(KEY) == path
    # the artifact sits at offset 0, so an engine can map the file as is
    assert path.read_bytes().startswith(ARTIFACT)
    assert cache.read(KEY) == ARTIFACT


def test_memory_hit_skips_verification(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = CompileCache(tmp_path)
    path = cache.put(KEY, ARTIFACT)

    def no_verify(self: CompileCache, p: Path) -> tuple[int, int, int]:
        raise AssertionError("verified again")

    monkeypatch.setattr(CompileCache, "_verify", no_verify)
    assert cache.get(KEY) == path


def test_disk_hit_across_instances(tmp_path: Path) -> None:
    path = CompileCache(tmp_path).put(KEY, ARTIFACT)
    other = CompileCache(tmp_path)  # another shim process
    assert other.get(KEY) == path
    assert other.read(KEY) == ARTIFACT


def test_other_keys_do_not_hit(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    cache.put(KEY, ARTIFACT)
    assert cache.get(cache_key_for(b"\0asm\x01\0\0\0", "engine-2")) is None


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: flip_byte(p, 100),  # payload
        lambda p: flip_byte(p, p.stat().st_size - 1),  # checksum
        lambda p: flip_byte(p, p.stat().st_size - 48),  # magic
        lambda p: p.write_bytes(p.read_bytes()[:-10]),  # truncated trailer
        lambda p: p.write_bytes(p.read_bytes()[:1000]),  # truncated payload
        lambda p: p.write_bytes(b""),
        lambda p: p.write_bytes(ARTIFACT),  # no trailer at all
        lambda p: p.write_bytes(p.read_bytes() + b"x"),  # grown
    ],
    ids=["payload", "checksum", "magic", "trailer-cut", "payload-cut", "empty", "bare", "grown"],
)
def test_a_bad_entry_is_a_miss_and_removed(tmp_path: Path, damage: object) -> None:
    path = CompileCache(tmp_path).put(KEY, ARTIFACT)
    damage(path)  # type: ignore[operator]
    fresh = CompileCache(tmp_path)
    assert fresh.get(KEY) is None
    assert not path.exists()
    # ... and a recompile can store it again
    assert fresh.put(KEY, ARTIFACT) == path
    assert CompileCache(tmp_path).get(KEY) == path


def test_a_changed_file_is_verified_again(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    path = cache.put(KEY, ARTIFACT)
    assert cache.get(KEY) == path
    flip_byte(path, 5)  # changes mtime (and maybe inode): the memo no longer vouches for it
    os.utime(path, ns=(1, 1))
    assert cache.get(KEY) is None


def test_another_process_replacing_the_entry(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    cache.put(KEY, ARTIFACT)
    CompileCache(tmp_path).put(KEY, b"\x7fELFnewer")
    assert cache.read(KEY) == b"\x7fELFnewer"


def test_invalidate(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    path = cache.put(KEY, ARTIFACT)
    cache.invalidate(KEY)
    assert not path.exists()
    assert cache.get(KEY) is None
    cache.invalidate(KEY)  # twice is fine


def test_concurrent_puts_leave_one_whole_entry(tmp_path: Path) -> None:
    caches = [CompileCache(tmp_path) for _ in range(8)]
    artifacts = [bytes([i]) * (200_000 + i) for i in range(8)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            barrier.wait(10)
            for _ in range(5):
                caches[i].put(KEY, artifacts[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert CompileCache(tmp_path).read(KEY) in artifacts
    assert [p.name for p in tmp_path.iterdir()] == [CompileCache(tmp_path).path_for(KEY).name]


def test_concurrent_gets_and_puts_in_one_cache(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    stop = threading.Event()
    seen: list[bytes | None] = []

    def reader() -> None:
        while not stop.is_set():
            seen.append(cache.read(KEY))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(50):
            cache.put(KEY, bytes([i]) * 10_000)
    finally:
        stop.set()
        t.join(30)
    assert all(s is None or (len(s) == 10_000 and len(set(s)) == 1) for s in seen)


def test_put_to_an_unwritable_place_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError):
        CompileCache(blocker / "cc").put(KEY, ARTIFACT)


def test_a_directory_in_place_of_an_entry_is_a_miss(tmp_path: Path) -> None:
    cache = CompileCache(tmp_path)
    cache.path_for(KEY).mkdir()
    assert cache.get(KEY) is None


def test_default_dir_env_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNWASI_PY_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    assert CompileCache().directory == tmp_path


def test_default_dir_as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNWASI_PY_CACHE_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir("pywasmtime") == Path(
        "/var/lib/containerd/io.containerd.pywasmtime.v1/compile-cache"
    )


def test_default_dir_not_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNWASI_PY_CACHE_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir("x") == tmp_path / "runwasi-py" / "x" / "compile-cache"


def test_shared_cache_is_one_per_directory(tmp_path: Path) -> None:
    a = shared_cache(tmp_path / "a")
    assert shared_cache(tmp_path / "a") is a
    assert shared_cache(tmp_path / "b") is not a
    _compile_cache._shared.clear()
