"""Which precompiled artifacts may run: the operator's and author's opt-ins, the cache checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runwasi_py import InvalidArgument
from runwasi_py._compile_cache import CompileCache
from runwasi_py.wasmtime._trust import (
    ENV_ACCEPT_PRECOMPILED,
    UntrustedArtifact,
    accepts_image_artifacts,
    check_cache_entry,
    check_image_artifact,
)


def test_image_artifacts_are_refused_by_default_with_a_clear_error() -> None:
    with pytest.raises(InvalidArgument, match=r"precompiled.*ship the \.wasm") as info:
        check_image_artifact("/app.wasm", author_accepts=False, environ={})
    assert ENV_ACCEPT_PRECOMPILED in str(info.value)
    assert "'/app.wasm'" in str(info.value)


@pytest.mark.parametrize("value", ["1", "true", "YES", " on "])
def test_the_operator_opts_in_through_the_shims_environment(value: str) -> None:
    check_image_artifact("/app.wasm", author_accepts=False, environ={ENV_ACCEPT_PRECOMPILED: value})


@pytest.mark.parametrize("value", ["", "0", "no", "false", "maybe"])
def test_anything_else_is_no(value: str) -> None:
    assert not accepts_image_artifacts(False, {ENV_ACCEPT_PRECOMPILED: value})


def test_the_author_opts_in_on_the_class() -> None:
    check_image_artifact("/app.wasm", author_accepts=True, environ={})


def test_the_default_environment_is_the_processs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ACCEPT_PRECOMPILED, raising=False)
    assert not accepts_image_artifacts(False)
    monkeypatch.setenv(ENV_ACCEPT_PRECOMPILED, "1")
    assert accepts_image_artifacts(False)


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    cache = CompileCache(tmp_path / "cache")
    return cache.put("k", b"\x7fELF artifact")


def test_a_cache_entry_the_shim_wrote_is_trusted(entry: Path) -> None:
    check_cache_entry(entry)


def test_an_entry_writable_by_others_is_not(entry: Path) -> None:
    entry.chmod(0o666)
    with pytest.raises(UntrustedArtifact, match="writable by others"):
        check_cache_entry(entry)


def test_a_directory_writable_by_others_is_not(entry: Path) -> None:
    entry.parent.chmod(0o777)
    with pytest.raises(UntrustedArtifact, match="writable by others"):
        check_cache_entry(entry)


def test_a_symlink_is_not(entry: Path, tmp_path: Path) -> None:
    link = entry.parent / "link.cwasm"
    link.symlink_to(entry)
    with pytest.raises(UntrustedArtifact, match="not a regular file"):
        check_cache_entry(link)


def test_a_missing_entry_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UntrustedArtifact, match="No such file"):
        check_cache_entry(tmp_path / "gone.cwasm")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_an_entry_owned_by_someone_else_is_not(entry: Path) -> None:
    os.chown(entry, 65534, 65534)
    with pytest.raises(UntrustedArtifact, match="owned by uid 65534"):
        check_cache_entry(entry)
